// Batched result signatures: the results a node has ready in one turn go under one node signature (RESULT_BATCH) to
// gateways that take it, each task keeps evidence anyone can re-check, older peers keep single TASK_RESULT frames both
// ways, and the gateway refuses whole any batch that does not check, touching no other task.
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadSigningKeys, type ResultBatchProof, resultBatchProofs, signTaskBatch, verifyResultEvidence } from '../src/protocol/signing.js';
import type { AttemptRecord } from '../src/store/types.js';
import { type FakeGateway, type FakeLink, nodeOnFakeGateway } from './fake-gateway.js';
import { Cluster, convertClosedLoop, http, waitFor } from './harness.js';
import { type Json, pairRawNode, type RawIdentity, type RawPeer, registerRaw, resultBatch, taskResult } from './raw-node.js';

/** What a task record keeps of a result, as evidence to re-check. */
const evidenceOf = (taskId: string, a: AttemptRecord) => ({
  task_id: taskId,
  attempt: a.attempt,
  result_hash: a.result_hash as string,
  node_signature: a.node_signature as string,
  signed_at: a.signed_at as string,
  result_batch: a.result_batch ?? null,
});

describe('result batches - real gateway and node', () => {
  const c = new Cluster();
  const nodeId = 'rbatch:node';
  let publicKeyPem: string;

  beforeAll(async () => {
    await c.startGateway();
    const node = await c.startNode({ id: nodeId });
    publicKeyPem = loadSigningKeys(readFileSync(join(node.dataDir, 'signing.key'), 'utf8')).publicKeyPem;
  }, 60_000);
  afterAll(() => c.stop());

  it('result batches - 64 callers, 400 calls to one node: some results share one node signature, every answer is verified and its evidence re-checks', async () => {
    const client = c.gateway.client;
    const answers = await convertClosedLoop(client, nodeId, 400, 64);

    const health = (await http(c.gateway.api, 'GET', '/healthz')).json;
    expect(health.result_batches).toBeGreaterThan(0);
    expect(health.batched_results).toBeGreaterThanOrEqual(2 * health.result_batches);
    const metrics = (await http(c.gateway.api, 'GET', '/metrics')).text;
    expect(Number(/^fieldmesh_result_batches_total (\d+)$/m.exec(metrics)?.[1])).toBe(health.result_batches);

    // Every task's record lets anyone holding the node's key re-check that the node signed that task's result hash.
    const batched: { taskId: string; attempt: AttemptRecord }[] = [];
    for (const r of answers) {
      const task = await client.getTask(r.task_id);
      expect(task.attempts).toHaveLength(1);
      const a = task.attempts[0] as AttemptRecord;
      expect(a).toMatchObject({ outcome: 'success', verified: true, result_hash: r.result_hash });
      expect(verifyResultEvidence(publicKeyPem, evidenceOf(r.task_id, a)), r.task_id).toBe(true);
      if (a.result_batch) batched.push({ taskId: r.task_id, attempt: a });
    }
    // The node served these calls only: the results kept with a proof are those the batches carried.
    expect(batched).toHaveLength(health.batched_results);
    expect(new Set(batched.map((b) => b.attempt.node_signature)).size).toBe(health.result_batches);
    for (const { attempt } of batched) expect((attempt.result_batch as ResultBatchProof).size).toBeGreaterThanOrEqual(2);

    // The evidence holds for its own task and result only.
    const [one, two] = batched as [(typeof batched)[0], (typeof batched)[0]];
    const e = evidenceOf(one.taskId, one.attempt);
    expect(verifyResultEvidence(publicKeyPem, { ...e, result_hash: two.attempt.result_hash as string })).toBe(
      e.result_hash === two.attempt.result_hash,
    );
    expect(verifyResultEvidence(publicKeyPem, { ...e, task_id: two.taskId })).toBe(false);
    expect(verifyResultEvidence(publicKeyPem, { ...e, attempt: 2 })).toBe(false);
    expect(verifyResultEvidence(publicKeyPem, { ...e, result_batch: null })).toBe(false);
  }, 120_000);
});

describe('result batches - the gateway checks RESULT_BATCH frames from a raw node', () => {
  const c = new Cluster();
  let id: RawIdentity;
  let peer: RawPeer;
  let other: RawIdentity;
  let otherPeer: RawPeer;

  /** Starts a call to a raw node and returns it with the TASK frame that node received. */
  const callRaw = async (to: RawPeer, node: RawIdentity) => {
    const pending = c.gateway.client.toolCall({
      tool_name: 'raw_tool',
      tool_args: { n: Math.random() },
      target: { kind: 'explicit', node_id: node.nodeId },
    });
    const task = await waitFor('a TASK', () => {
      const i = to.frames.findIndex((f) => f.type === 'TASK');
      return i < 0 ? undefined : (to.frames.splice(i, 1)[0] as Json);
    });
    return { pending, task };
  };
  const errors = (p: RawPeer) => p.frames.filter((f) => f.type === 'ERROR').map((f) => f.code as string);
  const health = async () => (await http(c.gateway.api, 'GET', '/healthz')).json;

  beforeAll(async () => {
    await c.startGateway();
    // Room for several tasks at once; this one takes RESULT_BATCH, the other node predates it.
    const raw = await pairRawNode(c.gateway, 'rbatch:raw');
    id = { ...raw, register: { ...raw.register, max_concurrency: 16, features: ['result_batch'] } };
    peer = await registerRaw(c.gateway.listen, c.gateway.client, id);
    const older = await pairRawNode(c.gateway, 'rbatch:older');
    other = { ...older, register: { ...older.register, max_concurrency: 16 } };
    otherPeer = await registerRaw(c.gateway.listen, c.gateway.client, other);
  }, 60_000);
  afterAll(async () => {
    peer?.close();
    otherPeer?.close();
    await c.stop();
  });

  it('result batches - WELCOME lists result_batch to a node that advertised it, and not to one that did not', () => {
    expect(peer.frames.find((f) => f.type === 'WELCOME')?.features).toContain('result_batch');
    expect(otherPeer.frames.find((f) => f.type === 'WELCOME')?.features ?? []).not.toContain('result_batch');
  });

  it('result batches - a genuine batch settles each task verified with the batch signature and a proof; a replay is refused', async () => {
    const before = await health();
    const calls = [await callRaw(peer, id), await callRaw(peer, id)];
    const batch = resultBatch(
      id.privateKey,
      calls.map(({ task }, i) => ({ task_id: task.task_id, attempt: task.attempt, output: { i } })),
    );
    peer.send(batch);
    const answers = await Promise.all(calls.map((x) => x.pending));
    expect(answers.map((r) => [r.ok, r.verified, r.output])).toEqual([
      [true, true, { i: 0 }],
      [true, true, { i: 1 }],
    ]);
    for (const [i, r] of answers.entries()) {
      const a = (await c.gateway.client.getTask(r.task_id)).attempts[0] as AttemptRecord;
      expect(a).toMatchObject({ verified: true, node_signature: batch.node_signature, signed_at: batch.timestamp });
      expect(a.result_batch).toMatchObject({ size: 2, index: i });
      expect(verifyResultEvidence(id.publicKeyPem, evidenceOf(r.task_id, a))).toBe(true);
    }
    const after = await health();
    expect(after.result_batches - before.result_batches).toBe(1);
    expect(after.batched_results - before.batched_results).toBe(2);

    // The same batch again is a replay: refused, and the tasks keep what the first delivery settled.
    peer.send(batch);
    await waitFor('FM_ERR_RESULT_REPLAYED', () => errors(peer).includes('FM_ERR_RESULT_REPLAYED'));
    expect((await health()).result_batches).toBe(after.result_batches);
    // Its signature on a single result for a task still waiting is a replay too: that task waits for its own result.
    const third = await callRaw(peer, id);
    peer.send({ ...taskResult(id.privateKey, third.task.task_id, third.task.attempt, { i: 2 }), node_signature: batch.node_signature });
    await waitFor('a second FM_ERR_RESULT_REPLAYED', () => errors(peer).filter((e) => e === 'FM_ERR_RESULT_REPLAYED').length === 2);
    peer.send(taskResult(id.privateKey, third.task.task_id, third.task.attempt, { i: 2 }));
    expect(await third.pending).toMatchObject({ ok: true, verified: true, output: { i: 2 } });
    for (const r of answers) {
      const a = (await c.gateway.client.getTask(r.task_id)).attempts;
      expect(a.map((x) => [x.verified, x.node_signature])).toEqual([[true, batch.node_signature]]);
    }
  }, 60_000);

  it('result batches - forged, tampered and misdirected batches are refused whole, each of their tasks verified:false; other tasks are untouched', async () => {
    peer.frames.splice(0);
    const before = await health();
    const bystander = await callRaw(peer, id);
    const othersTask = await callRaw(otherPeer, other);
    const forged = [await callRaw(peer, id), await callRaw(peer, id)];
    const tampered = [await callRaw(peer, id), await callRaw(peer, id)];
    const misdirected = await callRaw(peer, id);
    const entry = ({ task }: { task: Json }, output: Json) => ({ task_id: task.task_id, attempt: task.attempt, output });

    // Signed with a key that is not the node's.
    peer.send(
      resultBatch(
        generateKeyPairSync('ed25519').privateKey,
        forged.map((x) => entry(x, { forged: true })),
      ),
    );
    // Signed by the node, then one output changed on the way.
    const altered = resultBatch(
      id.privateKey,
      tampered.map((x) => entry(x, { amount: 1 })),
    );
    altered.results[1] = { ...altered.results[1], output: { amount: 1000 } };
    peer.send(altered);
    // Signed by the node, but one result answers a task this gateway awaits from another node.
    peer.send(resultBatch(id.privateKey, [entry(misdirected, { mine: true }), entry(othersTask, { stolen: true })]));

    const refused = await Promise.all([...forged, ...tampered, misdirected].map((x) => x.pending));
    expect(refused.map((r) => [r.ok, r.verified])).toEqual(Array.from({ length: 5 }, () => [true, false]));
    const reasons = refused.map((r) => r.verification_error ?? '');
    for (const why of reasons) expect(why).toMatch(/^RESULT_BATCH refused: /);
    expect(reasons[0]).toContain('node_signature does not verify');
    expect(reasons[1]).toContain('node_signature does not verify');
    expect(reasons[2]).toContain('result_hash');
    expect(reasons[3]).toContain('result_hash');
    expect(reasons[4]).toContain('not awaited from this node');
    for (const r of refused) {
      const a = (await c.gateway.client.getTask(r.task_id)).attempts;
      expect(a.map((x) => [x.outcome, x.verified])).toEqual([['success', false]]);
    }
    expect(errors(peer)).toEqual(['FM_ERR_RESULT_REFUSED', 'FM_ERR_RESULT_REFUSED', 'FM_ERR_RESULT_REFUSED']);
    expect((await health()).result_batches).toBe(before.result_batches);

    // The other node's task and this node's bystander still wait for their own results, and verify.
    otherPeer.send(taskResult(other.privateKey, othersTask.task.task_id, othersTask.task.attempt, { theirs: true }));
    expect(await othersTask.pending).toMatchObject({ ok: true, verified: true, node_id: other.nodeId, output: { theirs: true } });
    peer.send(
      resultBatch(id.privateKey, [
        entry(bystander, { late: 'but fine' }),
        // An attempt no longer awaited (already settled above) is stale, as a single late result is: it refuses nothing.
        entry(forged[0] as { task: Json }, { again: true }),
      ]),
    );
    expect(await bystander.pending).toMatchObject({ ok: true, verified: true, output: { late: 'but fine' } });
    expect((await health()).result_batches).toBe(before.result_batches + 1);
  }, 60_000);
});

describe('result batches - a node keeps single TASK_RESULT frames for a gateway that does not take RESULT_BATCH', () => {
  const c = new Cluster();
  const nodeId = 'rbatch:fake';
  let fake: FakeGateway;
  let link: FakeLink;
  let register: Json;
  let publicKeyPem: string;

  beforeAll(async () => {
    await c.startGateway();
    let dataDir: string;
    ({ fake, link, register, dataDir } = await nodeOnFakeGateway(c, nodeId));
    publicKeyPem = loadSigningKeys(readFileSync(join(dataDir, 'signing.key'), 'utf8')).publicKeyPem;
  }, 60_000);
  afterAll(async () => {
    fake?.close();
    await c.stop();
  });

  const batchOf = (prefix: string, n: number): Json => {
    const fields = {
      node_id: nodeId,
      issued_at: new Date().toISOString(),
      tasks: Array.from({ length: n }, (_, i) => ({
        task_id: `${prefix}_${i}`,
        attempt: 1,
        tool_name: 'slow_echo',
        tool_args: { ms: 0, value: i },
        timeout_ms: 5000,
      })),
    };
    return { type: 'TASK_BATCH', ...fields, gateway_signature: signTaskBatch(fake.signingKey, fields) };
  };
  /** Every result the node sent from here on, by task id, until `n` arrived; with the RESULT_BATCH frames they came in. */
  const results = async (l: FakeLink, n: number) => {
    const byTask = new Map<string, Json>();
    const batches: Json[] = [];
    await waitFor(`${n} results`, () => {
      for (let f = l.frames.shift(); f; f = l.frames.shift()) {
        if (f.type === 'TASK_RESULT') byTask.set(f.task_id, f);
        if (f.type === 'RESULT_BATCH') {
          batches.push(f);
          for (const r of f.results as Json[]) byTask.set(r.task_id, r);
        }
      }
      return byTask.size >= n;
    });
    return { byTask, batches };
  };

  it('result batches - the node advertises result_batch, and without it in WELCOME signs every result on its own', async () => {
    expect(register.features).toEqual(expect.arrayContaining(['task_batch', 'result_batch']));
    link.frames.splice(0);
    link.send(batchOf('old', 64));
    const { byTask, batches } = await results(link, 64);
    expect(batches).toEqual([]);
    expect([...byTask.values()].every((f) => f.type === 'TASK_RESULT')).toBe(true);
    expect(new Set(byTask.keys()).size).toBe(64);
  }, 60_000);

  it('result batches - once WELCOME lists result_batch, every result arrives once, alone or in a batch whose evidence re-checks', async () => {
    const old = link;
    old.ws.terminate();
    const fresh = await waitFor('the node to register again', async () => {
      const l = await fake.link(nodeId);
      return l !== old ? l : undefined;
    });
    await fresh.next('REGISTER', 'REGISTER');
    fresh.welcome(nodeId, ['task_batch', 'result_batch']);
    await fresh.next('NODE_READY', 'NODE_READY');
    fresh.frames.splice(0);
    fresh.send(batchOf('new', 64));
    const { byTask, batches } = await results(fresh, 64);
    expect([...byTask.keys()].sort()).toEqual(Array.from({ length: 64 }, (_, i) => `new_${i}`).sort());
    for (const b of batches) {
      expect((b.results as Json[]).length).toBeGreaterThanOrEqual(2);
      expect((b.results as Json[]).every((r) => r.node_signature === undefined)).toBe(true);
    }
    for (const [taskId, r] of byTask) {
      expect(r).toMatchObject({ ok: true, output: { value: Number(taskId.slice(4)), node_id: nodeId } });
    }
    // Each batched result re-checks on its own from the batch signature and its proof, as the gateway stores it.
    for (const b of batches) {
      const proofs = resultBatchProofs(b.results as { task_id: string; attempt: number; result_hash: string }[]);
      (b.results as Json[]).forEach((r, i) => {
        const evidence = { ...r, node_signature: b.node_signature, signed_at: b.timestamp, result_batch: proofs[i] };
        expect(verifyResultEvidence(publicKeyPem, evidence as never)).toBe(true);
      });
    }
  }, 60_000);
});
