/**
 * The X.509 pieces both roles share: ECDSA P-256 keys, PEM encoding, node
 * certificate requests (CN and SAN = node id) and reading a certificate's
 * subject, serial and validity. Certificates are built with @peculiar/x509 and
 * read with node:crypto's X509Certificate.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, X509Certificate as NodeX509, webcrypto } from 'node:crypto';
import type * as X509 from '@peculiar/x509';

type CryptoKey = webcrypto.CryptoKey;

export const EC_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

let x509: typeof X509 | undefined;

/**
 * Loads @peculiar/x509 on first use: it resolves its services through
 * tsyringe, which needs the Reflect metadata API installed before it loads.
 */
export async function loadX509(): Promise<typeof X509> {
  if (!x509) {
    await import('reflect-metadata');
    const lib = await import('@peculiar/x509');
    // Typed against the DOM's Crypto; Node's webcrypto implements it.
    lib.cryptoProvider.set(webcrypto as unknown as Parameters<typeof lib.cryptoProvider.set>[0]);
    x509 = lib;
  }
  return x509;
}

export function toPem(der: ArrayBuffer | Uint8Array, label: string): string {
  const b64 = Buffer.from(der as Uint8Array)
    .toString('base64')
    .replace(/(.{64})/g, '$1\n');
  return `-----BEGIN ${label}-----\n${b64.trimEnd()}\n-----END ${label}-----\n`;
}

/** The DER bytes of the first PEM block. */
export function pemToDer(pem: string): Buffer {
  const m = /-----BEGIN [^-]+-----([\s\S]*?)-----END [^-]+-----/.exec(pem);
  return Buffer.from((m?.[1] ?? pem).replace(/\s+/g, ''), 'base64');
}

/** A fresh ECDSA P-256 private key as PKCS#8 PEM, for a TLS identity. */
export function generateTlsKeyPem(): string {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
}

/** Imports a PKCS#8 ECDSA P-256 key for WebCrypto, as @peculiar/x509 needs it. */
export async function importEcKeyPair(privateKeyPem: string): Promise<{ privateKey: CryptoKey; publicKey: CryptoKey }> {
  const key = createPrivateKey(privateKeyPem);
  const spki = createPublicKey(key).export({ type: 'spki', format: 'der' });
  const pkcs8 = key.export({ type: 'pkcs8', format: 'der' });
  const [privateKey, publicKey] = await Promise.all([
    webcrypto.subtle.importKey('pkcs8', pkcs8, EC_ALGORITHM, false, ['sign']),
    webcrypto.subtle.importKey('spki', spki, EC_ALGORITHM, true, ['verify']),
  ]);
  return { privateKey, publicKey };
}

/** A PKCS#10 request for a node certificate: CN and DNS SAN are the node id. */
export async function createNodeCsr(nodeId: string, privateKeyPem: string): Promise<string> {
  const lib = await loadX509();
  const keys = await importEcKeyPair(privateKeyPem);
  const csr = await lib.Pkcs10CertificateRequestGenerator.create({
    name: [{ CN: [nodeId] }],
    keys,
    signingAlgorithm: EC_ALGORITHM,
    extensions: [new lib.SubjectAlternativeNameExtension([{ type: 'dns', value: nodeId }])],
  });
  return `${csr.toString('pem').trimEnd()}\n`;
}

export interface CertificateInfo {
  /** The subject's common name. */
  commonName: string | undefined;
  /** `DNS:` names of the subject alternative name extension. */
  dnsNames: string[];
  /** Serial number, upper-case hex without leading zeros, as Node prints it. */
  serial: string;
  notBefore: Date;
  notAfter: Date;
  /** SHA-256 fingerprint, `AA:BB:…`. */
  fingerprint256: string;
}

/** Reads what fieldmesh needs from a certificate (PEM or DER). */
export function inspectCertificate(cert: string | Buffer): CertificateInfo {
  const c = new NodeX509(cert);
  return {
    commonName: /^CN=(.*)$/m.exec(c.subject)?.[1],
    dnsNames: (c.subjectAltName ?? '')
      .split(', ')
      .filter((n) => n.startsWith('DNS:'))
      .map((n) => n.slice(4)),
    serial: normalizeSerial(c.serialNumber),
    notBefore: new Date(c.validFrom),
    notAfter: new Date(c.validTo),
    fingerprint256: c.fingerprint256,
  };
}

/** Serials compare as upper-case hex without leading zeros, whatever printed them. */
export function normalizeSerial(serial: string): string {
  return serial
    .replace(/[^0-9a-fA-F]/g, '')
    .toUpperCase()
    .replace(/^0+(?=.)/, '');
}

/** `AA:BB:…` or `aabb…` → `aabb…`, for comparing fingerprints however they were written. */
export function fingerprintHex(fingerprint: string): string {
  return fingerprint.replace(/:/g, '').toLowerCase();
}
