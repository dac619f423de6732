// ToolRuntime: a pool of long-lived worker threads that runs tool calls with schema checks, deadlines, cancellation and crash isolation.
import { Worker } from 'node:worker_threads';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { type ErrorBody, FieldmeshError } from '../core/errors.js';
import { type Logger, silentLogger } from '../core/logger.js';
import { localState, replyTo, type StateCall, type StateHost, serveStateCall } from '../edge/state-port.js';
import { SlotPool } from './slots.js';
import { describeTool, type ToolDefinition, type ToolDescriptor } from './tools/types.js';
import {
  callTool,
  loadToolDefinitions,
  type ToolCallOutcome,
  WORKER_ROLE,
  type WorkerInit,
  type WorkerRequest,
  type WorkerResponse,
} from './worker.js';

export type RunOutcome = { ok: true; output: unknown } | { ok: false; error: ErrorBody };

export interface RunRequest {
  task_id: string;
  attempt: number;
  tool_name: string;
  args: unknown;
  timeout_ms: number;
}

export interface RunHandle {
  /** Always resolves, never rejects: failures are `{ ok: false, error }`. */
  promise: Promise<RunOutcome>;
  /** Stops the call (terminating its worker if it has started); the promise resolves FM_ERR_CANCELLED. */
  cancel(reason?: string): void;
}

export interface ToolRuntimeOptions {
  /** Paths of ESM modules exporting custom tools. */
  toolModules?: readonly string[];
  /** Number of worker threads, which is also how many calls run at once. */
  size: number;
  /**
   * The node's task slots, when tools share them with other work (deployed
   * functions): a call runs once it holds one. @default a pool of `size` slots
   */
  slots?: SlotPool;
  /** Old-generation heap limit per worker. @default 256 */
  memoryMb?: number;
  /** Passed to tools as `ctx.node_id`. @default '' */
  nodeId?: string;
  logger?: Logger;
  /** Serves tools' `ctx.state` calls; without it they fail with FM_ERR_INTERNAL. */
  state?: StateHost;
}

export type { StateHost };

interface CompiledTool {
  /** Set for a tool that runs on this thread (`inline: true`). */
  inline: ToolDefinition | undefined;
  descriptor: ToolDescriptor;
  validateArgs: ValidateFunction;
  validateOutput: ValidateFunction;
}

interface Job {
  id: number;
  req: RunRequest;
  tool: CompiledTool;
  resolve: (outcome: RunOutcome) => void;
  settled: boolean;
  slot: Slot | undefined;
  timer: NodeJS.Timeout | undefined;
  /** True while the job holds one of the pool's task slots. */
  holds: boolean;
  /** Withdraws the job's request for a task slot while it waits for one. */
  withdraw: (() => void) | undefined;
  /** An inline call's `ctx.signal`, aborted when the call is cancelled or times out. */
  abort: AbortController | undefined;
}

interface Slot {
  worker: Worker;
  job: Job | undefined;
  /** Set once we terminate the worker on purpose, so its exit is not reported as a crash. */
  retired: boolean;
  failure: (Error & { code?: string }) | undefined;
}

const WORKER_URL = new URL('./worker.js', import.meta.url);
/** setTimeout fires at once beyond a signed 32-bit delay. */
const MAX_TIMER_MS = 2 ** 31 - 1;

function schemaErrorText(ajv: Ajv, errors: ErrorObject[] | null | undefined, dataVar: string): string {
  return ajv.errorsText(errors, { dataVar });
}

function fail(code: string, message: string, retryable?: boolean): RunOutcome {
  return { ok: false, error: retryable === undefined ? { code, message } : { code, message, retryable } };
}

export class ToolRuntime {
  private readonly tools: Map<string, CompiledTool>;
  private readonly ajv: Ajv;
  private readonly size: number;
  private readonly memoryMb: number;
  private readonly init: WorkerInit;
  private readonly logger: Logger;
  private readonly state: StateHost | undefined;
  private readonly slots: Slot[] = [];
  private readonly pool: SlotPool;
  /** Jobs accepted and not yet finished, waiting for a task slot, queued for a worker or running. */
  private readonly jobs = new Set<Job>();
  /** Jobs holding a task slot and waiting for a worker. */
  private readonly queue: Job[] = [];
  private readonly exits = new Set<Promise<unknown>>();
  private active = 0;
  private nextId = 1;
  private closed = false;

  private constructor(tools: Map<string, CompiledTool>, ajv: Ajv, opts: ToolRuntimeOptions) {
    this.tools = tools;
    this.ajv = ajv;
    this.size = opts.size;
    this.memoryMb = opts.memoryMb ?? 256;
    this.logger = opts.logger ?? silentLogger;
    this.state = opts.state;
    this.pool = opts.slots ?? new SlotPool(opts.size);
    this.init = { role: WORKER_ROLE, nodeId: opts.nodeId ?? '', toolModules: [...(opts.toolModules ?? [])] };
  }

  /** Loads the tools in this thread too, for descriptors and schema checks; workers start on first use. */
  static async create(opts: ToolRuntimeOptions): Promise<ToolRuntime> {
    if (!Number.isInteger(opts.size) || opts.size < 1) {
      throw new FieldmeshError('FM_ERR_INVALID_OPTION', `runtime.size: ${String(opts.size)} must be a positive integer`);
    }
    const defs = await loadToolDefinitions(opts.toolModules ?? []);
    // addUsedSchema: false so two tools may reuse a schema `$id` without clashing in the shared instance.
    const ajv = new Ajv({ strict: false, allErrors: false, validateFormats: false, addUsedSchema: false, logger: false });
    const tools = new Map<string, CompiledTool>();
    for (const def of defs.values()) tools.set(def.name, compileTool(ajv, def));
    return new ToolRuntime(tools, ajv, opts);
  }

  descriptors(): ToolDescriptor[] {
    return [...this.tools.values()].map((t) => t.descriptor);
  }

  has(name: string): boolean {
    return this.tools.has(name);
  }

  /** Calls accepted and not yet finished, queued or running. */
  inFlight(): number {
    return this.active;
  }

  run(req: RunRequest): RunHandle {
    const tool = this.tools.get(req.tool_name);
    if (this.closed) return settledHandle(fail('FM_ERR_SHUTTING_DOWN', 'Tool runtime is shutting down', true));
    if (!tool) return settledHandle(fail('FM_ERR_UNKNOWN_TOOL', `Tool "${req.tool_name}" is not offered by this node`, false));
    if (!tool.validateArgs(req.args)) {
      const text = schemaErrorText(this.ajv, tool.validateArgs.errors, 'tool_args');
      return settledHandle(fail('FM_ERR_INVALID_ARGS', `Invalid arguments for tool "${req.tool_name}": ${text}`, false));
    }

    let resolveOutcome!: (outcome: RunOutcome) => void;
    const promise = new Promise<RunOutcome>((r) => {
      resolveOutcome = r;
    });
    const job: Job = {
      id: this.nextId++,
      req,
      tool,
      resolve: resolveOutcome,
      settled: false,
      slot: undefined,
      timer: undefined,
      holds: false,
      withdraw: undefined,
      abort: undefined,
    };
    this.active++;
    this.jobs.add(job);
    // The deadline covers waiting too: the gateway's clock for this attempt started when it sent the task.
    job.timer = setTimeout(() => this.expire(job), Math.min(Math.max(1, req.timeout_ms), MAX_TIMER_MS));
    job.withdraw = this.pool.request(() => {
      job.holds = true;
      if (tool.inline) {
        this.runInline(job, tool.inline);
        return;
      }
      this.queue.push(job);
      this.pump();
    });
    return {
      promise,
      cancel: (reason?: string) => {
        if (job.settled) return;
        if (job.slot) this.retire(job.slot, true);
        job.abort?.abort(new FieldmeshError('FM_ERR_CANCELLED', reason ?? 'Task was cancelled'));
        this.finish(job, fail('FM_ERR_CANCELLED', reason ? `Task was cancelled: ${reason}` : 'Task was cancelled', false));
      },
    };
  }

  /** Fails every call still queued or running with FM_ERR_SHUTTING_DOWN and terminates the workers. */
  async close(): Promise<void> {
    if (this.closed) {
      await Promise.allSettled([...this.exits]);
      return;
    }
    this.closed = true;
    const pending = [...this.jobs];
    for (const slot of [...this.slots]) this.retire(slot, false);
    for (const job of pending) this.finish(job, fail('FM_ERR_SHUTTING_DOWN', 'Tool runtime is shutting down', true));
    await Promise.allSettled([...this.exits]);
  }

  private pump(): void {
    while (this.queue.length > 0 && !this.closed) {
      let slot = this.slots.find((s) => !s.job && !s.retired);
      if (!slot) {
        if (this.slots.length >= this.size) return;
        slot = this.spawn();
      }
      const job = this.queue.shift()!;
      this.dispatch(slot, job);
    }
  }

  private dispatch(slot: Slot, job: Job): void {
    slot.job = job;
    job.slot = slot;
    const msg: WorkerRequest = {
      type: 'run',
      id: job.id,
      tool_name: job.req.tool_name,
      args: job.req.args,
      task_id: job.req.task_id,
      attempt: job.req.attempt,
    };
    try {
      slot.worker.postMessage(msg);
    } catch (err) {
      // Arguments that survived schema validation can still be uncloneable (e.g. functions from an in-process caller).
      slot.job = undefined;
      job.slot = undefined;
      this.finish(
        job,
        fail(
          'FM_ERR_INVALID_ARGS',
          `Arguments for tool "${job.req.tool_name}" cannot be sent to a worker: ${(err as Error).message}`,
          false,
        ),
      );
    }
  }

  private spawn(): Slot {
    const worker = new Worker(WORKER_URL, {
      workerData: this.init,
      resourceLimits: { maxOldGenerationSizeMb: this.memoryMb },
    });
    const slot: Slot = { worker, job: undefined, retired: false, failure: undefined };
    this.slots.push(slot);
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    this.exits.add(exited);
    void exited.then(() => this.exits.delete(exited));
    worker.on('message', (res: WorkerResponse | StateCall) => {
      if ('type' in res) this.onStateCall(slot, res);
      else this.onMessage(slot, res);
    });
    worker.on('error', (err: Error & { code?: string }) => {
      slot.failure = err;
    });
    worker.on('exit', (code) => this.onExit(slot, code));
    return slot;
  }

  /** An `inline` tool's call, on this thread: the same checks on its output as a worker's reply gets. */
  private runInline(job: Job, def: ToolDefinition): void {
    const controller = new AbortController();
    job.abort = controller;
    const ctx = {
      node_id: this.init.nodeId,
      task_id: job.req.task_id,
      attempt: job.req.attempt,
      signal: controller.signal,
      state: localState(this.state, () => !job.settled),
    };
    void callTool(def, job.req.args, ctx).then((res) => {
      // An answer after a timeout or a cancel is stale.
      if (!job.settled) this.complete(job, res);
    });
  }

  private onMessage(slot: Slot, res: WorkerResponse): void {
    const job = slot.job;
    // A reply for a call that already timed out or was cancelled is stale.
    if (!job || job.id !== res.id || job.settled) return;
    slot.job = undefined;
    job.slot = undefined;
    this.complete(job, res);
  }

  /** A call's answer: an error as it came, an output only if it matches the tool's output schema. */
  private complete(job: Job, res: ToolCallOutcome): void {
    if (!res.ok) {
      this.finish(job, { ok: false, error: res.error });
      return;
    }
    if (!job.tool.validateOutput(res.output)) {
      const text = schemaErrorText(this.ajv, job.tool.validateOutput.errors, 'output');
      this.finish(job, fail('FM_ERR_INVALID_OUTPUT', `Tool "${job.req.tool_name}" returned invalid output: ${text}`, false));
      return;
    }
    this.finish(job, { ok: true, output: res.output });
  }

  /** A tool's `ctx.state` call; only the call its worker is running now may use state. */
  private onStateCall(slot: Slot, msg: StateCall): void {
    const job = slot.job;
    serveStateCall(this.state, msg, job !== undefined && job.id === msg.id && !job.settled, replyTo(slot.worker));
  }

  private onExit(slot: Slot, code: number): void {
    this.removeSlot(slot);
    if (slot.retired) return;
    slot.retired = true;
    const job = slot.job;
    slot.job = undefined;
    if (!job || job.settled) {
      if (!this.closed) this.logger.warn('tool worker exited while idle', { exit_code: code, error: slot.failure?.message });
      return;
    }
    job.slot = undefined;
    const name = job.req.tool_name;
    if (slot.failure?.code === 'ERR_WORKER_OUT_OF_MEMORY') {
      this.logger.warn('tool worker ran out of memory', { tool: name, task_id: job.req.task_id, memory_mb: this.memoryMb });
      this.finish(job, fail('FM_ERR_EXECUTION', `Tool "${name}" ran out of memory (worker heap limit ${this.memoryMb} MB)`, false));
    } else {
      const why = slot.failure ? `: ${slot.failure.message}` : '';
      this.logger.warn('tool worker crashed', { tool: name, task_id: job.req.task_id, exit_code: code, error: slot.failure?.message });
      this.finish(job, fail('FM_ERR_WORKER_CRASHED', `Worker thread exited with code ${code} while running tool "${name}"${why}`, true));
    }
    this.replace();
  }

  private expire(job: Job): void {
    if (job.settled) return;
    if (job.slot) this.retire(job.slot, true);
    job.abort?.abort(new FieldmeshError('FM_ERR_TOOL_TIMEOUT', `Tool "${job.req.tool_name}" exceeded its time limit`));
    this.finish(job, fail('FM_ERR_TOOL_TIMEOUT', `Tool "${job.req.tool_name}" exceeded its ${job.req.timeout_ms} ms time limit`, true));
  }

  /** Terminates a worker on purpose; `replace` starts a fresh one so the pool stays warm. */
  private retire(slot: Slot, replace: boolean): void {
    if (slot.retired) return;
    slot.retired = true;
    const job = slot.job;
    if (job) {
      const abort: WorkerRequest = { type: 'abort', id: job.id, reason: 'terminated' };
      // Best effort: lets a tool's signal listeners run if the thread gets a chance before termination.
      try {
        slot.worker.postMessage(abort);
      } catch {
        // The worker may already be gone.
      }
      job.slot = undefined;
    }
    slot.job = undefined;
    this.removeSlot(slot);
    void slot.worker.terminate().catch(() => undefined);
    if (replace) this.replace();
  }

  private replace(): void {
    if (this.closed) return;
    if (this.queue.length > 0) this.pump();
    else if (this.slots.length < this.size) this.spawn();
  }

  private removeSlot(slot: Slot): void {
    const i = this.slots.indexOf(slot);
    if (i >= 0) this.slots.splice(i, 1);
  }

  private finish(job: Job, outcome: RunOutcome): void {
    if (job.settled) return;
    job.settled = true;
    if (job.timer) clearTimeout(job.timer);
    const q = this.queue.indexOf(job);
    if (q >= 0) this.queue.splice(q, 1);
    if (job.slot) {
      job.slot.job = undefined;
      job.slot = undefined;
    }
    this.active--;
    this.jobs.delete(job);
    job.withdraw?.();
    if (job.holds) {
      job.holds = false;
      // The freed slot may start the next tool call here (through pump) or a deployed function elsewhere.
      this.pool.release();
    }
    job.resolve(outcome);
    this.pump();
  }
}

function settledHandle(outcome: RunOutcome): RunHandle {
  return { promise: Promise.resolve(outcome), cancel: () => undefined };
}

function compileTool(ajv: Ajv, def: ToolDefinition): CompiledTool {
  const compile = (key: 'input_schema' | 'output_schema'): ValidateFunction => {
    try {
      return ajv.compile(def[key]);
    } catch (err) {
      throw new FieldmeshError('FM_ERR_INVALID_OPTION', `Tool "${def.name}" has an invalid ${key}: ${(err as Error).message}`, {
        details: { tool: def.name },
        cause: err,
      });
    }
  };
  return {
    inline: def.inline === true ? def : undefined,
    descriptor: describeTool(def),
    validateArgs: compile('input_schema'),
    validateOutput: compile('output_schema'),
  };
}
