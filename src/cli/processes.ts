/**
 * Starts gateway and node processes and waits for their ready lines; used by
 * `fieldmesh demo`, the integration tests and the benches, so all run what
 * users run.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FieldmeshClient } from '../client/index.js';

export const defaultCliPath = fileURLToPath(new URL('./index.js', import.meta.url));

export interface Managed {
  proc: ChildProcess;
  /** Everything the process printed so far (stdout and stderr). */
  output: () => string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it exited. */
  stop(graceMs?: number): Promise<void>;
  exited: Promise<number | null>;
}

export interface StartOptions {
  cliPath?: string;
  env?: NodeJS.ProcessEnv;
  /** How long to wait for the ready line. @default 20000 */
  readyTimeoutMs?: number;
}

/** Spawns `fieldmesh <args>` and resolves with the fields of the first log line whose msg is `readyMsg`. */
export async function startProcess(
  args: string[],
  readyMsg: string,
  opts: StartOptions = {},
): Promise<{ managed: Managed; ready: Record<string, unknown> }> {
  const proc = spawn(process.execPath, [opts.cliPath ?? defaultCliPath, ...args], {
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const managed: Managed = {
    proc,
    output: () => out,
    exited,
    stop: (graceMs) => stopProcess(proc, exited, graceMs),
  };
  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    let buffered = '';
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`fieldmesh ${args[0]} printed no "${readyMsg}" within ${opts.readyTimeoutMs ?? 20000} ms:\n${out}`));
    }, opts.readyTimeoutMs ?? 20_000);
    proc.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      buffered += chunk.toString();
      let nl = buffered.indexOf('\n');
      while (nl >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        nl = buffered.indexOf('\n');
        if (!line.includes(readyMsg)) continue;
        try {
          const fields = JSON.parse(line) as Record<string, unknown>;
          if (fields.msg === readyMsg) {
            clearTimeout(timer);
            resolve(fields);
          }
        } catch {
          // not a log line
        }
      }
    });
    proc.stderr?.on('data', (chunk: Buffer) => {
      out += chunk.toString();
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`fieldmesh ${args[0]} exited with ${code} before it was ready:\n${out}`));
    });
  });
  return { managed, ready };
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process exited. */
export async function stopProcess(proc: ChildProcess, exited: Promise<unknown>, graceMs = 5000): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  proc.kill('SIGTERM');
  const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/**
 * The `--pair CODE` arguments a node needs on its first start: a fresh code
 * for it from the gateway, unless its data dir already holds a certificate.
 */
export async function pairingArgs(client: FieldmeshClient, nodeId: string, dataDir: string): Promise<string[]> {
  if (existsSync(join(dataDir, 'tls', 'node.crt'))) return [];
  return ['--pair', (await client.createPairingCode({ node_id: nodeId })).code];
}
