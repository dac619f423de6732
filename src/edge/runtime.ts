// EdgeRuntime: deploys functions on one edge node and invokes them within their time and memory limits (design doc 002, section 2.4; issue 7, items 2 and 5).
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { EdgeErrorCode, EdgeExecutionError } from './errors.js';
import type { EdgeContext, EdgeFunction, EdgeHandlerFunction, EdgeModuleHandler, EdgeSourceHandler } from './function.js';
import type { EdgeMetrics } from './metrics.js';
import type { EdgeNode } from './node.js';
import { localState, replyTo, type StateCall, type StateHost, serveStateCall, stateClient } from './state-port.js';

/**
 * The worker's code, started with `eval: true` rather than from a file next to
 * this module: under Vitest this module is a `.ts` file with no compiled `.js`
 * beside it, and from `dist/` a separate file would have to be kept in step.
 * A string runs the same in both. It loads the handler module, calls its
 * default export once and posts back the result or what was thrown. Its
 * `ctx.state` is the client the tool workers use, embedded as source; the port
 * stays referenced only while a state call awaits its reply, so a handler
 * pending on nothing else still ends its thread.
 */
const WORKER_SOURCE = `'use strict';
const { parentPort, workerData } = require('node:worker_threads');
const stateClient = ${String(stateClient)};
function contextState() {
  let listening = false;
  const client = stateClient(
    (call) => {
      if (!listening) {
        listening = true;
        parentPort.on('message', (reply) => client.receive(reply));
      }
      parentPort.postMessage(call);
    },
    (error) => Object.assign(new Error(error.message), { name: 'FieldmeshError', code: error.code }),
    (waiting) => (waiting > 0 ? parentPort.ref() : parentPort.unref()),
  );
  return client.stateFor(1);
}
function describe(thrown) {
  if (thrown instanceof Error) {
    const error = { name: thrown.name, message: thrown.message, stack: thrown.stack };
    if (typeof thrown.code === 'string' || typeof thrown.code === 'number') error.code = thrown.code;
    return { error };
  }
  return { value: thrown };
}
function send(reply) {
  try {
    parentPort.postMessage(reply);
  } catch (err) {
    // The result or the thrown value could not be cloned; say so instead of going silent.
    if (reply.ok) parentPort.postMessage({ ok: false, stage: 'result', thrown: describe(err) });
    else parentPort.postMessage({ ok: false, stage: reply.stage, thrown: { value: String(reply.thrown.value) } });
  }
}
(async () => {
  const { specifier, args, functionId, nodeId } = workerData;
  let handler;
  try {
    const mod = await import(specifier);
    handler = mod.default;
    if (typeof handler !== 'function') throw new TypeError('the module has no default export function');
  } catch (err) {
    send({ ok: false, stage: 'load', thrown: describe(err) });
    return;
  }
  try {
    const env = Object.freeze({ ...process.env });
    const state = contextState();
    const output = await handler(args, { functionId, nodeId, env, signal: new AbortController().signal, state });
    send({ ok: true, output });
  } catch (err) {
    send({ ok: false, stage: 'run', thrown: describe(err) });
  }
})();
`;

interface WorkerData {
  specifier: string;
  args: unknown;
  functionId: string;
  nodeId: string;
}

type Thrown = { error: { name: string; message: string; stack?: string; code?: string | number } } | { value: unknown };
type WorkerReply = { ok: true; output: unknown } | { ok: false; stage: 'load' | 'run' | 'result'; thrown: Thrown };

/** setTimeout fires at once beyond a signed 32-bit delay. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface EdgeInvokeOptions {
  /** Stops the call: its worker is terminated and the call rejects with the signal's reason. */
  signal?: AbortSignal;
}

export interface EdgeRuntimeOptions {
  /** Where every invocation of a deployed function is recorded. */
  metrics?: EdgeMetrics;
  /** Serves functions' `ctx.state`; without it their state calls fail with FM_ERR_INTERNAL. */
  state?: StateHost;
}

/**
 * The functions deployed on one edge node.
 *
 * Safe under concurrent use: JavaScript runs one callback at a time, so
 * `deploy`, `undeploy` and `listFunctions`, which never await, each run whole.
 * `invoke` is the only method that awaits, and it takes the deployed function
 * before its first await; a deploy or undeploy that lands while a call runs
 * affects later calls only, and the running call finishes with the version it
 * started with. Each call owns its worker, timer and abort signal, and settles
 * exactly once however its reply, error, exit and time limit race.
 *
 * A worker handler gets a fresh worker thread per call: a call that hit its
 * memory or time limit leaves nothing behind for the next one, and the limit
 * covers that call alone. The cost is a thread start per call, and as many
 * threads as calls in flight.
 */
export class EdgeRuntime {
  readonly node: EdgeNode;
  private readonly functions = new Map<string, EdgeFunction>();
  private readonly metrics: EdgeMetrics | undefined;
  private readonly state: StateHost | undefined;

  constructor(node: EdgeNode, options: EdgeRuntimeOptions = {}) {
    this.node = node;
    this.metrics = options.metrics;
    this.state = options.state;
  }

  /** Deploys a function, replacing one with the same id. */
  deploy(fn: EdgeFunction): void {
    this.functions.set(fn.id, fn);
  }

  /** Removes a function; false if it was not deployed. Calls already running finish. */
  undeploy(functionId: string): boolean {
    return this.functions.delete(functionId);
  }

  /** The deployed functions, in deployment order. */
  listFunctions(): EdgeFunction[] {
    return [...this.functions.values()];
  }

  /**
   * Calls a deployed function with `args` and resolves with what it returns.
   * Rejects with an {@link EdgeExecutionError}: FM_ERR_FUNCTION_NOT_FOUND,
   * FM_ERR_TOOL_TIMEOUT, FM_ERR_OUT_OF_MEMORY (worker handlers only),
   * FM_ERR_EXECUTION with what the function threw as `cause` (also when a
   * worker handler awaits something that can never settle, so its thread runs
   * out of work), FM_ERR_INVALID_ARGS when `args` cannot be copied to a worker,
   * or FM_ERR_WORKER_CRASHED when a worker exits with an error code without
   * answering. Every call to a deployed function is recorded in the runtime's
   * metrics, failures included; a call to an unknown one is not, as nothing ran.
   *
   * A `{ module }` or `{ source }` handler runs in its own worker thread under
   * both limits. A plain-function handler runs here, in the caller's thread:
   * only its time limit holds, by racing it against a timer (its `ctx.signal`
   * is aborted then), its memory is not limited, and a handler that never
   * yields cannot be stopped (see {@link EdgeFunction}). `options.signal`
   * stops a call early (cancellation, a caller's own deadline) the same way.
   */
  async invoke(functionId: string, args?: unknown, options: EdgeInvokeOptions = {}): Promise<unknown> {
    const fn = this.functions.get(functionId);
    const nodeId = this.node.id;
    if (!fn) {
      throw new EdgeExecutionError(EdgeErrorCode.FUNCTION_NOT_FOUND, `Function "${functionId}" is not deployed on node "${nodeId}"`, {
        functionId,
        nodeId,
      });
    }
    const started = performance.now();
    try {
      const handler = fn.handler;
      const output =
        typeof handler === 'function'
          ? await runInProcess(fn, handler, args, nodeId, options.signal, this.state)
          : await runInWorker(fn, handler, args, nodeId, options.signal, this.state);
      this.metrics?.record({ functionId, nodeId, durationMs: performance.now() - started, success: true });
      return output;
    } catch (err) {
      const error = err instanceof EdgeExecutionError ? `${err.code}: ${err.message}` : String(err);
      this.metrics?.record({ functionId, nodeId, durationMs: performance.now() - started, success: false, error });
      throw err;
    }
  }
}

function timerMs(fn: EdgeFunction): number {
  return Math.min(Math.ceil(fn.timeoutSeconds * 1000), MAX_TIMER_MS);
}

function timeoutError(fn: EdgeFunction, nodeId: string): EdgeExecutionError {
  return new EdgeExecutionError(EdgeErrorCode.TOOL_TIMEOUT, `Function "${fn.id}" exceeded its ${fn.timeoutSeconds} s time limit`, {
    functionId: fn.id,
    nodeId,
  });
}

function executionError(fn: EdgeFunction, nodeId: string, thrown: unknown, what = 'failed'): EdgeExecutionError {
  const message = thrown instanceof Error ? thrown.message : String(thrown);
  return new EdgeExecutionError(EdgeErrorCode.EXECUTION, `Function "${fn.id}" ${what}: ${message}`, {
    cause: thrown,
    functionId: fn.id,
    nodeId,
  });
}

/** A closure cannot leave this thread, so only the time limit can hold: the call races a timer. */
function runInProcess(
  fn: EdgeFunction,
  handler: EdgeHandlerFunction,
  args: unknown,
  nodeId: string,
  signal: AbortSignal | undefined,
  state: StateHost | undefined,
): Promise<unknown> {
  const controller = new AbortController();
  let settled = false;
  const ctx: EdgeContext = {
    functionId: fn.id,
    nodeId,
    env: fn.environment,
    signal: controller.signal,
    state: localState(state, () => !settled),
  };
  return new Promise((resolve, reject) => {
    const stop = (err: unknown) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      controller.abort(err);
      reject(err);
    };
    const onAbort = () => stop(signal?.reason);
    const timer = setTimeout(() => stop(timeoutError(fn, nodeId)), timerMs(fn));
    if (signal?.aborted) {
      onAbort();
      return;
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    let pending: Promise<unknown>;
    try {
      pending = Promise.resolve(handler(args, ctx));
    } catch (err) {
      pending = Promise.reject(err);
    }
    // Both branches stay attached after a time-out, so a late rejection is observed rather than reported as unhandled.
    pending.then(
      (output) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        resolve(output);
      },
      (err: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        reject(executionError(fn, nodeId, err));
      },
    );
  });
}

function specifierOf(handler: EdgeModuleHandler | EdgeSourceHandler): string {
  if ('module' in handler) {
    const m = handler.module;
    return m instanceof URL ? m.href : m.startsWith('file:') ? m : pathToFileURL(m).href;
  }
  return `data:text/javascript;base64,${Buffer.from(handler.source, 'utf8').toString('base64')}`;
}

function revive(thrown: Thrown): unknown {
  if ('value' in thrown) return thrown.value;
  const err = new Error(thrown.error.message);
  err.name = thrown.error.name;
  if (thrown.error.stack !== undefined) err.stack = thrown.error.stack;
  if (thrown.error.code !== undefined) (err as Error & { code?: string | number }).code = thrown.error.code;
  return err;
}

/** A fresh worker per call, with the function's heap limit and environment, terminated at its time limit. */
function runInWorker(
  fn: EdgeFunction,
  handler: EdgeModuleHandler | EdgeSourceHandler,
  args: unknown,
  nodeId: string,
  signal: AbortSignal | undefined,
  state: StateHost | undefined,
): Promise<unknown> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const data: WorkerData = { specifier: specifierOf(handler), args, functionId: fn.id, nodeId };
    let worker: Worker;
    try {
      worker = new Worker(WORKER_SOURCE, {
        eval: true,
        workerData: data,
        env: { ...fn.environment },
        resourceLimits: { maxOldGenerationSizeMb: fn.memoryMb },
      });
    } catch (err) {
      // workerData is cloned here, so arguments that hold functions or other uncloneable values fail at this point.
      reject(
        new EdgeExecutionError(
          EdgeErrorCode.INVALID_ARGS,
          `Arguments for function "${fn.id}" cannot be copied to its worker: ${err instanceof Error ? err.message : String(err)}`,
          { cause: err, functionId: fn.id, nodeId },
        ),
      );
      return;
    }
    let settled = false;
    const settle = (finish: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      finish();
      // Also after a reply: the handler may have left timers or sockets that would keep the thread alive.
      void worker.terminate().catch(() => undefined);
    };
    const timer = setTimeout(() => settle(() => reject(timeoutError(fn, nodeId))), timerMs(fn));
    const onAbort = () => settle(() => reject(signal?.reason));
    signal?.addEventListener('abort', onAbort, { once: true });
    worker.on('message', (reply: WorkerReply | StateCall) => {
      if ('type' in reply) {
        // Only the running call may use state: a call that arrives after it settled is refused.
        serveStateCall(state, reply, !settled, replyTo(worker));
        return;
      }
      settle(() => {
        if (reply.ok) {
          resolve(reply.output);
          return;
        }
        const what =
          reply.stage === 'load' ? 'could not be loaded' : reply.stage === 'result' ? 'returned a value that cannot be copied' : 'failed';
        reject(executionError(fn, nodeId, revive(reply.thrown), what));
      });
    });
    worker.on('error', (err: Error & { code?: string }) => {
      settle(() => {
        if (err.code === 'ERR_WORKER_OUT_OF_MEMORY') {
          reject(
            new EdgeExecutionError(EdgeErrorCode.OUT_OF_MEMORY, `Function "${fn.id}" ran out of memory (limit ${fn.memoryMb} MB)`, {
              cause: err,
              functionId: fn.id,
              nodeId,
            }),
          );
        } else {
          // An uncaught throw outside the awaited handler, e.g. from a timer it started.
          reject(executionError(fn, nodeId, err));
        }
      });
    });
    worker.on('exit', (code) => {
      settle(() => {
        if (code === 0) {
          // A thread ends by itself once nothing is left to run: the handler awaited something that can never settle.
          reject(
            new EdgeExecutionError(
              EdgeErrorCode.EXECUTION,
              `Function "${fn.id}" ended without a result: its thread ran out of work while the handler was still pending`,
              { functionId: fn.id, nodeId },
            ),
          );
          return;
        }
        reject(
          new EdgeExecutionError(EdgeErrorCode.WORKER_CRASHED, `Function "${fn.id}" exited with code ${code} before returning`, {
            functionId: fn.id,
            nodeId,
          }),
        );
      });
    });
  });
}
