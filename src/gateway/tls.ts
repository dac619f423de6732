/**
 * The gateway's TLS identity: a CA (ECDSA P-256) created at first start in the
 * data dir, and a server certificate it signs for the node listener. Keys are
 * written 0600. Node certificates will be signed by the same CA at pairing.
 */
import { X509Certificate as NodeX509, webcrypto } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type * as X509 from '@peculiar/x509';

type CryptoKeyPair = webcrypto.CryptoKeyPair;
type CryptoKey = webcrypto.CryptoKey;

let x509: typeof X509;

/**
 * Loads @peculiar/x509 on first use: it resolves its services through
 * tsyringe, which needs the Reflect metadata API installed before it loads.
 */
async function loadX509(): Promise<typeof X509> {
  if (!x509) {
    await import('reflect-metadata');
    x509 = await import('@peculiar/x509');
    // Typed against the DOM's Crypto; Node's webcrypto implements it.
    x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
  }
  return x509;
}

const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export interface GatewayIdentity {
  caCertPem: string;
  /** Server certificate followed by the CA, as TLS sends the chain. */
  certChainPem: string;
  keyPem: string;
  /** SHA-256 fingerprint of the CA certificate, `AA:BB:…` as Node prints it. */
  caFingerprint: string;
}

function toPem(der: ArrayBuffer, label: string): string {
  const b64 = Buffer.from(der)
    .toString('base64')
    .replace(/(.{64})/g, '$1\n');
  return `-----BEGIN ${label}-----\n${b64.trimEnd()}\n-----END ${label}-----\n`;
}

function serial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0] ?? 0) & 0x7f;
  return Buffer.from(bytes).toString('hex');
}

function writeSecret(file: string, content: string): void {
  writeFileSync(file, content, { mode: 0o600 });
}

async function createCa(): Promise<{ certPem: string; keyPem: string }> {
  const x509 = await loadX509();
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
  const now = new Date();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=fieldmesh gateway CA ${hostname()}`,
    notBefore: new Date(now.getTime() - 60_000),
    notAfter: new Date(now.getTime() + 10 * 365 * 24 * 3600_000),
    signingAlgorithm: alg,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return { certPem: `${cert.toString('pem').trimEnd()}\n`, keyPem: toPem(pkcs8, 'PRIVATE KEY') };
}

async function importCaKey(keyPem: string): Promise<CryptoKey> {
  const b64 = keyPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
  return webcrypto.subtle.importKey('pkcs8', Buffer.from(b64, 'base64'), alg, false, ['sign']);
}

async function createServerCert(caCertPem: string, caKeyPem: string, names: string[]): Promise<{ certPem: string; keyPem: string }> {
  const x509 = await loadX509();
  const caCert = new x509.X509Certificate(caCertPem);
  const caKey = await importCaKey(caKeyPem);
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
  const now = new Date();
  const sans = names.map((n) => ({ type: /^[\d.]+$|:/.test(n) ? ('ip' as const) : ('dns' as const), value: n }));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: 'CN=fieldmesh gateway',
    issuer: caCert.subject,
    notBefore: new Date(now.getTime() - 60_000),
    notAfter: new Date(now.getTime() + 825 * 24 * 3600_000),
    signingAlgorithm: alg,
    publicKey: keys.publicKey,
    signingKey: caKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(sans),
      await x509.AuthorityKeyIdentifierExtension.create(caCert, false),
    ],
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return { certPem: `${cert.toString('pem').trimEnd()}\n`, keyPem: toPem(pkcs8, 'PRIVATE KEY') };
}

/** Loads the gateway CA and server certificate from `dataDir/tls`, creating what is missing. */
export async function loadOrCreateGatewayIdentity(dataDir: string, extraNames: string[] = []): Promise<GatewayIdentity> {
  const dir = join(dataDir, 'tls');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const caCertFile = join(dir, 'ca.crt');
  const caKeyFile = join(dir, 'ca.key');
  const certFile = join(dir, 'gateway.crt');
  const keyFile = join(dir, 'gateway.key');

  if (!existsSync(caCertFile) || !existsSync(caKeyFile)) {
    const ca = await createCa();
    writeSecret(caKeyFile, ca.keyPem);
    writeFileSync(caCertFile, ca.certPem);
  }
  const caCertPem = readFileSync(caCertFile, 'utf8');
  const wanted = extraNames.filter((n) => n && n !== '0.0.0.0' && n !== '::');
  // A certificate from an earlier start may lack an address the gateway binds now (e.g. a new --api host).
  const covers = (pem: string) => {
    const cert = new NodeX509(pem);
    return wanted.every((n) => (isIP(n) ? cert.checkIP(n) : cert.checkHost(n)) !== undefined);
  };
  if (!existsSync(certFile) || !existsSync(keyFile) || !covers(readFileSync(certFile, 'utf8'))) {
    const names = [
      ...new Set(['localhost', '127.0.0.1', '::1', hostname(), ...extraNames].filter((n) => n && n !== '0.0.0.0' && n !== '::')),
    ];
    const server = await createServerCert(caCertPem, readFileSync(caKeyFile, 'utf8'), names);
    writeSecret(keyFile, server.keyPem);
    writeFileSync(certFile, server.certPem);
  }
  return {
    caCertPem,
    certChainPem: readFileSync(certFile, 'utf8') + caCertPem,
    keyPem: readFileSync(keyFile, 'utf8'),
    caFingerprint: new NodeX509(caCertPem).fingerprint256,
  };
}
