/**
 * A gateway and its node processes for the benches, started the way users
 * start them (src/cli/processes.ts): each node pairs with a one-time code on
 * its first start and talks to the gateway over mutual TLS from then on.
 */
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { readAdminToken } from '../src/cli/client.js';
import { pairingArgs, startProcess } from '../src/cli/processes.js';
import { FieldmeshClient } from '../src/client/index.js';
import { sleep } from './procs.js';

/** What the mesh needs of a started process; both the CLI's and the benches' process handles have it. */
export interface MeshProcess {
  proc: ChildProcess;
  stop(graceMs?: number): Promise<void>;
  exited: Promise<number | null>;
}

/** Starts `fieldmesh <args>` and resolves once it printed `readyMsg`; `role` is "gateway" or the node id. */
export type Starter<P extends MeshProcess> = (
  args: string[],
  readyMsg: string,
  role: string,
) => Promise<{ process: P; ready: Record<string, unknown> }>;

export interface MeshOptions<P extends MeshProcess> {
  /** The gateway's and nodes' data dirs go below this. */
  dir: string;
  gatewayArgs?: string[];
  /** Extra arguments for every node. */
  nodeArgs?: string[];
  /** How processes are started; by default the CLI's startProcess with info logs. */
  start?: Starter<P>;
  /** How long the gateway gets to exit cleanly when the mesh stops. @default 2000 */
  gatewayGraceMs?: number;
}

export interface Mesh<P extends MeshProcess = MeshProcess> {
  api: string;
  listen: string;
  client: FieldmeshClient;
  gateway: P;
  gatewayPid: number;
  /** The live process of each node, by id. */
  nodes: Map<string, P>;
  /** Starts (or starts again, on the same data dir) a node; the first start pairs it. */
  startNode(id: string, extraArgs?: string[]): Promise<P>;
  /** Waits until `count` nodes are ONLINE. */
  waitOnline(count: number, timeoutMs?: number): Promise<void>;
  /** Nodes first, then the gateway. */
  stop(): Promise<void>;
}

const defaultStarter: Starter<MeshProcess> = async (args, readyMsg) => {
  const { managed, ready } = await startProcess(args, readyMsg, { env: { FIELDMESH_LOG_LEVEL: 'info' } });
  return { process: managed, ready };
};

export async function startMesh<P extends MeshProcess = MeshProcess>(opts: MeshOptions<P>): Promise<Mesh<P>> {
  const start = (opts.start ?? defaultStarter) as Starter<P>;
  const all: P[] = [];
  const gw = await start(
    ['gateway', '--data-dir', join(opts.dir, 'gw'), '--api', '127.0.0.1:0', '--listen', '127.0.0.1:0', ...(opts.gatewayArgs ?? [])],
    'gateway ready',
    'gateway',
  );
  const api = String(gw.ready.api);
  const listen = String(gw.ready.listen);
  const client = new FieldmeshClient({ baseUrl: api, token: readAdminToken(join(opts.dir, 'gw')), timeoutMs: 60_000 });
  const nodes = new Map<string, P>();
  const mesh: Mesh<P> = {
    api,
    listen,
    client,
    gateway: gw.process,
    gatewayPid: gw.process.proc.pid ?? -1,
    nodes,
    async startNode(id, extraArgs = []) {
      const dataDir = join(opts.dir, id.replace(/[^A-Za-z0-9_-]/g, '_'));
      const args = ['node', '--gateway', listen, '--id', id, '--data-dir', dataDir, '--log-level', 'info'];
      args.push(...(await pairingArgs(client, id, dataDir)), ...(opts.nodeArgs ?? []), ...extraArgs);
      const { process } = await start(args, 'node ready', id);
      all.push(process);
      nodes.set(id, process);
      return process;
    },
    async waitOnline(count, timeoutMs = 20_000) {
      const until = Date.now() + timeoutMs;
      while ((await client.listNodes('online')).length < count) {
        if (Date.now() > until) throw new Error(`fewer than ${count} fieldmesh nodes came online within ${timeoutMs} ms`);
        await sleep(20);
      }
    },
    async stop() {
      await Promise.all(all.map((p) => p.stop(2000)));
      await gw.process.stop(opts.gatewayGraceMs ?? 2000);
    },
  };
  return mesh;
}
