/**
 * Failover: the time from a node's SIGKILL to its task being dispatched to
 * another node, read from the task's recorded attempts. Default gateway
 * settings; median of `--runs` (10) kills.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readAdminToken } from '../src/cli/client.js';
import { type Managed, startProcess } from '../src/cli/processes.js';
import { FieldmeshClient } from '../src/client/index.js';
import { type BenchArgs, machine, num, percentile, saveResult } from './index.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function failoverBench(args: BenchArgs): Promise<void> {
  const runs = num(args, 'runs', 10);
  const dir = mkdtempSync(join(tmpdir(), 'fm-bench-failover-'));
  const procs: Managed[] = [];
  const env = { FIELDMESH_LOG_LEVEL: 'warn' };
  try {
    const gw = await startProcess(
      ['gateway', '--data-dir', join(dir, 'gw'), '--api', '127.0.0.1:0', '--listen', '127.0.0.1:0'],
      'gateway ready',
      {
        env: { FIELDMESH_LOG_LEVEL: 'info' },
      },
    );
    procs.push(gw.managed);
    const client = new FieldmeshClient({ baseUrl: String(gw.ready.api), token: readAdminToken(join(dir, 'gw')) });
    const startNode = async (id: string) => {
      const p = await startProcess(
        [
          'node',
          '--gateway',
          String(gw.ready.listen),
          '--id',
          id,
          '--data-dir',
          join(dir, id),
          '--tools-module',
          toolsModule(),
          '--log-level',
          'info',
        ],
        'node ready',
        { env },
      );
      procs.push(p.managed);
      return p.managed;
    };
    const nodes = new Map<string, Managed>();
    for (const id of ['bench:a', 'bench:b', 'bench:c']) nodes.set(id, await startNode(id));
    const samples: number[] = [];
    for (let i = 0; i < runs; i++) {
      while ((await client.listNodes('online')).length < 3) await sleep(20);
      const taskId = await client.submitTask({ tool_name: 'slow_echo', tool_args: { ms: 60_000 }, target: { kind: 'local' } });
      let victim = '';
      while (!victim) {
        const t = await client.getTask(taskId);
        if (t.attempts[0]) victim = t.attempts[0].node_id;
        else await sleep(2);
      }
      const killedAt = Date.now();
      nodes.get(victim)?.proc.kill('SIGKILL');
      let moved: number | undefined;
      while (moved === undefined) {
        const t = await client.getTask(taskId);
        const second = t.attempts[1];
        if (second) moved = Date.parse(second.started_at) - killedAt;
        else await sleep(2);
      }
      samples.push(moved);
      await client.cancelTask(taskId).catch(() => undefined);
      nodes.set(victim, await startNode(victim));
    }
    const sorted = [...samples].sort((a, b) => a - b);
    const result = { runs, median_ms: percentile(sorted, 50), p90_ms: percentile(sorted, 90), max_ms: sorted.at(-1), samples_ms: samples };
    const file = args.flags.has('smoke') ? '(smoke run, not saved)' : saveResult('failover', result);
    if (args.json) process.stdout.write(`${JSON.stringify({ ...result, machine: machine() })}\n`);
    else {
      process.stdout.write(`failover: SIGKILL → task dispatched to another node, ${runs} runs\n`);
      process.stdout.write(
        `  median ${result.median_ms} ms  p90 ${result.p90_ms} ms  max ${result.max_ms} ms  (goal < 2000 ms)\n  → ${file}\n`,
      );
    }
  } finally {
    await Promise.all(procs.map((p) => p.stop(2000)));
    rmSync(dir, { recursive: true, force: true });
  }
}

function toolsModule(): string {
  return join(process.cwd(), 'test/fixtures/test-tools.mjs');
}
