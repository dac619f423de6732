/**
 * Deployed functions on a node (issue 7, items 1–2): DEPLOY bundles whose
 * gateway signature and hash verify are kept in `<data dir>/functions`, served
 * as tools of the same name, and reloaded (and verified again) at start. Each
 * call runs in a worker thread through the edge runtime, with the function's
 * heap limit, its time limit and only its own environment, and reads and
 * writes the node's state documents through `ctx.state`. Functions take the
 * same task slots as tools, so the node's max concurrency bounds both
 * together. A worker left healthy by a call is kept for the next call to the
 * same version of the same function; the node keeps at most as many idle
 * workers as it has slots, each for at most a minute.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type ErrorBody, FieldmeshError, toErrorBody } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { isEdgeExecutionError } from '../edge/errors.js';
import { EdgeFunction } from '../edge/function.js';
import { EdgeNode } from '../edge/node.js';
import { EdgeRuntime } from '../edge/runtime.js';
import type { StateHost } from '../edge/state-port.js';
import type { DeployedFunction, DeployFrame } from '../protocol/frames.js';
import { bundleHash, type SignedDeployFields, verifyDeploy } from '../protocol/signing.js';
import type { RunHandle, RunOutcome, RunRequest } from './runtime.js';
import type { SlotPool } from './slots.js';
import type { ToolDescriptor } from './tools/types.js';

export const FUNCTIONS_DIR = 'functions';

/** What the node keeps of a DEPLOY besides the bundle: enough to verify it again at every start. */
interface Manifest extends SignedDeployFields {
  gateway_signature: string;
  deployed_at: string;
}

export interface FunctionHostOptions {
  dataDir: string;
  nodeId: string;
  /** The gateway's task-signing key from pairing; every bundle must verify with it. */
  gatewayKeyPem: string;
  /** The node's task slots, shared with its tools: a call runs once it holds one (the wait counts against its deadline). */
  slots: SlotPool;
  /** Serves functions' `ctx.state`; without it their state calls fail with FM_ERR_INTERNAL. */
  state?: StateHost;
  /** False when the node's policy refuses deploys: stored functions are then neither loaded nor served. */
  enabled: boolean;
  logger: Logger;
}

function fail(code: string, message: string, retryable = false, details?: Record<string, unknown>): RunOutcome {
  const error: ErrorBody = { code, message, retryable };
  if (details) error.details = details;
  return { ok: false, error };
}

/** A function's failure as the wire carries it: the edge codes pass through, what it threw is kept as `details.cause`. */
function failureOf(err: unknown): RunOutcome {
  if (isEdgeExecutionError(err)) {
    const retryable = err.code === 'FM_ERR_TOOL_TIMEOUT' || err.code === 'FM_ERR_WORKER_CRASHED';
    if (err.code === 'FM_ERR_EXECUTION' && err.cause !== undefined) {
      const c = err.cause as { name?: unknown; message?: unknown; code?: unknown } | null;
      const cause: Record<string, unknown> =
        typeof c === 'object' && c !== null && typeof c.message === 'string'
          ? { name: typeof c.name === 'string' ? c.name : 'Error', message: c.message }
          : { message: String(err.cause) };
      // A code travels with it, e.g. that of a refused ctx.state call the function did not catch.
      if (typeof c === 'object' && c !== null && (typeof c.code === 'string' || typeof c.code === 'number')) cause.code = c.code;
      return fail(err.code, err.message, false, { cause });
    }
    return fail(err.code, err.message, retryable);
  }
  return { ok: false, error: toErrorBody(err) };
}

export class FunctionHost {
  readonly #dir: string;
  readonly #opts: FunctionHostOptions;
  readonly #manifests = new Map<string, Manifest>();
  /** Names undeployed since start: a late call for one is FM_ERR_FUNCTION_NOT_FOUND rather than an unknown tool. */
  readonly #removed = new Set<string>();
  readonly #runtime: EdgeRuntime;
  readonly #calls = new Set<AbortController>();
  #active = 0;
  #closed = false;

  private constructor(opts: FunctionHostOptions) {
    this.#opts = opts;
    this.#dir = join(opts.dataDir, FUNCTIONS_DIR);
    this.#runtime = new EdgeRuntime(new EdgeNode({ id: opts.nodeId, name: opts.nodeId }), {
      state: opts.state,
      warmWorkers: opts.slots.size,
    });
  }

  /** Loads the functions stored in the data dir whose signature still verifies. */
  static open(opts: FunctionHostOptions): FunctionHost {
    const host = new FunctionHost(opts);
    mkdirSync(host.#dir, { recursive: true, mode: 0o700 });
    const stored = readdirSync(host.#dir).filter((f) => f.endsWith('.json'));
    if (!opts.enabled) {
      if (stored.length > 0)
        opts.logger.warn('deployed functions are kept but not served: this node does not allow deploys', { count: stored.length });
      return host;
    }
    for (const file of stored) {
      try {
        const manifest = JSON.parse(readFileSync(join(host.#dir, file), 'utf8')) as Manifest;
        const bundle = readFileSync(host.#bundlePath(manifest.name), 'utf8');
        host.#check(manifest, bundle, manifest.gateway_signature);
        host.#install(manifest);
      } catch (err) {
        opts.logger.error('a stored function was not loaded', { file, error: (err as Error).message });
      }
    }
    if (host.#manifests.size > 0) opts.logger.info('deployed functions loaded', { functions: [...host.#manifests.keys()] });
    return host;
  }

  has(name: string): boolean {
    return this.#manifests.has(name);
  }

  /** True for a function this node served earlier in its life and no longer does. */
  wasRemoved(name: string): boolean {
    return this.#removed.has(name) && !this.#manifests.has(name);
  }

  list(): DeployedFunction[] {
    return [...this.#manifests.values()].map((m) => ({ name: m.name, bundle_sha256: m.bundle_sha256 }));
  }

  /** One tool per function; arguments and output are any JSON (the function checks its own). */
  descriptors(): ToolDescriptor[] {
    return [...this.#manifests.values()].map((m) => ({
      name: m.name,
      description: `Deployed function (${m.memory_mb} MB, ${m.timeout_seconds} s)`,
      input_schema: {},
      output_schema: {},
    }));
  }

  inFlight(): number {
    return this.#active;
  }

  /**
   * Verifies a DEPLOY (signature with the pairing key, bundle hash, node id),
   * stores it durably and serves it; throws FM_ERR_DEPLOY_NOT_ALLOWED or
   * FM_ERR_BAD_SIGNATURE without touching what the node holds.
   */
  deploy(frame: DeployFrame): void {
    if (!this.#opts.enabled) {
      throw new FieldmeshError(
        'FM_ERR_DEPLOY_NOT_ALLOWED',
        `Node "${this.#opts.nodeId}" does not allow deploys (node.policy.allow_deploy)`,
      );
    }
    const manifest: Manifest = {
      deploy_id: frame.deploy_id,
      node_id: frame.node_id,
      name: frame.name,
      bundle_sha256: frame.bundle_sha256,
      memory_mb: frame.memory_mb,
      timeout_seconds: frame.timeout_seconds,
      env: frame.env,
      issued_at: frame.issued_at,
      gateway_signature: frame.gateway_signature,
      deployed_at: new Date().toISOString(),
    };
    this.#check(manifest, frame.bundle, frame.gateway_signature);
    // Bundle first, manifest last, each by rename: a crash leaves the old function or the new one, never half of one.
    writeAtomic(this.#bundlePath(frame.name), frame.bundle);
    writeAtomic(this.#manifestPath(frame.name), JSON.stringify(manifest));
    this.#install(manifest);
    this.#removed.delete(frame.name);
  }

  /** Stops serving and deletes a function; false when the node did not hold it. Calls already running finish. */
  undeploy(name: string): boolean {
    const held = this.#manifests.delete(name);
    this.#runtime.undeploy(name);
    rmSync(this.#manifestPath(name), { force: true });
    rmSync(this.#bundlePath(name), { force: true });
    this.#removed.add(name);
    return held;
  }

  /** Runs one call; the deadline is the task's `timeout_ms`, on top of the function's own `timeout_seconds`. */
  run(req: RunRequest): RunHandle {
    const name = req.tool_name;
    if (this.#closed) return settled(fail('FM_ERR_SHUTTING_DOWN', 'Node is shutting down', true));
    if (!this.#manifests.has(name)) {
      return settled(fail('FM_ERR_FUNCTION_NOT_FOUND', `Function "${name}" is not deployed on node "${this.#opts.nodeId}"`));
    }
    const controller = new AbortController();
    this.#calls.add(controller);
    this.#active++;
    const deadline = setTimeout(
      () =>
        controller.abort(
          new FieldmeshError('FM_ERR_TOOL_TIMEOUT', `Function "${name}" exceeded the task's ${req.timeout_ms} ms time limit`),
        ),
      Math.min(Math.max(1, req.timeout_ms), 2 ** 31 - 1),
    );
    const promise = (async (): Promise<RunOutcome> => {
      let started = false;
      try {
        await this.#opts.slots.acquire(controller.signal);
        started = true;
        const output = await this.#runtime.invoke(name, req.args, { signal: controller.signal });
        return jsonOutput(name, output);
      } catch (err) {
        return failureOf(err);
      } finally {
        clearTimeout(deadline);
        this.#calls.delete(controller);
        this.#active--;
        if (started) this.#opts.slots.release();
      }
    })();
    return {
      promise,
      cancel: (reason?: string) =>
        controller.abort(new FieldmeshError('FM_ERR_CANCELLED', reason ? `Task was cancelled: ${reason}` : 'Task was cancelled')),
    };
  }

  /** Stops every call (FM_ERR_SHUTTING_DOWN), ends the idle workers and refuses new calls. */
  close(): void {
    this.#closed = true;
    this.#runtime.close();
    for (const c of this.#calls) c.abort(new FieldmeshError('FM_ERR_SHUTTING_DOWN', 'Node is shutting down', { retryable: true }));
  }

  #check(manifest: SignedDeployFields, bundle: string, signature: string): void {
    const why =
      manifest.node_id !== this.#opts.nodeId
        ? `is for node "${manifest.node_id}", not "${this.#opts.nodeId}"`
        : bundleHash(bundle) !== manifest.bundle_sha256
          ? 'bundle does not match its bundle_sha256'
          : !verifyDeploy(this.#opts.gatewayKeyPem, manifest, signature)
            ? 'gateway_signature does not verify with the gateway key this node paired with'
            : undefined;
    if (why) {
      throw new FieldmeshError('FM_ERR_BAD_SIGNATURE', `Function "${manifest.name}" refused: ${why}`, {
        details: { name: manifest.name, deploy_id: manifest.deploy_id },
      });
    }
  }

  #install(manifest: Manifest): void {
    this.#manifests.set(manifest.name, manifest);
    this.#runtime.deploy(
      new EdgeFunction({
        id: manifest.name,
        name: manifest.name,
        handler: { module: this.#bundlePath(manifest.name) },
        memoryMb: manifest.memory_mb,
        timeoutSeconds: manifest.timeout_seconds,
        environment: manifest.env,
      }),
    );
  }

  #bundlePath(name: string): string {
    return join(this.#dir, `${name}.mjs`);
  }

  #manifestPath(name: string): string {
    return join(this.#dir, `${name}.json`);
  }
}

function writeAtomic(file: string, text: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode: 0o600 });
  renameSync(tmp, file);
}

function settled(outcome: RunOutcome): RunHandle {
  return { promise: Promise.resolve(outcome), cancel: () => undefined };
}

/** The wire carries JSON, so the result is what JSON keeps of the output. */
function jsonOutput(name: string, output: unknown): RunOutcome {
  try {
    const json = JSON.stringify(output);
    return { ok: true, output: json === undefined ? null : JSON.parse(json) };
  } catch (err) {
    return fail('FM_ERR_INVALID_OUTPUT', `Function "${name}" returned a value that is not JSON: ${(err as Error).message}`);
  }
}
