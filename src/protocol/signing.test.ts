// Tests for result evidence: canonical JSON, result hashes and Ed25519 signatures over task id, attempt, hash and timestamp.
import { createHash, createPrivateKey, generateKeyPairSync, sign } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  bundleHash,
  canonicalJson,
  generateSigningKeys,
  loadSigningKeys,
  type ResultBatchProof,
  resultBatchProofs,
  resultHash,
  resultLeafHash,
  type SignedDeployFields,
  signDeploy,
  signResult,
  signResultBatch,
  signTask,
  signTaskBatch,
  signUndeploy,
  verifyDeploy,
  verifyResult,
  verifyResultBatch,
  verifyResultEvidence,
  verifyTask,
  verifyTaskBatch,
  verifyUndeploy,
} from './signing.js';

describe('signing - canonicalJson', () => {
  it('signing - canonicalJson sorts object keys', () => {
    expect(canonicalJson({ b: 1, a: 2, c: 3 })).toBe('{"a":2,"b":1,"c":3}');
    expect(canonicalJson({ b: 1, a: 2 })).toBe(canonicalJson({ a: 2, b: 1 }));
  });

  it('signing - canonicalJson sorts keys at every depth and keeps array order', () => {
    const value = { z: [{ y: 1, x: 2 }, 3, [{ b: true, a: null }]], a: { d: 'x', c: { f: 1, e: 2 } } };
    expect(canonicalJson(value)).toBe('{"a":{"c":{"e":2,"f":1},"d":"x"},"z":[{"x":2,"y":1},3,[{"a":null,"b":true}]]}');
  });

  it('signing - canonicalJson has no whitespace and escapes like JSON', () => {
    expect(canonicalJson({ 'key "q"': 'line\nbreak', ü: 'ß' })).toBe('{"key \\"q\\"":"line\\nbreak","ü":"ß"}');
    expect(canonicalJson([1, 'two', false, null])).toBe('[1,"two",false,null]');
  });

  it('signing - canonicalJson leaves out undefined properties and writes undefined array items as null', () => {
    expect(canonicalJson({ a: 1, gone: undefined })).toBe('{"a":1}');
    expect(canonicalJson({ a: 1, gone: undefined })).toBe(canonicalJson({ a: 1 }));
    expect(canonicalJson([1, undefined, 3])).toBe('[1,null,3]');
    expect(canonicalJson(undefined)).toBe('null');
  });

  it('signing - canonicalJson matches what JSON.parse(JSON.stringify(x)) carries across the wire', () => {
    const value = { n: Number.NaN, inf: Number.POSITIVE_INFINITY, neg: -0, big: 1e21, small: 1.5e-7, nested: { u: undefined } };
    expect(canonicalJson(value)).toBe(canonicalJson(JSON.parse(JSON.stringify(value))));
  });

  it('signing - canonicalJson of primitives is their JSON', () => {
    expect(canonicalJson(null)).toBe('null');
    expect(canonicalJson('text')).toBe('"text"');
    expect(canonicalJson(42)).toBe('42');
    expect(canonicalJson(true)).toBe('true');
    expect(canonicalJson({})).toBe('{}');
    expect(canonicalJson([])).toBe('[]');
  });
});

describe('signing - resultHash', () => {
  it('signing - resultHash is sha256: and 64 lowercase hex digits', () => {
    for (const value of [null, { a: 1 }, 'x', [], 0]) expect(resultHash(value)).toMatch(/^sha256:[0-9a-f]{64}$/);
  });

  it('signing - resultHash is the SHA-256 of the canonical JSON', () => {
    const value = { b: [1, 2], a: 'x' };
    const expected = createHash('sha256').update('{"a":"x","b":[1,2]}').digest('hex');
    expect(resultHash(value)).toBe(`sha256:${expected}`);
  });

  it('signing - resultHash ignores key order and changes with any value', () => {
    expect(resultHash({ a: 1, b: { c: 2, d: 3 } })).toBe(resultHash({ b: { d: 3, c: 2 }, a: 1 }));
    expect(resultHash({ a: 1 })).not.toBe(resultHash({ a: 2 }));
    expect(resultHash({ a: 1 })).not.toBe(resultHash({ a: '1' }));
    expect(resultHash([1, 2])).not.toBe(resultHash([2, 1]));
  });
});

describe('signing - signatures', () => {
  const keys = loadSigningKeys(generateSigningKeys().privateKeyPem);
  const taskId = 'task_01';
  const attempt = 2;
  const hash = resultHash({ value: 42 });
  const timestamp = '2025-01-01T00:00:00.000Z';
  const signature = signResult(keys.privateKey, taskId, attempt, hash, timestamp);

  it('signing - generated keys are an Ed25519 PKCS#8 private key and its SPKI public key', () => {
    const pair = generateSigningKeys();
    expect(pair.privateKeyPem).toContain('-----BEGIN PRIVATE KEY-----');
    expect(pair.publicKeyPem).toContain('-----BEGIN PUBLIC KEY-----');
    expect(createPrivateKey(pair.privateKeyPem).asymmetricKeyType).toBe('ed25519');
    expect(loadSigningKeys(pair.privateKeyPem).publicKeyPem).toBe(pair.publicKeyPem);
  });

  it('signing - a signed result verifies with the public key', () => {
    expect(signature).toMatch(/^[A-Za-z0-9+/]+=*$/);
    expect(verifyResult(keys.publicKeyPem, taskId, attempt, hash, timestamp, signature)).toBe(true);
  });

  it('signing - the signature covers task id, attempt, hash and timestamp separated by newlines', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const pem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const own = sign(null, Buffer.from(`${taskId}\n${attempt}\n${hash}\n${timestamp}`), privateKey).toString('base64');
    expect(verifyResult(pem, taskId, attempt, hash, timestamp, own)).toBe(true);
    expect(signResult(privateKey, taskId, attempt, hash, timestamp)).toBe(own);
  });

  it('signing - verification fails for a changed attempt', () => {
    expect(verifyResult(keys.publicKeyPem, taskId, attempt + 1, hash, timestamp, signature)).toBe(false);
  });

  it('signing - verification fails for a changed task id', () => {
    expect(verifyResult(keys.publicKeyPem, 'task_02', attempt, hash, timestamp, signature)).toBe(false);
  });

  it('signing - verification fails for a changed result hash', () => {
    expect(verifyResult(keys.publicKeyPem, taskId, attempt, resultHash({ value: 43 }), timestamp, signature)).toBe(false);
  });

  it('signing - verification fails for a changed timestamp', () => {
    expect(verifyResult(keys.publicKeyPem, taskId, attempt, hash, '2025-01-01T00:00:00.001Z', signature)).toBe(false);
  });

  it('signing - verification fails with another node key', () => {
    const other = generateSigningKeys().publicKeyPem;
    expect(verifyResult(other, taskId, attempt, hash, timestamp, signature)).toBe(false);
  });

  it('signing - a malformed key or signature fails verification instead of throwing', () => {
    for (const pem of ['', 'not a key', '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n']) {
      expect(verifyResult(pem, taskId, attempt, hash, timestamp, signature)).toBe(false);
    }
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    expect(verifyResult(rsa, taskId, attempt, hash, timestamp, signature)).toBe(false);
    for (const sig of ['', 'not base64!', Buffer.alloc(64).toString('base64'), signature.slice(0, 20)]) {
      expect(verifyResult(keys.publicKeyPem, taskId, attempt, hash, timestamp, sig)).toBe(false);
    }
  });
});

describe('signing - TASK frames', () => {
  const keys = loadSigningKeys(generateSigningKeys().privateKeyPem);
  const fields = {
    task_id: 'task_1',
    attempt: 2,
    node_id: 'rpi:device_b',
    tool_name: 'unit_convert',
    tool_args: { value: 10, from_unit: 'miles', to_unit: 'km' },
    timeout_ms: 30_000,
    issued_at: '2025-01-01T00:00:00.000Z',
  };

  it('signing - a TASK signature verifies with the gateway key, whatever the order of the argument keys', () => {
    const sig = signTask(keys.privateKey, fields);
    expect(verifyTask(keys.publicKeyPem, fields, sig)).toBe(true);
    const reordered = { ...fields, tool_args: { to_unit: 'km', from_unit: 'miles', value: 10 } };
    expect(verifyTask(keys.publicKeyPem, reordered, sig)).toBe(true);
  });

  it('signing - changing any signed TASK field, or another key, fails the check', () => {
    const sig = signTask(keys.privateKey, fields);
    const changes: Partial<typeof fields>[] = [
      { task_id: 'task_2' },
      { attempt: 3 },
      { node_id: 'android:device_a' },
      { tool_name: 'sys_info' },
      { tool_args: { value: 11, from_unit: 'miles', to_unit: 'km' } },
      { timeout_ms: 1 },
      { issued_at: '2025-01-01T00:00:01.000Z' },
    ];
    for (const change of changes) expect(verifyTask(keys.publicKeyPem, { ...fields, ...change }, sig)).toBe(false);
    const other = loadSigningKeys(generateSigningKeys().privateKeyPem);
    expect(verifyTask(other.publicKeyPem, fields, sig)).toBe(false);
    expect(verifyTask('not a key', fields, sig)).toBe(false);
    expect(verifyTask(keys.publicKeyPem, fields, '%%%')).toBe(false);
  });
});

describe('signing - TASK_BATCH frames', () => {
  const keys = loadSigningKeys(generateSigningKeys().privateKeyPem);
  const task = (n: number) => ({
    task_id: `task_${n}`,
    attempt: 1,
    tool_name: 'unit_convert',
    tool_args: { value: n, from_unit: 'miles', to_unit: 'km' },
    timeout_ms: 30_000,
  });
  const batch = { node_id: 'rpi:device_b', issued_at: '2025-01-01T00:00:00.000Z', tasks: [task(1), task(2), task(3)] };

  it('signing - one TASK_BATCH signature covers every task and verifies with the gateway key', () => {
    const sig = signTaskBatch(keys.privateKey, batch);
    expect(verifyTaskBatch(keys.publicKeyPem, batch, sig)).toBe(true);
    // What crosses the wire (JSON, any key order) still verifies.
    const wire = JSON.parse(JSON.stringify({ ...batch, tasks: batch.tasks.map((t) => Object.fromEntries(Object.entries(t).reverse())) }));
    expect(verifyTaskBatch(keys.publicKeyPem, wire, sig)).toBe(true);
  });

  it('signing - a task tampered with inside a batch, added, dropped or reordered fails the whole batch', () => {
    const sig = signTaskBatch(keys.privateKey, batch);
    const [a, b, c] = batch.tasks as [ReturnType<typeof task>, ReturnType<typeof task>, ReturnType<typeof task>];
    const tampered: (typeof batch)['tasks'][] = [
      [a, { ...b, tool_args: { value: 99, from_unit: 'miles', to_unit: 'km' } }, c],
      [a, { ...b, attempt: 2 }, c],
      [a, { ...b, task_id: 'task_9' }, c],
      [a, { ...b, tool_name: 'sys_info' }, c],
      [a, { ...b, timeout_ms: 60_000 }, c],
      [a, b, c, task(4)],
      [a, c],
      [b, a, c],
    ];
    for (const tasks of tampered) expect(verifyTaskBatch(keys.publicKeyPem, { ...batch, tasks }, sig)).toBe(false);
    expect(verifyTaskBatch(keys.publicKeyPem, { ...batch, node_id: 'android:device_a' }, sig)).toBe(false);
    expect(verifyTaskBatch(keys.publicKeyPem, { ...batch, issued_at: '2025-01-01T00:00:01.000Z' }, sig)).toBe(false);
    const other = loadSigningKeys(generateSigningKeys().privateKeyPem);
    expect(verifyTaskBatch(other.publicKeyPem, batch, sig)).toBe(false);
    expect(verifyTaskBatch(keys.publicKeyPem, batch, '%%%')).toBe(false);
  });

  it('signing - a TASK signature never verifies as a one-task batch, nor the other way round', () => {
    const [t] = batch.tasks as [ReturnType<typeof task>];
    const single = { ...t, node_id: batch.node_id, issued_at: batch.issued_at };
    const one = { ...batch, tasks: [t] };
    expect(verifyTaskBatch(keys.publicKeyPem, one, signTask(keys.privateKey, single))).toBe(false);
    expect(verifyTask(keys.publicKeyPem, single, signTaskBatch(keys.privateKey, one))).toBe(false);
  });
});

describe('signing - RESULT_BATCH frames', () => {
  const keys = loadSigningKeys(generateSigningKeys().privateKeyPem);
  const results = (n: number) =>
    Array.from({ length: n }, (_, i) => ({ task_id: `task_${i}`, attempt: 1 + (i % 3), result_hash: resultHash({ value: i }) }));
  const timestamp = '2025-01-01T00:00:00.000Z';
  const sha = (...parts: Buffer[]) => createHash('sha256').update(Buffer.concat(parts)).digest();

  it('signing - the batch signature covers the RFC 6962 Merkle root of its results under its own prefix', () => {
    const rs = results(3);
    const leaves = rs.map((r) => sha(Buffer.from([0]), Buffer.from(`${r.task_id}\n${r.attempt}\n${r.result_hash}`)));
    expect(rs.map(resultLeafHash)).toEqual(leaves);
    // Three leaves: the left subtree holds two (the largest power of two below three), the right one.
    const [l0, l1, l2] = leaves as [Buffer, Buffer, Buffer];
    const root = sha(Buffer.from([1]), sha(Buffer.from([1]), l0, l1), l2);
    const payload = Buffer.from(`fieldmesh-result-batch-v1\n${timestamp}\n3\n${root.toString('hex')}`);
    const sig = signResultBatch(keys.privateKey, { timestamp, results: rs });
    expect(sign(null, payload, keys.privateKey).toString('base64')).toBe(sig);
    expect(verifyResultBatch(keys.publicKeyPem, { timestamp, results: rs }, sig)).toBe(true);
  });

  it('signing - a result changed, added, dropped or moved inside a batch, another timestamp or key fails the whole batch', () => {
    const rs = results(4);
    const sig = signResultBatch(keys.privateKey, { timestamp, results: rs });
    const [a, b, c, d] = rs as [(typeof rs)[0], (typeof rs)[0], (typeof rs)[0], (typeof rs)[0]];
    const tampered = [
      [a, { ...b, result_hash: resultHash({ value: 'changed' }) }, c, d],
      [a, { ...b, attempt: b.attempt + 1 }, c, d],
      [a, { ...b, task_id: 'task_9' }, c, d],
      [a, b, c, d, a],
      [a, b, c],
      [b, a, c, d],
    ];
    for (const t of tampered) expect(verifyResultBatch(keys.publicKeyPem, { timestamp, results: t }, sig)).toBe(false);
    expect(verifyResultBatch(keys.publicKeyPem, { timestamp: '2025-01-01T00:00:01.000Z', results: rs }, sig)).toBe(false);
    const other = loadSigningKeys(generateSigningKeys().privateKeyPem);
    expect(verifyResultBatch(other.publicKeyPem, { timestamp, results: rs }, sig)).toBe(false);
    expect(verifyResultBatch(keys.publicKeyPem, { timestamp, results: rs }, '%%%')).toBe(false);
    expect(verifyResultBatch(keys.publicKeyPem, { timestamp, results: [] }, sig)).toBe(false);
  });

  it("signing - each result's inclusion proof re-checks alone against the batch signature, for every batch size up to 33", () => {
    for (let n = 1; n <= 33; n++) {
      const rs = results(n);
      const sig = signResultBatch(keys.privateKey, { timestamp, results: rs });
      const proofs = resultBatchProofs(rs);
      expect(proofs.map((p) => [p.size, p.index])).toEqual(rs.map((_, i) => [n, i]));
      rs.forEach((r, i) => {
        const evidence = { ...r, node_signature: sig, signed_at: timestamp, result_batch: proofs[i] as ResultBatchProof };
        expect(verifyResultEvidence(keys.publicKeyPem, evidence), `size ${n} index ${i}`).toBe(true);
      });
    }
  });

  it("signing - evidence fails for another result's proof, a changed hash, index, size, path or timestamp", () => {
    const rs = results(6);
    const sig = signResultBatch(keys.privateKey, { timestamp, results: rs });
    const proofs = resultBatchProofs(rs);
    const r = rs[2] as (typeof rs)[0];
    const proof = proofs[2] as ResultBatchProof;
    const good = { ...r, node_signature: sig, signed_at: timestamp, result_batch: proof };
    expect(verifyResultEvidence(keys.publicKeyPem, good)).toBe(true);
    const flipped = [...proof.path];
    flipped[0] = (flipped[0] as string).replace(/^./, (ch) => (ch === '0' ? '1' : '0'));
    const bad = [
      { ...good, result_batch: proofs[3] },
      { ...good, result_hash: resultHash({ value: 'changed' }) },
      { ...good, attempt: r.attempt + 1 },
      { ...good, result_batch: { ...proof, index: 3 } },
      { ...good, result_batch: { ...proof, index: 6 } },
      { ...good, result_batch: { ...proof, index: -1 } },
      { ...good, result_batch: { ...proof, size: 5 } },
      { ...good, result_batch: { ...proof, size: 7 } },
      { ...good, result_batch: { ...proof, path: flipped } },
      { ...good, result_batch: { ...proof, path: proof.path.slice(1) } },
      { ...good, result_batch: { ...proof, path: [...proof.path, proof.path[0] as string] } },
      { ...good, result_batch: { ...proof, path: ['not hex'] } },
      { ...good, signed_at: '2025-01-01T00:00:01.000Z' },
    ];
    for (const [i, e] of bad.entries()) expect(verifyResultEvidence(keys.publicKeyPem, e as typeof good), `case ${i}`).toBe(false);
  });

  it('signing - a single result signature never verifies as a batch, nor a batch signature as a single result', () => {
    const [r] = results(1) as [{ task_id: string; attempt: number; result_hash: string }];
    const single = signResult(keys.privateKey, r.task_id, r.attempt, r.result_hash, timestamp);
    const one = signResultBatch(keys.privateKey, { timestamp, results: [r] });
    expect(verifyResultBatch(keys.publicKeyPem, { timestamp, results: [r] }, single)).toBe(false);
    expect(verifyResult(keys.publicKeyPem, r.task_id, r.attempt, r.result_hash, timestamp, one)).toBe(false);
    // Evidence without a proof is a single result's; with one, a batch's.
    expect(verifyResultEvidence(keys.publicKeyPem, { ...r, node_signature: single, signed_at: timestamp })).toBe(true);
    expect(verifyResultEvidence(keys.publicKeyPem, { ...r, node_signature: one, signed_at: timestamp })).toBe(false);
    const proof = resultBatchProofs([r])[0] as ResultBatchProof;
    expect(verifyResultEvidence(keys.publicKeyPem, { ...r, node_signature: single, signed_at: timestamp, result_batch: proof })).toBe(
      false,
    );
  });
});

describe('signing - DEPLOY and UNDEPLOY', () => {
  const keys = loadSigningKeys(generateSigningKeys().privateKeyPem);
  const bundle = 'export default async (args) => args;';
  const fields: SignedDeployFields = {
    deploy_id: 'dep_1',
    node_id: 'rpi:device_b',
    name: 'process-image',
    bundle_sha256: bundleHash(bundle),
    memory_mb: 128,
    timeout_seconds: 30,
    env: { MODE: 'fast' },
    issued_at: '2025-01-01T00:00:00.000Z',
  };

  it('signing - bundleHash is sha256 over the bundle text', () => {
    expect(bundleHash(bundle)).toBe(`sha256:${createHash('sha256').update(bundle, 'utf8').digest('hex')}`);
  });

  it('signing - a DEPLOY signature verifies, and fails for any changed field or another key', () => {
    const sig = signDeploy(keys.privateKey, fields);
    expect(verifyDeploy(keys.publicKeyPem, fields, sig)).toBe(true);
    const changes: Partial<SignedDeployFields>[] = [
      { deploy_id: 'dep_2' },
      { node_id: 'android:device_a' },
      { name: 'other' },
      { bundle_sha256: bundleHash(`${bundle} `) },
      { memory_mb: 4096 },
      { timeout_seconds: 3600 },
      { env: { MODE: 'fast', EXTRA: '1' } },
      { issued_at: '2025-01-01T00:00:01.000Z' },
    ];
    for (const change of changes) expect(verifyDeploy(keys.publicKeyPem, { ...fields, ...change }, sig)).toBe(false);
    const other = loadSigningKeys(generateSigningKeys().privateKeyPem);
    expect(verifyDeploy(other.publicKeyPem, fields, sig)).toBe(false);
    expect(verifyDeploy(keys.publicKeyPem, fields, '%%%')).toBe(false);
  });

  it('signing - an UNDEPLOY signature never verifies as a DEPLOY or a TASK, nor the other way round', () => {
    const undeploy = { deploy_id: 'dep_1', node_id: 'rpi:device_b', name: 'process-image', issued_at: fields.issued_at };
    const sig = signUndeploy(keys.privateKey, undeploy);
    expect(verifyUndeploy(keys.publicKeyPem, undeploy, sig)).toBe(true);
    expect(verifyUndeploy(keys.publicKeyPem, { ...undeploy, name: 'other' }, sig)).toBe(false);
    expect(verifyDeploy(keys.publicKeyPem, fields, sig)).toBe(false);
    expect(verifyUndeploy(keys.publicKeyPem, undeploy, signDeploy(keys.privateKey, fields))).toBe(false);
  });
});
