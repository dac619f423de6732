// Bad input over HTTP and over the node protocol gets a precise error, never a crash, and never disturbs work already running.
import { Agent, request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ToolCallResult } from '../src/protocol/api.js';
import { Cluster, http, type NodeHandle, waitFor } from './harness.js';
import { heartbeat, type Json, pairRawNode, type RawIdentity, RawPeer, taskResult } from './raw-node.js';

/** Frame limit of the gateway under test: a real node's REGISTER (~7 KB with the test tools) must still fit. */
const MAX_FRAME = 16 * 1024;
const MAX_BODY = 4096;

/**
 * An HTTP client on one keep-alive connection, reused for each request as client libraries do. Bodies are
 * streamed in chunks without a content-length.
 */
function keepAliveClient(api: string, token: string) {
  const url = new URL(api);
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const request = (method: string, path: string, chunks: Buffer[] = []) =>
    new Promise<{ status: number; json: Json; text: string }>((resolve, reject) => {
      const auth = { authorization: `Bearer ${token}` };
      const headers = chunks.length > 0 ? { ...auth, 'content-type': 'application/json', 'transfer-encoding': 'chunked' } : auth;
      const req = httpRequest({ host: url.hostname, port: url.port, method, path, agent, headers }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          text += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) as Json, text }));
      });
      req.on('error', reject);
      void (async () => {
        for (const chunk of chunks) {
          if (req.destroyed) return;
          req.write(chunk);
          await new Promise((r) => setTimeout(r, 1));
        }
        req.end();
      })();
    });
  return { request, close: () => agent.destroy() };
}

/** Every API error is exactly `{ ok: false, error: { code, message, ... } }` and shows no stack. */
function expectErrorBody(res: { status: number; json: Json; text: string }, status: number, code: string): string {
  expect(res.status).toBe(status);
  expect(Object.keys(res.json).sort()).toEqual(['error', 'ok']);
  expect(res.json.ok).toBe(false);
  expect(res.json.error.code).toBe(code);
  expect(typeof res.json.error.message).toBe('string');
  expect(res.text).not.toMatch(/\n\s*at /);
  expect(res.text).not.toMatch(/\bat .*\.(js|ts):\d+/);
  return res.json.error.message as string;
}

describe('bad input', () => {
  const c = new Cluster();
  const peers: RawPeer[] = [];
  let worker: NodeHandle;
  let longCall: Promise<ToolCallResult>;
  const post = (path: string, body: string | Buffer, headers?: Record<string, string>) => http(c.gateway.api, 'POST', path, body, headers);
  const call = (body: Json) => post('/v1/tool_call', JSON.stringify(body));
  /** A paired identity for peers that never get as far as registering. */
  let anonymous: RawIdentity;
  const rawIdentity = (nodeId: string) => pairRawNode(c.gateway, nodeId);
  const peer = async (id: RawIdentity = anonymous) => {
    const p = await RawPeer.open(c.gateway.listen, id.tls);
    peers.push(p);
    return p;
  };
  /** A raw peer that has registered and is ONLINE. */
  const registered = async (id: RawIdentity) => {
    const p = await peer(id);
    p.send(id.register);
    expect(await p.next('WELCOME')).toMatchObject({ type: 'WELCOME', node_id: id.nodeId, max_frame_bytes: MAX_FRAME });
    p.send({ v: 1, type: 'NODE_READY', node_id: id.nodeId });
    await waitFor(`${id.nodeId} ONLINE`, async () => (await c.gateway.client.getNode(id.nodeId)).status === 'ONLINE');
    return p;
  };
  const healthz = async () => {
    const res = await http(c.gateway.api, 'GET', '/healthz');
    expect(res.status).toBe(200);
    return res.json;
  };

  beforeAll(async () => {
    await c.startGateway(['--max-body-bytes', String(MAX_BODY), '--max-frame-bytes', String(MAX_FRAME)]);
    worker = await c.startNode({ id: 'edge:worker' });
    anonymous = await rawIdentity('garbage:peer');
    // Runs through every test below; it must finish untouched by the garbage.
    longCall = c.gateway.client.toolCall({
      tool_name: 'slow_echo',
      tool_args: { ms: 6000, value: 'undisturbed' },
      target: { kind: 'explicit', node_id: worker.id },
    });
    await waitFor('long call running', async () => (await c.gateway.client.getNode(worker.id)).load.in_flight > 0);
  }, 60_000);

  afterAll(async () => {
    for (const p of peers) p.close();
    await c.stop();
  });

  describe('bad input - HTTP', () => {
    it('bad input - malformed JSON is 400 FM_ERR_INVALID_JSON', async () => {
      for (const body of ['{"tool_name": "slow_echo",', 'not json', '{tool_name: 1}']) {
        expectErrorBody(await post('/v1/tool_call', body), 400, 'FM_ERR_INVALID_JSON');
      }
    });

    it('bad input - a body of the wrong shape is 400 FM_ERR_INVALID_REQUEST naming the path', async () => {
      const cases: [Json, string][] = [
        [{ tool_name: 42 }, '/tool_name'],
        [{ tool_name: 'slow_echo', tool_args: 'ms=1' }, '/tool_args'],
        [{ tool_name: 'slow_echo', target: { kind: 'nearest' } }, '/target'],
        [{ tool_name: 'slow_echo', tool_args: { ms: 0 }, priority: 'high' }, '/priority'],
        [{ tool_name: 'slow_echo', target: { kind: 'explicit' } }, '/target'],
        [{ tool_name: 'slow_echo', timeout_ms: -5 }, '/timeout_ms'],
        [{ tool_name: '' }, '/tool_name'],
      ];
      for (const [body, path] of cases) {
        const message = expectErrorBody(await call(body), 400, 'FM_ERR_INVALID_REQUEST');
        expect(message).toContain(path);
      }
    });

    it('bad input - a wrong target or tool_args says what was expected there, not only that a union failed', async () => {
      const cases: [Json, string][] = [
        [
          { tool_name: 'slow_echo', target: { kind: 'nearest' } },
          '/target/kind: "nearest" is not valid; expected one of "local", "explicit", "capability", "geographic", "load_balanced", "failover_chain"',
        ],
        [{ tool_name: 'slow_echo', target: { node_id: 'a' } }, '/target/kind: missing; expected one of "local"'],
        [{ tool_name: 'slow_echo', target: { kind: 'explicit' } }, '/target/node_id: Expected required property'],
        [{ tool_name: 'slow_echo', target: { kind: 'geographic', center: { lat: 91, lon: 0 }, radius_meters: 5 } }, '/target/center/lat'],
        [{ tool_name: 'slow_echo', target: 'explicit' }, '/target: expected object'],
        [{ tool_name: 'slow_echo', tool_args: [1] }, '/tool_args: expected object or string'],
        [{ tool_name: 'slow_echo', tool_args: 'ms=1' }, '/tool_args: "ms=1" is not valid; a string here must be a {{…}} template'],
      ];
      for (const [body, text] of cases) {
        const message = expectErrorBody(await call(body), 400, 'FM_ERR_INVALID_REQUEST');
        expect(message).toContain(text);
        expect(message).not.toContain('union');
      }
    });

    it('bad input - a JSON value that is not an object is 400 FM_ERR_INVALID_REQUEST', async () => {
      for (const body of ['[]', '"slow_echo"', '42', 'null']) {
        expectErrorBody(await post('/v1/tool_call', body), 400, 'FM_ERR_INVALID_REQUEST');
      }
    });

    it('bad input - an empty body is 400', async () => {
      for (const body of ['', '   \n']) {
        const res = await post('/v1/tool_call', body);
        expectErrorBody(res, 400, 'FM_ERR_INVALID_REQUEST');
      }
      expectErrorBody(await http(c.gateway.api, 'POST', '/v1/tasks'), 400, 'FM_ERR_INVALID_REQUEST');
    });

    it('bad input - an unknown tool is 404 FM_ERR_UNKNOWN_TOOL', async () => {
      const message = expectErrorBody(await call({ tool_name: 'teleport', tool_args: {} }), 404, 'FM_ERR_UNKNOWN_TOOL');
      expect(message).toContain('teleport');
      const capability = await call({ tool_name: 'teleport', target: { kind: 'capability', required_capabilities: ['platform:linux'] } });
      expectErrorBody(capability, 404, 'FM_ERR_UNKNOWN_TOOL');
    });

    it('bad input - an unknown node in an explicit target is 404 FM_ERR_NODE_NOT_FOUND', async () => {
      const res = await call({ tool_name: 'slow_echo', tool_args: { ms: 0 }, target: { kind: 'explicit', node_id: 'ghost:node' } });
      expect(expectErrorBody(res, 404, 'FM_ERR_NODE_NOT_FOUND')).toContain('ghost:node');
      expectErrorBody(await http(c.gateway.api, 'GET', '/v1/nodes/ghost:node'), 404, 'FM_ERR_NODE_NOT_FOUND');
      expectErrorBody(await http(c.gateway.api, 'GET', '/v1/nodes/ghost:node/health'), 404, 'FM_ERR_NODE_NOT_FOUND');
    });

    it('bad input - arguments that fail the input_schema are 400 FM_ERR_INVALID_ARGS before any dispatch', async () => {
      const { stale_results: staleBefore } = await healthz();
      const cases: [Json, string][] = [
        [{ value: 1 }, 'ms'],
        [{ ms: 'soon' }, 'tool_args/ms'],
        [{ ms: -1 }, 'tool_args/ms'],
        [{ ms: 1, extra: true }, 'tool_args'],
      ];
      for (const [args, where] of cases) {
        for (const path of ['/v1/tool_call', '/v1/tasks']) {
          const res = await post(path, JSON.stringify({ tool_name: 'slow_echo', tool_args: args, target: { kind: 'local' } }));
          const message = expectErrorBody(res, 400, 'FM_ERR_INVALID_ARGS');
          expect(message).toContain(where);
          // Refused at the gateway: no task was created, so there is nothing to look up or retry.
          expect(res.json).not.toHaveProperty('task_id');
          expect(res.json.error).not.toHaveProperty('task_id');
        }
      }
      expect((await healthz()).stale_results).toBe(staleBefore);
    });

    it('bad input - a body over the limit is 413 FM_ERR_PAYLOAD_TOO_LARGE', async () => {
      const big = JSON.stringify({ tool_name: 'slow_echo', tool_args: { ms: 0, value: 'x'.repeat(10 * 1024) } });
      expect(Buffer.byteLength(big)).toBeGreaterThan(MAX_BODY);
      const message = expectErrorBody(await post('/v1/tool_call', big), 413, 'FM_ERR_PAYLOAD_TOO_LARGE');
      expect(message).toContain(String(MAX_BODY));
    });

    it('bad input - a streamed body over the limit, with no content-length, is 413 and the connection serves the next request', async () => {
      const client = keepAliveClient(c.gateway.api, c.gateway.token);
      try {
        const big = Buffer.from(JSON.stringify({ tool_name: 'slow_echo', tool_args: { ms: 0, value: 'x'.repeat(10 * 1024) } }));
        const chunks = Array.from({ length: Math.ceil(big.length / 1024) }, (_, i) => big.subarray(i * 1024, (i + 1) * 1024));
        for (let round = 0; round < 2; round++) {
          const res = await client.request('POST', '/v1/tool_call', chunks);
          expectErrorBody(res, 413, 'FM_ERR_PAYLOAD_TOO_LARGE');
          // A client reuses its connection for whatever it sends next.
          expect(await client.request('GET', '/healthz')).toMatchObject({ status: 200, json: { ok: true } });
        }
      } finally {
        client.close();
      }
    });

    it('bad input - an unknown route is 404 FM_ERR_ROUTE_NOT_FOUND', async () => {
      for (const path of ['/v2/tool_call', '/v1/nodes/a/b/c', '/', '/v1/tool_call/extra']) {
        expectErrorBody(await http(c.gateway.api, 'GET', path), 404, 'FM_ERR_ROUTE_NOT_FOUND');
      }
      expectErrorBody(await post('/v1/nope', '{}'), 404, 'FM_ERR_ROUTE_NOT_FOUND');
    });

    it('bad input - a wrong method is 405 FM_ERR_METHOD_NOT_ALLOWED with an allow header', async () => {
      const res = await http(c.gateway.api, 'GET', '/v1/tool_call');
      expectErrorBody(res, 405, 'FM_ERR_METHOD_NOT_ALLOWED');
      expect(res.headers.allow).toBe('POST');
      expectErrorBody(await http(c.gateway.api, 'DELETE', '/v1/nodes'), 405, 'FM_ERR_METHOD_NOT_ALLOWED');
      expectErrorBody(await http(c.gateway.api, 'PUT', '/healthz', '{}'), 405, 'FM_ERR_METHOD_NOT_ALLOWED');
    });

    it('bad input - bad query values are 400 FM_ERR_INVALID_REQUEST', async () => {
      const message = expectErrorBody(await http(c.gateway.api, 'GET', '/v1/nodes?status=sleepy'), 400, 'FM_ERR_INVALID_REQUEST');
      expect(message).toContain('sleepy');
      expectErrorBody(await http(c.gateway.api, 'GET', '/v1/tasks/task_x?wait_ms=soon'), 400, 'FM_ERR_INVALID_REQUEST');
    });

    it('bad input - a malformed percent-encoding in the path is 400 FM_ERR_INVALID_REQUEST, not an internal error', async () => {
      for (const path of ['/v1/nodes/%E0%A4%A', '/v1/nodes/%ZZ/health', '/v1/tasks/%']) {
        expectErrorBody(await http(c.gateway.api, 'GET', path), 400, 'FM_ERR_INVALID_REQUEST');
      }
    });

    it('bad input - the gateway still answers after all of it', async () => {
      expect(await healthz()).toMatchObject({ ok: true, status: 'ok' });
      expect(c.gateway.proc.proc.exitCode).toBeNull();
    });
  });

  describe('bad input - frames', () => {
    it('bad input - text that is not JSON gets FM_ERR_MALFORMED_FRAME', async () => {
      const { frames_rejected: before } = await healthz();
      const p = await peer();
      p.send('hello, gateway');
      expect(await p.next()).toMatchObject({ v: 1, type: 'ERROR', code: 'FM_ERR_MALFORMED_FRAME' });
      p.send('{"type":');
      expect(await p.next()).toMatchObject({ type: 'ERROR', code: 'FM_ERR_MALFORMED_FRAME' });
      expect(p.open).toBe(true);
      expect((await healthz()).frames_rejected).toBe(before + 2);
    });

    it('bad input - a JSON array gets FM_ERR_MALFORMED_FRAME', async () => {
      const p = await peer();
      p.send('[{"v":1,"type":"REGISTER"}]');
      expect(await p.next()).toMatchObject({ type: 'ERROR', code: 'FM_ERR_MALFORMED_FRAME' });
    });

    it('bad input - an unknown frame type gets FM_ERR_MALFORMED_FRAME naming it', async () => {
      const p = await peer();
      p.send({ v: 1, type: 'SELF_DESTRUCT' });
      const error = await p.next();
      expect(error).toMatchObject({ type: 'ERROR', code: 'FM_ERR_MALFORMED_FRAME' });
      expect(error.message).toContain('SELF_DESTRUCT');
    });

    it('bad input - a binary frame gets FM_ERR_MALFORMED_FRAME', async () => {
      const p = await peer();
      p.send(Buffer.from(JSON.stringify(anonymous.register)));
      expect(await p.next()).toMatchObject({ type: 'ERROR', code: 'FM_ERR_MALFORMED_FRAME' });
    });

    it('bad input - a frame before REGISTER gets FM_ERR_NOT_REGISTERED and the socket is closed 1008', async () => {
      const p = await peer();
      p.send(heartbeat('early:peer'));
      const error = await p.next();
      expect(error).toMatchObject({ type: 'ERROR', code: 'FM_ERR_NOT_REGISTERED' });
      expect(error.message).toContain('HEARTBEAT');
      expect((await p.closed).code).toBe(1008);
      expectErrorBody(await http(c.gateway.api, 'GET', '/v1/nodes/early:peer'), 404, 'FM_ERR_NODE_NOT_FOUND');
    });

    it('bad input - a REGISTER with wrong types gets FM_ERR_MALFORMED_FRAME naming the field and registers nothing', async () => {
      const id = await rawIdentity('typo:peer');
      const cases: [Json, string][] = [
        [{ max_concurrency: 'four' }, '/max_concurrency'],
        [{ capabilities: 'hardware:gps' }, '/capabilities'],
        [{ node_id: 42 }, '/node_id'],
        [{ tools: [{ name: 'raw_tool' }] }, '/tools'],
      ];
      const p = await peer(id);
      for (const [change, path] of cases) {
        p.send({ ...id.register, ...change });
        const error = await p.next();
        expect(error).toMatchObject({ type: 'ERROR', code: 'FM_ERR_MALFORMED_FRAME' });
        expect(error.message).toContain(path);
      }
      expectErrorBody(await http(c.gateway.api, 'GET', '/v1/nodes/typo:peer'), 404, 'FM_ERR_NODE_NOT_FOUND');
    });

    it('bad input - a REGISTER with no common version gets FM_ERR_PROTOCOL_VERSION and the socket is closed', async () => {
      const id = await rawIdentity('future:peer');
      const p = await peer(id);
      p.send({ ...id.register, v: 99, versions: [99] });
      const error = await p.next();
      expect(error).toMatchObject({ type: 'ERROR', code: 'FM_ERR_PROTOCOL_VERSION' });
      expect(error.message).toContain('99');
      expect((await p.closed).code).toBe(1008);
      expectErrorBody(await http(c.gateway.api, 'GET', '/v1/nodes/future:peer'), 404, 'FM_ERR_NODE_NOT_FOUND');
    });

    it('bad input - an oversized frame gets FM_ERR_FRAME_TOO_LARGE and the connection stays usable', async () => {
      const id = await rawIdentity('big:peer');
      const p = await registered(id);
      p.send({ ...heartbeat(id.nodeId), sent_at: 'x'.repeat(2 * MAX_FRAME) });
      const error = await p.next();
      expect(error).toMatchObject({ type: 'ERROR', code: 'FM_ERR_FRAME_TOO_LARGE' });
      expect(error.message).toContain(String(MAX_FRAME));
      expect(p.open).toBe(true);
      // A heartbeat on the same connection still counts.
      p.send(heartbeat(id.nodeId, 0.77));
      await waitFor('heartbeat applied', async () => (await c.gateway.client.getNode(id.nodeId)).load.cpu === 0.77);
      expect((await c.gateway.client.nodeHealth(id.nodeId)).connected).toBe(true);
    });

    it('bad input - a registered peer sending a malformed frame gets an ERROR that echoes its task_id', async () => {
      const id = await rawIdentity('echo:peer');
      const p = await registered(id);
      p.send({ v: 1, type: 'TASK_RESULT', task_id: 'task_made_up', attempt: 1, ok: 'perhaps' });
      expect(await p.next()).toMatchObject({ type: 'ERROR', code: 'FM_ERR_MALFORMED_FRAME', task_id: 'task_made_up' });
      p.send({ ...heartbeat('someone:else') });
      const error = await p.next();
      expect(error).toMatchObject({ type: 'ERROR', code: 'FM_ERR_MALFORMED_FRAME' });
      expect(error.message).toContain('someone:else');
      p.send({ v: 1, type: 'TASK', task_id: 'task_x', attempt: 1, tool_name: 'raw_tool', tool_args: {}, timeout_ms: 10 });
      expect(await p.next()).toMatchObject({ type: 'ERROR', code: 'FM_ERR_MALFORMED_FRAME' });
      expect(p.open).toBe(true);
    });

    it('bad input - a TASK_RESULT for a task never sent is discarded and counted', async () => {
      const id = await rawIdentity('stale:peer');
      const p = await registered(id);
      const before = await healthz();
      p.send(taskResult(id.privateKey, 'task_never_sent', 1, { forged: true }));
      await waitFor('stale result counted', async () => (await healthz()).stale_results === before.stale_results + 1);
      expect(p.open).toBe(true);
      expect(await http(c.gateway.api, 'GET', '/v1/tasks/task_never_sent')).toMatchObject({ status: 404 });
    });

    it('bad input - a node that registers again replaces its old connection without failing calls on the new one', async () => {
      const id = await rawIdentity('dup:peer');
      const old = await registered(id);
      // The old socket goes half-open: it no longer reads, so it never answers the gateway's close.
      old.ws.pause();
      const fresh = await registered(id);
      const pending = c.gateway.client.toolCall({ tool_name: 'raw_tool', tool_args: {}, target: { kind: 'explicit', node_id: id.nodeId } });
      const task = await fresh.next('TASK');
      expect(task).toMatchObject({ type: 'TASK', tool_name: 'raw_tool' });
      fresh.send({ v: 1, type: 'TASK_ACK', task_id: task.task_id, attempt: task.attempt });
      // Only now does the old socket finally go away.
      old.close();
      const settledEarly = await Promise.race([pending.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), 500))]);
      fresh.send(taskResult(id.privateKey, task.task_id as string, task.attempt as number, { answered: 'on the new connection' }));
      const r = await pending;
      expect(r.error).toBeUndefined();
      expect(r).toMatchObject({ ok: true, node_id: id.nodeId, output: { answered: 'on the new connection' }, verified: true });
      expect(settledEarly).toBe(false);
      expect((await c.gateway.client.nodeHealth(id.nodeId)).connected).toBe(true);
    });
  });

  describe('bad input - results', () => {
    it('bad input - a result over the frame limit fails the call with FM_ERR_RESULT_TOO_LARGE and the node keeps serving', async () => {
      const r = await c.gateway.client.toolCall({
        tool_name: 'big_output',
        tool_args: { bytes: MAX_FRAME + 1024 },
        target: { kind: 'explicit', node_id: worker.id },
      });
      expect(r.ok).toBe(false);
      expect(r.error?.code).toBe('FM_ERR_RESULT_TOO_LARGE');
      expect(r.error?.message).toContain('big_output');
      expect(r.node_id).toBe(worker.id);
      const task = await c.gateway.client.getTask(r.task_id);
      expect(task.status).toBe('failed');
      expect(task.attempts).toHaveLength(1);
      // Not retried elsewhere: a bigger result would not fit any better on another node.
      expect(task.attempts[0]?.error?.code).toBe('FM_ERR_RESULT_TOO_LARGE');
      const small = await c.gateway.client.toolCall({
        tool_name: 'big_output',
        tool_args: { bytes: 100 },
        target: { kind: 'explicit', node_id: worker.id },
      });
      expect(small).toMatchObject({ ok: true, output: { data: 'x'.repeat(100) }, verified: true });
      expect((await c.gateway.client.getNode(worker.id)).status).toBe('ONLINE');
    });

    it('bad input - a result over the frame limit on a local target is not retried on other nodes', async () => {
      const res = await http(
        c.gateway.api,
        'POST',
        '/v1/tool_call',
        JSON.stringify({ tool_name: 'big_output', tool_args: { bytes: MAX_FRAME * 2 }, target: { kind: 'local' } }),
      );
      expect(res.status).toBe(502);
      expect(res.json).toMatchObject({ ok: false, error: { code: 'FM_ERR_RESULT_TOO_LARGE' }, degraded: false });
      expect(res.json.execution_path).toHaveLength(1);
    });
  });

  it('bad input - the call started before all of it completes undisturbed', async () => {
    const r = await longCall;
    expect(r).toMatchObject({ ok: true, node_id: worker.id, output: { value: 'undisturbed', node_id: worker.id }, verified: true });
    expect(r.execution_path).toEqual([worker.id]);
    expect(r.degraded).toBe(false);
    expect(await healthz()).toMatchObject({ ok: true, status: 'ok' });
    expect(c.gateway.proc.proc.exitCode).toBeNull();
    expect(worker.proc.proc.exitCode).toBeNull();
  });
});
