// EdgeRuntime: deploys functions on one edge node and invokes them within their time and memory limits (design doc 002, section 2.4; issue 7, items 2 and 5).
import { availableParallelism } from 'node:os';
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
 * A string runs the same in both. It loads the handler module once, then runs
 * one call at a time as `{ type: 'call', id, args }` messages arrive, posting
 * back the result or what was thrown with the call's id and how full its heap
 * is. Before each call `process.env` is put back to the function's own
 * environment. Its `ctx.state` is the client the tool workers use, embedded as
 * source. While a call runs, the port stays referenced only while a state call
 * awaits its reply, so a handler pending on nothing else still ends its
 * thread; between calls it stays referenced, so the thread waits for the next.
 */
const WORKER_SOURCE = `'use strict';
const { parentPort, workerData } = require('node:worker_threads');
const { getHeapStatistics } = require('node:v8');
const stateClient = ${String(stateClient)};
const { specifier, functionId, nodeId } = workerData;
const baseEnv = { ...process.env };
// Timers a handler starts and leaves running (still referenced) end with its call: a warm worker's next call never
// meets them. Module-level timers are not the call's (the module has loaded before the handler runs), nor are
// unreferenced ones, which libraries keep for their own housekeeping (fetch's timeouts, for one) and refresh later.
const callTimers = new Map();
let tracking = false;
const track = (make, clear, repeats) =>
  function (callback, ...rest) {
    if (!tracking || typeof callback !== 'function') return make(callback, ...rest);
    let handle;
    const fire = repeats ? callback : function (...a) { callTimers.delete(handle); return callback.apply(this, a); };
    handle = make(fire, ...rest);
    callTimers.set(handle, clear);
    return handle;
  };
const untrack = (clear) =>
  function (handle) {
    callTimers.delete(handle);
    return clear(handle);
  };
globalThis.setTimeout = track(setTimeout, clearTimeout, false);
globalThis.setInterval = track(setInterval, clearInterval, true);
globalThis.setImmediate = track(setImmediate, clearImmediate, false);
globalThis.clearTimeout = untrack(clearTimeout);
globalThis.clearInterval = untrack(clearInterval);
globalThis.clearImmediate = untrack(clearImmediate);
function clearCallTimers() {
  for (const [handle, clear] of callTimers) if (typeof handle.hasRef !== 'function' || handle.hasRef()) clear(handle);
  callTimers.clear();
}
let running = false;
let waiting = 0;
const holdPort = () => (running && waiting === 0 ? parentPort.unref() : parentPort.ref());
const client = stateClient(
  (call) => parentPort.postMessage(call),
  (error) => Object.assign(new Error(error.message), { name: 'FieldmeshError', code: error.code }),
  (n) => {
    waiting = n;
    holdPort();
  },
);
const loading = import(specifier).then((mod) => {
  if (typeof mod.default !== 'function') throw new TypeError('the module has no default export function');
  return mod.default;
});
loading.catch(() => undefined);
function describe(thrown) {
  if (thrown instanceof Error) {
    const error = { name: thrown.name, message: thrown.message, stack: thrown.stack };
    if (typeof thrown.code === 'string' || typeof thrown.code === 'number') error.code = thrown.code;
    return { error };
  }
  return { value: thrown };
}
function heap() {
  const h = getHeapStatistics();
  return h.used_heap_size / h.heap_size_limit;
}
function send(reply) {
  try {
    parentPort.postMessage({ ...reply, heap: heap() });
  } catch (err) {
    // The result or the thrown value could not be cloned; say so instead of going silent.
    const { id } = reply;
    if (reply.ok) parentPort.postMessage({ id, ok: false, stage: 'result', thrown: describe(err), heap: heap() });
    else parentPort.postMessage({ id, ok: false, stage: reply.stage, thrown: { value: String(reply.thrown.value) }, heap: heap() });
  }
}
function resetEnv() {
  for (const key of Object.keys(process.env)) if (!Object.hasOwn(baseEnv, key)) delete process.env[key];
  Object.assign(process.env, baseEnv);
}
async function run(id, args) {
  running = true;
  holdPort();
  let reply;
  try {
    const handler = await loading.catch((err) => {
      reply = { id, ok: false, stage: 'load', thrown: describe(err) };
    });
    if (!reply) {
      resetEnv();
      const env = Object.freeze({ ...process.env });
      const state = client.stateFor(id);
      tracking = true;
      const output = await handler(args, { functionId, nodeId, env, signal: new AbortController().signal, state });
      reply = { id, ok: true, output };
    }
  } catch (err) {
    reply = { id, ok: false, stage: 'run', thrown: describe(err) };
  }
  running = false;
  tracking = false;
  clearCallTimers();
  holdPort();
  send(reply);
}
parentPort.on('message', (msg) => {
  if (msg.type === 'state_reply') client.receive(msg);
  else if (msg.type === 'call') void run(msg.id, msg.args);
});
`;

interface WorkerData {
  specifier: string;
  functionId: string;
  nodeId: string;
}

type Thrown = { error: { name: string; message: string; stack?: string; code?: string | number } } | { value: unknown };
/** A call's answer; `heap` is how full the worker's heap was after it (used over limit). */
type WorkerReply = { id: number; heap: number } & (
  | { ok: true; output: unknown }
  | { ok: false; stage: 'load' | 'run' | 'result'; thrown: Thrown }
);

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
  /** How many idle worker threads are kept for later calls, over all functions together (default: the machine's parallelism; 0 keeps none). */
  warmWorkers?: number;
  /** How long an idle worker is kept before it is ended (default 60 s). */
  idleWorkerMs?: number;
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
 * A worker handler runs in a worker thread that has loaded that version of
 * the function, with its heap limit and only its environment, one call at a
 * time. After a call that left it healthy the thread is kept idle (unref'd,
 * so it never keeps the process alive) and the next call to the same version
 * reuses it, so module-level state may persist between calls. A thread that
 * hit its time limit, was stopped, ran out of memory or crashed is ended and
 * never reused; so are a version's idle threads once it is redeployed or
 * undeployed, a thread idle for `idleWorkerMs`, and the oldest idle threads
 * beyond `warmWorkers`. A thread never runs another function or version.
 */
export class EdgeRuntime {
  readonly node: EdgeNode;
  private readonly functions = new Map<string, EdgeFunction>();
  private readonly metrics: EdgeMetrics | undefined;
  private readonly state: StateHost | undefined;
  /** Idle workers, oldest first. */
  private readonly idle: FunctionWorker[] = [];
  private readonly warmWorkers: number;
  private readonly idleWorkerMs: number;
  private closed = false;

  constructor(node: EdgeNode, options: EdgeRuntimeOptions = {}) {
    this.node = node;
    this.metrics = options.metrics;
    this.state = options.state;
    this.warmWorkers = options.warmWorkers ?? availableParallelism();
    this.idleWorkerMs = options.idleWorkerMs ?? 60_000;
  }

  /** Deploys a function, replacing one with the same id (whose idle workers are ended). */
  deploy(fn: EdgeFunction): void {
    this.functions.set(fn.id, fn);
    this.endIdle((w) => w.fn.id === fn.id && w.fn !== fn);
  }

  /** Removes a function; false if it was not deployed. Calls already running finish; its idle workers are ended. */
  undeploy(functionId: string): boolean {
    this.endIdle((w) => w.fn.id === functionId);
    return this.functions.delete(functionId);
  }

  /** Ends the idle workers and keeps none from now on; later calls still run, each in a thread of its own. */
  close(): void {
    this.closed = true;
    this.endIdle(() => true);
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
          : await this.runInWorker(fn, handler, args, options.signal);
      this.metrics?.record({ functionId, nodeId, durationMs: performance.now() - started, success: true });
      return output;
    } catch (err) {
      const error = err instanceof EdgeExecutionError ? `${err.code}: ${err.message}` : String(err);
      this.metrics?.record({ functionId, nodeId, durationMs: performance.now() - started, success: false, error });
      throw err;
    }
  }

  private runInWorker(
    fn: EdgeFunction,
    handler: EdgeModuleHandler | EdgeSourceHandler,
    args: unknown,
    signal: AbortSignal | undefined,
  ): Promise<unknown> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    return runOnWorker(this.takeWorker(fn, handler), args, this.node.id, signal, (w) => this.keepWorker(w));
  }

  /** The most recently used idle worker of this very version, or a new one. */
  private takeWorker(fn: EdgeFunction, handler: EdgeModuleHandler | EdgeSourceHandler): FunctionWorker {
    for (let i = this.idle.length - 1; i >= 0; i--) {
      const w = this.idle[i] as FunctionWorker;
      if (w.fn !== fn || w.gone) continue;
      this.idle.splice(i, 1);
      clearTimeout(w.idleTimer);
      w.worker.ref();
      return w;
    }
    return new FunctionWorker(fn, handler, this.node.id, this.state, (w) => this.dropIdle(w));
  }

  private keepWorker(w: FunctionWorker): void {
    if (this.closed || w.gone || this.warmWorkers < 1 || this.functions.get(w.fn.id) !== w.fn) {
      w.terminate();
      return;
    }
    w.worker.unref();
    w.idleTimer = setTimeout(() => {
      this.dropIdle(w);
      w.terminate();
    }, this.idleWorkerMs);
    w.idleTimer.unref();
    this.idle.push(w);
    while (this.idle.length > this.warmWorkers) this.idle.shift()?.terminate();
  }

  private dropIdle(w: FunctionWorker): void {
    const i = this.idle.indexOf(w);
    if (i >= 0) this.idle.splice(i, 1);
  }

  private endIdle(which: (w: FunctionWorker) => boolean): void {
    for (const w of this.idle.filter(which)) {
      this.dropIdle(w);
      w.terminate();
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

/** What the running call hears from its worker. */
interface CallSink {
  id: number;
  answer(reply: WorkerReply): void;
  fail(err: Error & { code?: string }): void;
  exit(code: number): void;
}

/**
 * A worker thread that has loaded one version of one function (one
 * {@link EdgeFunction} object), with that function's heap limit and
 * environment, and runs its calls one at a time. It serves `ctx.state` to the
 * running call only: a state call tagged with another call's id is refused.
 */
class FunctionWorker {
  readonly fn: EdgeFunction;
  readonly worker: Worker;
  idleTimer: NodeJS.Timeout | undefined;
  #call: CallSink | undefined;
  #nextId = 1;
  #gone = false;

  /** `onGone` hears of a thread that failed or ended while no call ran on it. */
  constructor(
    fn: EdgeFunction,
    handler: EdgeModuleHandler | EdgeSourceHandler,
    nodeId: string,
    state: StateHost | undefined,
    onGone: (w: FunctionWorker) => void,
  ) {
    this.fn = fn;
    const data: WorkerData = { specifier: specifierOf(handler), functionId: fn.id, nodeId };
    this.worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: data,
      env: { ...fn.environment },
      resourceLimits: { maxOldGenerationSizeMb: fn.memoryMb },
    });
    const end = (tell: (call: CallSink) => void) => {
      this.#gone = true;
      if (this.#call) tell(this.#call);
      else onGone(this);
    };
    this.worker.on('message', (msg: WorkerReply | StateCall) => {
      if ('type' in msg) serveStateCall(state, msg, this.#call?.id === msg.id, replyTo(this.worker));
      else if (msg.id === this.#call?.id) this.#call.answer(msg);
    });
    this.worker.on('error', (err: Error & { code?: string }) => end((call) => call.fail(err)));
    this.worker.on('exit', (code) => end((call) => call.exit(code)));
  }

  /** True once the thread failed or ended: it is never used again. */
  get gone(): boolean {
    return this.#gone;
  }

  /** Sends a call; throws, running nothing, when `args` cannot be copied to the thread. */
  start(args: unknown, sink: Omit<CallSink, 'id'>): void {
    const id = this.#nextId++;
    this.#call = { id, ...sink };
    try {
      this.worker.postMessage({ type: 'call', id, args });
    } catch (err) {
      this.#call = undefined;
      throw err;
    }
  }

  /** The call has settled: nothing the thread says about it is heard any more. */
  finish(): void {
    this.#call = undefined;
  }

  terminate(): void {
    this.#gone = true;
    clearTimeout(this.idleTimer);
    void this.worker.terminate().catch(() => undefined);
  }
}

/** A worker kept after a call whose heap is fuller than this share of its limit is ended instead, so the next call starts with room. */
const MAX_KEPT_HEAP = 0.5;

/**
 * One call on `w`, within the function's time limit and `signal`. `keep` gets
 * the worker back after a call that left it healthy: it answered, its module
 * loaded and its heap is not near its limit (a throw inside the function
 * counts as healthy). A worker that hit the time limit, was stopped by
 * `signal`, ran out of memory, crashed or ended is terminated, never kept.
 */
function runOnWorker(
  w: FunctionWorker,
  args: unknown,
  nodeId: string,
  signal: AbortSignal | undefined,
  keep: (w: FunctionWorker) => void,
): Promise<unknown> {
  const fn = w.fn;
  return new Promise((resolve, reject) => {
    let settled = false;
    const settle = (reuse: boolean, finish: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      w.finish();
      finish();
      if (reuse) keep(w);
      else w.terminate();
    };
    const timer = setTimeout(() => settle(false, () => reject(timeoutError(fn, nodeId))), timerMs(fn));
    const onAbort = () => settle(false, () => reject(signal?.reason));
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      w.start(args, {
        answer: (reply) =>
          settle(reply.heap < MAX_KEPT_HEAP && (reply.ok || reply.stage !== 'load'), () => {
            if (reply.ok) {
              resolve(reply.output);
              return;
            }
            const what =
              reply.stage === 'load'
                ? 'could not be loaded'
                : reply.stage === 'result'
                  ? 'returned a value that cannot be copied'
                  : 'failed';
            reject(executionError(fn, nodeId, revive(reply.thrown), what));
          }),
        fail: (err) =>
          settle(false, () => {
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
          }),
        exit: (code) =>
          settle(false, () => {
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
          }),
      });
    } catch (err) {
      // The arguments are cloned when sent, so ones that hold functions or other uncloneable values fail here, and the worker stays healthy.
      settle(true, () =>
        reject(
          new EdgeExecutionError(
            EdgeErrorCode.INVALID_ARGS,
            `Arguments for function "${fn.id}" cannot be copied to its worker: ${err instanceof Error ? err.message : String(err)}`,
            { cause: err, functionId: fn.id, nodeId },
          ),
        ),
      );
    }
  });
}
