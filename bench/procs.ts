/**
 * Process helpers for the benches: start a command, wait for its JSON ready
 * line, read its CPU and memory from /proc, and stop it. Unlike the CLI's
 * startProcess, this one keeps only the tail of a process's output (a gateway
 * with 10,000 nodes logs tens of thousands of lines) and can run the command
 * under a raised open-file limit or with extra Node flags.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { defaultCliPath } from '../src/cli/processes.js';

export interface BenchProcess {
  proc: ChildProcess;
  pid: number;
  /** The last 64 KiB the process printed. */
  output(): string;
  /** SIGTERM, then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
  exited: Promise<number | null>;
}

export interface SpawnOptions {
  env?: NodeJS.ProcessEnv;
  /** Flags for node itself, before the script (e.g. --cpu-prof). */
  nodeFlags?: string[];
  /** Raise the soft open-file limit to this (or the hard limit, if lower) before exec. */
  openFiles?: number;
  readyTimeoutMs?: number;
  /** Called with each complete stdout line after the ready line. */
  onLine?: (line: string) => void;
  /** Keep stdin open as a pipe (see BenchProcess.proc.stdin). */
  stdin?: boolean;
}

const TAIL = 64 * 1024;

/** Runs `node <script> <args>` and resolves with the fields of its first JSON line whose msg is `readyMsg`. */
export async function startNodeScript(
  script: string,
  args: string[],
  readyMsg: string,
  opts: SpawnOptions = {},
): Promise<{ bp: BenchProcess; ready: Record<string, unknown> }> {
  const nodeArgv = [...(opts.nodeFlags ?? []), script, ...args];
  // Node cannot raise its own RLIMIT_NOFILE, so a shell raises it and then becomes node.
  const spawnOpts = { env: { ...process.env, ...opts.env }, stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'] as const };
  const proc =
    opts.openFiles === undefined
      ? spawn(process.execPath, nodeArgv, { ...spawnOpts, stdio: [...spawnOpts.stdio] })
      : spawn(
          'bash',
          ['-c', `ulimit -n ${opts.openFiles} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"`, 'bash', process.execPath, ...nodeArgv],
          { ...spawnOpts, stdio: [...spawnOpts.stdio] },
        );
  let tail = '';
  const keep = (s: string) => {
    tail += s;
    if (tail.length > TAIL) tail = tail.slice(-TAIL);
  };
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const bp: BenchProcess = {
    proc,
    pid: proc.pid ?? -1,
    output: () => tail,
    exited,
    async stop(graceMs = 5000) {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
  const timeoutMs = opts.readyTimeoutMs ?? 30_000;
  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    let buffered = '';
    let done = false;
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`${script} ${args[0] ?? ''} printed no "${readyMsg}" within ${timeoutMs} ms:\n${tail}`));
    }, timeoutMs);
    proc.stdout?.on('data', (chunk: Buffer) => {
      const text = chunk.toString();
      keep(text);
      buffered += text;
      let nl = buffered.indexOf('\n');
      while (nl >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        nl = buffered.indexOf('\n');
        if (done) {
          opts.onLine?.(line);
          continue;
        }
        if (!line.includes(readyMsg)) continue;
        try {
          const fields = JSON.parse(line) as Record<string, unknown>;
          if (fields.msg === readyMsg) {
            done = true;
            clearTimeout(timer);
            resolve(fields);
          }
        } catch {
          // not a JSON line
        }
      }
    });
    proc.stderr?.on('data', (chunk: Buffer) => keep(chunk.toString()));
    void exited.then((code) => {
      clearTimeout(timer);
      if (!done) reject(new Error(`${script} ${args[0] ?? ''} exited with ${code} before it was ready:\n${tail}`));
    });
  });
  return { bp, ready };
}

/** `fieldmesh <args>` from the compiled CLI, as users run it. */
export function startFieldmesh(args: string[], readyMsg: string, opts: SpawnOptions = {}) {
  return startNodeScript(defaultCliPath, args, readyMsg, opts);
}

/** Resident set size in bytes, from /proc/<pid>/status (VmRSS). */
export function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** CPU time (user + system) in ms, from /proc/<pid>/stat; clock ticks are 100 Hz on Linux. */
export function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name may hold spaces, so fields are counted after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return ((utime + stime) * 1000) / 100;
}

/** The soft open-file limit of a process, from /proc/<pid>/limits. */
export function openFileLimit(pid: number): number {
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'));
  if (!m) return Number.NaN;
  return m[1] === 'unlimited' ? Number.POSITIVE_INFINITY : Number(m[1]);
}

/** A TCP port free on 127.0.0.1 right now (the OS picks it; a brief race with other programs is possible). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
