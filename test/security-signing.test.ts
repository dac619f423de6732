// Signed tasks and results: forged and replayed results are caught, and nodes run only TASK frames the gateway signed.
import { createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type WebSocket, WebSocketServer } from 'ws';
import { startProcess } from '../src/cli/processes.js';
import type { ToolCallResult } from '../src/protocol/api.js';
import { type SignedTaskFields, signTask, verifyTask } from '../src/protocol/signing.js';
import { Cluster, cliPath, testToolsModule, waitFor } from './harness.js';
import { type Json, pairRawNode, type RawIdentity, type RawPeer, registerRaw, taskFailure, taskResult } from './raw-node.js';

describe('signed tasks and results', () => {
  const c = new Cluster();
  const peers: RawPeer[] = [];
  let id: RawIdentity;
  let peer: RawPeer;

  /** Starts a call to the raw node and returns it with the TASK frame the node received. */
  const callRaw = async (body: Json = {}) => {
    const pending = c.gateway.client.toolCall({
      tool_name: 'raw_tool',
      tool_args: { n: Math.random() },
      target: { kind: 'explicit', node_id: id.nodeId },
      ...body,
    });
    const task = await peer.next('TASK');
    expect(task.type).toBe('TASK');
    return { pending, task };
  };

  beforeAll(async () => {
    await c.startGateway();
    id = await pairRawNode(c.gateway, 'signing:raw');
    peer = await registerRaw(c.gateway.listen, c.gateway.client, id);
    peers.push(peer);
  }, 60_000);
  afterAll(async () => {
    for (const p of peers) p.close();
    await c.stop();
  });

  it('signed tasks - every TASK names its node and carries a gateway signature that verifies with the key from pairing', async () => {
    const { pending, task } = await callRaw();
    expect(task).toMatchObject({ node_id: id.nodeId, issued_at: expect.any(String), gateway_signature: expect.any(String) });
    expect(verifyTask(id.gatewaySigningKeyPem, task as SignedTaskFields, task.gateway_signature)).toBe(true);
    expect(verifyTask(id.gatewaySigningKeyPem, { ...(task as SignedTaskFields), tool_args: { n: -1 } }, task.gateway_signature)).toBe(
      false,
    );
    peer.send(taskResult(id.privateKey, task.task_id, task.attempt, { fine: true }));
    expect(await pending).toMatchObject({ ok: true, output: { fine: true }, verified: true });
  });

  it('signed results - a result signed with another key is verified:false with the reason', async () => {
    const { pending, task } = await callRaw();
    const forger = generateKeyPairSync('ed25519').privateKey;
    peer.send(taskResult(forger, task.task_id, task.attempt, { forged: true }));
    const r = await pending;
    expect(r).toMatchObject({ ok: true, verified: false });
    expect(r.verification_error).toContain('node_signature');
    const stored = await c.gateway.client.getTask(r.task_id);
    expect(stored.attempts[0]?.verified).toBe(false);
  });

  it('signed results - output changed after signing is verified:false with the reason', async () => {
    const { pending, task } = await callRaw();
    peer.send({ ...taskResult(id.privateKey, task.task_id, task.attempt, { amount: 1 }), output: { amount: 1000 } });
    const r = await pending;
    expect(r).toMatchObject({ ok: true, verified: false, output: { amount: 1000 } });
    expect(r.verification_error).toContain('result_hash');
  });

  it('signed results - a result replayed for another task is refused, and the task waits for its own', async () => {
    const first = await callRaw();
    const original = taskResult(id.privateKey, first.task.task_id, first.task.attempt, { answer: 'for the first task' });
    peer.send(original);
    expect(await first.pending).toMatchObject({ ok: true, verified: true });
    const second = await callRaw();
    peer.send({ ...original, task_id: second.task.task_id });
    const refused = await peer.next('ERROR');
    expect(refused).toMatchObject({ type: 'ERROR', code: 'FM_ERR_RESULT_REPLAYED', task_id: second.task.task_id });
    // The same signature written another way (base64 padding left off) is the same signature.
    peer.send({ ...original, task_id: second.task.task_id, node_signature: String(original.node_signature).replace(/=+$/, '') });
    expect(await peer.next('ERROR')).toMatchObject({ type: 'ERROR', code: 'FM_ERR_RESULT_REPLAYED', task_id: second.task.task_id });
    expect((await c.gateway.client.getTask(second.task.task_id)).status).toBe('running');
    peer.send(taskResult(id.privateKey, second.task.task_id, second.task.attempt, { answer: 'for the second task' }));
    expect(await second.pending).toMatchObject({ ok: true, verified: true, output: { answer: 'for the second task' } });
  });

  it('signed results - a result replayed for another attempt of the same task is refused', async () => {
    const { pending, task } = await callRaw({ retry: { max_attempts: 2, backoff_ms: 0 } });
    const failed = taskFailure(id.privateKey, task.task_id, 1, { code: 'FM_ERR_WORKER_CRASHED', message: 'worker died', retryable: true });
    peer.send(failed);
    const retry = await peer.next('TASK attempt 2');
    expect(retry).toMatchObject({ type: 'TASK', task_id: task.task_id, attempt: 2 });
    peer.send({ ...failed, attempt: 2 });
    expect(await peer.next('ERROR')).toMatchObject({ type: 'ERROR', code: 'FM_ERR_RESULT_REPLAYED', task_id: task.task_id });
    peer.send(taskResult(id.privateKey, task.task_id, 2, { second: 'try' }));
    const r: ToolCallResult = await pending;
    expect(r).toMatchObject({ ok: true, verified: true, output: { second: 'try' } });
    expect(r.execution_path).toEqual([`${id.nodeId} (failed)`, `${id.nodeId} (success)`]);
  });
});

describe('signed tasks - a node refuses TASK frames the gateway did not sign', () => {
  const c = new Cluster();
  let fake: Server;
  let wss: WebSocketServer;
  let conn: WebSocket | undefined;
  let nodeReady: Promise<unknown>;
  const received: Json[] = [];
  let read = 0;
  const next = (what: string) =>
    waitFor(what, () => {
      const f = received[read];
      if (f) read += 1;
      return f;
    });

  beforeAll(async () => {
    await c.startGateway();
    // Pair the node with the real gateway, then stop it.
    const node = await c.startNode({ id: 'signing:node' });
    await node.proc.stop();
    // A peer that holds the gateway's TLS identity but signs tasks as it pleases.
    const tls = join(c.gateway.dataDir, 'tls');
    const ca = readFileSync(join(tls, 'ca.crt'), 'utf8');
    fake = createServer({
      key: readFileSync(join(tls, 'gateway.key')),
      cert: readFileSync(join(tls, 'gateway.crt'), 'utf8') + ca,
      ca: [ca],
      requestCert: true,
      rejectUnauthorized: true,
    });
    wss = new WebSocketServer({ server: fake });
    wss.on('connection', (ws) => {
      conn = ws;
      ws.on('message', (d) => received.push(JSON.parse(String(d)) as Json));
    });
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
    const addr = `127.0.0.1:${(fake.address() as AddressInfo).port}`;
    // Ready only once the test below has sent its WELCOME.
    nodeReady = startProcess(
      ['node', '--gateway', addr, '--id', 'signing:node', '--data-dir', node.dataDir, '--tools-module', testToolsModule],
      'node ready',
      {
        cliPath,
      },
    ).then(({ managed }) => c.procs.push(managed));
  }, 60_000);
  afterAll(async () => {
    for (const ws of wss?.clients ?? []) ws.terminate();
    fake?.close();
    await c.stop();
  });

  it('signed tasks - a forged, a misdirected and a genuine TASK: the node runs only the genuine one', async () => {
    expect(await next('REGISTER')).toMatchObject({ type: 'REGISTER', node_id: 'signing:node' });
    const send = (frame: Json) => conn?.send(JSON.stringify({ v: 1, ...frame }));
    send({
      type: 'WELCOME',
      version: 1,
      gateway_id: 'gateway:fake',
      node_id: 'signing:node',
      leader_id: 'gateway:fake',
      peers: [],
      heartbeat_interval_ms: 60_000,
      max_frame_bytes: 1024 * 1024,
    });
    await nodeReady;
    expect(await next('NODE_READY')).toMatchObject({ type: 'NODE_READY' });
    const task = (taskId: string, nodeId = 'signing:node'): SignedTaskFields => ({
      task_id: taskId,
      attempt: 1,
      node_id: nodeId,
      tool_name: 'slow_echo',
      tool_args: { ms: 0, value: taskId },
      timeout_ms: 5000,
      issued_at: new Date().toISOString(),
    });
    const forger = generateKeyPairSync('ed25519').privateKey;
    const gatewayKey = createPrivateKey(readFileSync(join(c.gateway.dataDir, 'tls', 'gateway-signing.key'), 'utf8'));
    const forged = task('task_forged');
    send({ type: 'TASK', ...forged, gateway_signature: signTask(forger, forged) });
    const misdirected = task('task_misdirected', 'someone:else');
    send({ type: 'TASK', ...misdirected, gateway_signature: signTask(gatewayKey, misdirected) });
    const tampered = task('task_tampered');
    send({ type: 'TASK', ...tampered, gateway_signature: signTask(gatewayKey, tampered), timeout_ms: 60_000 });
    const genuine = task('task_genuine');
    send({ type: 'TASK', ...genuine, gateway_signature: signTask(gatewayKey, genuine) });
    const answers: Json[] = [];
    await waitFor('the genuine result', async () => {
      for (;;) {
        const f = received[read];
        if (!f) break;
        read += 1;
        if (f.type !== 'HEARTBEAT') answers.push(f);
      }
      return answers.some((f) => f.type === 'TASK_RESULT');
    });
    const errors = answers.filter((f) => f.type === 'ERROR');
    expect(errors.map((e) => [e.task_id, e.code])).toEqual([
      ['task_forged', 'FM_ERR_TASK_SIGNATURE'],
      ['task_misdirected', 'FM_ERR_TASK_SIGNATURE'],
      ['task_tampered', 'FM_ERR_TASK_SIGNATURE'],
    ]);
    expect(answers.filter((f) => f.type === 'TASK_ACK').map((f) => f.task_id)).toEqual(['task_genuine']);
    expect(answers.find((f) => f.type === 'TASK_RESULT')).toMatchObject({
      task_id: 'task_genuine',
      ok: true,
      output: { value: 'task_genuine' },
    });
  });
});
