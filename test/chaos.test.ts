import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FieldmeshClient } from '../src/client/index.js';
import type { TaskView } from '../src/protocol/api.js';
import { Cluster, http, type NodeHandle, type NodeSpec, waitFor } from './harness.js';

const NODES = 4;
const TASKS = 2000;
/** Tasks submitted and not yet seen finished, at most. */
const IN_FLIGHT = 64;
const KILL_EVERY_MS = 400;
const MAX_KILLS = 8;
const FINISH_WITHIN_MS = 120_000;

const FINISHED = new Set(['succeeded', 'failed', 'cancelled']);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** mulberry32: a seeded generator, so a failing run can be replayed with CHAOS_SEED. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Runs fn(0..n-1) with at most `limit` calls pending at once. */
async function eachLimited(n: number, limit: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < n) await fn(next++);
  };
  await Promise.all(Array.from({ length: Math.min(limit, n) }, lane));
}

/** Long-polls a task until it finishes or `deadline` passes, and returns its last record. */
async function settle(client: FieldmeshClient, id: string, deadline: number): Promise<TaskView> {
  for (;;) {
    const t = await client.getTask(id, Math.max(0, Math.min(5_000, deadline - Date.now())));
    if (FINISHED.has(t.status) || Date.now() >= deadline) return t;
  }
}

describe('chaos', () => {
  const c = new Cluster();
  const specs: NodeSpec[] = Array.from({ length: NODES }, (_, i) => ({ id: `chaos:n${i}`, extraArgs: ['--max-concurrency', '4'] }));
  /** Nodes whose process is up and that the gateway has seen ONLINE. */
  const live = new Map<string, NodeHandle>();

  beforeAll(async () => {
    await c.startGateway(['--heartbeat-interval-ms', '200', '--offline-after-ms', '1000']);
    for (const h of await Promise.all(specs.map((s) => c.startNode(s)))) live.set(h.id, h);
  }, 60_000);
  afterAll(() => c.stop());

  it('chaos - every task finishes exactly once while nodes are killed and restarted', async () => {
    const client = c.gateway.client;
    const seed = Number(process.env.CHAOS_SEED ?? Date.now() % 2 ** 31);
    const rand = random(seed);
    const started = Date.now();
    const deadline = started + FINISH_WITHIN_MS;

    // Chaos: every ~400 ms SIGKILL a random node that is up, and bring it back with the same id and data dir.
    let submitting = true;
    let kills = 0;
    const restarts: Promise<void>[] = [];
    const restart = async (victim: NodeHandle) => {
      await waitFor(`${victim.id} OFFLINE`, async () => (await client.getNode(victim.id)).status === 'OFFLINE');
      const spec = specs.find((s) => s.id === victim.id)!;
      const handle = await c.startNode(spec); // same id, so the same data dir (and signing key) as before
      live.set(handle.id, handle);
    };
    const chaos = (async () => {
      while (submitting && kills < MAX_KILLS) {
        await sleep(KILL_EVERY_MS);
        // At least one node stays up at all times.
        if (!submitting || live.size < 2) continue;
        const up = [...live.values()];
        const victim = up[Math.floor(rand() * up.length)]!;
        live.delete(victim.id);
        victim.proc.proc.kill('SIGKILL');
        kills += 1;
        restarts.push(restart(victim));
      }
    })();

    // Load: 2,000 tasks, each kept in flight (long-polled) until it finishes, 64 at a time.
    const ids: string[] = new Array(TASKS);
    try {
      await eachLimited(TASKS, IN_FLIGHT, async (i) => {
        const id = await client.submitTask({
          tool_name: 'slow_echo',
          tool_args: { ms: Math.floor(rand() * 51), value: i },
          target: { kind: 'local' },
        });
        ids[i] = id;
        await settle(client, id, deadline);
      });
    } finally {
      submitting = false;
      await chaos;
      await Promise.allSettled(restarts);
    }
    for (const r of restarts) await r; // a failed restart fails the test with its own error
    const loadDone = Date.now();

    // Read every task back, waiting (bounded) for any still unfinished.
    const tasks: TaskView[] = new Array(TASKS);
    await eachLimited(TASKS, IN_FLIGHT, async (i) => {
      tasks[i] = await settle(client, ids[i]!, deadline);
    });

    const unfinished = tasks.flatMap((t, i) => (t.status === 'succeeded' || t.status === 'failed' ? [] : [{ i, status: t.status }]));
    expect(unfinished).toEqual([]);
    const wrongOutput = tasks.flatMap((t, i) =>
      t.status === 'succeeded' && (t.result?.output as { value?: unknown } | null)?.value !== i ? [{ i, output: t.result?.output }] : [],
    );
    expect(wrongOutput).toEqual([]);
    const unexplained = tasks.flatMap((t, i) =>
      t.status === 'failed' && !(t.result?.error?.code && t.result.error.message) ? [{ i, error: t.result?.error ?? null }] : [],
    );
    expect(unexplained).toEqual([]);
    const twice = tasks.flatMap((t, i) =>
      t.attempts.filter((a) => a.outcome === 'success').length > 1 ? [{ i, attempts: t.attempts }] : [],
    );
    expect(twice).toEqual([]);
    const badNumbering = tasks.flatMap((t, i) => {
      const numbers = t.attempts.map((a) => a.attempt);
      return numbers.length > 0 && numbers.every((n, k) => n === k + 1) ? [] : [{ i, numbers }];
    });
    expect(badNumbering).toEqual([]);
    // A success is the last attempt, and its node is the one that produced the output.
    const misattributed = tasks.flatMap((t, i) => {
      if (t.status !== 'succeeded') return [];
      const last = t.attempts.at(-1);
      const output = t.result?.output as { node_id?: string } | null;
      return last?.outcome === 'success' && t.result?.node_id === last.node_id && output?.node_id === last.node_id ? [] : [{ i, task: t }];
    });
    expect(misattributed).toEqual([]);
    expect(tasks.flatMap((t) => t.attempts).filter((a) => a.outcome === 'running')).toEqual([]);
    expect(kills).toBeGreaterThan(0);

    const stale = (await http(c.gateway.api, 'GET', '/healthz')).json.stale_results;
    const migrated = tasks.filter((t) => t.attempts.length > 1).length;
    const failed = tasks.filter((t) => t.status === 'failed');
    const codes = JSON.stringify([...new Set(failed.map((t) => t.result?.error?.code))]);
    const maxAttempts = Math.max(...tasks.map((t) => t.attempts.length));
    console.log(
      `chaos: seed ${seed}, ${kills} kills, ${TASKS} tasks in ${loadDone - started} ms (all read back after ${Date.now() - started} ms), ` +
        `${migrated} migrated (max ${maxAttempts} attempts), ${failed.length} failed ${codes}, ${stale} late results discarded`,
    );
  }, 180_000);
});
