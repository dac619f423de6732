import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { FieldmeshApiError, FieldmeshClient } from '../src/client/index.js';
import { FieldmeshError } from '../src/core/errors.js';
import type { ToolCallResult } from '../src/protocol/api.js';
import { Cluster, http, waitFor } from './harness.js';

const NODE = 'ws:node';
const MAX_BODY = 64 * 1024;

const convert = (value: number) => ({
  tool_name: 'unit_convert',
  tool_args: { value, from_unit: 'miles', to_unit: 'km' },
  target: { kind: 'explicit' as const, node_id: NODE },
});
const slowEcho = (ms: number, value: unknown) => ({ tool_name: 'slow_echo', tool_args: { ms, value } });

// biome-ignore lint/suspicious/noExplicitAny: tests read arbitrary fields of answer frames
type Answer = { id: any; status: number; body: any };

/** A raw connection to /v1/ws, to send the frames the client SDK never sends. */
class RawSocket {
  readonly answers: Answer[] = [];
  readonly ws: WebSocket;
  readonly closed: Promise<number>;
  readonly #waiters: (() => void)[] = [];

  constructor(api: string, token: string) {
    this.ws = new WebSocket(`${api.replace(/^http/, 'ws')}/v1/ws`, { headers: { authorization: `Bearer ${token}` } });
    // A refused or cut connection is what some tests look for; its error is read from the close or the answer.
    this.ws.on('error', () => undefined);
    this.ws.on('message', (data: Buffer) => {
      this.answers.push(JSON.parse(data.toString('utf8')) as Answer);
      for (const w of this.#waiters.splice(0)) w();
    });
    this.closed = new Promise((resolve) => this.ws.on('close', (code) => resolve(code)));
  }

  opened(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.ws.once('open', () => resolve());
      this.ws.once('error', reject);
    });
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === 'string' || Buffer.isBuffer(frame) ? frame : JSON.stringify(frame));
  }

  /** The answers that `match`, once there are `count` of them. */
  async waitFor(count: number, match: (a: Answer) => boolean): Promise<Answer[]> {
    for (;;) {
      const found = this.answers.filter(match);
      if (found.length >= count) return found;
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  close(): void {
    this.ws.close();
  }
}

async function rejection(call: Promise<unknown>): Promise<unknown> {
  return call.then(
    () => {
      throw new Error('the call succeeded');
    },
    (err: unknown) => err,
  );
}

describe('client websocket', () => {
  const c = new Cluster();
  let api: string;
  const wsClient = (token = c.gateway.token) => new FieldmeshClient({ baseUrl: api, token, transport: 'ws' });

  beforeAll(async () => {
    await c.startGateway(['--max-body-bytes', String(MAX_BODY)]);
    api = c.gateway.api;
    await c.startNode({ id: NODE });
  }, 60_000);
  afterAll(() => c.stop());

  it('client websocket - many concurrent calls over one connection each get their own answer, the quick ones before a slow one', async () => {
    const client = wsClient();
    try {
      const order: string[] = [];
      const slow = client.toolCall(slowEcho(2500, 'slow')).then((r) => {
        order.push('slow');
        return r;
      });
      const quick = Array.from({ length: 300 }, (_, i) =>
        client.toolCall(convert(i + 0.5)).then((r) => {
          order.push(`quick${i}`);
          return r;
        }),
      );
      const results = await Promise.all(quick);
      results.forEach((r, i) => {
        expect(r.ok, JSON.stringify(r.error)).toBe(true);
        expect(r.verified).toBe(true);
        expect(r.node_id).toBe(NODE);
        expect((r.output as { value: number }).value).toBeCloseTo((i + 0.5) * 1.609344, 6);
      });
      expect(new Set(results.map((r) => r.task_id)).size).toBe(300);
      const s = await slow;
      expect(s.ok).toBe(true);
      expect((s.output as { value: unknown }).value).toBe('slow');
      expect(order.at(-1)).toBe('slow');
      // All of it on one connection.
      expect((await http(api, 'GET', '/healthz')).json.client_sockets).toBe(1);
      // A submitted task is stored and runs, as with POST /v1/tasks.
      const taskId = await client.submitTask(convert(3));
      const task = await c.gateway.client.getTask(taskId, 10_000);
      expect(task.status).toBe('succeeded');
    } finally {
      client.close();
    }
    await waitFor('the connection to close', async () => (await http(api, 'GET', '/healthz')).json.client_sockets === 0);
  });

  it('client websocket - answers and errors are those of POST /v1/tool_call', async () => {
    const ws = wsClient();
    const viaHttp = c.gateway.client;
    try {
      const failed = { tool_name: 'fail_with', tool_args: { code: 'FM_ERR_EXECUTION', message: 'boom' }, target: convert(1).target };
      const [a, b] = await Promise.all([ws.toolCall(failed), viaHttp.toolCall(failed)]);
      expect(a.ok).toBe(false);
      expect(a.error).toEqual(b.error);
      expect(a.execution_path.length).toBe(b.execution_path.length);
      for (const body of [
        { tool_name: 'no_such_tool', tool_args: {} },
        { tool_args: {} },
        { tool_name: 'unit_convert', tool_args: { value: 'x', from_unit: 'miles', to_unit: 'km' }, target: convert(1).target },
        { tool_name: 'unit_convert', tool_args: {}, timeout_ms: -1 },
      ]) {
        const call = (client: FieldmeshClient) =>
          client.toolCall(body as never).then(
            (r) => ({ result: r }),
            (err: unknown) => ({ err }),
          );
        const [overWs, overHttp] = await Promise.all([call(ws), call(viaHttp)]);
        if ('err' in overHttp) {
          expect('err' in overWs, JSON.stringify(body)).toBe(true);
          const e1 = (overWs as { err: FieldmeshApiError }).err;
          const e2 = overHttp.err as FieldmeshApiError;
          expect(e1).toBeInstanceOf(FieldmeshApiError);
          expect([e1.status, e1.code, e1.message]).toEqual([e2.status, e2.code, e2.message]);
        } else {
          const r1 = (overWs as { result: ToolCallResult }).result;
          expect([r1.ok, r1.error?.code]).toEqual([overHttp.result.ok, overHttp.result.error?.code]);
        }
      }
    } finally {
      ws.close();
    }
  });

  it('client websocket - a token is checked at the upgrade, and each call needs the scope of its route', async () => {
    const admin = c.gateway.token;
    const wrong = `${admin.slice(0, -1)}${admin.endsWith('A') ? 'B' : 'A'}`;
    for (const token of [wrong, 'not-a-token']) {
      const err = await rejection(wsClient(token).toolCall(convert(1)));
      expect(err).toBeInstanceOf(FieldmeshApiError);
      expect(err).toMatchObject({ status: 401, code: 'FM_ERR_UNAUTHORIZED' });
    }
    const none = await rejection(new FieldmeshClient({ baseUrl: api, token: '', transport: 'ws' }).toolCall(convert(1)));
    expect(none).toMatchObject({ status: 401, code: 'FM_ERR_UNAUTHORIZED' });
    // The refusal is an HTTP answer to the upgrade, as the API gives.
    const raw = new RawSocket(api, wrong);
    const refused = await new Promise<{ status: number; auth: string | undefined }>((resolve) =>
      raw.ws.on('unexpected-response', (_req, res) => resolve({ status: res.statusCode ?? 0, auth: res.headers['www-authenticate'] })),
    );
    expect(refused.status).toBe(401);
    expect(refused.auth).toMatch(/^Bearer realm="fieldmesh", error="invalid_token"/);
    raw.ws.terminate();

    const read = await c.gateway.client.createToken('read', 'ws read');
    const reader = wsClient(read.token);
    const forbidden = await rejection(reader.toolCall(convert(1)));
    expect(forbidden).toBeInstanceOf(FieldmeshApiError);
    expect(forbidden).toMatchObject({ status: 403, code: 'FM_ERR_FORBIDDEN', details: { needed_scope: 'submit', token_scope: 'read' } });
    reader.close();

    // A token revoked while its connection is open is refused from its next call on.
    const submit = await c.gateway.client.createToken('submit', 'ws submit');
    const submitter = wsClient(submit.token);
    expect((await submitter.toolCall(convert(2))).ok).toBe(true);
    await c.gateway.client.revokeToken(submit.token_id);
    expect(await rejection(submitter.toolCall(convert(2)))).toMatchObject({ status: 401, code: 'FM_ERR_UNAUTHORIZED' });
    submitter.close();
  });

  it('client websocket - bad frames get a clear error each, while good calls on the same connection still succeed', async () => {
    const raw = new RawSocket(api, c.gateway.token);
    const other = wsClient();
    try {
      await raw.opened();
      raw.send({ id: 'slow', op: 'tool_call', body: slowEcho(1500, 'still here') });
      raw.send('this is not json');
      raw.send('[1, 2]');
      raw.send({ id: 'no-op' });
      raw.send({ id: 'unknown', op: 'reboot_everything', body: {} });
      raw.send({ id: 'types', op: 'tool_call', body: { tool_name: 42, tool_args: {} } });
      raw.send({ id: 'nobody', op: 'tool_call' });
      raw.send({ id: 'slow', op: 'tool_call', body: convert(1) });
      raw.send({ id: 'big', op: 'tool_call', body: { tool_name: 'unit_convert', tool_args: { pad: 'x'.repeat(MAX_BODY) } } });
      raw.send(Buffer.from(JSON.stringify({ id: 'binary', op: 'tool_call', body: convert(1) })));
      raw.send({ id: 7, op: 'tool_call', body: convert(7) });
      const errors = await raw.waitFor(9, (a) => a.status >= 400);
      const byId = (id: unknown) => errors.filter((a) => a.id === id).map((a) => [a.status, a.body.error.code]);
      expect(byId(null)).toEqual([
        [400, 'FM_ERR_INVALID_JSON'],
        [400, 'FM_ERR_MALFORMED_FRAME'],
        [400, 'FM_ERR_MALFORMED_FRAME'],
      ]);
      expect(errors.find((a) => a.id === null && /binary/.test(a.body.error.message))).toBeDefined();
      expect(byId('no-op')).toEqual([[400, 'FM_ERR_MALFORMED_FRAME']]);
      expect(errors.find((a) => a.id === 'no-op')?.body.error.message).toMatch(/\/op/);
      expect(byId('unknown')).toEqual([[404, 'FM_ERR_ROUTE_NOT_FOUND']]);
      expect(errors.find((a) => a.id === 'unknown')?.body.error.details.ops).toContain('tool_call');
      expect(byId('types')).toEqual([[400, 'FM_ERR_INVALID_REQUEST']]);
      expect(errors.find((a) => a.id === 'types')?.body.error.message).toMatch(/tool_name/);
      expect(byId('nobody')).toEqual([[400, 'FM_ERR_INVALID_REQUEST']]);
      expect(byId('slow')).toEqual([[400, 'FM_ERR_MALFORMED_FRAME']]);
      expect(errors.find((a) => a.id === 'slow')?.body.error.message).toMatch(/already in flight/);
      expect(byId('big')).toEqual([[413, 'FM_ERR_PAYLOAD_TOO_LARGE']]);
      expect(errors.find((a) => a.id === 'big')?.body.error.details.limit).toBe(MAX_BODY);

      // The good calls on the same connection were answered as usual, and another connection went on untouched.
      const [seven] = await raw.waitFor(1, (a) => a.id === 7);
      expect(seven?.status).toBe(200);
      expect(seven?.body).toMatchObject({ ok: true, verified: true, node_id: NODE });
      const [slow] = await raw.waitFor(1, (a) => a.id === 'slow' && a.status === 200);
      expect(slow?.body.output.value).toBe('still here');
      expect((await other.toolCall(convert(5))).ok).toBe(true);
      raw.send({ id: 8, op: 'tool_call', body: convert(8) });
      const [eight] = await raw.waitFor(1, (a) => a.id === 8);
      expect(eight?.body.ok).toBe(true);

      // Through the SDK an oversized call is refused alone, without disturbing a call in flight.
      const slowCall = other.toolCall(slowEcho(300, 'kept'));
      const big = await rejection(other.toolCall({ tool_name: 'unit_convert', tool_args: { pad: 'x'.repeat(MAX_BODY) } }));
      expect(big).toMatchObject({ status: 413, code: 'FM_ERR_PAYLOAD_TOO_LARGE' });
      expect((await slowCall).ok).toBe(true);

      // A frame too large to read closes its own connection with 1009; other connections are untouched.
      const inFlight = other.toolCall(slowEcho(300, 'other connection'));
      raw.send('x'.repeat(3 * MAX_BODY));
      expect(await raw.closed).toBe(1009);
      expect((await inFlight).ok).toBe(true);
    } finally {
      raw.close();
      other.close();
    }
  });

  it('client websocket - a transport other than http or ws is refused when the client is made', () => {
    expect(() => new FieldmeshClient({ baseUrl: api, transport: 'grpc' as 'ws' })).toThrow(/transport: "grpc" is not http or ws/);
    expect(new FieldmeshClient({ baseUrl: api }).transport).toBe('http');
  });

  it('client websocket - a plain GET of /v1/ws says it is a WebSocket, and the OpenAPI document lists it', async () => {
    const res = await http(api, 'GET', '/v1/ws');
    expect(res.status).toBe(400);
    expect(res.json.error.message).toMatch(/Upgrade: websocket/);
    const doc = (await c.gateway.client.openapi()) as { paths: Record<string, unknown> };
    expect(doc.paths['/v1/ws']).toBeDefined();
  });

  it('client websocket - close() fails the calls in flight, and the next call opens a new connection', async () => {
    const client = wsClient();
    expect((await client.toolCall(convert(1))).ok).toBe(true);
    const pending = client.toolCall(slowEcho(500, 'x'));
    await new Promise((r) => setTimeout(r, 50));
    client.close();
    const err = await rejection(pending);
    expect(err).toBeInstanceOf(FieldmeshError);
    expect(err).toMatchObject({ code: 'FM_ERR_UNAVAILABLE' });
    expect((await client.toolCall(convert(2))).ok).toBe(true);
    client.close();
  });

  it('client websocket - a gateway restart fails the calls in flight at once, and the client reconnects for the next call', async () => {
    const client = wsClient();
    try {
      const first = await client.toolCall(convert(1));
      expect(first.ok, JSON.stringify(first.error)).toBe(true);
      const pending = Array.from({ length: 3 }, (_, i) => rejection(client.toolCall(slowEcho(4000, i))));
      await waitFor('the calls to run', async () => (await c.gateway.client.getNode(NODE)).load.in_flight >= 3);
      const { api: before, listen, proc } = c.gateway;
      proc.proc.kill('SIGKILL');
      await proc.exited;
      for (const err of await Promise.all(pending)) {
        expect(err).toBeInstanceOf(FieldmeshError);
        expect((err as FieldmeshError).code).toBe('FM_ERR_UNAVAILABLE');
        expect((err as Error).message).toMatch(/closed \(1006\) before the call was answered/);
      }
      // While the gateway is down a call fails at once rather than waiting.
      const down = await rejection(client.toolCall(convert(1)));
      expect(down).toMatchObject({ code: 'FM_ERR_UNAVAILABLE' });
      expect((down as Error).message).toMatch(/Cannot reach the gateway/);

      await c.startGateway(['--max-body-bytes', String(MAX_BODY)], { api: before.replace(/^https?:\/\//, ''), listen });
      await waitFor(`${NODE} ONLINE again`, async () => (await c.gateway.client.getNode(NODE)).status === 'ONLINE', 30_000);
      const r = await client.toolCall(convert(4));
      expect(r.ok, JSON.stringify(r.error)).toBe(true);
      expect((r.output as { value: number }).value).toBeCloseTo(4 * 1.609344, 6);
    } finally {
      client.close();
    }
  }, 60_000);
});

describe('client websocket over tls', () => {
  const c = new Cluster();
  afterAll(() => c.stop());

  it('client websocket - with --api-tls the connection is wss, checked against the gateway CA', async () => {
    const g = await c.startGateway(['--api-tls']);
    await c.startNode({ id: NODE });
    const client = new FieldmeshClient({ baseUrl: g.api, token: g.token, ca: g.ca, transport: 'ws' });
    try {
      const r = await client.toolCall(convert(2));
      expect(r.ok, JSON.stringify(r.error)).toBe(true);
      expect((r.output as { value: number }).value).toBeCloseTo(2 * 1.609344, 6);
    } finally {
      client.close();
    }
    // Without the CA the certificate is not trusted, and the error says what to pass.
    const untrusting = new FieldmeshClient({ baseUrl: g.api, token: g.token, transport: 'ws' });
    const err = await rejection(untrusting.toolCall(convert(2)));
    expect(err).toMatchObject({ code: 'FM_ERR_UNAVAILABLE' });
    expect((err as Error).message).toMatch(/pass the gateway CA/);
  }, 60_000);
});
