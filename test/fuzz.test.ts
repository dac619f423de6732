// Fuzzing a running gateway: 10,000 malformed or random frames over a paired node connection, 10,000 random API
// bodies, and random frames through the decoder a node uses. No crash, bounded memory, and tool calls running beside
// them finish with the right, verified output.
import { readFileSync } from 'node:fs';
import { Agent, request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeFrame } from '../src/protocol/codec.js';
import { Cluster, waitFor } from './harness.js';
import { heartbeat, type Json, pairRawNode, type RawIdentity, type RawPeer, registerRaw } from './raw-node.js';

/** A small seeded generator, so a failure can be replayed with the same inputs. */
function prng(seed: number) {
  let s = seed >>> 0;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const str = (max: number) => {
    const chars = 'abcXYZ09 _-:/{}[]"\\\u0000\u00e9\u{1f600}';
    let out = '';
    for (let i = int(max); i > 0; i--) out += pick([...chars]);
    return out;
  };
  const value = (depth = 0): unknown => {
    switch (int(depth > 2 ? 6 : 8)) {
      case 0:
        return null;
      case 1:
        return next() < 0.5;
      case 2:
        return pick([0, -1, 1.5, 2 ** 53, -(2 ** 63), Number.MAX_VALUE, 1e308]);
      case 3:
        return str(40);
      case 4:
        return str(3000);
      case 5:
        return int(1000);
      case 6:
        return Array.from({ length: int(5) }, () => value(depth + 1));
      default: {
        const o: Record<string, unknown> = {};
        for (let i = int(6); i > 0; i--) o[pick(['type', 'v', 'node_id', 'task_id', 'attempt', 'output', str(8)])] = value(depth + 1);
        return o;
      }
    }
  };
  return { next, int, pick, str, value };
}

const FRAME_TYPES = ['REGISTER', 'HEARTBEAT', 'NODE_READY', 'TASK_ACK', 'TASK_RESULT', 'CERT_RENEW', 'SYNC_REQUEST', 'STATE_ACK', 'NOPE'];

/** One malformed or random frame: bytes, broken JSON, or a plausible frame with wrong, missing or huge fields. */
function randomFrame(r: ReturnType<typeof prng>, nodeId: string): string | Buffer {
  switch (r.int(6)) {
    case 0:
      return Buffer.from(Array.from({ length: r.int(200) + 1 }, () => r.int(256)));
    case 1:
      return `{"v":1,"type":"${r.pick(FRAME_TYPES)}",${r.str(30)}`;
    case 2:
      return JSON.stringify(r.value());
    case 3:
      return JSON.stringify({ v: r.pick([1, 2, 0, '1', null]), type: r.pick(FRAME_TYPES), node_id: nodeId, ...(r.value() as object) });
    case 4:
      return JSON.stringify({
        v: 1,
        type: 'TASK_RESULT',
        node_id: nodeId,
        task_id: r.pick([`task_${r.str(10)}`, r.value()]),
        attempt: r.value(),
        ok: r.value(),
        output: r.value(),
        result_hash: r.pick(['sha256:00', r.str(70)]),
        node_signature: r.str(90),
        timestamp: r.pick([new Date().toISOString(), r.str(20)]),
      });
    default:
      return JSON.stringify({ ...heartbeat(nodeId), load: r.value(), seq: r.value() });
  }
}

const ROUTES: [string, string][] = [
  ['POST', '/v1/tool_call'],
  ['POST', '/v1/tasks'],
  ['POST', '/v1/workflows/run'],
  ['PUT', '/v1/workflows/fuzz'],
  ['POST', '/v1/pairing-codes'],
  ['POST', '/v1/tokens'],
  ['POST', '/v1/approvals/task_x/approve'],
  ['PUT', '/v1/nodes/fuzz:raw/state/doc'],
  ['POST', '/v1/tasks/task_missing/cancel'],
];

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) * 1024;
}

describe('fuzz', () => {
  const c = new Cluster();
  let raw: RawIdentity;
  let peer: RawPeer;

  beforeAll(async () => {
    await c.startGateway(['--max-body-bytes', '65536', '--max-frame-bytes', '65536']);
    await c.startNode({ id: 'fuzz:worker' });
    raw = await pairRawNode(c.gateway, 'fuzz:raw');
    peer = await registerRaw(c.gateway.listen, c.gateway.client, raw);
  }, 60_000);

  afterAll(async () => {
    peer?.close();
    await c.stop();
  });

  it('fuzz - 10,000 random frames and 10,000 random API bodies leave the gateway up, its memory bounded and real work untouched', async () => {
    const r = prng(20261123);
    const pid = c.gateway.proc.proc.pid!;
    const rssBefore = rssBytes(pid);

    // Real work beside the garbage: every call must come back right and verified.
    const calls = Array.from({ length: 40 }, (_, i) =>
      c.gateway.client.toolCall({ tool_name: 'unit_convert', tool_args: { value: i, from_unit: 'km', to_unit: 'm' } }),
    );

    let reconnects = 0;
    for (let i = 0; i < 10_000; i++) {
      if (!peer.open) {
        // The gateway may drop a peer that sends garbage; the peer comes back as a real node would.
        reconnects += 1;
        peer = await registerRaw(c.gateway.listen, c.gateway.client, raw);
      }
      peer.send(randomFrame(r, raw.nodeId));
      if (i % 200 === 0) await new Promise((res) => setImmediate(res));
    }

    const url = new URL(c.gateway.api);
    const agent = new Agent({ keepAlive: true, maxSockets: 16 });
    const statuses = new Map<number, number>();
    const send = (method: string, path: string, body: string) =>
      new Promise<{ status: number; text: string }>((resolve, reject) => {
        const req = httpRequest(
          {
            host: url.hostname,
            port: url.port,
            method,
            path,
            agent,
            headers: {
              authorization: `Bearer ${c.gateway.token}`,
              'content-type': 'application/json',
              'content-length': Buffer.byteLength(body),
            },
          },
          (res) => {
            let text = '';
            res.setEncoding('utf8');
            res.on('data', (d: string) => {
              text += d;
            });
            res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
          },
        );
        req.on('error', reject);
        req.end(body);
      });
    const bodies = Array.from({ length: 10_000 }, () => {
      const [method, path] = r.pick(ROUTES);
      const body = r.next() < 0.3 ? `{${r.str(60)}` : JSON.stringify(r.value());
      return { method, path, body };
    });
    for (let i = 0; i < bodies.length; i += 16) {
      const answers = await Promise.all(bodies.slice(i, i + 16).map((b) => send(b.method, b.path, b.body)));
      for (const a of answers) {
        statuses.set(a.status, (statuses.get(a.status) ?? 0) + 1);
        // Every answer is a JSON body; never an internal error.
        const json = JSON.parse(a.text) as Json;
        if (a.status >= 400) expect(json.error?.code, a.text).toMatch(/^FM_ERR_/);
        expect(a.status, a.text).not.toBe(500);
      }
    }
    agent.destroy();
    expect([...statuses.values()].reduce((x, y) => x + y, 0)).toBe(10_000);
    expect(statuses.get(400) ?? 0).toBeGreaterThan(1000);

    const results = await Promise.all(calls);
    results.forEach((res, i) => {
      expect(res).toMatchObject({ ok: true, verified: true, output: { value: i * 1000, unit: 'm' } });
    });

    // Still serving, the real node still ONLINE, and the garbage was counted rather than acted on.
    const health = (await c.gateway.client.health()) as { status: string; frames_rejected?: number };
    expect(health.status).toBe('ok');
    expect(health.frames_rejected).toBeGreaterThan(5000);
    await waitFor('worker ONLINE', async () => (await c.gateway.client.getNode('fuzz:worker')).status === 'ONLINE');
    const after = await c.gateway.client.toolCall({ tool_name: 'unit_convert', tool_args: { value: 2, from_unit: 'km', to_unit: 'm' } });
    expect(after).toMatchObject({ ok: true, verified: true, output: { value: 2000 } });
    expect(rssBytes(pid) - rssBefore).toBeLessThan(150 * 1024 * 1024);
    expect(reconnects).toBeLessThan(10_000);
  }, 240_000);

  it('fuzz - the frame decoder a node uses answers 10,000 random inputs with a result or a precise error, never a throw', () => {
    const r = prng(7);
    let rejected = 0;
    for (let i = 0; i < 10_000; i++) {
      const out = decodeFrame(randomFrame(r, 'fuzz:node'), 65_536);
      if (!out.ok) {
        rejected += 1;
        expect(out.error.code).toMatch(/^FM_ERR_/);
      }
    }
    expect(rejected).toBeGreaterThan(9000);
  });
});
