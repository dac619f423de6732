/**
 * Ed25519 signing and verification for every signature fieldmesh makes or checks (tasks, results, deploys,
 * pairing proofs, discovery messages). Keys stay `node:crypto` KeyObjects everywhere; the operation itself runs in
 * libsodium (the optional `sodium-native` package, prebuilt for the common platforms) when it loads, about twice as
 * fast as OpenSSL 3's one-shot calls here, and in `node:crypto` otherwise. Both produce and accept the same RFC 8032
 * signatures, so a node on either backend talks to a gateway on either. `FIELDMESH_ED25519=node` forces
 * `node:crypto`.
 */
import { createPublicKey, type KeyObject, sign as nodeSign, verify as nodeVerify } from 'node:crypto';
import { createRequire } from 'node:module';

interface Sodium {
  crypto_sign_detached(signature: Buffer, message: Buffer, secretKey: Buffer): void;
  crypto_sign_verify_detached(signature: Buffer, message: Buffer, publicKey: Buffer): boolean;
  crypto_sign_seed_keypair(publicKey: Buffer, secretKey: Buffer, seed: Buffer): void;
}

export const Ed25519Backend = {
  Libsodium: 'libsodium',
  NodeCrypto: 'node:crypto',
} as const;
export type Ed25519Backend = (typeof Ed25519Backend)[keyof typeof Ed25519Backend];

function loadSodium(): Sodium | undefined {
  if (process.env.FIELDMESH_ED25519 === 'node') return undefined;
  try {
    const sodium = createRequire(import.meta.url)('sodium-native') as Sodium;
    // A self-check before trusting the binding: a known key pair signs, and the signature checks out in node:crypto.
    const seed = Buffer.alloc(32, 1);
    const pk = Buffer.alloc(32);
    const sk = Buffer.alloc(64);
    sodium.crypto_sign_seed_keypair(pk, sk, seed);
    const message = Buffer.from('fieldmesh-ed25519-self-check');
    const signature = Buffer.alloc(64);
    sodium.crypto_sign_detached(signature, message, sk);
    const spki = Buffer.concat([SPKI_PREFIX, pk]);
    const key = createPublicKey({ key: spki, format: 'der', type: 'spki' });
    if (!nodeVerify(null, message, key, signature)) return undefined;
    if (!sodium.crypto_sign_verify_detached(signature, message, pk)) return undefined;
    return sodium;
  } catch {
    return undefined;
  }
}

/** DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32-byte key follows it. */
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

const sodium = loadSodium();

/** Which implementation signs and verifies in this process. */
export const ed25519Backend: Ed25519Backend = sodium ? Ed25519Backend.Libsodium : Ed25519Backend.NodeCrypto;

const secretKeys = new WeakMap<KeyObject, Buffer>();
const publicKeys = new WeakMap<KeyObject, Buffer>();

function isEd25519(key: KeyObject): boolean {
  return key.asymmetricKeyType === 'ed25519';
}

/** libsodium's 64-byte secret key (seed and public key) for a private KeyObject, made once per key. */
function secretKeyOf(key: KeyObject, s: Sodium): Buffer {
  let sk = secretKeys.get(key);
  if (!sk) {
    const jwk = key.export({ format: 'jwk' });
    const seed = Buffer.from(jwk.d ?? '', 'base64url');
    const pk = Buffer.alloc(32);
    sk = Buffer.alloc(64);
    s.crypto_sign_seed_keypair(pk, sk, seed);
    secretKeys.set(key, sk);
  }
  return sk;
}

function publicKeyBytesOf(key: KeyObject): Buffer {
  let pk = publicKeys.get(key);
  if (!pk) {
    pk = Buffer.from(key.export({ format: 'jwk' }).x ?? '', 'base64url');
    publicKeys.set(key, pk);
  }
  return pk;
}

/** Signs `data` with an Ed25519 private key: the 64-byte signature. */
export function ed25519Sign(data: Buffer, privateKey: KeyObject): Buffer {
  if (!sodium || privateKey.type !== 'private' || !isEd25519(privateKey)) return nodeSign(null, data, privateKey);
  const signature = Buffer.allocUnsafe(64);
  sodium.crypto_sign_detached(signature, data, secretKeyOf(privateKey, sodium));
  return signature;
}

/**
 * Checks an Ed25519 signature. `publicKey` is a KeyObject or a PEM string; a PEM is parsed on every call, so hot
 * paths pass a cached KeyObject. Throws only where `node:crypto.verify` would (a key that is not a key).
 */
export function ed25519Verify(data: Buffer, publicKey: KeyObject | string, signature: Buffer): boolean {
  const key = typeof publicKey === 'string' ? createPublicKey(publicKey) : publicKey;
  if (!sodium || key.type !== 'public' || !isEd25519(key)) return nodeVerify(null, data, key, signature);
  if (signature.length !== 64) return false;
  const pk = publicKeyBytesOf(key);
  if (pk.length !== 32) return false;
  return sodium.crypto_sign_verify_detached(signature, data, pk);
}
