/**
 * The node's side of pairing (see protocol/pairing.ts) and the TLS identity it
 * keeps in `<data-dir>/tls/`: its ECDSA P-256 key, the certificate the gateway
 * CA issued for it, the CA itself and the gateway's task-signing key, all
 * written 0600.
 */
import { createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DetailedPeerCertificate, TLSSocket } from 'node:tls';
import WebSocket from 'ws';
import { formatHostPort, type HostPort } from '../core/address.js';
import { FieldmeshError, isErrorCode } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { decodePairingFrame, encodeFrame } from '../protocol/codec.js';
import {
  codeMatchesFingerprint,
  PAIRING_ALPN,
  PAIRING_PATH,
  type PairIssuedFrame,
  pairingCodeId,
  pairingFingerprint,
  pairingKey,
  pairingProof,
  parsePairingCode,
  signingProof,
} from '../protocol/pairing.js';
import { type CertificateInfo, createNodeCsr, fingerprintHex, generateTlsKeyPem, inspectCertificate } from '../protocol/pki.js';
import type { SigningKeys } from '../protocol/signing.js';

export const TLS_DIR = 'tls';
export const NODE_KEY_FILE = 'node.key';
export const NODE_CERT_FILE = 'node.crt';
export const GATEWAY_CA_FILE = 'ca.crt';
export const GATEWAY_SIGNING_KEY_FILE = 'gateway-signing.pub';

/** Everything a paired node needs to connect over mutual TLS and check the TASK frames it is sent. */
export interface NodeIdentity {
  keyPem: string;
  certPem: string;
  caPem: string;
  /** The gateway's Ed25519 public key: TASK frames must verify with it. */
  gatewaySigningKeyPem: string;
  cert: CertificateInfo;
}

function writeSecret(file: string, content: string): void {
  // Written aside and renamed, so a crash never leaves half a key or certificate behind.
  writeFileSync(`${file}.tmp`, content, { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
}

/** The node's TLS key, created (0600) on first use so a pairing that waits for an operator survives restarts. */
export function loadOrCreateTlsKey(dataDir: string): string {
  const dir = join(dataDir, TLS_DIR);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, NODE_KEY_FILE);
  if (!existsSync(file)) writeSecret(file, generateTlsKeyPem());
  return readFileSync(file, 'utf8');
}

/** The identity pairing left in the data dir, or undefined when the node has no certificate yet. */
export function loadNodeIdentity(dataDir: string): NodeIdentity | undefined {
  const dir = join(dataDir, TLS_DIR);
  const certFile = join(dir, NODE_CERT_FILE);
  if (!existsSync(certFile)) return undefined;
  try {
    const certPem = readFileSync(certFile, 'utf8');
    return {
      keyPem: readFileSync(join(dir, NODE_KEY_FILE), 'utf8'),
      certPem,
      caPem: readFileSync(join(dir, GATEWAY_CA_FILE), 'utf8'),
      gatewaySigningKeyPem: readFileSync(join(dir, GATEWAY_SIGNING_KEY_FILE), 'utf8'),
      cert: inspectCertificate(certPem),
    };
  } catch (err) {
    throw new FieldmeshError(
      'FM_ERR_NOT_PAIRED',
      `${dir} holds an incomplete or unreadable identity (${(err as Error).message}); pair the node again with --pair CODE`,
      { details: { dir }, cause: err },
    );
  }
}

/** Writes what pairing returned; the certificate goes last, since its presence means "paired". */
export function saveNodeIdentity(
  dataDir: string,
  parts: { keyPem: string; certPem: string; caPem?: string; gatewaySigningKeyPem?: string },
): NodeIdentity {
  const dir = join(dataDir, TLS_DIR);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (parts.caPem !== undefined) writeSecret(join(dir, GATEWAY_CA_FILE), parts.caPem);
  if (parts.gatewaySigningKeyPem !== undefined) writeSecret(join(dir, GATEWAY_SIGNING_KEY_FILE), parts.gatewaySigningKeyPem);
  writeSecret(join(dir, NODE_KEY_FILE), parts.keyPem);
  writeSecret(join(dir, NODE_CERT_FILE), parts.certPem);
  const identity = loadNodeIdentity(dataDir);
  if (!identity) throw new FieldmeshError('FM_ERR_INTERNAL', `could not write the node identity to ${dir}`);
  return identity;
}

/**
 * Checks a certificate the gateway issued to this node: its CN is the node id,
 * it holds our key, and the CA signed it.
 */
export function checkIssuedCertificate(certPem: string, caPem: string, nodeId: string, keyPem: string): void {
  const bad = (why: string) => new FieldmeshError('FM_ERR_GATEWAY_IDENTITY', `The certificate the gateway issued ${why}`);
  let cert: X509Certificate;
  let ca: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
    ca = new X509Certificate(caPem);
  } catch {
    throw bad('is not a PEM certificate');
  }
  if (inspectCertificate(certPem).commonName !== nodeId) throw bad(`does not name node "${nodeId}"`);
  if (!cert.checkPrivateKey(createPrivateKey(keyPem))) throw bad('is not for this node key');
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) throw bad('is not signed by the gateway CA');
}

/** Walks the chain TLS handed us to its self-issued end, the CA the gateway signs its server certificate with. */
export function rootOf(peer: DetailedPeerCertificate | undefined): DetailedPeerCertificate | undefined {
  if (!peer?.fingerprint256) return undefined;
  let cert = peer;
  for (let i = 0; i < 16; i++) {
    const next = cert.issuerCertificate as DetailedPeerCertificate | undefined;
    if (!next?.fingerprint256 || next === cert || next.fingerprint256 === cert.fingerprint256) break;
    cert = next;
  }
  return cert;
}

/**
 * With no CA to verify against yet, checks by hand that the gateway's server
 * certificate is signed by the CA it presents (TLS already proved the gateway
 * holds the server key), and returns that CA's fingerprint.
 */
function presentedCa(peer: DetailedPeerCertificate | undefined): { fingerprint: string; pem: string } | undefined {
  const root = rootOf(peer);
  if (!peer?.raw || !root?.raw || root === peer) return undefined;
  try {
    const ca = new X509Certificate(root.raw);
    const leaf = new X509Certificate(peer.raw);
    if (!leaf.checkIssued(ca) || !leaf.verify(ca.publicKey)) return undefined;
    return { fingerprint: ca.fingerprint256, pem: ca.toString() };
  } catch {
    return undefined;
  }
}

export interface PairingRequestOptions {
  gateway: HostPort;
  nodeId: string;
  name?: string;
  platform?: string;
  /** A code from `fieldmesh pair`; without one the node asks an operator for approval. */
  code?: string;
  /** For approval: the gateway CA to verify against. Without it the CA is trusted on first use and logged. */
  caPem?: string;
  tlsKeyPem: string;
  signingKeys: SigningKeys;
  logger: Logger;
  /** Called once the gateway says the request waits for an operator, with the fingerprint to compare. */
  onPending?: (fingerprint: string) => void;
}

/** A failure worth retrying (the gateway could not be reached), as opposed to a refusal. */
class Unreachable extends Error {}

/**
 * Runs the pairing exchange until the gateway issues a certificate or refuses
 * (a FieldmeshError with the gateway's code); retries while it cannot be
 * reached, with backoff.
 */
export async function requestCertificate(opts: PairingRequestOptions, retry = { minMs: 250, maxMs: 10_000 }): Promise<PairIssuedFrame> {
  const parsed = opts.code === undefined ? undefined : parsePairingCode(opts.code);
  if (opts.code !== undefined && !parsed) {
    throw new FieldmeshError('FM_ERR_INVALID_OPTION', 'node.pairingCode: not a pairing code (get one with `fieldmesh pair`)', {
      details: { option: 'node.pairingCode' },
    });
  }
  const csr = await createNodeCsr(opts.nodeId, opts.tlsKeyPem);
  for (let attempt = 0; ; attempt++) {
    try {
      return await pairOnce(opts, csr);
    } catch (err) {
      if (!(err instanceof Unreachable)) throw err;
      const delay = Math.round(Math.random() * Math.min(retry.maxMs, retry.minMs * 2 ** Math.min(attempt, 20)));
      opts.logger.warn('cannot reach the gateway to pair; retrying', {
        gateway: formatHostPort(opts.gateway),
        error: err.message,
        in_ms: delay,
      });
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

function pairOnce(opts: PairingRequestOptions, csr: string): Promise<PairIssuedFrame> {
  const parsed = opts.code === undefined ? undefined : parsePairingCode(opts.code);
  const signingPublicKey = opts.signingKeys.publicKeyPem;
  const fingerprint = pairingFingerprint(
    createPublicKey(opts.tlsKeyPem).export({ type: 'spki', format: 'der' }),
    createPublicKey(signingPublicKey).export({ type: 'spki', format: 'der' }),
  );
  return new Promise((resolve, reject) => {
    // ws hands TLS options such as ALPNProtocols through to tls.connect; its types do not list them.
    const options = { ALPNProtocols: [PAIRING_ALPN], maxPayload: 64 * 1024, handshakeTimeout: 10_000 } as WebSocket.ClientOptions;
    if (opts.caPem) {
      options.ca = opts.caPem;
      // The gateway is often reached by IP: the chain is what is checked, not the name.
      options.checkServerIdentity = (() => undefined) as unknown as WebSocket.ClientOptions['checkServerIdentity'];
    } else {
      options.rejectUnauthorized = false;
    }
    const ws = new WebSocket(`wss://${formatHostPort(opts.gateway)}${PAIRING_PATH}`, options);
    let settled = false;
    let lastError: Error | undefined;
    let caFingerprint: string | undefined;
    const finish = (err: Error | undefined, issued?: PairIssuedFrame) => {
      if (settled) return;
      settled = true;
      if (ws.readyState !== WebSocket.CLOSED) ws.terminate();
      if (err) reject(err);
      else resolve(issued as PairIssuedFrame);
    };
    ws.on('upgrade', (res) => {
      const peer = (res.socket as TLSSocket).getPeerCertificate(true);
      const ca = presentedCa(peer);
      caFingerprint = ca?.fingerprint;
      if (!ca) return finish(gatewayIdentity('the gateway presented no CA that signed its certificate'));
      if (parsed && !codeMatchesFingerprint(parsed, ca.fingerprint)) {
        return finish(gatewayIdentity(`the gateway CA ${ca.fingerprint} is not the one the pairing code names`));
      }
      if (!parsed && !opts.caPem) {
        opts.logger.warn('trusting the gateway CA on first use; compare its fingerprint with `fieldmesh gateway` output', {
          ca_fingerprint: ca.fingerprint,
        });
      }
    });
    ws.on('message', (data) => {
      const decoded = decodePairingFrame(Buffer.isBuffer(data) ? data : Buffer.from(String(data)), 64 * 1024);
      if (!decoded.ok) return finish(new FieldmeshError('FM_ERR_MALFORMED_FRAME', `pairing: ${decoded.error.message}`));
      const frame = decoded.frame;
      switch (frame.type) {
        case 'PAIR_CHALLENGE': {
          const body: Record<string, unknown> = {
            node_id: opts.nodeId,
            mode: parsed ? 'code' : 'approval',
            csr,
            signing_public_key: signingPublicKey,
            signing_proof: signingProof(opts.signingKeys.privateKey, frame.nonce, opts.nodeId),
          };
          if (parsed) {
            body.code_id = pairingCodeId(parsed.secret);
            body.proof = pairingProof(pairingKey(parsed.secret), frame.nonce, opts.nodeId, csr, signingPublicKey);
          }
          if (opts.name) body.name = opts.name;
          if (opts.platform) body.platform = opts.platform;
          ws.send(encodeFrame('PAIR_REQUEST', body));
          return;
        }
        case 'PAIR_PENDING':
          opts.onPending?.(fingerprint);
          return;
        case 'PAIR_ISSUED':
          try {
            if (
              caFingerprint === undefined ||
              fingerprintHex(new X509Certificate(frame.ca_certificate).fingerprint256) !== fingerprintHex(caFingerprint)
            ) {
              throw gatewayIdentity('the CA in PAIR_ISSUED is not the one the gateway presented');
            }
            checkIssuedCertificate(frame.certificate, frame.ca_certificate, opts.nodeId, opts.tlsKeyPem);
            createPublicKey(frame.gateway_signing_key);
          } catch (err) {
            return finish(
              err instanceof FieldmeshError ? err : gatewayIdentity(`sent an unusable PAIR_ISSUED (${(err as Error).message})`),
            );
          }
          return finish(undefined, frame);
        case 'ERROR':
          return finish(new FieldmeshError(isErrorCode(frame.code) ? frame.code : 'FM_ERR_PAIRING_REFUSED', frame.message));
        default:
          return finish(new FieldmeshError('FM_ERR_MALFORMED_FRAME', `pairing: unexpected ${frame.type} frame`));
      }
    });
    ws.on('error', (err) => {
      lastError = err;
    });
    ws.on('close', (code, reason) => {
      finish(new Unreachable(lastError?.message ?? `pairing connection closed with ${code} ${reason.toString()}`));
    });
  });
}

function gatewayIdentity(message: string): FieldmeshError {
  return new FieldmeshError('FM_ERR_GATEWAY_IDENTITY', `Refusing to pair: ${message}`);
}
