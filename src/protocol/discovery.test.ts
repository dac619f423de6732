import { createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  type AdvertiseMessage,
  decodeDiscoveryDatagram,
  discoveryPublicKeyPem,
  signDiscoveryMessage,
  verifyDiscoverySignature,
} from './discovery.js';
import { generateSigningKeys } from './signing.js';

const keys = generateSigningKeys();
const key = createPrivateKey(keys.privateKeyPem);

function advert(publicKey = keys.publicKeyPem): AdvertiseMessage {
  return signDiscoveryMessage(
    {
      v: 1,
      type: 'ADVERTISE' as const,
      node_id: 'local:abc123',
      capabilities: ['tool:pii_redact', 'tool:summarize'],
      platform: 'macos',
      location: { lat: 37.7749, lon: -122.4194 },
      version: '0.1.0',
      public_key: publicKey,
      sent_at: '2024-01-27T10:30:00.000Z',
      nonce: 'AAAAAAAAAAAAAAAAAAAAAA',
    },
    key,
  );
}

const bytes = (v: unknown) => Buffer.from(JSON.stringify(v));

describe('discovery datagrams', () => {
  it('discovery datagrams - a signed ADVERTISE decodes and verifies, whatever the key order', () => {
    const message = advert();
    const reordered = Object.fromEntries(Object.entries(message).reverse());
    const decoded = decodeDiscoveryDatagram(bytes(reordered), 8192);
    expect(decoded).toEqual({ ok: true, message });
    expect(verifyDiscoverySignature(message)).toBe(true);
  });

  it('discovery datagrams - the public key may be base64 SPKI DER', () => {
    const der = createPublicKey(keys.publicKeyPem).export({ type: 'spki', format: 'der' }).toString('base64');
    const message = advert(der);
    expect(verifyDiscoverySignature(message)).toBe(true);
    expect(discoveryPublicKeyPem(der)).toBe(keys.publicKeyPem);
  });

  it('discovery datagrams - any changed field breaks the signature', () => {
    const message = advert();
    expect(verifyDiscoverySignature({ ...message, capabilities: ['tool:pii_redact'] })).toBe(false);
    expect(verifyDiscoverySignature({ ...message, location: { lat: 37.7749, lon: -122.4195 } })).toBe(false);
    expect(verifyDiscoverySignature({ ...message, listen: '10.0.0.1:9000' })).toBe(false);
    expect(verifyDiscoverySignature({ ...message, public_key: generateSigningKeys().publicKeyPem })).toBe(false);
    expect(verifyDiscoverySignature({ ...message, public_key: 'not a key at all, but long enough to pass the schema' })).toBe(false);
  });

  it('discovery datagrams - a key other than Ed25519 never verifies', () => {
    const publicKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    expect(discoveryPublicKeyPem(publicKey)).toBeUndefined();
    expect(verifyDiscoverySignature(advert(publicKey))).toBe(false);
  });

  it('discovery datagrams - bad datagrams get a reason, never a throw', () => {
    expect(decodeDiscoveryDatagram(Buffer.alloc(600, 32), 512)).toMatchObject({ ok: false, reason: 'oversized' });
    expect(decodeDiscoveryDatagram(Buffer.from('{'), 512)).toMatchObject({ ok: false, reason: 'malformed' });
    expect(decodeDiscoveryDatagram(Buffer.from('null'), 512)).toMatchObject({ ok: false, reason: 'malformed' });
    expect(decodeDiscoveryDatagram(bytes({ v: 1 }), 512)).toMatchObject({ ok: false, reason: 'schema' });
    expect(decodeDiscoveryDatagram(bytes({ v: 1, type: 'TASK' }), 512)).toMatchObject({ ok: false, reason: 'schema' });
    expect(decodeDiscoveryDatagram(bytes({ v: '1', type: 'DISCOVER', seek: 'nodes', nonce: 'x'.repeat(16) }), 512)).toMatchObject({
      ok: false,
      reason: 'version',
    });
    expect(decodeDiscoveryDatagram(bytes({ v: 1, type: 'DISCOVER', seek: 'everyone', nonce: 'x'.repeat(16) }), 512)).toMatchObject({
      ok: false,
      reason: 'schema',
      detail: expect.stringContaining('/seek'),
    });
    expect(decodeDiscoveryDatagram(bytes({ ...advert(), location: { lat: 91, lon: 0 } }), 8192)).toMatchObject({
      ok: false,
      reason: 'schema',
    });
    expect(decodeDiscoveryDatagram(bytes({ v: 1, type: 'DISCOVER', seek: 'nodes', nonce: 'x'.repeat(16) }), 512)).toMatchObject({
      ok: true,
    });
  });
});
