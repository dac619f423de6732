/**
 * Process helpers for the benches: start a command, wait for its JSON ready
 * line, read its CPU and memory from /proc, and stop it. Unlike the CLI's
 * startProcess, this one keeps only the tail of a process's output (a gateway
 * with 10,000 nodes logs tens of thousands of lines) and can run the command
 * under a raised open-file limit or with extra Node flags.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { defaultCliPath, stopProcess } from '../src/cli/processes.js';

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
  /**
   * Send stdout and stderr to this file instead of a pipe. Node writes to a pipe synchronously, so a gateway
   * logging a line per node event would otherwise wait on this process to read, which is not what it does in
   * production (a file or journald takes the lines).
   */
  logFile?: string;
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
  const logFd = opts.logFile === undefined ? undefined : openSync(opts.logFile, 'a');
  const out = logFd ?? 'pipe';
  const spawnOpts = {
    env: { ...process.env, ...opts.env },
    stdio: [opts.stdin ? 'pipe' : 'ignore', out, out] as ('pipe' | 'ignore' | number)[],
  };
  const proc =
    opts.openFiles === undefined
      ? spawn(process.execPath, nodeArgv, spawnOpts)
      : spawn(
          'bash',
          ['-c', `ulimit -n ${opts.openFiles} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"`, 'bash', process.execPath, ...nodeArgv],
          spawnOpts,
        );
  if (logFd !== undefined) closeSync(logFd);
  let tail = '';
  const keep = (s: string) => {
    tail += s;
    if (tail.length > TAIL) tail = tail.slice(-TAIL);
  };
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const bp: BenchProcess = {
    proc,
    pid: proc.pid ?? -1,
    output: () => (opts.logFile === undefined ? tail : readTail(opts.logFile)),
    exited,
    stop: (graceMs) => stopProcess(proc, exited, graceMs),
  };
  const timeoutMs = opts.readyTimeoutMs ?? 30_000;
  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    let buffered = '';
    let done = false;
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`${script} ${args[0] ?? ''} printed no "${readyMsg}" within ${timeoutMs} ms:\n${bp.output()}`));
    }, timeoutMs);
    const onData = (chunk: Buffer | string) => {
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
    };
    proc.stdout?.on('data', onData);
    proc.stderr?.on('data', (chunk: Buffer) => keep(chunk.toString()));
    if (opts.logFile !== undefined) {
      // Follow the file until the ready line; later lines are the file's business.
      const file = opts.logFile;
      let offset = 0;
      const poll = setInterval(() => {
        const size = statSync(file).size;
        if (size <= offset) return;
        const fd = openSync(file, 'r');
        const buf = Buffer.alloc(size - offset);
        readSync(fd, buf, 0, buf.length, offset);
        closeSync(fd);
        offset = size;
        onData(buf);
        if (done) clearInterval(poll);
      }, 20);
      void exited.then(() => clearInterval(poll));
    }
    void exited.then((code) => {
      clearTimeout(timer);
      if (!done) reject(new Error(`${script} ${args[0] ?? ''} exited with ${code} before it was ready:\n${bp.output()}`));
    });
  });
  return { bp, ready };
}

function readTail(file: string): string {
  try {
    const size = statSync(file).size;
    const fd = openSync(file, 'r');
    const buf = Buffer.alloc(Math.min(size, TAIL));
    readSync(fd, buf, 0, buf.length, size - buf.length);
    closeSync(fd);
    return buf.toString();
  } catch {
    return '';
  }
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
