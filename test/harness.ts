/**
 * Test harness: real gateway and node processes from the built CLI, on port 0
 * over mutual TLS, in temp data dirs, stopped and removed after each file.
 * Each node pairs with a fresh code on its first start.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { expect } from 'vitest';
import { type Managed, pairingArgs, startProcess } from '../src/cli/processes.js';
import { FieldmeshClient } from '../src/client/index.js';
import type { ToolCallResult } from '../src/protocol/api.js';

export const cliPath = resolve(import.meta.dirname, '../dist/cli/index.js');
export const testToolsModule = resolve(import.meta.dirname, 'fixtures/test-tools.mjs');

export interface GatewayHandle {
  api: string;
  listen: string;
  dataDir: string;
  /** The admin token the gateway wrote to its data dir. */
  token: string;
  /** The gateway CA (PEM), which an https API's certificate chains to. */
  ca: string;
  client: FieldmeshClient;
  proc: Managed;
}

export interface NodeSpec {
  id: string;
  name?: string;
  platform?: string;
  capabilities?: string[];
  location?: string;
  /** Load the test tools (slow_echo, span, fail_with, big_output, state_get, …) besides the built-ins. @default true */
  testTools?: boolean;
  extraArgs?: string[];
  /** Dial this address instead of the gateway's listener (a proxy in between). */
  gateway?: string;
  /** Environment variables of the node process, besides the test's own. */
  env?: NodeJS.ProcessEnv;
}

export interface NodeHandle {
  id: string;
  dataDir: string;
  proc: Managed;
}

export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The two nodes of the seed workflow: the Android phone and the Raspberry Pi with GPS. */
export const seedNodes: NodeSpec[] = [
  { id: 'android:device_a', name: 'Android Device A', platform: 'android' },
  { id: 'rpi:device_b', name: 'Raspberry Pi B', platform: 'linux', capabilities: ['hardware:gps'], location: '37.7749,-122.4194' },
];

/** One gateway with its nodes, all real processes, for one test file. */
export class Cluster {
  readonly root = mkdtempSync(join(tmpdir(), 'fm-test-'));
  readonly procs: Managed[] = [];
  gateway!: GatewayHandle;

  #gatewayArgs: string[] = [];

  #gatewayEnv: NodeJS.ProcessEnv = {};

  async startGateway(
    extraArgs: string[] = [],
    addresses: { api?: string; listen?: string } = {},
    env: NodeJS.ProcessEnv = this.#gatewayEnv,
  ): Promise<GatewayHandle> {
    const dataDir = join(this.root, 'gateway');
    this.#gatewayArgs = extraArgs;
    this.#gatewayEnv = env;
    const { managed, ready } = await startProcess(
      [
        'gateway',
        '--data-dir',
        dataDir,
        '--api',
        addresses.api ?? '127.0.0.1:0',
        '--listen',
        addresses.listen ?? '127.0.0.1:0',
        ...extraArgs,
      ],
      'gateway ready',
      { cliPath, env },
    );
    this.procs.push(managed);
    const api = String(ready.api);
    const token = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim();
    const ca = readFileSync(join(dataDir, 'tls', 'ca.crt'), 'utf8');
    apiCredentials.set(api, { token, ca });
    const client = new FieldmeshClient({ baseUrl: api, token, ca });
    this.gateway = { api, listen: String(ready.listen), dataDir, token, ca, client, proc: managed };
    return this.gateway;
  }

  /** Kills the gateway (SIGKILL unless `graceful`) and starts it again on the same data dir and ports. */
  async restartGateway(graceful = false): Promise<GatewayHandle> {
    const { api, listen, proc } = this.gateway;
    if (graceful) await proc.stop();
    else {
      proc.proc.kill('SIGKILL');
      await proc.exited;
    }
    return this.startGateway(this.#gatewayArgs, { api: api.replace(/^https?:\/\//, ''), listen });
  }

  /** The data dir `startNode` uses for a node id. */
  nodeDataDir(id: string): string {
    return join(this.root, id.replace(/[^A-Za-z0-9_-]/g, '_'));
  }

  async startNode(spec: NodeSpec): Promise<NodeHandle> {
    const dataDir = this.nodeDataDir(spec.id);
    const args = ['node', '--gateway', spec.gateway ?? this.gateway.listen, '--id', spec.id, '--data-dir', dataDir];
    // Only the first start pairs; later ones find their certificate in the data dir.
    args.push(...(await pairingArgs(this.gateway.client, spec.id, dataDir)));
    if (spec.name) args.push('--name', spec.name);
    if (spec.platform) args.push('--platform', spec.platform);
    for (const c of spec.capabilities ?? []) args.push('--capability', c);
    if (spec.location) args.push('--location', spec.location);
    if (spec.testTools ?? true) args.push('--tools-module', testToolsModule);
    args.push(...(spec.extraArgs ?? []));
    const { managed } = await startProcess(args, 'node ready', { cliPath, ...(spec.env ? { env: spec.env } : {}) });
    this.procs.push(managed);
    await waitFor(`${spec.id} ONLINE`, async () => (await this.gateway.client.getNode(spec.id)).status === 'ONLINE');
    return { id: spec.id, dataDir, proc: managed };
  }

  async stop(): Promise<void> {
    await Promise.all(this.procs.map((p) => p.stop(3000)));
    rmSync(this.root, { recursive: true, force: true });
  }
}

// biome-ignore lint/suspicious/noExplicitAny: tests read arbitrary fields of error and result bodies
type AnyJson = Record<string, any>;

/** Token and CA of each API a Cluster started, the defaults of `http()`. */
const apiCredentials = new Map<string, { token: string; ca: string }>();

/**
 * Raw HTTP against the API, for the cases the typed client would refuse to send. It carries the admin
 * token of the Cluster that started `api` unless `token` says otherwise (`null` sends none).
 */
export function http(
  api: string,
  method: string,
  path: string,
  body?: string | Buffer,
  headers: Record<string, string> = {},
  token: string | null = apiCredentials.get(api)?.token ?? null,
) {
  const url = new URL(api + path);
  const all: Record<string, string> = { 'content-type': 'application/json', ...headers };
  if (token !== null) all.authorization = `Bearer ${token}`;
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  const ca = apiCredentials.get(api)?.ca;
  return new Promise<{ status: number; json: AnyJson; text: string; headers: IncomingHttpHeaders }>((resolve, reject) => {
    const req = send(url, { method, headers: all, agent: false, ...(ca ? { ca } : {}) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, json: json as AnyJson, text, headers: res.headers });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the built CLI and resolves with its exit code and output, whatever the exit code. */
export function runCli(args: string[], timeoutMs = 30_000, env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const options = { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024, env: { ...process.env, ...env } };
    execFile(process.execPath, [cliPath, ...args], options, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') {
        reject(new Error(`fieldmesh ${args.join(' ')} did not exit normally (${err.message}):\n${stdout}\n${stderr}`));
        return;
      }
      resolve({ code: err ? (err.code as number) : 0, stdout, stderr });
    });
  });
}

/**
 * `calls` unit_convert calls to one node from `callers` closed-loop callers, as the dispatch bench makes them (each
 * caller sends its next call when its last is answered); every answer is checked ok, verified and right, ids unique.
 */
export async function convertClosedLoop(
  client: FieldmeshClient,
  nodeId: string,
  calls: number,
  callers: number,
): Promise<ToolCallResult[]> {
  const answers: ToolCallResult[] = [];
  let next = 0;
  const caller = async () => {
    for (let i = next++; i < calls; i = next++) {
      answers[i] = await client.toolCall({
        tool_name: 'unit_convert',
        tool_args: { value: i + 0.25, from_unit: 'miles', to_unit: 'km' },
        target: { kind: 'explicit', node_id: nodeId },
      });
    }
  };
  await Promise.all(Array.from({ length: callers }, caller));
  answers.forEach((r, i) => {
    expect(r, `call ${i}`).toMatchObject({ ok: true, verified: true, node_id: nodeId, output: { unit: 'km' } });
    expect((r.output as { value: number }).value).toBeCloseTo((i + 0.25) * 1.609344, 9);
  });
  expect(new Set(answers.map((r) => r.task_id)).size).toBe(calls);
  return answers;
}
