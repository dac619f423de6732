/**
 * Result evidence: canonical JSON (RFC 8785 style: sorted keys, no spaces),
 * `sha256:` result hashes, and Ed25519 signatures over
 * `task_id \n attempt \n result_hash \n timestamp`. Tasks go the other way
 * signed by the gateway: Ed25519 over `fieldmesh-task-v1 \n` and the canonical
 * JSON of the TASK frame's fields (see {@link taskSigningPayload}); DEPLOY and
 * UNDEPLOY frames likewise, under their own prefixes so that no signature of
 * one kind verifies as another.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { ed25519Sign as sign, ed25519Verify as verify } from './ed25519.js';

export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    if (typeof value === 'number' && !Number.isFinite(value)) return 'null';
    return JSON.stringify(value) ?? 'null';
  }
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  const entries = Object.keys(value)
    .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`);
  return `{${entries.join(',')}}`;
}

export function resultHash(value: unknown): string {
  return `sha256:${createHash('sha256').update(canonicalJson(value)).digest('hex')}`;
}

export function signingPayload(taskId: string, attempt: number, hash: string, timestamp: string): Buffer {
  return Buffer.from(`${taskId}\n${attempt}\n${hash}\n${timestamp}`, 'utf8');
}

export interface SigningKeys {
  privateKey: KeyObject;
  publicKeyPem: string;
}

export function generateSigningKeys(): { privateKeyPem: string; publicKeyPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

export function loadSigningKeys(privateKeyPem: string): SigningKeys {
  const privateKey = createPrivateKey(privateKeyPem);
  const publicKeyPem = createPublicKey(privateKey).export({ type: 'spki', format: 'pem' }).toString();
  return { privateKey, publicKeyPem };
}

export function signResult(key: KeyObject, taskId: string, attempt: number, hash: string, timestamp: string): string {
  return sign(signingPayload(taskId, attempt, hash, timestamp), key).toString('base64');
}

const publicKeyCache = new Map<string, KeyObject>();

function publicKeyOf(pem: string): KeyObject {
  let key = publicKeyCache.get(pem);
  if (!key) {
    key = createPublicKey(pem);
    if (publicKeyCache.size > 10_000) publicKeyCache.clear();
    publicKeyCache.set(pem, key);
  }
  return key;
}

/** The fields of a TASK frame the gateway signs. */
export interface SignedTaskFields {
  task_id: string;
  attempt: number;
  node_id: string;
  tool_name: string;
  tool_args: unknown;
  timeout_ms: number;
  issued_at: string;
}

export function taskSigningPayload(t: SignedTaskFields): Buffer {
  const fields = {
    attempt: t.attempt,
    issued_at: t.issued_at,
    node_id: t.node_id,
    task_id: t.task_id,
    timeout_ms: t.timeout_ms,
    tool_args: t.tool_args,
    tool_name: t.tool_name,
  };
  return Buffer.from(`fieldmesh-task-v1\n${canonicalJson(fields)}`, 'utf8');
}

/** The gateway's signature (base64) over a TASK frame's fields. */
export function signTask(key: KeyObject, fields: SignedTaskFields): string {
  return sign(taskSigningPayload(fields), key).toString('base64');
}

/** Checks a TASK frame's gateway_signature; false for a malformed key or signature rather than a throw. */
export function verifyTask(publicKeyPem: string, fields: SignedTaskFields, signature: string): boolean {
  try {
    return verify(taskSigningPayload(fields), publicKeyOf(publicKeyPem), Buffer.from(signature, 'base64'));
  } catch {
    return false;
  }
}

/** The fields of a TASK_BATCH frame the gateway signs: each task's as in a TASK, `node_id` and `issued_at` once. */
export interface SignedTaskBatchFields {
  node_id: string;
  issued_at: string;
  tasks: readonly Omit<SignedTaskFields, 'node_id' | 'issued_at'>[];
}

/** `fieldmesh-task-batch-v1 \n` and the canonical JSON of the batch: its own prefix, so no TASK signature verifies as a batch's. */
export function taskBatchSigningPayload(b: SignedTaskBatchFields): Buffer {
  const fields = {
    issued_at: b.issued_at,
    node_id: b.node_id,
    tasks: b.tasks.map((t) => ({
      attempt: t.attempt,
      task_id: t.task_id,
      timeout_ms: t.timeout_ms,
      tool_args: t.tool_args,
      tool_name: t.tool_name,
    })),
  };
  return Buffer.from(`fieldmesh-task-batch-v1\n${canonicalJson(fields)}`, 'utf8');
}

/** The gateway's one signature (base64) over every task of a TASK_BATCH. */
export function signTaskBatch(key: KeyObject, fields: SignedTaskBatchFields): string {
  return sign(taskBatchSigningPayload(fields), key).toString('base64');
}

/** Checks a TASK_BATCH frame's gateway_signature; false rather than a throw for malformed input. */
export function verifyTaskBatch(publicKeyPem: string, fields: SignedTaskBatchFields, signature: string): boolean {
  return verifyPayload(publicKeyPem, () => taskBatchSigningPayload(fields), signature);
}

/** The fields of a DEPLOY frame the gateway signs; the bundle itself is covered by its hash. */
export interface SignedDeployFields {
  deploy_id: string;
  node_id: string;
  name: string;
  bundle_sha256: string;
  memory_mb: number;
  timeout_seconds: number;
  env: Record<string, string>;
  issued_at: string;
}

/** The fields of an UNDEPLOY frame the gateway signs. */
export interface SignedUndeployFields {
  deploy_id: string;
  node_id: string;
  name: string;
  issued_at: string;
}

function deployPayload(f: SignedDeployFields): Buffer {
  const fields = {
    bundle_sha256: f.bundle_sha256,
    deploy_id: f.deploy_id,
    env: f.env,
    issued_at: f.issued_at,
    memory_mb: f.memory_mb,
    name: f.name,
    node_id: f.node_id,
    timeout_seconds: f.timeout_seconds,
  };
  return Buffer.from(`fieldmesh-deploy-v1\n${canonicalJson(fields)}`, 'utf8');
}

function undeployPayload(f: SignedUndeployFields): Buffer {
  const fields = { deploy_id: f.deploy_id, issued_at: f.issued_at, name: f.name, node_id: f.node_id };
  return Buffer.from(`fieldmesh-undeploy-v1\n${canonicalJson(fields)}`, 'utf8');
}

/** `sha256:<hex>` of a function bundle's UTF-8 text. */
export function bundleHash(bundle: string): string {
  return `sha256:${createHash('sha256').update(bundle, 'utf8').digest('hex')}`;
}

/** The gateway's signature (base64) over a DEPLOY frame's fields. */
export function signDeploy(key: KeyObject, fields: SignedDeployFields): string {
  return sign(deployPayload(fields), key).toString('base64');
}

/** The gateway's signature (base64) over an UNDEPLOY frame's fields. */
export function signUndeploy(key: KeyObject, fields: SignedUndeployFields): string {
  return sign(undeployPayload(fields), key).toString('base64');
}

function verifyPayload(publicKeyPem: string, payload: () => Buffer, signature: string): boolean {
  try {
    return verify(payload(), publicKeyOf(publicKeyPem), Buffer.from(signature, 'base64'));
  } catch {
    return false;
  }
}

/** Checks a DEPLOY frame's gateway_signature (not its bundle hash); false rather than a throw for malformed input. */
export function verifyDeploy(publicKeyPem: string, fields: SignedDeployFields, signature: string): boolean {
  return verifyPayload(publicKeyPem, () => deployPayload(fields), signature);
}

/** Checks an UNDEPLOY frame's gateway_signature. */
export function verifyUndeploy(publicKeyPem: string, fields: SignedUndeployFields, signature: string): boolean {
  return verifyPayload(publicKeyPem, () => undeployPayload(fields), signature);
}

/** Checks a node's signature; false for a malformed key or signature rather than a throw. */
export function verifyResult(
  publicKeyPem: string,
  taskId: string,
  attempt: number,
  hash: string,
  timestamp: string,
  signature: string,
): boolean {
  try {
    return verify(signingPayload(taskId, attempt, hash, timestamp), publicKeyOf(publicKeyPem), Buffer.from(signature, 'base64'));
  } catch {
    return false;
  }
}
