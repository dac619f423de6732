/**
 * Scale: one gateway and `--nodes` (10,000) simulated nodes that speak the real
 * protocol over TLS WebSockets, many per process across `--workers` processes
 * (see scale-sim.ts). It reports:
 *
 * - time from the first connection attempt until every node is ONLINE;
 * - gateway RSS per connected idle node: VmRSS after all are online and have
 *   settled, minus VmRSS of the same gateway before any node connected (each
 *   has paired by then, so its certificate is already in the store);
 * - gateway CPU spent on heartbeats: utime+stime over an idle window in which
 *   the only traffic is heartbeats (and pings) and the health sweeps, per
 *   heartbeat and as a share of one core, with the gateway's CPU over an equal
 *   window before any node connected;
 * - latency of `GET /v1/nodes?status=online` and of tool calls among them;
 * - scheduling decisions, measured in-process: a Registry over a real SQLite
 *   store holding the same 10,000 nodes, and `Scheduler.best()` (the decision
 *   the dispatcher makes per attempt) timed per
 *   call with process.hrtime.bigint() for targets of different breadth.
 *
 * Everything is loopback and bounded in count and time.
 */
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { readAdminToken } from '../src/cli/client.js';
import { FieldmeshClient } from '../src/client/index.js';
import { silentLogger } from '../src/core/logger.js';
import { Registry } from '../src/gateway/registry.js';
import { Scheduler } from '../src/gateway/scheduler.js';
import { builtinTools } from '../src/node/tools/index.js';
import { describeTool } from '../src/node/tools/types.js';
import type { RegisterFrame } from '../src/protocol/frames.js';
import { generateSigningKeys } from '../src/protocol/signing.js';
import type { Target } from '../src/protocol/target.js';
import { openSqliteStore } from '../src/store/sqlite/index.js';
import { summarizeProfile } from './cpuprofile.js';
import { type BenchArgs, machine, num, percentile, processSettings, saveResult } from './index.js';
import { type BenchProcess, cpuMs, openFileLimit, rssBytes, sleep, startFieldmesh, startNodeScript } from './procs.js';
import { simCapabilities, simNodeId } from './scale-sim.js';

const here = dirname(fileURLToPath(import.meta.url));

interface SimStatus {
  connecting: number;
  welcomed: number;
  closed: number;
  errors: number;
  heartbeats: number;
  tasks: number;
  last_error: string;
  at: number;
}

const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;

function latencyStats(samplesUs: number[]) {
  const s = [...samplesUs].sort((a, b) => a - b);
  return {
    n: s.length,
    p50_us: round(percentile(s, 50)),
    p99_us: round(percentile(s, 99)),
    mean_us: round(s.reduce((a, b) => a + b, 0) / Math.max(1, s.length)),
  };
}

/** Times `fn` once per iteration after a warm-up, stopping early at `maxMs`. */
function timeCalls(fn: () => unknown, iterations: number, maxMs: number): ReturnType<typeof latencyStats> {
  for (let i = 0; i < Math.min(1000, iterations); i++) fn();
  const out: number[] = [];
  const stop = performance.now() + maxMs;
  for (let i = 0; i < iterations && performance.now() < stop; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    out.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  return latencyStats(out);
}

function collectGarbage(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

/** The scheduling decision among `nodes` registry entries, in this process. */
async function schedulingBench(nodes: number, iterations: number, dir: string) {
  const store = await openSqliteStore(join(dir, 'sched.db'));
  try {
    const registry = new Registry(store, { heartbeatIntervalMs: 1000, degradedAfterMissed: 2, offlineAfterMs: 3000, logger: silentLogger });
    const scheduler = new Scheduler(registry);
    const tools = builtinTools.map(describeTool) as RegisterFrame['tools'];
    // Keys are expensive to make and the scheduler never reads them, so the entries share a few.
    const keys = Array.from({ length: 16 }, () => generateSigningKeys().publicKeyPem);
    collectGarbage();
    const heapBefore = process.memoryUsage().heapUsed;
    const conn = { send() {}, close() {}, terminate() {}, remoteAddress: '127.0.0.1' };
    for (let g = 0; g < nodes; g++) {
      const frame: RegisterFrame = {
        v: 1,
        type: 'REGISTER',
        versions: [1],
        node_id: simNodeId(g),
        name: `Simulated node ${g}`,
        platform: 'linux',
        capabilities: simCapabilities(g),
        tools,
        location: { lat: 37 + (g % 100) / 100, lon: -122 + Math.floor(g / 100) / 100 },
        public_key: keys[g % keys.length]!,
        agent_version: 'bench',
        max_concurrency: 2,
      };
      const entry = await registry.register(frame, 1, { ...conn });
      await registry.ready(entry);
      // Varied load and in-flight counts, so ranking has real work to do.
      registry.heartbeat(entry, { cpu: (g % 13) / 10, memory: 0.4, in_flight: g % 3 });
      entry.inFlight = g % 3;
    }
    collectGarbage();
    const heapPerEntry = (process.memoryUsage().heapUsed - heapBefore) / nodes;
    const cases: { name: string; target: Target; matching: number }[] = [
      {
        name: 'capability: hardware:gps + zone:z13',
        target: { kind: 'capability', required_capabilities: ['hardware:gps', 'zone:z13'] },
        matching: 0,
      },
      { name: 'capability: gpu:available', target: { kind: 'capability', required_capabilities: ['gpu:available'] }, matching: 0 },
      { name: 'capability: hardware:gps', target: { kind: 'capability', required_capabilities: ['hardware:gps'] }, matching: 0 },
      { name: 'local (every node matches)', target: { kind: 'local' }, matching: 0 },
    ];
    const results = cases.map((c) => {
      c.matching = scheduler.candidates('unit_convert', c.target).length;
      // The decision the dispatcher makes per attempt: the best node, not a full ranking.
      const best = timeCalls(() => scheduler.best('unit_convert', c.target), iterations, 10_000);
      // What a decision cost when it ranked every matching node, measured in the same run for comparison.
      const rankingAll = timeCalls(() => scheduler.candidates('unit_convert', c.target)[0], Math.ceil(iterations / 20), 10_000);
      return { case: c.name, matching: c.matching, ...best, ranking_all: rankingAll };
    });
    return { nodes, heap_bytes_per_registry_entry: Math.round(heapPerEntry), cases: results };
  } finally {
    await store.close();
  }
}

/** `npm run bench -- scheduling [--nodes 10000]`: only the in-process scheduling decisions, without simulated connections. */
export async function schedulingOnlyBench(a: BenchArgs): Promise<void> {
  const nodes = num(a, 'nodes', 10_000);
  const iterations = a.flags.has('smoke') ? 2000 : 20_000;
  const dir = mkdtempSync(join(tmpdir(), 'fm-bench-sched-'));
  try {
    const sched = await schedulingBench(nodes, iterations, dir);
    if (a.json) {
      process.stdout.write(`${JSON.stringify({ machine: machine(), ...sched }, null, 2)}\n`);
      return;
    }
    process.stdout.write(`scheduling among ${sched.nodes} registry entries (${sched.heap_bytes_per_registry_entry} B heap each):\n`);
    for (const c of sched.cases) {
      process.stdout.write(
        `  ${c.case.padEnd(38)} ${String(c.matching).padStart(6)} match  best p50 ${c.p50_us} µs p99 ${c.p99_us} µs  |  ranking all p50 ${c.ranking_all.p50_us} µs p99 ${c.ranking_all.p99_us} µs\n`,
      );
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function scaleBench(a: BenchArgs): Promise<void> {
  const smoke = a.flags.has('smoke');
  const nodes = num(a, 'nodes', 10_000);
  const workers = Math.min(nodes, num(a, 'workers', smoke ? 2 : 4));
  const windowMs = num(a, 'window-s', smoke ? 2 : 10) * 1000;
  const parallel = num(a, 'parallel', 64);
  // The product default is 1000 ms; on a 2-core machine that also runs the simulated side, 10,000 nodes at 1/s need
  // more CPU than there is (see BENCHMARKS.md), so the bench heartbeats less often and reports the cost per heartbeat.
  const heartbeatMs = num(a, 'heartbeat-ms', 5000);
  const profileFlag = a.flags.get('profile');
  const profileDir = profileFlag === undefined ? undefined : resolve(profileFlag === 'true' ? '.tmp/profile-scale' : profileFlag);
  if (profileDir) rmSync(profileDir, { recursive: true, force: true });
  // A/B of process-level settings: `--gateway-env MALLOC_ARENA_MAX=2,LD_PRELOAD=…` and `--gateway-flags max-semi-space-size=1`.
  const { env: gatewayEnv, flags: gatewayFlags } = processSettings(a, 'gateway');
  const onlineTimeoutMs = num(a, 'online-timeout-s', Math.max(120, nodes / 20)) * 1000;
  const listRuns = smoke ? 3 : 20;
  const callCount = smoke ? 20 : 300;
  const schedIterations = smoke ? 2000 : 20_000;
  const log = (s: string) => {
    if (!a.json) process.stdout.write(`${s}\n`);
  };
  const dir = mkdtempSync(join(tmpdir(), 'fm-bench-scale-'));
  const procs: BenchProcess[] = [];
  const sims: { bp: BenchProcess; status: SimStatus | undefined }[] = [];
  try {
    log(
      `scale: ${nodes} simulated nodes over ${workers} processes, ${parallel} connects in flight per process, ` +
        `heartbeat every ${heartbeatMs} ms`,
    );
    const wantFiles = nodes + 1024;
    const gw = await startFieldmesh(
      [
        'gateway',
        '--data-dir',
        join(dir, 'gw'),
        '--api',
        '127.0.0.1:0',
        '--listen',
        '127.0.0.1:0',
        '--heartbeat-interval-ms',
        String(heartbeatMs),
        // The default ratio: OFFLINE after three intervals of silence.
        '--offline-after-ms',
        String(3 * heartbeatMs),
      ],
      'gateway ready',
      {
        env: { FIELDMESH_LOG_LEVEL: 'info', ...gatewayEnv },
        nodeFlags: [...gatewayFlags, ...(profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [])],
        openFiles: Math.max(65_536, wantFiles),
        readyTimeoutMs: 30_000,
      },
    );
    procs.push(gw.bp);
    const limit = openFileLimit(gw.bp.pid);
    if (limit < wantFiles) {
      throw new Error(
        `the gateway may open only ${limit} files, and ${nodes} nodes need about ${wantFiles}: ` +
          `raise the hard limit (ulimit -Hn, or LimitNOFILE) or run with --nodes ${Math.max(1, limit - 1024)}`,
      );
    }
    const client = new FieldmeshClient({ baseUrl: String(gw.ready.api), token: readAdminToken(join(dir, 'gw')), timeoutMs: 60_000 });

    const per = Math.ceil(nodes / workers);
    const script = join(here, 'scale-sim.js');
    const started = await Promise.all(
      Array.from({ length: workers }, (_, w) => {
        const first = w * per;
        const count = Math.max(0, Math.min(per, nodes - first));
        const sim: { bp?: BenchProcess; status: SimStatus | undefined } = { status: undefined };
        return startNodeScript(
          script,
          [String(gw.ready.listen), String(first), String(count), String(parallel), `127.0.0.${10 + w}`, String(gw.ready.api)],
          'sim ready',
          {
            stdin: true,
            env: { FIELDMESH_TOKEN: readAdminToken(join(dir, 'gw')) },
            openFiles: count + 1024,
            // Every simulated node pairs with its own code before the process is ready.
            readyTimeoutMs: Math.max(120_000, count * 100),
            onLine: (line) => {
              try {
                const f = JSON.parse(line) as SimStatus & { msg: string };
                if (f.msg === 'sim status') sim.status = f;
              } catch {
                // not a status line
              }
            },
          },
        ).then((s) => {
          sim.bp = s.bp;
          return sim as { bp: BenchProcess; status: SimStatus | undefined };
        });
      }),
    );
    for (const s of started) {
      sims.push(s);
      procs.push(s.bp);
    }
    // Measured once every node is paired (the certificates are in the store) and before any connects.
    await sleep(smoke ? 500 : 2000);
    const rssBefore = rssBytes(gw.bp.pid);
    const idle0 = cpuMs(gw.bp.pid);
    await sleep(windowMs);
    const idleCpuMs = cpuMs(gw.bp.pid) - idle0;

    const t0 = performance.now();
    for (const s of sims) s.bp.proc.stdin?.write('go\n');
    let online = 0;
    let lastReport = 0;
    while (online < nodes) {
      await sleep(250);
      online = (await client.health()).nodes_online;
      const elapsed = performance.now() - t0;
      if (elapsed - lastReport > 5000) {
        lastReport = elapsed;
        log(`  ${Math.round(elapsed / 1000)} s: ${online} online`);
      }
      if (elapsed > onlineTimeoutMs) {
        const errs = sims.map((s) => s.status?.last_error).filter(Boolean);
        throw new Error(`only ${online} of ${nodes} nodes online after ${Math.round(elapsed / 1000)} s; sim errors: ${errs.join('; ')}`);
      }
    }
    const allOnlineMs = performance.now() - t0;
    log(`  all ${nodes} online after ${round(allOnlineMs / 1000, 2)} s`);

    // Let registration garbage be collected and heartbeats reach their steady rate before measuring.
    await sleep(smoke ? 2000 : 5000);
    const rssAfter = rssBytes(gw.bp.pid);
    const before = sims.map((s) => s.status);
    const cpu0 = cpuMs(gw.bp.pid);
    const simCpu0 = sims.reduce((n, s) => n + cpuMs(s.bp.pid), 0);
    const w0 = performance.now();
    await sleep(windowMs);
    const cpuWindowMs = cpuMs(gw.bp.pid) - cpu0;
    const simCpuWindowMs = sims.reduce((n, s) => n + cpuMs(s.bp.pid), 0) - simCpu0;
    const wallWindowMs = performance.now() - w0;
    const rssAfterWindow = rssBytes(gw.bp.pid);
    // Sim status lines come every second; wait for one more so the count covers the window.
    await sleep(1100);
    // Each process's heartbeat rate between its status lines, applied to the window.
    const heartbeats = Math.max(
      1,
      sims.reduce((n, s, i) => {
        const b = before[i];
        const e = s.status;
        if (!b || !e || e.at <= b.at) return n;
        return n + ((e.heartbeats - b.heartbeats) / (e.at - b.at)) * wallWindowMs;
      }, 0),
    );
    const rssMiB = (b: number) => round(b / 2 ** 20);

    const listSamples: number[] = [];
    let listed = 0;
    for (let i = 0; i < listRuns; i++) {
      const t = process.hrtime.bigint();
      listed = (await client.listNodes('online')).length;
      listSamples.push(Number(process.hrtime.bigint() - t) / 1000);
    }

    const callStats: Record<string, ReturnType<typeof latencyStats> & { failed: number }> = {};
    const targets: Record<string, Target> = {
      'capability gpu:available (1% of nodes)': { kind: 'capability', required_capabilities: ['gpu:available'] },
      'local (all nodes)': { kind: 'local' },
    };
    for (const [name, target] of Object.entries(targets)) {
      const samples: number[] = [];
      let failed = 0;
      let next = 0;
      await Promise.all(
        Array.from({ length: 8 }, async () => {
          while (next < callCount) {
            const i = next++;
            const t = process.hrtime.bigint();
            const r = await client
              .toolCall({ tool_name: 'unit_convert', tool_args: { value: i, from_unit: 'km', to_unit: 'm' }, target })
              .catch(() => undefined);
            samples.push(Number(process.hrtime.bigint() - t) / 1000);
            if (!r?.ok || !r.verified) failed += 1;
          }
        }),
      );
      callStats[name] = { ...latencyStats(samples), failed };
    }

    const disconnected = sims.reduce((n, s) => n + (s.status?.closed ?? 0), 0);
    const sched = await schedulingBench(nodes, schedIterations, dir);

    const result = {
      nodes,
      workers,
      parallel_connects_per_worker: parallel,
      heartbeat_interval_ms: heartbeatMs,
      time_to_all_online_s: round(allOnlineMs / 1000, 2),
      gateway_rss_before_mib: rssMiB(rssBefore),
      gateway_rss_after_mib: rssMiB(rssAfter),
      gateway_rss_per_node_kib: round((rssAfter - rssBefore) / nodes / 1024),
      // The same after the idle window: the heartbeats of the window may touch memory the first ones did not.
      gateway_rss_per_node_after_window_kib: round((rssAfterWindow - rssBefore) / nodes / 1024),
      heartbeat_window_s: round(wallWindowMs / 1000, 2),
      heartbeats_in_window: Math.round(heartbeats),
      gateway_cpu_in_window_ms: round(cpuWindowMs),
      gateway_cpu_idle_no_nodes_ms: round(idleCpuMs),
      gateway_cpu_us_per_heartbeat: round((cpuWindowMs * 1000) / heartbeats),
      gateway_core_share_for_heartbeats: round(cpuWindowMs / wallWindowMs, 3),
      sim_processes_cpu_in_window_ms: round(simCpuWindowMs),
      list_online: { ...latencyStats(listSamples), nodes_listed: listed },
      tool_calls_among_nodes: callStats,
      scheduling_in_process: sched,
      sim_disconnects: disconnected,
    };
    const file = smoke ? '(smoke run, not saved)' : saveResult('scale', result);
    if (a.json) {
      process.stdout.write(`${JSON.stringify({ ...result, machine: machine() })}\n`);
      return;
    }
    const ms = (us: number) => `${round(us / 1000, 2)} ms`;
    log(
      `  gateway RSS ${result.gateway_rss_before_mib} MiB → ${result.gateway_rss_after_mib} MiB: ${result.gateway_rss_per_node_kib} KiB per node (goal ≤ 20 KB), ${result.gateway_rss_per_node_after_window_kib} KiB after the idle window`,
    );
    log(
      `  heartbeats: ${result.heartbeats_in_window} in ${result.heartbeat_window_s} s cost the gateway ${result.gateway_cpu_in_window_ms} ms CPU ` +
        `(${result.gateway_cpu_us_per_heartbeat} µs each, ${round(result.gateway_core_share_for_heartbeats * 100)}% of a core; ` +
        `${result.gateway_cpu_idle_no_nodes_ms} ms with no nodes; the simulating processes used ${result.sim_processes_cpu_in_window_ms} ms)`,
    );
    log(`  GET /v1/nodes?status=online (${listed} nodes): p50 ${ms(result.list_online.p50_us)}  p99 ${ms(result.list_online.p99_us)}`);
    for (const [name, s] of Object.entries(callStats)) {
      log(`  tool_call ${name}: p50 ${ms(s.p50_us)}  p99 ${ms(s.p99_us)}  (${s.n} calls, 8 at a time, ${s.failed} failed)`);
    }
    log(
      `  scheduling in-process among ${sched.nodes} nodes (${sched.heap_bytes_per_registry_entry} B heap per registry entry, tool descriptors shared):`,
    );
    for (const c of sched.cases) {
      log(`    ${c.case.padEnd(38)} ${String(c.matching).padStart(6)} match  p50 ${c.p50_us} µs  p99 ${c.p99_us} µs  (${c.n} decisions)`);
    }
    if (disconnected > 0) log(`  note: ${disconnected} simulated connections closed during the run`);
    log(`  → ${file}`);
  } finally {
    for (const s of sims) s.bp.proc.stdin?.end();
    await Promise.all(procs.slice(1).map((p) => p.stop(5000)));
    await procs[0]?.stop(30_000);
    rmSync(dir, { recursive: true, force: true });
  }
  if (profileDir && existsSync(profileDir)) {
    const file = readdirSync(profileDir).find((f) => f.endsWith('.cpuprofile'));
    if (file) {
      const p = summarizeProfile(join(profileDir, file));
      log(`\ngateway profile over the whole run: ${p.busy_ms} ms busy of ${p.total_ms} ms (${join(profileDir, file)})`);
      for (const x of p.by_area.slice(0, 12)) log(`    ${String(x.share).padStart(5)}%  ${x.area}`);
      for (const f of p.top_functions.slice(0, 20)) log(`    ${String(f.share).padStart(5)}%  ${f.name}  ${f.where}`);
    }
  }
}
