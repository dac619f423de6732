/**
 * Pairing: how a node without a certificate gets one. It runs over its own TLS
 * connection (ALPN `fieldmesh-pair`, path /v1/pair) that needs no client
 * certificate and serves nothing else:
 *
 * ```
 * gateway → PAIR_CHALLENGE { nonce }
 * node    → PAIR_REQUEST   { node_id, mode, code_id?, proof?, csr, signing_public_key, signing_proof }
 * gateway → PAIR_PENDING   (approval mode, until an operator decides)
 * gateway → PAIR_ISSUED    { certificate, ca_certificate, gateway_signing_key } | ERROR { code }
 * ```
 *
 * A pairing code is `SSSS-SSSS-SSSS-SSSS-FFFFFFFFFFFFFFFFFFFF`: a 16-character
 * secret and the first 20 hex digits of the SHA-256 fingerprint of the gateway
 * CA, which the node checks against the certificate chain the gateway
 * presents. The secret never crosses the wire: the node sends an id derived
 * from it and an HMAC, keyed by another value derived from it, over the
 * gateway's fresh nonce, its node id, its CSR and its Ed25519 signing key
 * (a challenge-response in the manner of RFC 2104 keyed MACs). The gateway
 * stores only the derived id and key.
 */
import { createHash, createHmac, type KeyObject, randomInt, timingSafeEqual } from 'node:crypto';
import { type Static, Type } from '@sinclair/typebox';
import { ed25519Sign, ed25519Verify } from './ed25519.js';
import { ErrorFrame, NodeId } from './frames.js';
import { fingerprintHex } from './pki.js';

export const PAIRING_ALPN = 'fieldmesh-pair';
export const PAIRING_PATH = '/v1/pair';

/** Unambiguous upper-case letters and digits (no 0/O, 1/I/L, U). */
const ALPHABET = 'ABCDEFGHJKMNPQRSTVWXYZ23456789';
const SECRET_LENGTH = 16;
const FINGERPRINT_DIGITS = 20;

export interface ParsedPairingCode {
  /** The secret, upper case, without dashes. */
  secret: string;
  /** Leading hex digits (lower case) of the gateway CA's SHA-256 fingerprint. */
  caFingerprintPrefix: string;
}

/** A new random secret for a pairing code. */
export function newPairingSecret(): string {
  let s = '';
  for (let i = 0; i < SECRET_LENGTH; i++) s += ALPHABET[randomInt(ALPHABET.length)];
  return s;
}

/** The code an operator hands to a node: the secret in groups of four, then the CA fingerprint part. */
export function formatPairingCode(secret: string, caFingerprint: string): string {
  const groups = secret.match(/.{1,4}/g) ?? [];
  return [...groups, fingerprintHex(caFingerprint).slice(0, FINGERPRINT_DIGITS).toUpperCase()].join('-');
}

/** Reads a code as typed (any case, spaces ignored); undefined if it is not one. */
export function parsePairingCode(code: string): ParsedPairingCode | undefined {
  const parts = code.replace(/\s+/g, '').toUpperCase().split('-');
  const fp = parts.pop() ?? '';
  const secret = parts.join('');
  if (!new RegExp(`^[0-9A-F]{${FINGERPRINT_DIGITS}}$`).test(fp)) return undefined;
  if (secret.length !== SECRET_LENGTH || [...secret].some((ch) => !ALPHABET.includes(ch))) return undefined;
  return { secret, caFingerprintPrefix: fp.toLowerCase() };
}

/** Does a CA fingerprint (`AA:BB:…`) match the part a code carries? */
export function codeMatchesFingerprint(code: ParsedPairingCode, caFingerprint: string): boolean {
  return fingerprintHex(caFingerprint).startsWith(code.caFingerprintPrefix);
}

/** The public id of a code: how the gateway finds it without learning the secret. */
export function pairingCodeId(secret: string): string {
  return createHash('sha256').update(`fieldmesh pairing id\n${secret}`).digest('hex').slice(0, 32);
}

/** The HMAC key derived from a code's secret; the gateway stores this, never the code. */
export function pairingKey(secret: string): Buffer {
  return createHash('sha256').update(`fieldmesh pairing key\n${secret}`).digest();
}

function proofInput(nonce: string, nodeId: string, csr: string, signingPublicKey: string): string {
  return `fieldmesh-pair-v1\n${nonce}\n${nodeId}\n${csr}\n${signingPublicKey}`;
}

/** HMAC-SHA256 (base64) proving the node holds the code, bound to the gateway's nonce and the node's keys. */
export function pairingProof(key: Buffer, nonce: string, nodeId: string, csr: string, signingPublicKey: string): string {
  return createHmac('sha256', key)
    .update(proofInput(nonce, nodeId, csr, signingPublicKey))
    .digest('base64');
}

export function checkPairingProof(
  key: Buffer,
  proof: string,
  nonce: string,
  nodeId: string,
  csr: string,
  signingPublicKey: string,
): boolean {
  const want = Buffer.from(pairingProof(key, nonce, nodeId, csr, signingPublicKey), 'base64');
  const got = Buffer.from(proof, 'base64');
  return got.length === want.length && timingSafeEqual(got, want);
}

function signingProofInput(nonce: string, nodeId: string): Buffer {
  return Buffer.from(`fieldmesh-pair-signing-v1\n${nonce}\n${nodeId}`, 'utf8');
}

/** Ed25519 signature over the nonce: the node holds the signing key it asks the gateway to bind. */
export function signingProof(privateKey: KeyObject, nonce: string, nodeId: string): string {
  return ed25519Sign(signingProofInput(nonce, nodeId), privateKey).toString('base64');
}

export function checkSigningProof(publicKeyPem: string, proof: string, nonce: string, nodeId: string): boolean {
  try {
    return ed25519Verify(signingProofInput(nonce, nodeId), publicKeyPem, Buffer.from(proof, 'base64'));
  } catch {
    return false;
  }
}

const Pem = (max: number) => Type.String({ minLength: 1, maxLength: max });

export const PairChallengeFrame = Type.Object({
  v: Type.Integer({ minimum: 1 }),
  type: Type.Literal('PAIR_CHALLENGE'),
  nonce: Type.String({ minLength: 16, maxLength: 128 }),
  gateway_id: Type.String({ maxLength: 256 }),
});

export const PairRequestFrame = Type.Object({
  v: Type.Integer({ minimum: 1 }),
  type: Type.Literal('PAIR_REQUEST'),
  node_id: NodeId,
  mode: Type.Union([Type.Literal('code'), Type.Literal('approval')]),
  code_id: Type.Optional(Type.String({ pattern: '^[0-9a-f]{32}$' })),
  proof: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
  csr: Pem(8192),
  signing_public_key: Pem(4096),
  signing_proof: Type.String({ minLength: 1, maxLength: 512 }),
  name: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
  platform: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
});

export const PairPendingFrame = Type.Object({
  v: Type.Integer({ minimum: 1 }),
  type: Type.Literal('PAIR_PENDING'),
  node_id: NodeId,
});

export const PairIssuedFrame = Type.Object({
  v: Type.Integer({ minimum: 1 }),
  type: Type.Literal('PAIR_ISSUED'),
  node_id: NodeId,
  certificate: Pem(16384),
  ca_certificate: Pem(16384),
  /** The gateway's Ed25519 public key (SPKI PEM): TASK frames are signed with it. */
  gateway_signing_key: Pem(4096),
  serial: Type.String({ minLength: 1, maxLength: 64 }),
  not_after: Type.String(),
});

export const PairingFrameSchemas = {
  PAIR_CHALLENGE: PairChallengeFrame,
  PAIR_REQUEST: PairRequestFrame,
  PAIR_PENDING: PairPendingFrame,
  PAIR_ISSUED: PairIssuedFrame,
  ERROR: ErrorFrame,
} as const;

export type PairChallengeFrame = Static<typeof PairChallengeFrame>;
export type PairRequestFrame = Static<typeof PairRequestFrame>;
export type PairPendingFrame = Static<typeof PairPendingFrame>;
export type PairIssuedFrame = Static<typeof PairIssuedFrame>;
export type PairingFrame = PairChallengeFrame | PairRequestFrame | PairPendingFrame | PairIssuedFrame | ErrorFrame;
export type PairingFrameType = keyof typeof PairingFrameSchemas;

/**
 * What an operator compares before approving: SHA-256 over the node's TLS
 * public key and its signing key (both SPKI DER), as five groups of four hex
 * digits. The node logs the same value when it asks.
 */
export function pairingFingerprint(tlsSpkiDer: Uint8Array, signingSpkiDer: Uint8Array): string {
  const hex = createHash('sha256').update(tlsSpkiDer).update(signingSpkiDer).digest('hex').slice(0, 20);
  return (hex.match(/.{4}/g) ?? []).join('-');
}
