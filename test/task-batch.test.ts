// Batched task signatures: the tasks sent to one node in one turn go under one gateway signature (TASK_BATCH) to nodes that
// advertise it, older nodes keep single TASK frames, and a node refuses a whole batch the gateway did not sign.
import { generateKeyPairSync } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SignedTaskBatchFields, signTask, signTaskBatch, verifyTask } from '../src/protocol/signing.js';
import { type FakeGateway, type FakeLink, nodeOnFakeGateway } from './fake-gateway.js';
import { Cluster, convertClosedLoop, http, waitFor } from './harness.js';
import { type Json, pairRawNode, type RawIdentity, type RawPeer, registerRaw, taskResult } from './raw-node.js';

describe('task batches - real gateway and nodes', () => {
  const c = new Cluster();
  const peers: RawPeer[] = [];

  beforeAll(async () => {
    await c.startGateway();
    await c.startNode({ id: 'batch:node' });
  }, 60_000);
  afterAll(async () => {
    for (const p of peers) p.close();
    await c.stop();
  });

  it('task batches - 64 callers, 400 calls to one node: some go as TASK_BATCH, every answer is verified and stored', async () => {
    const client = c.gateway.client;
    const answers = await convertClosedLoop(client, 'batch:node', 400, 64);
    const health = (await http(c.gateway.api, 'GET', '/healthz')).json;
    expect(health.task_batches).toBeGreaterThan(0);
    expect(health.batched_tasks).toBeGreaterThanOrEqual(2 * health.task_batches);
    const metrics = (await http(c.gateway.api, 'GET', '/metrics')).text;
    expect(Number(/^fieldmesh_task_batches_total (\d+)$/m.exec(metrics)?.[1])).toBe(health.task_batches);
    for (const r of answers.slice(0, 20)) {
      const task = await client.getTask(r.task_id);
      expect(task.attempts.map((a) => [a.attempt, a.outcome, a.verified])).toEqual([[1, 'success', true]]);
    }
  }, 90_000);

  it('task batches - a node that does not advertise task_batch gets one signed TASK frame per task', async () => {
    const id: RawIdentity = await pairRawNode(c.gateway, 'batch:raw');
    const peer = await registerRaw(c.gateway.listen, c.gateway.client, id);
    peers.push(peer);
    const calls = Array.from({ length: 8 }, (_, i) =>
      c.gateway.client.toolCall({ tool_name: 'raw_tool', tool_args: { i }, target: { kind: 'explicit', node_id: id.nodeId } }),
    );
    for (let i = 0; i < 8; i++) {
      let frame: Json;
      do frame = await peer.next('TASK');
      while (frame.type === 'HEARTBEAT');
      expect(frame.type).toBe('TASK');
      expect(verifyTask(id.gatewaySigningKeyPem, frame as never, frame.gateway_signature)).toBe(true);
      peer.send(taskResult(id.privateKey, frame.task_id, frame.attempt, { i: frame.tool_args.i }));
    }
    const answers = await Promise.all(calls);
    expect(answers.map((r) => [r.ok, r.verified, r.output])).toEqual(Array.from({ length: 8 }, (_, i) => [true, true, { i }]));
  }, 60_000);
});

describe('task batches - a node refuses TASK_BATCH frames the gateway did not sign', () => {
  const c = new Cluster();
  const nodeId = 'batch:signed';
  let fake: FakeGateway;
  let link: FakeLink;
  let register: Json;

  beforeAll(async () => {
    await c.startGateway();
    ({ fake, link, register } = await nodeOnFakeGateway(c, nodeId));
  }, 60_000);
  afterAll(async () => {
    fake?.close();
    await c.stop();
  });

  const tasks = (prefix: string, n = 2) =>
    Array.from({ length: n }, (_, i) => ({
      task_id: `${prefix}_${i}`,
      attempt: 1,
      tool_name: 'slow_echo',
      tool_args: { ms: 0, value: `${prefix}_${i}` },
      timeout_ms: 5000,
    }));
  const batch = (fields: SignedTaskBatchFields, key = fake.signingKey): Json => ({
    type: 'TASK_BATCH',
    ...fields,
    gateway_signature: signTaskBatch(key, fields),
  });
  const fields = (prefix: string, node = nodeId): SignedTaskBatchFields => ({
    node_id: node,
    issued_at: new Date().toISOString(),
    tasks: tasks(prefix),
  });

  /** Frames from the node other than heartbeats until `done` says enough. */
  const collect = async (done: (frames: Json[]) => boolean): Promise<Json[]> => {
    const got: Json[] = [];
    await waitFor('answers from the node', async () => {
      while (!done(got)) {
        const f = link.frames.shift();
        if (!f) return false;
        if (f.type !== 'HEARTBEAT') got.push(f);
      }
      return true;
    });
    return got;
  };

  it('task batches - the node advertises task_batch in REGISTER', () => {
    expect(register.features).toContain('task_batch');
  });

  it('task batches - forged, tampered and misdirected batches are refused whole, task by task; a genuine one runs every task', async () => {
    // What the node sent while starting up is done with; the link's frames from here on are this test's.
    link.frames.splice(0);
    const forger = generateKeyPairSync('ed25519').privateKey;
    link.send(batch(fields('forged'), forger));
    const tampered = batch(fields('tampered'));
    (tampered.tasks as Json[])[1] = { ...(tampered.tasks as Json[])[1], tool_args: { ms: 0, value: 'changed' } };
    link.send(tampered);
    link.send(batch(fields('misdirected', 'someone:else')));
    const genuine = batch(fields('genuine'));
    link.send(genuine);
    const answers = await collect((got) => got.filter((f) => f.type === 'TASK_RESULT').length === 2);
    expect(answers.filter((f) => f.type === 'ERROR').map((e) => [e.task_id, e.code])).toEqual([
      ['forged_0', 'FM_ERR_TASK_SIGNATURE'],
      ['forged_1', 'FM_ERR_TASK_SIGNATURE'],
      ['tampered_0', 'FM_ERR_TASK_SIGNATURE'],
      ['tampered_1', 'FM_ERR_TASK_SIGNATURE'],
      ['misdirected_0', 'FM_ERR_TASK_SIGNATURE'],
      ['misdirected_1', 'FM_ERR_TASK_SIGNATURE'],
    ]);
    expect(answers.filter((f) => f.type === 'TASK_ACK').map((f) => f.task_id)).toEqual(['genuine_0', 'genuine_1']);
    const results = answers.filter((f) => f.type === 'TASK_RESULT');
    expect(results.map((r) => [r.task_id, r.ok, r.output]).sort()).toEqual([
      ['genuine_0', true, { value: 'genuine_0', node_id: nodeId }],
      ['genuine_1', true, { value: 'genuine_1', node_id: nodeId }],
    ]);

    // The same batch again: no task runs twice; the node answers each with the result it already signed.
    link.send(genuine);
    const again = await collect((got) => got.filter((f) => f.type === 'TASK_RESULT').length === 2);
    expect(again.filter((f) => f.type === 'TASK_ACK').map((f) => f.task_id)).toEqual(['genuine_0', 'genuine_1']);
    const bySig = (fs: Json[]) => fs.map((r) => [r.task_id, r.timestamp, r.node_signature]).sort();
    expect(bySig(again.filter((f) => f.type === 'TASK_RESULT'))).toEqual(bySig(results));
    expect(again.some((f) => f.type === 'ERROR')).toBe(false);

    // And the node keeps serving single TASK frames.
    const single = { ...tasks('single', 1)[0], node_id: nodeId, issued_at: new Date().toISOString() } as Parameters<typeof signTask>[1];
    link.send({ type: 'TASK', ...single, gateway_signature: signTask(fake.signingKey, single) });
    const last = await collect((got) => got.some((f) => f.type === 'TASK_RESULT'));
    expect(last.find((f) => f.type === 'TASK_RESULT')).toMatchObject({
      task_id: 'single_0',
      ok: true,
      output: { value: 'single_0', node_id: nodeId },
    });
  }, 60_000);
});
