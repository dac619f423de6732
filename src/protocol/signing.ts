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

/*
 * Result batches: a node signs the results it has ready in one turn of its
 * event loop once, in a RESULT_BATCH frame. The signature covers the root of
 * a Merkle tree over the batch's results, built as in RFC 6962 §2.1 (RFC 9162
 * §2.1.1): leaf i is SHA-256(0x00 ‖ `task_id \n attempt \n result_hash`) of
 * result i, an inner node SHA-256(0x01 ‖ left ‖ right), the left subtree
 * holding the largest power of two of leaves smaller than the count. The
 * signed payload is `fieldmesh-result-batch-v1 \n timestamp \n size \n
 * root-hex`: its own prefix, so neither a single result's signature nor a
 * TASK's verifies as a batch's, and the other way round.
 *
 * Each result's evidence is then the batch signature, its timestamp and the
 * result's {@link ResultBatchProof} (the batch size, the result's index and
 * its audit path): enough for anyone holding the node's public key to
 * re-check that the node signed that result hash for that task and attempt
 * ({@link verifyResultEvidence}), in O(log size) hashes, without the other
 * results of the batch.
 */

/** What a node signs of each result in a RESULT_BATCH. */
export interface BatchedResultFields {
  task_id: string;
  attempt: number;
  result_hash: string;
}

/** The fields of a RESULT_BATCH frame the node signs. */
export interface SignedResultBatchFields {
  timestamp: string;
  results: readonly BatchedResultFields[];
}

/** Where one result sits in its batch's Merkle tree: kept with the attempt as its share of the batch signature. */
export type ResultBatchProof = {
  /** How many results the batch signed. */
  size: number;
  /** This result's place among them, from 0. */
  index: number;
  /** Hex SHA-256 sibling hashes from the leaf up to the root (RFC 9162 §2.1.3 inclusion proof). */
  path: string[];
};

const LEAF_PREFIX = Buffer.from([0]);
const NODE_PREFIX = Buffer.from([1]);

/** A result's leaf in its batch's Merkle tree. */
export function resultLeafHash(r: BatchedResultFields): Buffer {
  return createHash('sha256').update(LEAF_PREFIX).update(`${r.task_id}\n${r.attempt}\n${r.result_hash}`, 'utf8').digest();
}

function innerHash(left: Buffer, right: Buffer): Buffer {
  return createHash('sha256').update(NODE_PREFIX).update(left).update(right).digest();
}

/** The root of leaves [lo, hi); with `paths`, each leaf's audit path gains the sibling hashes met on the way up. */
function subtreeHash(leaves: readonly Buffer[], lo: number, hi: number, paths?: string[][]): Buffer {
  const n = hi - lo;
  if (n === 1) return leaves[lo] as Buffer;
  let k = 1;
  while (k * 2 < n) k *= 2;
  const left = subtreeHash(leaves, lo, lo + k, paths);
  const right = subtreeHash(leaves, lo + k, hi, paths);
  if (paths) {
    const l = left.toString('hex');
    const r = right.toString('hex');
    for (let i = lo; i < lo + k; i++) paths[i]?.push(r);
    for (let i = lo + k; i < hi; i++) paths[i]?.push(l);
  }
  return innerHash(left, right);
}

/** `fieldmesh-result-batch-v1 \n timestamp \n size \n root-hex`. */
function resultBatchPayload(timestamp: string, size: number, root: Buffer): Buffer {
  return Buffer.from(`fieldmesh-result-batch-v1\n${timestamp}\n${size}\n${root.toString('hex')}`, 'utf8');
}

/** The bytes a node signs for a RESULT_BATCH. */
export function resultBatchSigningPayload(b: SignedResultBatchFields): Buffer {
  if (b.results.length === 0) throw new RangeError('A result batch holds at least one result');
  return resultBatchPayload(b.timestamp, b.results.length, subtreeHash(b.results.map(resultLeafHash), 0, b.results.length));
}

/** A batch's Merkle root and each result's inclusion proof, in the batch's order, from one pass over the tree. */
export interface ResultBatchTree {
  root: Buffer;
  proofs: ResultBatchProof[];
}

export function resultBatchTree(results: readonly BatchedResultFields[]): ResultBatchTree {
  if (results.length === 0) throw new RangeError('A result batch holds at least one result');
  const paths: string[][] = results.map(() => []);
  const root = subtreeHash(results.map(resultLeafHash), 0, results.length, paths);
  return { root, proofs: paths.map((path, index) => ({ size: results.length, index, path })) };
}

/** Checks a RESULT_BATCH's node_signature against its tree (see {@link resultBatchTree}); false rather than a throw. */
export function verifyResultBatchTree(publicKeyPem: string, timestamp: string, tree: ResultBatchTree, signature: string): boolean {
  return verifyPayload(publicKeyPem, () => resultBatchPayload(timestamp, tree.proofs.length, tree.root), signature);
}

/** The node's one signature (base64) over every result of a RESULT_BATCH. */
export function signResultBatch(key: KeyObject, fields: SignedResultBatchFields): string {
  return sign(resultBatchSigningPayload(fields), key).toString('base64');
}

/** Checks a RESULT_BATCH frame's node_signature; false rather than a throw for malformed input. */
export function verifyResultBatch(publicKeyPem: string, fields: SignedResultBatchFields, signature: string): boolean {
  return verifyPayload(publicKeyPem, () => resultBatchSigningPayload(fields), signature);
}

/** Each result's place and audit path in its batch's tree, in the batch's order. */
export function resultBatchProofs(results: readonly BatchedResultFields[]): ResultBatchProof[] {
  return results.length === 0 ? [] : resultBatchTree(results).proofs;
}

/** The root an inclusion proof leads to from a leaf (RFC 9162 §2.1.3.2), or undefined when the proof cannot be one. */
function rootFromProof(leaf: Buffer, proof: ResultBatchProof): Buffer | undefined {
  const { size, index, path } = proof;
  if (!Number.isSafeInteger(size) || !Number.isSafeInteger(index) || index < 0 || index >= size || !Array.isArray(path)) return undefined;
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  for (const hex of path) {
    if (sn === 0 || typeof hex !== 'string' || !/^[0-9a-f]{64}$/.test(hex)) return undefined;
    const p = Buffer.from(hex, 'hex');
    if (fn % 2 === 1 || fn === sn) {
      r = innerHash(p, r);
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    } else r = innerHash(r, p);
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 ? r : undefined;
}

/** A result's evidence as a task record keeps it (see AttemptRecord): one signed result, or one result of a signed batch. */
export interface ResultEvidence extends BatchedResultFields {
  node_signature: string;
  /** The timestamp the node signed: its TASK_RESULT's, or its RESULT_BATCH's. */
  signed_at: string;
  /** Set when the result came in a RESULT_BATCH. */
  result_batch?: ResultBatchProof | null;
}

/** Re-checks that the node holding `publicKeyPem` signed this result hash for this task and attempt, alone or in a batch. */
export function verifyResultEvidence(publicKeyPem: string, e: ResultEvidence): boolean {
  if (!e.result_batch) return verifyResult(publicKeyPem, e.task_id, e.attempt, e.result_hash, e.signed_at, e.node_signature);
  const root = rootFromProof(resultLeafHash(e), e.result_batch);
  if (!root) return false;
  return verifyPayload(publicKeyPem, () => resultBatchPayload(e.signed_at, e.result_batch?.size ?? 0, root), e.node_signature);
}
