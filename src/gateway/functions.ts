/**
 * Deployable functions at the gateway (issue 7, item 1): a deploy is stored
 * with its target, signed with the gateway's task-signing key and sent as
 * DEPLOY to every ONLINE node inside the target whose own policy allows
 * deploys; each node answers DEPLOY_RESULT with what it offers now, which
 * the registry indexes at once. A node that was away gets what it lacks (and
 * loses what it should no longer hold) when it next comes online.
 */

import type { KeyObject } from 'node:crypto';
import { randomUUID } from 'node:crypto';
import { type ErrorBody, FieldmeshError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type {
  FunctionDeployBody,
  FunctionDeployResult,
  FunctionNodeOutcome,
  FunctionUndeployResult,
  FunctionView,
} from '../protocol/api.js';
import { encodeFrame } from '../protocol/codec.js';
import type { DeployResultFrame } from '../protocol/frames.js';
import type { JsonValue } from '../protocol/json.js';
import { bundleHash, signDeploy, signUndeploy } from '../protocol/signing.js';
import type { Target } from '../protocol/target.js';
import { type FunctionNodeRecord, FunctionNodeStatus, type FunctionRecord, NodeStatus, type Store } from '../store/types.js';
import type { NodeEntry, Registry } from './registry.js';
import { type Scheduler, targetMatches } from './scheduler.js';

export interface FunctionServiceOptions {
  /** The key TASK frames are signed with; nodes hold its public half from pairing. */
  signingKey: KeyObject;
  /** Largest frame a node accepts; a bundle must fit in one DEPLOY. */
  maxFrameBytes: number;
  /** How long a deploy waits for each node's DEPLOY_RESULT. @default 15000 */
  resultTimeoutMs?: number;
  logger: Logger;
}

type Outcome = { ok: true } | { ok: false; error: ErrorBody };

interface Pending {
  nodeId: string;
  resolve: (outcome: Outcome) => void;
  timer: NodeJS.Timeout;
}

const LOCAL: Target = { kind: 'local' };
/** Room for a DEPLOY frame's other fields around the bundle. */
const FRAME_OVERHEAD = 64 * 1024;
/** Time for a function call's worker to start and its result to travel, on top of its own limit. */
const CALL_MARGIN_MS = 5000;

export class FunctionService {
  readonly #store: Store;
  readonly #registry: Registry;
  readonly #scheduler: Scheduler;
  readonly #opts: FunctionServiceOptions;
  readonly #pending = new Map<string, Pending>();
  /** Stored functions' time limits by name, so a function call is told apart from a tool call without a query. */
  readonly #timeouts = new Map<string, number>();

  constructor(store: Store, registry: Registry, scheduler: Scheduler, opts: FunctionServiceOptions) {
    this.#store = store;
    this.#registry = registry;
    this.#scheduler = scheduler;
    this.#opts = opts;
    registry.on('disconnected', (entry) => {
      for (const [id, p] of this.#pending) {
        if (p.nodeId !== entry.record.node_id) continue;
        this.#settle(id, {
          ok: false,
          error: { code: 'FM_ERR_CONNECTION_LOST', message: `Connection to node "${p.nodeId}" was lost`, retryable: true },
        });
      }
    });
  }

  async load(): Promise<void> {
    for (const fn of await this.#store.listFunctions()) this.#timeouts.set(fn.name, fn.timeout_seconds);
  }

  /** True when `name` is a function deployed from this gateway. */
  isFunction(name: string): boolean {
    return this.#timeouts.has(name);
  }

  /**
   * A call to a function that sets no `timeout_ms` gets the function's own
   * limit plus room for starting its worker and the round trip, so the node's
   * limit (FM_ERR_TOOL_TIMEOUT from the node) is the one that strikes.
   */
  defaultTimeoutMs(name: string): number | undefined {
    const seconds = this.#timeouts.get(name);
    return seconds === undefined ? undefined : Math.ceil(seconds * 1000) + CALL_MARGIN_MS;
  }

  /** Stores the function and deploys it to every ONLINE node in its target that allows deploys. */
  async deploy(body: FunctionDeployBody): Promise<FunctionDeployResult> {
    const bytes = Buffer.byteLength(body.bundle);
    if (bytes + FRAME_OVERHEAD > this.#opts.maxFrameBytes) {
      throw new FieldmeshError(
        'FM_ERR_PAYLOAD_TOO_LARGE',
        `Bundle of ${bytes} bytes does not fit in one DEPLOY frame (limit ${this.#opts.maxFrameBytes} bytes, gateway.maxFrameBytes)`,
      );
    }
    const target = body.target ?? LOCAL;
    if (target.kind === 'explicit' && !this.#registry.get(target.node_id)) {
      throw new FieldmeshError('FM_ERR_NODE_NOT_FOUND', `Node "${target.node_id}" is not known to this gateway`, {
        details: { node_id: target.node_id },
      });
    }
    const now = new Date().toISOString();
    const existing = await this.#store.getFunction(body.name);
    const fn: FunctionRecord = {
      name: body.name,
      version: (existing?.version ?? 0) + 1,
      bundle: body.bundle,
      bundle_sha256: bundleHash(body.bundle),
      memory_mb: body.memory_mb ?? 128,
      timeout_seconds: body.timeout_seconds ?? 30,
      env: body.env ?? {},
      target: target as JsonValue,
      created_at: existing?.created_at ?? now,
      updated_at: now,
    };
    await this.#store.putFunction(fn);
    this.#timeouts.set(fn.name, fn.timeout_seconds);
    // A new deploy starts over: nodes it was undeployed from one by one are in its target again.
    for (const row of await this.#store.listFunctionNodes({ name: fn.name })) {
      if (row.status === FunctionNodeStatus.Undeployed) await this.#store.deleteFunctionNode(fn.name, row.node_id);
    }
    const matched = this.#scheduler.nodesInTarget(target);
    const outcomes = await Promise.all(
      matched.map(async (entry): Promise<FunctionNodeOutcome> => {
        const node_id = entry.record.node_id;
        if (!isOnline(entry)) return { node_id, status: 'offline' };
        if (entry.policy?.allow_deploy !== true) {
          return {
            node_id,
            status: 'skipped',
            error: { code: 'FM_ERR_DEPLOY_NOT_ALLOWED', message: `Node "${node_id}" does not allow deploys` },
          };
        }
        return this.#deployTo(entry, fn);
      }),
    );
    this.#opts.logger.info('function deployed', {
      name: fn.name,
      version: fn.version,
      matched: matched.length,
      deployed: outcomes.filter((o) => o.status === 'deployed').length,
    });
    return {
      ok: true,
      function: await this.#view(fn),
      matched: matched.length,
      deployed: outcomes.filter((o) => o.status === 'deployed').length,
      nodes: outcomes,
    };
  }

  /** Every function (those on one node, with `nodeId`), each with its nodes' outcomes. */
  async list(nodeId?: string): Promise<FunctionView[]> {
    const rows = await this.#store.listFunctionNodes(nodeId === undefined ? {} : { node_id: nodeId });
    const fns = await this.#store.listFunctions();
    const views = fns.map((fn) =>
      functionView(
        fn,
        rows.filter((r) => r.name === fn.name),
      ),
    );
    return nodeId === undefined ? views : views.filter((v) => v.nodes.length > 0);
  }

  /**
   * Undeploys a function everywhere (it is then forgotten), or from one node
   * only (it is not sent there again until the next deploy). A node offline
   * now removes it when it reconnects.
   */
  async undeploy(name: string, nodeId?: string): Promise<FunctionUndeployResult> {
    const fn = await this.#store.getFunction(name);
    if (!fn) throw new FieldmeshError('FM_ERR_FUNCTION_NOT_FOUND', `Function "${name}" is not deployed`, { details: { name } });
    let entries: NodeEntry[];
    if (nodeId !== undefined) {
      const entry = this.#registry.get(nodeId);
      if (!entry)
        throw new FieldmeshError('FM_ERR_NODE_NOT_FOUND', `Node "${nodeId}" is not known to this gateway`, {
          details: { node_id: nodeId },
        });
      await this.#putRow(name, nodeId, FunctionNodeStatus.Undeployed, null, null);
      entries = [entry];
    } else {
      const rows = await this.#store.listFunctionNodes({ name });
      const holders = new Set(rows.filter((r) => r.status !== FunctionNodeStatus.Undeployed).map((r) => r.node_id));
      await this.#store.deleteFunction(name);
      this.#timeouts.delete(name);
      entries = [...this.#registry.all()].filter((e) => e.functions.has(name) || holders.has(e.record.node_id));
    }
    const outcomes = await Promise.all(
      entries.map(async (entry): Promise<FunctionNodeOutcome> => {
        const node_id = entry.record.node_id;
        if (!isOnline(entry)) return { node_id, status: 'offline' };
        const outcome = await this.#send(entry, (deploy_id, issued_at) => {
          const fields = { deploy_id, node_id, name, issued_at };
          return encodeFrame('UNDEPLOY', { ...fields, gateway_signature: signUndeploy(this.#opts.signingKey, fields) });
        });
        return outcome.ok ? { node_id, status: 'undeployed' } : { node_id, status: 'failed', error: outcome.error };
      }),
    );
    this.#opts.logger.info('function undeployed', { name, node_id: nodeId, nodes: outcomes.length });
    return { ok: true, name, undeployed: outcomes.filter((o) => o.status === 'undeployed').length, nodes: outcomes };
  }

  /** A node's DEPLOY_RESULT: what it offers now goes to the registry, and the deploy waiting for it learns the outcome. */
  async onResult(entry: NodeEntry, frame: DeployResultFrame): Promise<void> {
    await this.#registry.updateOffer(entry, frame);
    this.#settle(
      frame.deploy_id,
      frame.ok ? { ok: true } : { ok: false, error: frame.error ?? { code: 'FM_ERR_INTERNAL', message: 'No reason given' } },
    );
  }

  /**
   * Brings a node that just came online up to date: deploys what its targets
   * give it and it lacks (or holds in another version), undeploys what it
   * holds and should not.
   */
  async reconcile(entry: NodeEntry): Promise<void> {
    const nodeId = entry.record.node_id;
    const fns = await this.#store.listFunctions();
    const rows = new Map((await this.#store.listFunctionNodes({ node_id: nodeId })).map((r) => [r.name, r]));
    const wanted = new Map<string, FunctionRecord>();
    if (entry.policy?.allow_deploy === true) {
      for (const fn of fns) {
        if (rows.get(fn.name)?.status === FunctionNodeStatus.Undeployed) continue;
        if (targetMatches(entry, fn.target as Target)) wanted.set(fn.name, fn);
      }
    }
    const work: Promise<unknown>[] = [];
    for (const fn of wanted.values()) {
      if (entry.functions.get(fn.name) === fn.bundle_sha256) {
        if (rows.get(fn.name)?.status !== FunctionNodeStatus.Deployed)
          work.push(this.#putRow(fn.name, nodeId, FunctionNodeStatus.Deployed, fn.bundle_sha256, null));
        continue;
      }
      work.push(this.#deployTo(entry, fn));
    }
    for (const name of entry.functions.keys()) {
      if (wanted.has(name)) continue;
      work.push(
        this.#send(entry, (deploy_id, issued_at) => {
          const fields = { deploy_id, node_id: nodeId, name, issued_at };
          return encodeFrame('UNDEPLOY', { ...fields, gateway_signature: signUndeploy(this.#opts.signingKey, fields) });
        }),
      );
    }
    if (work.length > 0) {
      this.#opts.logger.info("bringing a node's functions up to date", { node_id: nodeId, changes: work.length });
      await Promise.all(work);
    }
  }

  async #deployTo(entry: NodeEntry, fn: FunctionRecord): Promise<FunctionNodeOutcome> {
    const node_id = entry.record.node_id;
    const outcome = await this.#send(entry, (deploy_id, issued_at) => {
      const fields = {
        deploy_id,
        node_id,
        name: fn.name,
        bundle_sha256: fn.bundle_sha256,
        memory_mb: fn.memory_mb,
        timeout_seconds: fn.timeout_seconds,
        env: fn.env,
        issued_at,
      };
      return encodeFrame('DEPLOY', { ...fields, bundle: fn.bundle, gateway_signature: signDeploy(this.#opts.signingKey, fields) });
    });
    // The function may have been undeployed or replaced while the node answered; the newer decision stands.
    const current = await this.#store.getFunction(fn.name);
    if (current?.bundle_sha256 === fn.bundle_sha256) {
      if (outcome.ok) await this.#putRow(fn.name, node_id, FunctionNodeStatus.Deployed, fn.bundle_sha256, null);
      else await this.#putRow(fn.name, node_id, FunctionNodeStatus.Failed, null, outcome.error);
    }
    return outcome.ok ? { node_id, status: 'deployed' } : { node_id, status: 'failed', error: outcome.error };
  }

  /** Sends one signed frame and waits for the node's DEPLOY_RESULT (or the connection's loss, or the time limit). */
  #send(entry: NodeEntry, frame: (deployId: string, issuedAt: string) => string): Promise<Outcome> {
    const conn = entry.conn;
    const node_id = entry.record.node_id;
    if (!conn) return Promise.resolve({ ok: false, error: { code: 'FM_ERR_NODE_OFFLINE', message: `Node "${node_id}" is offline` } });
    const deployId = `dep_${randomUUID()}`;
    const timeoutMs = this.#opts.resultTimeoutMs ?? 15_000;
    return new Promise<Outcome>((resolve) => {
      const timer = setTimeout(
        () =>
          this.#settle(deployId, {
            ok: false,
            error: { code: 'FM_ERR_TOOL_TIMEOUT', message: `Node "${node_id}" did not answer within ${timeoutMs} ms`, retryable: true },
          }),
        timeoutMs,
      );
      this.#pending.set(deployId, { nodeId: node_id, resolve, timer });
      try {
        conn.send(frame(deployId, new Date().toISOString()));
      } catch (err) {
        this.#settle(deployId, { ok: false, error: { code: 'FM_ERR_CONNECTION_LOST', message: (err as Error).message, retryable: true } });
      }
    });
  }

  #settle(deployId: string, outcome: Outcome): void {
    const p = this.#pending.get(deployId);
    if (!p) return;
    this.#pending.delete(deployId);
    clearTimeout(p.timer);
    p.resolve(outcome);
  }

  #putRow(name: string, nodeId: string, status: FunctionNodeStatus, sha: string | null, error: ErrorBody | null): Promise<void> {
    return this.#store.putFunctionNode({ name, node_id: nodeId, status, bundle_sha256: sha, error, updated_at: new Date().toISOString() });
  }

  async #view(fn: FunctionRecord): Promise<FunctionView> {
    return functionView(fn, await this.#store.listFunctionNodes({ name: fn.name }));
  }
}

function isOnline(entry: NodeEntry): boolean {
  return entry.conn !== null && entry.record.status === NodeStatus.Online;
}

function functionView(fn: FunctionRecord, rows: FunctionNodeRecord[]): FunctionView {
  return {
    name: fn.name,
    version: fn.version,
    bundle_sha256: fn.bundle_sha256,
    bundle_bytes: Buffer.byteLength(fn.bundle),
    memory_mb: fn.memory_mb,
    timeout_seconds: fn.timeout_seconds,
    env_keys: Object.keys(fn.env).sort(),
    target: fn.target as Target,
    created_at: fn.created_at,
    updated_at: fn.updated_at,
    nodes: rows.map((r) => ({
      node_id: r.node_id,
      status: r.status,
      bundle_sha256: r.bundle_sha256,
      error: r.error,
      updated_at: r.updated_at,
    })),
  };
}
