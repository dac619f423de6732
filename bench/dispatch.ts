/**
 * Dispatch: throughput and latency of `unit_convert` calls through a gateway
 * and N node processes, submitted with the client SDK (`--transport ws`, the
 * default: all calls over one WebSocket to `/v1/ws`; `--transport http`: one
 * `POST /v1/tool_call` each over keep-alive HTTP), against the peers a user
 * would pick instead, in the same run on the same machine with the same workload:
 *
 * - Moleculer with the TCP transporter: a caller broker here, N worker brokers
 *   each in its own process;
 * - NATS request-reply: N worker processes in one queue group behind the
 *   nats-server on 127.0.0.1:4222 (or one the bench starts on a free port).
 *
 * Each system runs closed-loop at each concurrency (`--concurrency 128,1`):
 * that many calls in flight, a new one as soon as one ends. A warm-up is run
 * first and not counted. With `--runs` > 1 every figure is the median over the
 * runs, and the systems take turns going first.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { readAdminToken } from '../src/cli/client.js';
import { FieldmeshClient } from '../src/client/index.js';
import { type ProfileSummary, summarizeProfile } from './cpuprofile.js';
import { type BenchArgs, machine, num, percentile, saveResult } from './index.js';
import { type Starter, startMesh } from './mesh.js';
import { createMoleculerBroker } from './peers/moleculer.js';
import { type BenchProcess, cpuMs, freePort, sleep, startFieldmesh, startNodeScript } from './procs.js';

const here = dirname(fileURLToPath(import.meta.url));
const SYSTEMS = ['fieldmesh', 'moleculer', 'nats'] as const;
type SystemName = (typeof SYSTEMS)[number];
const TRANSPORTS = ['ws', 'http'] as const;
type Transport = (typeof TRANSPORTS)[number];
const clientOf: Record<Transport, string> = {
  ws: 'FieldmeshClient, transport "ws": one WebSocket, op tool_call → /v1/ws',
  http: 'FieldmeshClient, transport "http" (node:http keep-alive agent) → POST /v1/tool_call',
};

interface Target {
  /** One call; rejects (or throws) when the call failed or its answer is wrong. */
  call(i: number): Promise<void>;
  stop(): Promise<void>;
  /** Set when the system could not be started here, with the reason. */
  skipped?: string;
  /** PIDs whose CPU time the bench reports. */
  pids?: Record<string, number>;
  /** Counters read before and after a phase (fieldmesh: its /healthz batch counters). */
  counters?(): Promise<Record<string, number>>;
}

export interface PhaseResult {
  calls: number;
  errors: number;
  first_error?: string;
  elapsed_ms: number;
  throughput: number;
  p50_us: number;
  p90_us: number;
  p99_us: number;
  max_us: number;
  mean_us: number;
  /** True when the phase hit its time bound before making every call. */
  truncated: boolean;
  /** CPU time per call, µs, by process role (client = this bench process). */
  cpu_us_per_call?: Record<string, number>;
  /** fieldmesh: tasks per gateway TASK signature and results per node result signature (one per TASK_BATCH or RESULT_BATCH, one per frame sent alone). */
  per_signature?: { tasks: number; results: number };
}

const args = (i: number) => ({ value: (i % 1000) + 0.5, from_unit: 'miles', to_unit: 'km' });

/** Checks the answer is the conversion asked for, so a system that answers fast and wrong cannot win. */
function checkOutput(i: number, out: unknown): void {
  const o = out as { value?: unknown; unit?: unknown } | null;
  const want = ((i % 1000) + 0.5) * 1.609344;
  if (o?.unit !== 'km' || typeof o.value !== 'number' || Math.abs(o.value - want) > 1e-6 * want) {
    throw new Error(`wrong answer for call ${i}: ${JSON.stringify(out)}`);
  }
}

/** Closed-loop load: `concurrency` calls in flight until `calls` are made or the deadline passes. */
export async function drive(
  calls: number,
  concurrency: number,
  call: (i: number) => Promise<void>,
  deadlineMs: number,
): Promise<PhaseResult> {
  const lat = new Float64Array(calls);
  let next = 0;
  let done = 0;
  let errors = 0;
  let firstError: string | undefined;
  const stopAt = performance.now() + deadlineMs;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= calls || performance.now() > stopAt) return;
      const t0 = process.hrtime.bigint();
      try {
        await call(i);
      } catch (err) {
        errors += 1;
        firstError ??= err instanceof Error ? err.message : String(err);
      }
      lat[done++] = Number(process.hrtime.bigint() - t0) / 1000;
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(concurrency, calls) }, worker));
  const elapsed = performance.now() - t0;
  const sorted = Array.from(lat.subarray(0, done)).sort((a, b) => a - b);
  const round = (x: number) => Math.round(x * 10) / 10;
  const result: PhaseResult = {
    calls: done,
    errors,
    elapsed_ms: Math.round(elapsed),
    throughput: Math.round((done / elapsed) * 1000),
    p50_us: round(percentile(sorted, 50)),
    p90_us: round(percentile(sorted, 90)),
    p99_us: round(percentile(sorted, 99)),
    max_us: round(sorted.at(-1) ?? Number.NaN),
    mean_us: round(sorted.reduce((s, x) => s + x, 0) / Math.max(1, done)),
    truncated: done < calls,
  };
  if (firstError !== undefined) result.first_error = firstError;
  return result;
}

/** Which process `--profile` profiles: the gateway, or the first node. */
type ProfileRole = 'gateway' | 'node';

async function startFieldmeshMesh(
  nodes: number,
  dir: string,
  profileDir: string | undefined,
  profileRole: ProfileRole,
  transport: Transport,
): Promise<Target> {
  // Logs go to files: a process writing to a pipe waits on its reader, which a production gateway does not.
  const start: Starter<BenchProcess> = async (args, readyMsg, role) => {
    const profiled = profileRole === 'gateway' ? role === 'gateway' : role === 'bench:n0';
    const { bp, ready } = await startFieldmesh(args, readyMsg, {
      env: { FIELDMESH_LOG_LEVEL: 'info' },
      logFile: join(dir, `${role.replace(/[^A-Za-z0-9_-]/g, '_')}.log`),
      nodeFlags: profiled && profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [],
    });
    return { process: bp, ready };
  };
  // The gateway gets time to exit cleanly: --cpu-prof writes its profile at exit.
  const mesh = await startMesh({ dir, start, gatewayGraceMs: 15_000 });
  try {
    await Promise.all(Array.from({ length: nodes }, (_, i) => mesh.startNode(`bench:n${i}`)));
    await mesh.waitOnline(nodes);
    const pids: Record<string, number> = { gateway: mesh.gatewayPid };
    for (let i = 0; i < nodes; i++) pids[`node${i}`] = mesh.nodes.get(`bench:n${i}`)?.pid ?? -1;
    const client = new FieldmeshClient({ baseUrl: mesh.api, token: readAdminToken(join(dir, 'gw')), timeoutMs: 60_000, transport });
    return {
      pids,
      async call(i) {
        const r = await client.toolCall({ tool_name: 'unit_convert', tool_args: args(i) });
        if (!r.ok) throw new Error(`call failed: ${r.error?.code} ${r.error?.message}`);
        if (!r.verified) throw new Error(`result not verified: ${r.verification_error ?? ''}`);
        checkOutput(i, r.output);
      },
      async counters() {
        const h = (await mesh.client.health()) as unknown as Record<string, number>;
        const pick = (k: string) => (typeof h[k] === 'number' ? h[k] : 0);
        return {
          task_batches: pick('task_batches'),
          batched_tasks: pick('batched_tasks'),
          result_batches: pick('result_batches'),
          batched_results: pick('batched_results'),
        };
      },
      stop: async () => {
        client.close();
        await mesh.stop();
      },
    };
  } catch (err) {
    await mesh.stop();
    throw err;
  }
}

interface EndpointList {
  endpoints: { isAvailable: boolean }[];
}

async function startMoleculer(nodes: number): Promise<Target> {
  const ports = await Promise.all(Array.from({ length: nodes + 1 }, () => freePort()));
  const ids = ['caller', ...Array.from({ length: nodes }, (_, i) => `worker${i}`)];
  const url = (i: number) => `127.0.0.1:${ports[i]}/${ids[i]}`;
  const procs: BenchProcess[] = [];
  const caller = createMoleculerBroker(
    'caller',
    ports[0]!,
    ids.slice(1).map((_, i) => url(i + 1)),
    false,
  );
  const stopAll = async () => {
    await caller.stop().catch(() => undefined);
    await Promise.all(procs.map((p) => p.stop(3000)));
  };
  try {
    const script = join(here, 'peers/moleculer-worker.js');
    const started = await Promise.all(
      ids.slice(1).map((id, k) => {
        const urls = ids.map((_, j) => j).filter((j) => j !== k + 1);
        return startNodeScript(script, [id, String(ports[k + 1]), urls.map(url).join(',')], 'worker ready');
      }),
    );
    for (const s of started) procs.push(s.bp);
    await caller.start();
    const until = Date.now() + 30_000;
    for (;;) {
      const list = (caller.registry as unknown as { getActionEndpoints(n: string): EndpointList | undefined }).getActionEndpoints(
        'converter.unit_convert',
      );
      if ((list?.endpoints.filter((e) => e.isAvailable).length ?? 0) >= nodes) break;
      if (Date.now() > until) throw new Error(`only some of ${nodes} Moleculer workers became reachable`);
      await sleep(50);
    }
    const pids: Record<string, number> = {};
    started.forEach((s, i) => {
      pids[`worker${i}`] = s.bp.pid;
    });
    return {
      pids,
      async call(i) {
        checkOutput(i, await caller.call('converter.unit_convert', args(i)));
      },
      stop: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

async function reachable(server: string): Promise<boolean> {
  try {
    const nc = await connect({ servers: server, timeout: 2000, reconnect: false });
    await nc.close();
    return true;
  } catch {
    return false;
  }
}

/** The nats-server given (or on 127.0.0.1:4222), else one started here on a free loopback port, else none. */
async function natsServer(wanted: string): Promise<{ url: string; stop(): Promise<void> } | { skipped: string }> {
  if (await reachable(wanted)) return { url: wanted, stop: async () => undefined };
  const port = await freePort();
  const proc = spawn('nats-server', ['-a', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' });
  const failed = new Promise<boolean>((r) => {
    proc.once('error', () => r(true));
    proc.once('exit', () => r(true));
  });
  const url = `nats://127.0.0.1:${port}`;
  for (let i = 0; i < 50; i++) {
    if (await Promise.race([failed, sleep(100).then(() => false)])) break;
    if (await reachable(url)) {
      return {
        url,
        stop: async () => {
          proc.kill('SIGTERM');
          await Promise.race([failed, sleep(3000)]);
        },
      };
    }
  }
  proc.kill('SIGKILL');
  return { skipped: `no nats-server reachable at ${wanted} and none could be started` };
}

async function startNats(nodes: number, wanted: string): Promise<Target> {
  const server = await natsServer(wanted);
  if ('skipped' in server) return { skipped: server.skipped, call: async () => undefined, stop: async () => undefined };
  const subject = `fmbench.${process.pid}.${Date.now()}.unit_convert`;
  const procs: BenchProcess[] = [];
  let nc: NatsConnection | undefined;
  const stopAll = async () => {
    await nc?.close().catch(() => undefined);
    await Promise.all(procs.map((p) => p.stop(3000)));
    await server.stop();
  };
  try {
    const script = join(here, 'peers/nats-worker.js');
    const started = await Promise.all(
      Array.from({ length: nodes }, (_, i) => startNodeScript(script, [server.url, subject, `w${i}`], 'worker ready')),
    );
    for (const s of started) procs.push(s.bp);
    const conn = await connect({ servers: server.url, name: 'fmbench-caller' });
    nc = conn;
    const pids: Record<string, number> = {};
    started.forEach((s, i) => {
      pids[`worker${i}`] = s.bp.pid;
    });
    return {
      pids,
      async call(i) {
        const msg = await conn.request(subject, JSON.stringify(args(i)), { timeout: 30_000 });
        const r = msg.json<{ ok: boolean; output?: unknown; error?: string }>();
        if (!r.ok) throw new Error(`call failed: ${r.error}`);
        checkOutput(i, r.output);
      },
      stop: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

/** CPU ms so far by role: `gateway`, `nodes` or `workers` (summed), and `client` (this process). */
function cpuByRole(pids: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, pid] of Object.entries(pids)) {
    const role = name.replace(/\d+$/, 's');
    try {
      out[role] = (out[role] ?? 0) + cpuMs(pid);
    } catch {
      // the process has gone; its share is left out
    }
  }
  const self = process.cpuUsage();
  out.client = (self.user + self.system) / 1000;
  return out;
}

/** Items per signature over a phase of `calls` calls: each batch is one signature, each item sent alone another. */
function perSignature(calls: number, before: Record<string, number>, after: Record<string, number>): { tasks: number; results: number } {
  const d = (k: string) => (after[k] ?? 0) - (before[k] ?? 0);
  const per = (batches: number, batched: number) => Math.round((calls / Math.max(1, batches + calls - batched)) * 100) / 100;
  return { tasks: per(d('task_batches'), d('batched_tasks')), results: per(d('result_batches'), d('batched_results')) };
}

function median(xs: number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

interface Summary {
  throughput: number;
  p50_us: number;
  p99_us: number;
  errors: number;
  runs: PhaseResult[];
}

function summarize(runs: PhaseResult[]): Summary {
  return {
    throughput: Math.round(median(runs.map((r) => r.throughput))),
    p50_us: median(runs.map((r) => r.p50_us)),
    p99_us: median(runs.map((r) => r.p99_us)),
    errors: runs.reduce((s, r) => s + r.errors, 0),
    runs,
  };
}

const fmtUs = (us: number) => (us >= 10_000 ? `${(us / 1000).toFixed(1)} ms` : `${Math.round(us)} µs`);
const ratio = (a: number, b: number) => Math.round((a / b) * 100) / 100;

export async function dispatchBench(a: BenchArgs): Promise<void> {
  const smoke = a.flags.has('smoke');
  const nodes = num(a, 'nodes', 4);
  const tasks = num(a, 'tasks', 20_000);
  const runs = num(a, 'runs', smoke ? 1 : 3);
  const phaseTimeoutMs = num(a, 'phase-timeout-s', 600) * 1000;
  const concurrencies = (a.flags.get('concurrency') ?? '128,1').split(',').map((c) => {
    const n = Number(c);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--concurrency: "${c}" is not a positive integer`);
    return n;
  });
  const profileFlag = a.flags.get('profile');
  const profileDir = profileFlag === undefined ? undefined : resolve(profileFlag === 'true' ? '.tmp/profile' : profileFlag);
  const profileRole = (a.flags.get('profile-role') ?? 'gateway') as ProfileRole;
  if (profileRole !== 'gateway' && profileRole !== 'node') throw new Error(`--profile-role must be gateway or node, not "${profileRole}"`);
  const only = (a.flags.get('systems') ?? (profileDir ? 'fieldmesh' : SYSTEMS.join(','))).split(',').map((s) => s.trim()) as SystemName[];
  for (const s of only) if (!SYSTEMS.includes(s)) throw new Error(`--systems: "${s}" is not one of ${SYSTEMS.join(', ')}`);
  const natsUrl = a.flags.get('nats') ?? 'nats://127.0.0.1:4222';
  const transport = (a.flags.get('transport') ?? 'ws') as Transport;
  if (!TRANSPORTS.includes(transport)) throw new Error(`--transport: "${transport}" is not one of ${TRANSPORTS.join(', ')}`);
  const warmup = smoke ? Math.min(20, tasks) : Math.min(2000, Math.max(200, Math.floor(tasks / 10)));
  const log = (s: string) => {
    if (!a.json) process.stdout.write(`${s}\n`);
  };

  if (profileDir) {
    rmSync(profileDir, { recursive: true, force: true });
    log(`profiling the gateway: --cpu-prof into ${profileDir}`);
  }
  const results: Record<string, Record<string, PhaseResult[]>> = {};
  const skipped: Record<string, string> = {};
  log(
    `dispatch: unit_convert over ${nodes} nodes/workers, ${tasks} calls per phase (+${warmup} warm-up), ${runs} run(s), fieldmesh client over ${transport}`,
  );
  for (let run = 0; run < runs; run++) {
    // Take turns going first, so a slow drift of the machine does not always land on the same system.
    const order = only.map((_, k) => only[(k + run) % only.length]!);
    for (const system of order) {
      if (skipped[system]) continue;
      const dir = mkdtempSync(join(tmpdir(), `fm-bench-dispatch-${system}-`));
      let target: Target | undefined;
      try {
        target =
          system === 'fieldmesh'
            ? await startFieldmeshMesh(nodes, dir, profileDir, profileRole, transport)
            : system === 'moleculer'
              ? await startMoleculer(nodes)
              : await startNats(nodes, natsUrl);
        if (target.skipped) {
          skipped[system] = target.skipped;
          log(`  ${system}: skipped (${target.skipped})`);
          continue;
        }
        for (const c of concurrencies) {
          const warm = await drive(warmup, c, target.call, phaseTimeoutMs);
          if (warm.errors > 0) throw new Error(`${system} warm-up: ${warm.errors} failed calls, first: ${warm.first_error}`);
          const counted0 = await target.counters?.();
          const cpu0 = cpuByRole(target.pids ?? {});
          const r = await drive(tasks, c, target.call, phaseTimeoutMs);
          const cpu1 = cpuByRole(target.pids ?? {});
          const counted1 = await target.counters?.();
          r.cpu_us_per_call = Object.fromEntries(
            Object.keys(cpu1).map((role) => [role, Math.round(((cpu1[role]! - (cpu0[role] ?? 0)) * 1000) / Math.max(1, r.calls))]),
          );
          if (counted0 && counted1) r.per_signature = perSignature(r.calls, counted0, counted1);
          const bySystem = results[system] ?? {};
          results[system] = bySystem;
          bySystem[String(c)] = [...(bySystem[String(c)] ?? []), r];
          log(
            `  run ${run + 1} ${system.padEnd(9)} c=${String(c).padEnd(3)} ${String(r.throughput).padStart(6)} calls/s` +
              `  p50 ${fmtUs(r.p50_us)}  p99 ${fmtUs(r.p99_us)}${r.errors ? `  ${r.errors} errors (${r.first_error})` : ''}` +
              `${r.truncated ? '  (stopped at the time bound)' : ''}` +
              `  cpu µs/call ${Object.entries(r.cpu_us_per_call ?? {})
                .map(([k, v]) => `${k} ${v}`)
                .join(', ')}` +
              `${r.per_signature ? `  per signature: tasks ${r.per_signature.tasks}, results ${r.per_signature.results}` : ''}`,
          );
          if (r.errors > 0 && smoke) throw new Error(`${system}: ${r.errors} calls failed, first: ${r.first_error}`);
        }
      } finally {
        await target?.stop();
        rmSync(dir, { recursive: true, force: true });
      }
    }
  }

  const summary: Record<string, Record<string, Summary>> = {};
  for (const [system, byC] of Object.entries(results)) {
    summary[system] = {};
    for (const [c, list] of Object.entries(byC)) summary[system][c] = summarize(list);
  }
  const ratios: Record<string, Record<string, { throughput: number; p50: number; p99: number }>> = {};
  for (const c of concurrencies.map(String)) {
    const fm = summary.fieldmesh?.[c];
    if (!fm) continue;
    for (const peer of ['moleculer', 'nats']) {
      const p = summary[peer]?.[c];
      if (!p) continue;
      const forC = ratios[c] ?? {};
      ratios[c] = forC;
      forC[peer] = {
        throughput: ratio(fm.throughput, p.throughput),
        p50: ratio(fm.p50_us, p.p50_us),
        p99: ratio(fm.p99_us, p.p99_us),
      };
    }
  }

  let profile: (ProfileSummary & { file: string }) | undefined;
  if (profileDir && existsSync(profileDir)) {
    const file = readdirSync(profileDir).find((f) => f.endsWith('.cpuprofile'));
    if (file) profile = { file: join(profileDir, file), ...summarizeProfile(join(profileDir, file)) };
  }

  const out = {
    nodes,
    tasks,
    warmup,
    runs,
    concurrencies,
    transport,
    client: clientOf[transport],
    peers: {
      moleculer: 'moleculer 0.14, TCP transporter, JSON serializer, caller broker in the bench process, one worker broker per process',
      nats: `@nats-io/transport-node 3.3 request-reply, ${natsUrl}, one queue-group worker per process`,
    },
    summary,
    ratios,
    skipped,
    ...(profile ? { profile } : {}),
  };
  const saveAs = profileDir ? 'dispatch-profile' : 'dispatch';
  const file = smoke ? '(smoke run, not saved)' : saveResult(saveAs, out);
  if (a.json) {
    process.stdout.write(`${JSON.stringify({ ...out, machine: machine() })}\n`);
    return;
  }
  for (const c of concurrencies.map(String)) {
    log(`\nconcurrency ${c} (median of ${runs} run${runs > 1 ? 's' : ''})`);
    log(`  ${'system'.padEnd(16)}${'calls/s'.padStart(9)}${'p50'.padStart(11)}${'p99'.padStart(11)}   fieldmesh ÷ peer`);
    for (const system of only) {
      const s = summary[system]?.[c];
      if (!s) continue;
      const r = system === 'fieldmesh' ? undefined : ratios[c]?.[system];
      const vs = r ? `   throughput ${r.throughput.toFixed(2)}×  p50 ${r.p50.toFixed(2)}×  p99 ${r.p99.toFixed(2)}×` : '';
      const label = system === 'moleculer' ? 'moleculer (TCP)' : system === 'nats' ? 'nats (req-rep)' : system;
      log(`  ${label.padEnd(16)}${String(s.throughput).padStart(9)}${fmtUs(s.p50_us).padStart(11)}${fmtUs(s.p99_us).padStart(11)}${vs}`);
    }
  }
  if (profile) {
    log(
      `\n${profileRole === 'gateway' ? 'gateway' : 'node bench:n0'} profile: ${profile.busy_ms} ms busy of ${profile.total_ms} ms (${profile.file})`,
    );
    log('  by area (self time):');
    for (const x of profile.by_area.slice(0, 15)) log(`    ${String(x.share).padStart(5)}%  ${x.area}`);
    log('  top functions (self time):');
    for (const f of profile.top_functions) log(`    ${String(f.share).padStart(5)}%  ${f.name}  ${f.where}`);
  }
  log(`\n  → ${file}`);
}
