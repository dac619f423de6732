// Tests for the pairing protocol's pieces: code format, the CA fingerprint it carries, and the challenge-response proofs.
import { describe, expect, it } from 'vitest';
import {
  checkPairingProof,
  checkSigningProof,
  codeMatchesFingerprint,
  formatPairingCode,
  newPairingSecret,
  pairingCodeId,
  pairingFingerprint,
  pairingKey,
  pairingProof,
  parsePairingCode,
  signingProof,
} from './pairing.js';
import { generateSigningKeys, loadSigningKeys } from './signing.js';

const FP = 'AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89';

describe('pairing - codes', () => {
  it('pairing - a code reads back as its secret and the CA fingerprint part, in any case and with spaces', () => {
    const secret = newPairingSecret();
    const code = formatPairingCode(secret, FP);
    expect(code).toMatch(/^[A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4}-[0-9A-F]{20}$/);
    expect(parsePairingCode(code)).toEqual({ secret, caFingerprintPrefix: 'abcdef0123456789abcd' });
    expect(parsePairingCode(` ${code.toLowerCase()} `)).toEqual(parsePairingCode(code));
  });

  it('pairing - a code matches the CA whose fingerprint it carries and no other', () => {
    const parsed = parsePairingCode(formatPairingCode(newPairingSecret(), FP))!;
    expect(codeMatchesFingerprint(parsed, FP)).toBe(true);
    expect(codeMatchesFingerprint(parsed, FP.replace(/^AB/, 'AC'))).toBe(false);
  });

  it('pairing - malformed codes are not codes', () => {
    const good = formatPairingCode(newPairingSecret(), FP);
    for (const bad of ['', 'hello', good.slice(0, -1), `${good}0`, good.replace(/^./, 'O'), good.replace(/^(.{5})./, '$1I')]) {
      expect(parsePairingCode(bad)).toBeUndefined();
    }
  });

  it('pairing - secrets differ, and so do the id and key derived from one', () => {
    const secrets = new Set(Array.from({ length: 200 }, newPairingSecret));
    expect(secrets.size).toBe(200);
    const s = newPairingSecret();
    expect(pairingCodeId(s)).toMatch(/^[0-9a-f]{32}$/);
    expect(pairingKey(s).toString('hex')).not.toContain(pairingCodeId(s));
  });
});

describe('pairing - proofs', () => {
  const key = pairingKey(newPairingSecret());
  const args = ['bm9uY2Vub25jZW5vbmNlbm9uY2U=', 'rpi:device_b', '-----BEGIN CERTIFICATE REQUEST-----', 'signing key'] as const;

  it('pairing - the proof checks for the same nonce, node, CSR and signing key', () => {
    expect(checkPairingProof(key, pairingProof(key, ...args), ...args)).toBe(true);
  });

  it('pairing - a proof fails for another code, nonce, node id, CSR or signing key', () => {
    const proof = pairingProof(key, ...args);
    expect(checkPairingProof(pairingKey(newPairingSecret()), proof, ...args)).toBe(false);
    for (let i = 0; i < args.length; i++) {
      const changed = [...args] as [string, string, string, string];
      changed[i] = `${changed[i]}x`;
      expect(checkPairingProof(key, proof, ...changed)).toBe(false);
    }
    expect(checkPairingProof(key, 'not base64 at all', ...args)).toBe(false);
  });

  it('pairing - the signing proof shows the node holds the Ed25519 key it asks to bind', () => {
    const keys = loadSigningKeys(generateSigningKeys().privateKeyPem);
    const other = loadSigningKeys(generateSigningKeys().privateKeyPem);
    const proof = signingProof(keys.privateKey, 'nonce-1', 'node-a');
    expect(checkSigningProof(keys.publicKeyPem, proof, 'nonce-1', 'node-a')).toBe(true);
    expect(checkSigningProof(other.publicKeyPem, proof, 'nonce-1', 'node-a')).toBe(false);
    expect(checkSigningProof(keys.publicKeyPem, proof, 'nonce-2', 'node-a')).toBe(false);
    expect(checkSigningProof('not a key', proof, 'nonce-1', 'node-a')).toBe(false);
  });

  it('pairing - the fingerprint an operator compares depends on both keys', () => {
    const a = Buffer.from('tls key');
    const b = Buffer.from('signing key');
    expect(pairingFingerprint(a, b)).toMatch(/^[0-9a-f]{4}(-[0-9a-f]{4}){4}$/);
    expect(pairingFingerprint(a, b)).not.toBe(pairingFingerprint(b, a));
    expect(pairingFingerprint(a, b)).toBe(pairingFingerprint(Buffer.from('tls key'), Buffer.from('signing key')));
  });
});
