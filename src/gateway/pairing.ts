/**
 * Pairing and node certificates: one-time codes, requests waiting for an
 * operator, issuing and renewing certificates from the gateway CA, binding a
 * node's Ed25519 signing key, revocation, and the lockout of an address that
 * keeps presenting bad codes. The wire exchange is in pairing-endpoint.ts and
 * protocol/pairing.ts; this module decides.
 */
import { createPublicKey, randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { type ErrorCode, FieldmeshError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import {
  checkPairingProof,
  checkSigningProof,
  formatPairingCode,
  newPairingSecret,
  type PairIssuedFrame,
  type PairRequestFrame,
  pairingCodeId,
  pairingFingerprint,
  pairingKey,
} from '../protocol/pairing.js';
import { inspectCertificate } from '../protocol/pki.js';
import { type CertificateRecord, type PairingRequestRecord, PairingRequestStatus, type Store } from '../store/types.js';
import { type GatewayIdentity, issueNodeCertificate, readNodeCsr } from './tls.js';

export interface PairingOptions {
  /** Life of a node certificate. */
  nodeCertTtlMs: number;
  logger: Logger;
  /** Failed code attempts from one address before it is locked out. @default 5 */
  maxFailures?: number;
  /** How long a locked-out address is refused. @default 300000 */
  lockoutMs?: number;
}

export interface PairingEvents {
  /** A node's certificates were revoked: its live connection must go. */
  revoked: [nodeId: string, serials: string[]];
  /** An operator decided on a pending request. */
  decided: [nodeId: string];
}

/** What a pairing request comes to: a certificate now, or a wait for an operator. */
export type PairOutcome = { issued: Omit<PairIssuedFrame, 'v' | 'type'> } | { pending: true; fingerprint: string };

export interface PairingCode {
  code: string;
  expires_at: string;
  node_id: string | null;
}

/** Default life of a pairing code. */
export const DEFAULT_CODE_TTL_SECONDS = 600;

function fail(code: ErrorCode, message: string, details?: Record<string, unknown>): FieldmeshError {
  return new FieldmeshError(code, message, details ? { details } : {});
}

export class PairingService extends EventEmitter<PairingEvents> {
  readonly #store: Store;
  readonly #identity: GatewayIdentity;
  readonly #opts: Required<PairingOptions>;
  readonly #revoked = new Set<string>();
  readonly #failures = new Map<string, { count: number; lockedUntil: number }>();
  /** node id → the signing keys (SPKI DER, base64) of its certificates not revoked, for discovery's paired/trusted flags. */
  readonly #signingKeys = new Map<string, Set<string>>();

  constructor(store: Store, identity: GatewayIdentity, opts: PairingOptions) {
    super();
    this.#store = store;
    this.#identity = identity;
    this.#opts = { maxFailures: 5, lockoutMs: 300_000, ...opts };
  }

  /** Loads the revoked serials, so a handshake can be refused without a store read. */
  async load(): Promise<void> {
    for (const serial of await this.#store.listRevokedSerials()) this.#revoked.add(serial);
    for (const cert of await this.#store.listCertificates())
      if (cert.revoked_at === null) this.#bindKey(cert.node_id, cert.signing_public_key);
  }

  #bindKey(nodeId: string, signingPublicKey: string): void {
    const key = keyId(signingPublicKey);
    if (key === undefined) return;
    const keys = this.#signingKeys.get(nodeId) ?? new Set<string>();
    keys.add(key);
    this.#signingKeys.set(nodeId, keys);
  }

  /**
   * Whether a node id holds a certificate not revoked (paired), and whether
   * `signingPublicKey` is a key it paired with (trusted): what discovery shows
   * for a node it heard from.
   */
  pairingStatus(nodeId: string, signingPublicKey: string): { paired: boolean; trusted: boolean } {
    const keys = this.#signingKeys.get(nodeId);
    if (!keys || keys.size === 0) return { paired: false, trusted: false };
    const key = keyId(signingPublicKey);
    return { paired: true, trusted: key !== undefined && keys.has(key) };
  }

  isRevoked(serial: string): boolean {
    return this.#revoked.has(serial);
  }

  get caFingerprint(): string {
    return this.#identity.caFingerprint;
  }

  /** A new single-use code; only values derived from it are stored. */
  async createCode(opts: { node_id?: string | undefined; ttl_seconds?: number | undefined } = {}): Promise<PairingCode> {
    const secret = newPairingSecret();
    const now = Date.now();
    const expires_at = new Date(now + (opts.ttl_seconds ?? DEFAULT_CODE_TTL_SECONDS) * 1000).toISOString();
    await this.#store.insertPairingCode({
      code_id: pairingCodeId(secret),
      key: pairingKey(secret).toString('hex'),
      node_id: opts.node_id ?? null,
      created_at: new Date(now).toISOString(),
      expires_at,
      used_at: null,
      used_by: null,
    });
    this.#opts.logger.info('pairing code created', { node_id: opts.node_id ?? null, expires_at });
    return { code: formatPairingCode(secret, this.#identity.caFingerprint), expires_at, node_id: opts.node_id ?? null };
  }

  /** Decides a PAIR_REQUEST answered to `nonce`; throws a FieldmeshError the endpoint sends back. */
  async pair(req: PairRequestFrame, nonce: string, remoteAddress: string): Promise<PairOutcome> {
    if (req.mode === 'code') return this.#pairWithCode(req, nonce, remoteAddress);
    return this.#pairByApproval(req, nonce, remoteAddress);
  }

  async #pairWithCode(req: PairRequestFrame, nonce: string, remote: string): Promise<PairOutcome> {
    const now = Date.now();
    const seen = this.#failures.get(remote);
    if (seen && seen.lockedUntil > now) {
      const retryAfter = Math.ceil((seen.lockedUntil - now) / 1000);
      throw fail('FM_ERR_PAIRING_LOCKED', `Too many failed pairing attempts from ${remote}; try again in ${retryAfter} s`, {
        retry_after_seconds: retryAfter,
      });
    }
    const code = req.code_id === undefined ? undefined : await this.#store.getPairingCode(req.code_id);
    if (!code || req.proof === undefined) throw this.#failed(remote, fail('FM_ERR_PAIRING_CODE_INVALID', 'Pairing code is not valid'));
    if (!checkPairingProof(Buffer.from(code.key, 'hex'), req.proof, nonce, req.node_id, req.csr, req.signing_public_key)) {
      throw this.#failed(remote, fail('FM_ERR_PAIRING_CODE_INVALID', 'Pairing code is not valid'));
    }
    if (code.used_at !== null) throw this.#failed(remote, fail('FM_ERR_PAIRING_CODE_USED', 'Pairing code has already been used'));
    if (Date.parse(code.expires_at) <= now) {
      throw this.#failed(remote, fail('FM_ERR_PAIRING_CODE_EXPIRED', `Pairing code expired at ${code.expires_at}`));
    }
    if (code.node_id !== null && code.node_id !== req.node_id) {
      throw this.#failed(remote, fail('FM_ERR_PAIRING_CODE_INVALID', `Pairing code is for node "${code.node_id}", not "${req.node_id}"`));
    }
    this.#checkSigningKey(req, nonce);
    const certificate = await issueNodeCertificate(this.#identity, req.csr, req.node_id, this.#opts.nodeCertTtlMs);
    // Two nodes racing with one code: the store lets exactly one of them use it.
    if (!(await this.#store.consumePairingCode(code.code_id, req.node_id, new Date().toISOString()))) {
      throw this.#failed(remote, fail('FM_ERR_PAIRING_CODE_USED', 'Pairing code has already been used'));
    }
    this.#failures.delete(remote);
    return { issued: await this.#record(req.node_id, certificate, req.signing_public_key) };
  }

  async #pairByApproval(req: PairRequestFrame, nonce: string, remote: string): Promise<PairOutcome> {
    this.#checkSigningKey(req, nonce);
    const fingerprint = await this.#fingerprint(req);
    const existing = await this.#store.getPairingRequest(req.node_id);
    const same = existing?.fingerprint === fingerprint;
    if (existing && same && existing.status === PairingRequestStatus.Approved) {
      const certificate = await issueNodeCertificate(this.#identity, req.csr, req.node_id, this.#opts.nodeCertTtlMs);
      await this.#store.deletePairingRequest(req.node_id);
      return { issued: await this.#record(req.node_id, certificate, req.signing_public_key) };
    }
    if (existing && same && existing.status === PairingRequestStatus.Denied) {
      throw fail('FM_ERR_PAIRING_DENIED', `An operator denied pairing node "${req.node_id}"`, { node_id: req.node_id });
    }
    if (existing && !same && existing.status === PairingRequestStatus.Pending) {
      // Replacing it would let anyone swap the keys an operator is about to approve.
      throw fail('FM_ERR_PAIRING_REFUSED', `Another pairing request for node "${req.node_id}" is pending with different keys`, {
        node_id: req.node_id,
      });
    }
    if (!existing || !same) {
      await this.#store.putPairingRequest({
        node_id: req.node_id,
        status: PairingRequestStatus.Pending,
        name: req.name ?? null,
        platform: req.platform ?? null,
        csr: req.csr,
        signing_public_key: req.signing_public_key,
        fingerprint,
        remote_address: remote,
        requested_at: new Date().toISOString(),
        decided_at: null,
      });
      this.#opts.logger.info('pairing requested; waiting for an operator', { node_id: req.node_id, fingerprint, remote });
    }
    return { pending: true, fingerprint };
  }

  #checkSigningKey(req: PairRequestFrame, nonce: string): void {
    let ok = false;
    try {
      ok = createPublicKey(req.signing_public_key).asymmetricKeyType === 'ed25519';
    } catch {
      ok = false;
    }
    if (!ok) throw fail('FM_ERR_PAIRING_REFUSED', 'signing_public_key: not an Ed25519 public key (SPKI PEM)');
    if (!checkSigningProof(req.signing_public_key, req.signing_proof, nonce, req.node_id)) {
      throw fail('FM_ERR_PAIRING_REFUSED', 'signing_proof: does not verify with signing_public_key');
    }
  }

  /** Also checks the CSR, so an operator never approves a request whose certificate could not be signed. */
  async #fingerprint(req: PairRequestFrame): Promise<string> {
    const tlsSpki = await readNodeCsr(req.csr, req.node_id);
    const signingSpki = createPublicKey(req.signing_public_key).export({ type: 'spki', format: 'der' });
    return pairingFingerprint(tlsSpki, signingSpki);
  }

  #failed(remote: string, err: FieldmeshError): FieldmeshError {
    const now = Date.now();
    const f = this.#failures.get(remote) ?? { count: 0, lockedUntil: 0 };
    f.count += 1;
    if (f.count >= this.#opts.maxFailures) {
      f.count = 0;
      f.lockedUntil = now + this.#opts.lockoutMs;
      this.#opts.logger.warn('pairing locked out for an address after repeated failures', {
        remote,
        lockout_ms: this.#opts.lockoutMs,
      });
    }
    this.#failures.set(remote, f);
    // Addresses whose lockout passed with no new failures are forgotten, so the map stays small.
    if (this.#failures.size > 10_000) {
      for (const [addr, v] of this.#failures) if (v.lockedUntil < now && addr !== remote) this.#failures.delete(addr);
    }
    this.#opts.logger.warn('pairing attempt failed', { remote, code: err.code });
    return err;
  }

  /** Stores a freshly issued certificate, binding the node's signing key to it. */
  async #record(nodeId: string, certificate: string, signingPublicKey: string): Promise<Omit<PairIssuedFrame, 'v' | 'type'>> {
    const info = inspectCertificate(certificate);
    const rec: CertificateRecord = {
      serial: info.serial,
      node_id: nodeId,
      fingerprint256: info.fingerprint256,
      signing_public_key: signingPublicKey,
      not_before: info.notBefore.toISOString(),
      not_after: info.notAfter.toISOString(),
      issued_at: new Date().toISOString(),
      revoked_at: null,
    };
    await this.#store.insertCertificate(rec);
    this.#bindKey(nodeId, signingPublicKey);
    this.#opts.logger.info('node certificate issued', { node_id: nodeId, serial: rec.serial, not_after: rec.not_after });
    return {
      node_id: nodeId,
      certificate,
      ca_certificate: this.#identity.caCertPem,
      gateway_signing_key: this.#identity.signingPublicKeyPem,
      serial: rec.serial,
      not_after: rec.not_after,
    };
  }

  listPending(): Promise<PairingRequestRecord[]> {
    return this.#store.listPairingRequests(PairingRequestStatus.Pending);
  }

  /** Approves a pending request; the waiting node receives its certificate. */
  async approve(nodeId: string): Promise<PairingRequestRecord> {
    return this.#decide(nodeId, PairingRequestStatus.Approved);
  }

  /** Denies a pending request; the waiting node is told and stops. */
  async deny(nodeId: string): Promise<PairingRequestRecord> {
    return this.#decide(nodeId, PairingRequestStatus.Denied);
  }

  async #decide(nodeId: string, status: PairingRequestStatus): Promise<PairingRequestRecord> {
    const req = await this.#store.getPairingRequest(nodeId);
    if (!req || req.status !== PairingRequestStatus.Pending) {
      throw fail('FM_ERR_PAIRING_NOT_PENDING', `No pairing request is pending for node "${nodeId}"`, { node_id: nodeId });
    }
    const decided: PairingRequestRecord = { ...req, status, decided_at: new Date().toISOString() };
    await this.#store.putPairingRequest(decided);
    this.#opts.logger.info(`pairing request ${status}`, { node_id: nodeId, fingerprint: req.fingerprint });
    this.emit('decided', nodeId);
    return decided;
  }

  /** Revokes every certificate of a node not yet revoked, and drops its pairing request; returns the serials revoked. */
  async revoke(nodeId: string): Promise<string[]> {
    const serials = await this.#store.revokeCertificates(nodeId, 'revoked by an operator', new Date().toISOString());
    for (const s of serials) this.#revoked.add(s);
    this.#signingKeys.delete(nodeId);
    if (await this.#store.getPairingRequest(nodeId)) await this.#store.deletePairingRequest(nodeId);
    if (serials.length > 0) {
      this.#opts.logger.warn('node certificates revoked', { node_id: nodeId, serials });
      this.emit('revoked', nodeId, serials);
    }
    return serials;
  }

  /**
   * The certificate a connection presented, if it was issued here, is still
   * valid and names `nodeId`. Throws the error to refuse the connection with.
   */
  async checkPresented(serial: string, nodeId: string, certNodeId: string | undefined): Promise<CertificateRecord> {
    if (this.#revoked.has(serial)) throw fail('FM_ERR_CERT_REVOKED', `Certificate ${serial} has been revoked`, { serial });
    const rec = await this.#store.getCertificate(serial);
    if (!rec) throw fail('FM_ERR_CERT_UNKNOWN', `Certificate ${serial} was not issued by this gateway`, { serial });
    if (rec.revoked_at !== null) {
      this.#revoked.add(serial);
      throw fail('FM_ERR_CERT_REVOKED', `Certificate ${serial} has been revoked`, { serial });
    }
    if (certNodeId !== rec.node_id || nodeId !== rec.node_id) {
      throw fail('FM_ERR_NODE_ID_MISMATCH', `Node id "${nodeId}" differs from its certificate's "${certNodeId ?? ''}"`, {
        node_id: nodeId,
        certificate_node_id: certNodeId ?? null,
      });
    }
    return rec;
  }

  /** A new certificate for a connected node, from a CSR sent over its live connection; same signing key. */
  async renew(current: CertificateRecord, csrPem: string): Promise<Omit<PairIssuedFrame, 'v' | 'type'>> {
    if (this.#revoked.has(current.serial)) throw fail('FM_ERR_CERT_REVOKED', `Certificate ${current.serial} has been revoked`);
    const certificate = await issueNodeCertificate(this.#identity, csrPem, current.node_id, this.#opts.nodeCertTtlMs);
    return this.#record(current.node_id, certificate, current.signing_public_key);
  }

  /** A fresh challenge for a pairing connection. */
  static nonce(): string {
    return randomBytes(32).toString('base64');
  }
}

/** A public key in a form that compares equal whatever PEM line breaks it came with; undefined when it is not a key. */
function keyId(pem: string): string | undefined {
  try {
    return createPublicKey(pem).export({ type: 'spki', format: 'der' }).toString('base64');
  } catch {
    return undefined;
  }
}
