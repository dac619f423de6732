// Tests for PairingService over a real SQLite store and a real gateway CA in a temporary directory.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { isFieldmeshError } from '../core/errors.js';
import { silentLogger } from '../core/logger.js';
import { type PairRequestFrame, pairingCodeId, pairingKey, pairingProof, parsePairingCode, signingProof } from '../protocol/pairing.js';
import { createNodeCsr, generateTlsKeyPem, inspectCertificate } from '../protocol/pki.js';
import { generateSigningKeys, loadSigningKeys, type SigningKeys } from '../protocol/signing.js';
import { openSqliteStore, type SqliteStore } from '../store/sqlite/index.js';
import { PairingService, type PairOutcome } from './pairing.js';
import { type GatewayIdentity, loadOrCreateGatewayIdentity } from './tls.js';

const NONCE = PairingService.nonce();

interface NodeKeys {
  nodeId: string;
  tlsKeyPem: string;
  signing: SigningKeys;
  csr: string;
}

async function nodeKeys(nodeId: string): Promise<NodeKeys> {
  const tlsKeyPem = generateTlsKeyPem();
  return { nodeId, tlsKeyPem, signing: loadSigningKeys(generateSigningKeys().privateKeyPem), csr: await createNodeCsr(nodeId, tlsKeyPem) };
}

function request(k: NodeKeys, code?: string, nonce = NONCE): PairRequestFrame {
  const req: PairRequestFrame = {
    v: 1,
    type: 'PAIR_REQUEST',
    node_id: k.nodeId,
    mode: code === undefined ? 'approval' : 'code',
    csr: k.csr,
    signing_public_key: k.signing.publicKeyPem,
    signing_proof: signingProof(k.signing.privateKey, nonce, k.nodeId),
  };
  if (code !== undefined) {
    const parsed = parsePairingCode(code)!;
    req.code_id = pairingCodeId(parsed.secret);
    req.proof = pairingProof(pairingKey(parsed.secret), nonce, k.nodeId, k.csr, k.signing.publicKeyPem);
  }
  return req;
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (isFieldmeshError(err)) return err.code;
    throw err;
  }
  return 'no error';
}

function issued(outcome: PairOutcome) {
  if (!('issued' in outcome)) throw new Error('expected a certificate');
  return outcome.issued;
}

describe('pairing service', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fm-pairing-'));
  let store: SqliteStore;
  let identity: GatewayIdentity;
  let svc: PairingService;
  let remote = 0;
  /** Each test pairs from its own address, so lockouts stay where a test wants them. */
  let addr = '';

  beforeAll(async () => {
    store = await openSqliteStore(join(dir, 'fieldmesh.db'));
    identity = await loadOrCreateGatewayIdentity(join(dir, 'gw'));
    svc = new PairingService(store, identity, { nodeCertTtlMs: 3600_000, logger: silentLogger });
    await svc.load();
  });
  beforeEach(() => {
    addr = `10.0.0.${++remote}`;
  });
  afterAll(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('pairing service - a code issues a certificate naming the node, from the gateway CA, binding its signing key', async () => {
    const k = await nodeKeys('rpi:device_b');
    const { code } = await svc.createCode({ node_id: 'rpi:device_b' });
    const out = issued(await svc.pair(request(k, code), NONCE, addr));
    const info = inspectCertificate(out.certificate);
    expect(info.commonName).toBe('rpi:device_b');
    expect(info.dnsNames).toEqual(['rpi:device_b']);
    expect(out.ca_certificate).toBe(identity.caCertPem);
    expect(out.gateway_signing_key).toBe(identity.signingPublicKeyPem);
    const rec = await svc.checkPresented(info.serial, 'rpi:device_b', 'rpi:device_b');
    expect(rec.signing_public_key).toBe(k.signing.publicKeyPem);
    expect(Date.parse(rec.not_after) - Date.now()).toBeGreaterThan(3500_000);
  });

  it('pairing service - a code works once', async () => {
    const { code } = await svc.createCode();
    issued(await svc.pair(request(await nodeKeys('once:a'), code), NONCE, addr));
    expect(await codeOf(svc.pair(request(await nodeKeys('once:b'), code), NONCE, addr))).toBe('FM_ERR_PAIRING_CODE_USED');
  });

  it('pairing service - wrong, expired and misdirected codes are refused', async () => {
    const k = await nodeKeys('refused:a');
    const { code } = await svc.createCode({ node_id: 'someone:else' });
    expect(await codeOf(svc.pair(request(k, code), NONCE, addr))).toBe('FM_ERR_PAIRING_CODE_INVALID');
    const other = (await svc.createCode()).code;
    const forged = other.replace(/^(.)/, (ch) => (ch === 'A' ? 'B' : 'A'));
    expect(await codeOf(svc.pair(request(k, forged), NONCE, addr))).toBe('FM_ERR_PAIRING_CODE_INVALID');
    // A proof made for another nonce does not answer this challenge.
    expect(await codeOf(svc.pair(request(k, other, PairingService.nonce()), NONCE, `${addr}1`))).toBe('FM_ERR_PAIRING_CODE_INVALID');
    const short = (await svc.createCode({ ttl_seconds: 1 })).code;
    await new Promise((r) => setTimeout(r, 1100));
    expect(await codeOf(svc.pair(request(k, short), NONCE, `${addr}2`))).toBe('FM_ERR_PAIRING_CODE_EXPIRED');
  });

  it('pairing service - five failures from one address lock it out, even for a good code; other addresses still pair', async () => {
    const k = await nodeKeys('locked:a');
    const bad = (await svc.createCode()).code.replace(/^(.)/, (ch) => (ch === 'A' ? 'B' : 'A'));
    for (let i = 0; i < 5; i++) expect(await codeOf(svc.pair(request(k, bad), NONCE, addr))).toBe('FM_ERR_PAIRING_CODE_INVALID');
    const good = (await svc.createCode()).code;
    let locked: unknown;
    try {
      await svc.pair(request(k, good), NONCE, addr);
    } catch (err) {
      locked = err;
    }
    expect(isFieldmeshError(locked) && locked.code).toBe('FM_ERR_PAIRING_LOCKED');
    expect(isFieldmeshError(locked) && locked.details?.retry_after_seconds).toBeGreaterThan(290);
    issued(await svc.pair(request(k, good), NONCE, `${addr}9`));
  });

  it('pairing service - a request without a code waits, shows as pending, and is issued once approved', async () => {
    const k = await nodeKeys('approval:a');
    const first = await svc.pair(request(k), NONCE, addr);
    expect(first).toMatchObject({ pending: true });
    expect((await svc.listPending()).map((r) => r.node_id)).toContain('approval:a');
    // The same node asking again (a reconnect, a new CSR for the same key) still waits.
    const again = await svc.pair({ ...request(k), csr: await createNodeCsr('approval:a', k.tlsKeyPem) }, NONCE, addr);
    expect(again).toEqual(first);
    // Someone else asking for the same id with other keys cannot take the request over.
    expect(await codeOf(svc.pair(request(await nodeKeys('approval:a')), NONCE, addr))).toBe('FM_ERR_PAIRING_REFUSED');
    await svc.approve('approval:a');
    const out = issued(await svc.pair(request(k), NONCE, addr));
    expect(inspectCertificate(out.certificate).commonName).toBe('approval:a');
    expect((await svc.listPending()).map((r) => r.node_id)).not.toContain('approval:a');
    expect(await codeOf(svc.approve('approval:a'))).toBe('FM_ERR_PAIRING_NOT_PENDING');
  });

  it('pairing service - a denied request is refused from then on', async () => {
    const k = await nodeKeys('denied:a');
    expect(await svc.pair(request(k), NONCE, addr)).toMatchObject({ pending: true });
    await svc.deny('denied:a');
    expect(await codeOf(svc.pair(request(k), NONCE, addr))).toBe('FM_ERR_PAIRING_DENIED');
    expect(await codeOf(svc.deny('nobody:asked'))).toBe('FM_ERR_PAIRING_NOT_PENDING');
  });

  it('pairing service - a bad CSR or signing proof is refused without issuing anything', async () => {
    const k = await nodeKeys('bad:csr');
    const { code } = await svc.createCode();
    const wrongCn = { ...k, csr: await createNodeCsr('someone:else', k.tlsKeyPem) };
    expect(await codeOf(svc.pair(request(wrongCn, code), NONCE, addr))).toBe('FM_ERR_PAIRING_REFUSED');
    expect(await codeOf(svc.pair({ ...request(k, code), signing_proof: 'AAAA' }, NONCE, addr))).toBe('FM_ERR_PAIRING_REFUSED');
    // The code is still good: nothing was issued for it.
    issued(await svc.pair(request(k, code), NONCE, addr));
  });

  it('pairing service - renewal keeps the signing key; revocation refuses every certificate of the node', async () => {
    const k = await nodeKeys('renew:a');
    const { code } = await svc.createCode();
    const first = issued(await svc.pair(request(k, code), NONCE, addr));
    const rec = await svc.checkPresented(first.serial, 'renew:a', 'renew:a');
    const renewed = await svc.renew(rec, await createNodeCsr('renew:a', generateTlsKeyPem()));
    expect(renewed.serial).not.toBe(first.serial);
    expect((await svc.checkPresented(renewed.serial, 'renew:a', 'renew:a')).signing_public_key).toBe(k.signing.publicKeyPem);
    expect(await codeOf(svc.renew(rec, await createNodeCsr('other:id', generateTlsKeyPem())))).toBe('FM_ERR_PAIRING_REFUSED');
    expect(await codeOf(svc.checkPresented(first.serial, 'impostor', 'renew:a'))).toBe('FM_ERR_NODE_ID_MISMATCH');
    expect(await codeOf(svc.checkPresented('ABCDEF', 'renew:a', 'renew:a'))).toBe('FM_ERR_CERT_UNKNOWN');
    expect((await svc.revoke('renew:a')).sort()).toEqual([first.serial, renewed.serial].sort());
    expect(svc.isRevoked(first.serial) && svc.isRevoked(renewed.serial)).toBe(true);
    expect(await codeOf(svc.checkPresented(renewed.serial, 'renew:a', 'renew:a'))).toBe('FM_ERR_CERT_REVOKED');
    expect(await svc.revoke('renew:a')).toEqual([]);
    // A new service over the same store still knows.
    const reloaded = new PairingService(store, identity, { nodeCertTtlMs: 3600_000, logger: silentLogger });
    await reloaded.load();
    expect(reloaded.isRevoked(first.serial)).toBe(true);
  });
});
