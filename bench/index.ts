/**
 * `npm run bench -- <name> [options]`: benchmarks that start real gateway and
 * node processes on loopback. Figures go to stdout and bench/results/<name>.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { dispatchBench } from './dispatch.js';
import { failoverBench } from './failover.js';
import { functionsBench } from './functions.js';
import { scaleBench, schedulingOnlyBench } from './scale.js';
import { tlsMemoryBench } from './tls-memory.js';
import { workflowBench } from './workflow.js';

export interface BenchArgs {
  flags: Map<string, string>;
  json: boolean;
}

export function num(args: BenchArgs, name: string, fallback: number): number {
  const v = args.flags.get(name);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name}: "${v}" is not a positive number`);
  return n;
}

/**
 * Settings for a process under test, to compare allocator and heap settings: `--<prefix>-env NAME=VALUE,…`
 * (environment variables) and `--<prefix>-flags flag,…` (Node/V8 flags without their leading dashes).
 */
export function processSettings(args: BenchArgs, prefix: string): { env: Record<string, string>; flags: string[] } {
  const list = (name: string, sep: RegExp | string) => (args.flags.get(`${prefix}-${name}`) ?? '').split(sep).filter(Boolean);
  const env: Record<string, string> = {};
  // A comma starts a new variable only before NAME=, so a value may hold commas (MALLOC_CONF=prof:true,lg_prof_sample:10).
  for (const kv of list('env', /,(?=[A-Za-z_][A-Za-z0-9_]*=)/)) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw new Error(`--${prefix}-env: "${kv}" is not NAME=VALUE`);
    env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return { env, flags: list('flags', ',').map((f) => `--${f}`) };
}

export function machine(): Record<string, unknown> {
  return { cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, memory_gib: Math.round(totalmem() / 2 ** 30), node: process.version };
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export const resultsDir = join(dirname(fileURLToPath(import.meta.url)), '../../bench/results');

export function saveResult(name: string, data: Record<string, unknown>): string {
  mkdirSync(resultsDir, { recursive: true });
  const file = join(resultsDir, `${name}.json`);
  writeFileSync(file, `${JSON.stringify({ bench: name, at: new Date().toISOString(), machine: machine(), ...data }, null, 2)}\n`);
  return file;
}

const benches: Record<string, (args: BenchArgs) => Promise<void>> = {
  dispatch: dispatchBench,
  failover: failoverBench,
  functions: functionsBench,
  workflow: workflowBench,
  scale: scaleBench,
  scheduling: schedulingOnlyBench,
  'tls-memory': tlsMemoryBench,
};

async function main(): Promise<void> {
  const [name, ...rest] = process.argv.slice(2);
  const flags = new Map<string, string>();
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!;
    if (!a.startsWith('--')) throw new Error(`unexpected argument "${a}"`);
    const next = rest[i + 1];
    if (next === undefined || next.startsWith('--')) flags.set(a.slice(2), 'true');
    else {
      flags.set(a.slice(2), next);
      i++;
    }
  }
  const bench = name ? benches[name] : undefined;
  if (!bench) {
    process.stderr.write(`usage: npm run bench -- <${Object.keys(benches).join('|')}> [--json] [options]\n`);
    process.exitCode = 2;
    return;
  }
  await bench({ flags, json: flags.has('json') });
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
