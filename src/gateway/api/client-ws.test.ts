// The client WebSocket's guards on a real loopback server: a connection's calls in flight are capped, and a client
// that stops answering pings is cut while one that answers stays.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { silentLogger } from '../../core/logger.js';
import { ClientSockets } from './client-ws.js';
import { type Caller, Router } from './http.js';

const caller: Caller = { token_id: 'tok_test', scope: 'admin', name: null };
const auth = { authenticate: () => caller };

let server: Server | undefined;
let sockets: ClientSockets | undefined;
const clients: WebSocket[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.terminate();
  await sockets?.close();
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  server = undefined;
  sockets = undefined;
});

/** A gateway API port with the two ops' routes; each call waits until `release` is called. */
async function start(limits: ConstructorParameters<typeof ClientSockets>[4]) {
  const waiting: (() => void)[] = [];
  const router = new Router(1 << 20, silentLogger, auth);
  for (const path of ['/v1/tool_call', '/v1/tasks']) {
    router.add({
      method: 'POST',
      scope: 'submit',
      path,
      summary: 'test',
      handler: () => new Promise((resolve) => waiting.push(() => resolve({ ok: true }))),
    });
  }
  sockets = new ClientSockets(router, auth, silentLogger, 1 << 20, limits);
  const s = createServer((req, res) => void router.handle(req, res));
  server = s;
  s.on('upgrade', (req, socket, head) => sockets?.upgrade(req, socket, head));
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const url = `ws://127.0.0.1:${(s.address() as AddressInfo).port}/v1/ws`;
  const release = () => {
    for (const f of waiting.splice(0)) f();
  };
  return { url, pending: () => waiting.length, release };
}

function connect(url: string, opts: { autoPong?: boolean } = {}): Promise<{ ws: WebSocket; answers: Record<string, unknown>[] }> {
  const ws = new WebSocket(url, { headers: { authorization: 'Bearer x' }, autoPong: opts.autoPong ?? true });
  clients.push(ws);
  const answers: Record<string, unknown>[] = [];
  ws.on('message', (d) => answers.push(JSON.parse(String(d))));
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve({ ws, answers }));
    ws.once('error', reject);
  });
}

async function until(what: string, check: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('client websocket guards', () => {
  it('client websocket guards - past the cap a call is refused with 429 FM_ERR_TOO_MANY_CALLS; once calls finish, the next is taken', async () => {
    const { url, pending, release } = await start({ maxCallsInFlight: 3 });
    const { ws, answers } = await connect(url);
    for (let id = 1; id <= 4; id++) ws.send(JSON.stringify({ id, op: 'tool_call', body: {} }));
    await until('the refusal', () => answers.length === 1);
    expect(answers[0]).toMatchObject({
      id: 4,
      status: 429,
      body: { ok: false, error: { code: 'FM_ERR_TOO_MANY_CALLS', retryable: true } },
    });
    // Another connection has its own allowance.
    const other = await connect(url);
    other.ws.send(JSON.stringify({ id: 1, op: 'submit_task', body: {} }));
    await until('four calls running', () => pending() === 4);
    release();
    await until('the three answers and the other connection', () => answers.length === 4 && other.answers.length === 1);
    expect(answers.slice(1).map((a) => [a.id, a.status])).toEqual([
      [1, 200],
      [2, 200],
      [3, 200],
    ]);
    ws.send(JSON.stringify({ id: 5, op: 'tool_call', body: {} }));
    await until('the call after to run', () => pending() === 1);
    release();
    await until('the call after', () => answers.length === 5);
    expect(answers[4]).toMatchObject({ id: 5, status: 200 });
  });

  it('client websocket guards - a client that does not answer pings is cut; one that answers stays open', async () => {
    const { url } = await start({ pingIntervalMs: 50 });
    const live = await connect(url);
    const mute = await connect(url, { autoPong: false });
    const closed = new Promise<number>((r) => mute.ws.once('close', (code) => r(code)));
    expect(await closed).toBe(1006);
    await new Promise((r) => setTimeout(r, 200));
    expect(live.ws.readyState).toBe(WebSocket.OPEN);
  });
});
