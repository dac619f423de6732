/**
 * The gateway's TLS identity: a CA (ECDSA P-256) created at first start in the
 * data dir, a server certificate it signs for the node listener, and the
 * Ed25519 key TASK frames are signed with. Keys are written 0600. Node
 * certificates (CN and SAN = node id, client auth) are signed by the same CA
 * at pairing and renewal.
 */
import { type KeyObject, X509Certificate as NodeX509, webcrypto } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { FieldmeshError } from '../core/errors.js';
import { GATEWAY_CLIENT_CN } from '../protocol/peers.js';
import { EC_ALGORITHM, loadX509, pemToDer, toPem } from '../protocol/pki.js';
import { generateSigningKeys, loadSigningKeys } from '../protocol/signing.js';

type CryptoKeyPair = webcrypto.CryptoKeyPair;
type CryptoKey = webcrypto.CryptoKey;

const alg = EC_ALGORITHM;

export interface GatewayIdentity {
  caCertPem: string;
  /** Server certificate followed by the CA, as TLS sends the chain. */
  certChainPem: string;
  keyPem: string;
  /** SHA-256 fingerprint of the CA certificate, `AA:BB:…` as Node prints it. */
  caFingerprint: string;
  caKeyPem: string;
  /** Ed25519 key the gateway signs TASK frames (and deployed bundles) with. */
  signingKey: KeyObject;
  signingPublicKeyPem: string;
  /** Client certificate (CN {@link GATEWAY_CLIENT_CN}, client auth) the gateway dials listen-mode nodes with, and its key. */
  clientCertPem: string;
  clientKeyPem: string;
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
  return webcrypto.subtle.importKey('pkcs8', pemToDer(keyPem), alg, false, ['sign']);
}

/** A certificate from the gateway CA: the server certificate (names given) or the client one (names null). */
async function createGatewayCert(
  caCertPem: string,
  caKeyPem: string,
  names: string[] | null,
): Promise<{ certPem: string; keyPem: string }> {
  const x509 = await loadX509();
  const caCert = new x509.X509Certificate(caCertPem);
  const caKey = await importCaKey(caKeyPem);
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
  const now = new Date();
  const usage = names
    ? [
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension(
          names.map((n) => ({ type: /^[\d.]+$|:/.test(n) ? ('ip' as const) : ('dns' as const), value: n })),
        ),
      ]
    : [
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
      ];
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: names ? 'CN=fieldmesh gateway' : [{ CN: [GATEWAY_CLIENT_CN] }],
    issuer: caCert.subject,
    notBefore: new Date(now.getTime() - 60_000),
    notAfter: new Date(now.getTime() + 825 * 24 * 3600_000),
    signingAlgorithm: alg,
    publicKey: keys.publicKey,
    signingKey: caKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      ...usage,
      await x509.AuthorityKeyIdentifierExtension.create(caCert, false),
    ],
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return { certPem: `${cert.toString('pem').trimEnd()}\n`, keyPem: toPem(pkcs8, 'PRIVATE KEY') };
}

export const GATEWAY_SIGNING_KEY_FILE = 'gateway-signing.key';

/** Loads the gateway CA, server certificate and signing key from `dataDir/tls`, creating what is missing. */
export async function loadOrCreateGatewayIdentity(dataDir: string, extraNames: string[] = []): Promise<GatewayIdentity> {
  const dir = join(dataDir, 'tls');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const caCertFile = join(dir, 'ca.crt');
  const caKeyFile = join(dir, 'ca.key');
  const certFile = join(dir, 'gateway.crt');
  const keyFile = join(dir, 'gateway.key');
  const signingKeyFile = join(dir, GATEWAY_SIGNING_KEY_FILE);
  const clientCertFile = join(dir, 'gateway-client.crt');
  const clientKeyFile = join(dir, 'gateway-client.key');

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
    const server = await createGatewayCert(caCertPem, readFileSync(caKeyFile, 'utf8'), names);
    writeSecret(keyFile, server.keyPem);
    writeFileSync(certFile, server.certPem);
  }
  // The client certificate listen-mode nodes require of the gateway; renewed a month before it expires.
  const fresh = (pem: string) => Date.parse(new NodeX509(pem).validTo) > Date.now() + 30 * 24 * 3600_000;
  if (!existsSync(clientCertFile) || !existsSync(clientKeyFile) || !fresh(readFileSync(clientCertFile, 'utf8'))) {
    const client = await createGatewayCert(caCertPem, readFileSync(caKeyFile, 'utf8'), null);
    writeSecret(clientKeyFile, client.keyPem);
    writeFileSync(clientCertFile, client.certPem);
  }
  if (!existsSync(signingKeyFile)) writeSecret(signingKeyFile, generateSigningKeys().privateKeyPem);
  const signing = loadSigningKeys(readFileSync(signingKeyFile, 'utf8'));
  return {
    caCertPem,
    certChainPem: readFileSync(certFile, 'utf8') + caCertPem,
    keyPem: readFileSync(keyFile, 'utf8'),
    caFingerprint: new NodeX509(caCertPem).fingerprint256,
    caKeyPem: readFileSync(caKeyFile, 'utf8'),
    signingKey: signing.privateKey,
    signingPublicKeyPem: signing.publicKeyPem,
    clientCertPem: readFileSync(clientCertFile, 'utf8'),
    clientKeyPem: readFileSync(clientKeyFile, 'utf8'),
  };
}

export interface NodeCertificateParams {
  caCertPem: string;
  caKeyPem: string;
  nodeId: string;
  /** The node's public key: a CryptoKey, or SPKI DER. */
  publicKey: CryptoKey | Uint8Array;
  notBefore: Date;
  notAfter: Date;
}

/** Signs a node certificate (CN and DNS SAN = node id, client auth only) with the gateway CA. */
export async function signNodeCertificate(p: NodeCertificateParams): Promise<string> {
  const x509 = await loadX509();
  const caCert = new x509.X509Certificate(p.caCertPem);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: [{ CN: [p.nodeId] }],
    issuer: caCert.subject,
    notBefore: p.notBefore,
    notAfter: p.notAfter,
    signingAlgorithm: alg,
    publicKey: p.publicKey,
    signingKey: await importCaKey(p.caKeyPem),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: p.nodeId }]),
      await x509.AuthorityKeyIdentifierExtension.create(caCert, false),
    ],
  });
  return `${cert.toString('pem').trimEnd()}\n`;
}

const refused = (message: string) => new FieldmeshError('FM_ERR_PAIRING_REFUSED', message);

/** Checks a node's certificate request (a valid PKCS#10 self-signature, an ECDSA P-256 key, CN = node id); returns its SPKI. */
export async function readNodeCsr(csrPem: string, nodeId: string): Promise<Uint8Array> {
  const x509 = await loadX509();
  let csr: InstanceType<typeof x509.Pkcs10CertificateRequest>;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch {
    throw refused('csr: not a PEM PKCS#10 certificate request');
  }
  const key = csr.publicKey.algorithm as { name?: string; namedCurve?: string };
  if (key.name !== 'ECDSA' || key.namedCurve !== 'P-256') throw refused('csr: the key must be ECDSA P-256');
  if (!(await csr.verify())) throw refused('csr: its signature does not verify');
  const cn = csr.subjectName.getField('CN')[0];
  if (cn !== nodeId) throw refused(`csr: CN "${cn ?? ''}" differs from node id "${nodeId}"`);
  return new Uint8Array(csr.publicKey.rawData);
}

/** Signs a certificate for a node's CSR (see {@link readNodeCsr}), valid for `ttlMs`. */
export async function issueNodeCertificate(
  identity: Pick<GatewayIdentity, 'caCertPem' | 'caKeyPem'>,
  csrPem: string,
  nodeId: string,
  ttlMs: number,
): Promise<string> {
  const publicKey = await readNodeCsr(csrPem, nodeId);
  const now = Date.now();
  // A little back-dating absorbs clock skew, but never so much that a short-lived certificate looks half used.
  const backdate = Math.min(60_000, Math.floor(ttlMs / 10));
  return signNodeCertificate({
    ...identity,
    nodeId,
    publicKey,
    notBefore: new Date(now - backdate),
    notAfter: new Date(now + ttlMs),
  });
}
