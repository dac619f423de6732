/**
 * Deployed functions: how long a deploy takes to reach a node and be
 * acknowledged (`POST /v1/functions` round trip, each run a new version), and
 * what a call to a deployed function costs next to a built-in tool on the same
 * node. A function call runs in a worker thread under the function's own
 * limits, reused from the call before when that one left it healthy; a
 * built-in tool runs in the node's warm worker pool. Both are called
 * closed-loop through the gateway, sequentially and with `--concurrency` in
 * flight.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { drive, type PhaseResult } from './dispatch.js';
import { type BenchArgs, machine, num, percentile, saveResult } from './index.js';
import { type Mesh, startMesh } from './mesh.js';

const NODE = 'bench:fn';
const target = { kind: 'explicit' as const, node_id: NODE };
const bundle = (version: number) => `// version ${version}\nexport default async (args) => ({ value: args.value * 1000, unit: 'm' });\n`;

export async function functionsBench(args: BenchArgs): Promise<void> {
  const runs = num(args, 'runs', 10);
  const calls = num(args, 'calls', 200);
  const concurrency = num(args, 'concurrency', 2);
  const dir = mkdtempSync(join(tmpdir(), 'fm-bench-functions-'));
  let mesh: Mesh | undefined;
  try {
    mesh = await startMesh({ dir });
    const { client } = mesh;
    await mesh.startNode(NODE, ['--allow-deploy', '--max-concurrency', String(concurrency)]);
    await mesh.waitOnline(1);

    const deployMs: number[] = [];
    for (let i = 0; i <= runs; i++) {
      const t0 = performance.now();
      const r = await client.deployFunction({ name: 'km-to-m', bundle: bundle(i), target });
      if (r.deployed !== 1) throw new Error(`deploy ${i} did not reach the node: ${JSON.stringify(r.nodes)}`);
      // The first deploy also creates the node's functions directory: a warm-up, not counted.
      if (i > 0) deployMs.push(performance.now() - t0);
    }

    const fn = async (i: number) => {
      const r = await client.toolCall({ tool_name: 'km-to-m', tool_args: { value: i }, target });
      if (!r.ok || (r.output as { value?: number }).value !== i * 1000)
        throw new Error(`wrong answer: ${JSON.stringify(r.output ?? r.error)}`);
    };
    const tool = async (i: number) => {
      const r = await client.toolCall({ tool_name: 'unit_convert', tool_args: { value: i, from_unit: 'km', to_unit: 'm' }, target });
      if (!r.ok) throw new Error(`unit_convert failed: ${r.error?.message}`);
    };
    // Warm-up: the node's tool workers start, the gateway's connections open.
    await drive(20, 1, tool, 60_000);
    await drive(5, 1, fn, 60_000);
    const phases: Record<string, PhaseResult> = {};
    for (const c of [1, concurrency]) {
      phases[`function_c${c}`] = await drive(calls, c, fn, 120_000);
      phases[`builtin_tool_c${c}`] = await drive(calls, c, tool, 120_000);
    }
    const sorted = [...deployMs].sort((a, b) => a - b);
    const result = {
      runs,
      calls,
      concurrency,
      deploy_ms_median: round(percentile(sorted, 50)),
      deploy_ms_max: round(sorted.at(-1) ?? Number.NaN),
      phases,
    };
    const file = args.flags.has('smoke') ? '(smoke run, not saved)' : saveResult('functions', result);
    if (args.json) process.stdout.write(`${JSON.stringify({ ...result, machine: machine() })}\n`);
    else {
      process.stdout.write(`functions: ${runs} deploys, ${calls} calls per phase\n`);
      process.stdout.write(`  deploy round trip: median ${result.deploy_ms_median} ms, max ${result.deploy_ms_max} ms\n`);
      for (const [name, p] of Object.entries(phases)) {
        process.stdout.write(
          `  ${name.padEnd(18)} ${String(p.throughput).padStart(6)} calls/s  p50 ${(p.p50_us / 1000).toFixed(1)} ms  p99 ${(p.p99_us / 1000).toFixed(1)} ms  errors ${p.errors}\n`,
        );
      }
      process.stdout.write(`  → ${file}\n`);
    }
  } finally {
    await mesh?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

const round = (n: number) => Math.round(n * 100) / 100;
