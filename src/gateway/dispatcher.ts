/**
 * Dispatcher (the original DistributedCoordinator's task routing): persists a
 * task, sends it to the best candidate as a TASK frame, waits for its signed
 * TASK_RESULT, and fails over to the next candidate when an attempt is lost,
 * times out or fails with a retryable error. Attempt numbers fence late results.
 */
import { Ajv, type ValidateFunction } from 'ajv';
import { type ErrorBody, ErrorCodes, FieldmeshError, isErrorCode, toErrorBody } from '../core/errors.js';
import { newId } from '../core/ids.js';
import type { Logger } from '../core/logger.js';
import { encodeFrame } from '../protocol/codec.js';
import type { ErrorFrame, TaskAckFrame, TaskResultFrame } from '../protocol/frames.js';
import type { JsonValue } from '../protocol/json.js';
import { resultHash, verifyResult } from '../protocol/signing.js';
import type { Target } from '../protocol/target.js';
import { type AttemptRecord, type Store, type TaskRecord, type TaskResult, TaskStatus } from '../store/types.js';
import type { NodeEntry, Registry } from './registry.js';
import type { Scheduler } from './scheduler.js';

export interface TaskRequest {
  tool_name: string;
  tool_args?: Record<string, unknown> | undefined;
  target?: Target | undefined;
  timeout_ms?: number | undefined;
  run_id?: string | undefined;
  step_id?: string | undefined;
}

export interface DispatcherOptions {
  defaultTimeoutMs: number;
  maxAttempts: number;
  resultGraceMs: number;
  logger: Logger;
}

interface AttemptOutcome {
  ok: boolean;
  output?: JsonValue;
  error?: ErrorBody;
  verified: boolean;
  verify_error?: string;
  result_hash: string | null;
  duration_ms: number | null;
}

interface PendingAttempt {
  taskId: string;
  attempt: number;
  nodeId: string;
  acked: boolean;
  timer: NodeJS.Timeout;
  settle: (outcome: AttemptOutcome) => void;
}

interface ActiveTask {
  cancelled: boolean;
  current: PendingAttempt | null;
}

const key = (taskId: string, attempt: number) => `${taskId}#${attempt}`;

function failure(error: ErrorBody): AttemptOutcome {
  return { ok: false, error, verified: false, result_hash: null, duration_ms: null };
}

function isRetryable(error: ErrorBody): boolean {
  if (typeof error.retryable === 'boolean') return error.retryable;
  return isErrorCode(error.code) ? ErrorCodes[error.code].retryable : false;
}

export class Dispatcher {
  readonly #store: Store;
  readonly #registry: Registry;
  readonly #scheduler: Scheduler;
  readonly #opts: DispatcherOptions;
  readonly #pending = new Map<string, PendingAttempt>();
  readonly #active = new Map<string, ActiveTask>();
  readonly #waiters = new Map<string, Set<(task: TaskRecord) => void>>();
  readonly #ajv = new Ajv({ allErrors: false, strict: false });
  readonly #validators = new Map<string, ValidateFunction>();
  #stopping = false;
  /** Results that arrived for an attempt no longer waited on (late, replayed or unknown). */
  staleResults = 0;

  constructor(store: Store, registry: Registry, scheduler: Scheduler, opts: DispatcherOptions) {
    this.#store = store;
    this.#registry = registry;
    this.#scheduler = scheduler;
    this.#opts = opts;
  }

  /**
   * Checks a request against the mesh as it is now and writes the task to the
   * store. Errors a user can fix (unknown tool or node, bad arguments, no
   * capable node) are thrown before anything is stored.
   */
  async submit(req: TaskRequest): Promise<TaskRecord> {
    if (this.#stopping) throw new FieldmeshError('FM_ERR_SHUTTING_DOWN', 'Gateway is shutting down');
    const target: Target = req.target ?? { kind: 'local' };
    const args = req.tool_args ?? {};
    const [first] = this.#scheduler.candidates(req.tool_name, target);
    const descriptor = first?.tools.get(req.tool_name);
    if (descriptor) this.#checkArgs(req.tool_name, descriptor.input_schema, args);
    const now = new Date().toISOString();
    const task: TaskRecord = {
      task_id: newId('task'),
      run_id: req.run_id ?? null,
      step_id: req.step_id ?? null,
      tool_name: req.tool_name,
      tool_args: args as JsonValue,
      target: target as JsonValue,
      timeout_ms: req.timeout_ms ?? this.#opts.defaultTimeoutMs,
      status: TaskStatus.Pending,
      attempts: [],
      result: null,
      created_at: now,
      updated_at: now,
    };
    await this.#store.insertTask(task);
    return task;
  }

  /** Runs a stored task to its end: attempts, failover, persistence. Never throws. */
  async execute(task: TaskRecord): Promise<TaskResult> {
    const active: ActiveTask = { cancelled: false, current: null };
    this.#active.set(task.task_id, active);
    const started = Date.now();
    const target = task.target as Target;
    const maxAttempts = target.kind === 'explicit' ? 1 : this.#opts.maxAttempts;
    const tried = new Set<string>();
    const attempts: AttemptRecord[] = [];
    let verifiedAll = true;
    let final: AttemptOutcome | undefined;
    let finalNode: string | null = null;
    try {
      for (let n = 1; n <= maxAttempts && !active.cancelled; n++) {
        let entry: NodeEntry | undefined;
        try {
          entry = this.#scheduler.candidates(task.tool_name, target, tried)[0];
        } catch (err) {
          final = failure(toErrorBody(err));
          break;
        }
        if (!entry) break;
        tried.add(entry.record.node_id);
        this.#scheduler.picked(entry);
        const record: AttemptRecord = {
          attempt: n,
          node_id: entry.record.node_id,
          started_at: new Date().toISOString(),
          finished_at: null,
          outcome: 'running',
          error: null,
          duration_ms: null,
          verified: null,
          result_hash: null,
        };
        attempts.push(record);
        await this.#store.updateTask(task.task_id, { status: TaskStatus.Running, attempts });
        const outcome = await this.#attempt(task, n, entry, active);
        record.finished_at = new Date().toISOString();
        record.outcome = outcome.ok ? 'success' : 'failed';
        record.error = outcome.error ?? null;
        record.duration_ms = outcome.duration_ms ?? Date.now() - Date.parse(record.started_at);
        record.verified = outcome.result_hash ? outcome.verified : null;
        record.result_hash = outcome.result_hash;
        if (outcome.result_hash && !outcome.verified) verifiedAll = false;
        final = outcome;
        finalNode = entry.record.node_id;
        if (outcome.ok || active.cancelled || !isRetryable(outcome.error ?? { code: 'FM_ERR_INTERNAL', message: '' })) break;
        this.#opts.logger.warn('attempt failed, failing over', {
          task_id: task.task_id,
          attempt: n,
          node_id: entry.record.node_id,
          code: outcome.error?.code,
        });
      }
    } catch (err) {
      final = failure(toErrorBody(err));
    }
    if (active.cancelled) final = failure({ code: 'FM_ERR_CANCELLED', message: 'Task was cancelled', retryable: false });
    if (!final) final = failure({ code: 'FM_ERR_NO_CAPABLE_NODE', message: 'No node was available to run the task', retryable: false });
    const ok = final.ok;
    const result: TaskResult = {
      ok,
      task_id: task.task_id,
      node_id: ok ? finalNode : (finalNode ?? null),
      output: ok ? (final.output ?? null) : null,
      execution_path:
        attempts.length === 1 && ok
          ? [attempts[0]!.node_id]
          : attempts.map((a) => `${a.node_id} (${a.outcome === 'success' ? 'success' : 'failed'})`),
      verified: ok && final.verified && verifiedAll,
      degraded: attempts.length > 1,
      duration_ms: Date.now() - started,
      result_hash: ok ? final.result_hash : null,
    };
    if (!ok && final.error) result.error = final.error;
    if (final.verify_error) result.verification_error = final.verify_error;
    const status = active.cancelled ? TaskStatus.Cancelled : ok ? TaskStatus.Succeeded : TaskStatus.Failed;
    this.#active.delete(task.task_id);
    try {
      await this.#store.updateTask(task.task_id, { status, attempts, result });
    } catch (err) {
      this.#opts.logger.error('could not persist task result', { task_id: task.task_id, error: String(err) });
    }
    const done: TaskRecord = { ...task, status, attempts, result, updated_at: new Date().toISOString() };
    const waiters = this.#waiters.get(task.task_id);
    this.#waiters.delete(task.task_id);
    for (const w of waiters ?? []) w(done);
    return result;
  }

  /** Resolves with the task once finished, or with its current record after `ms`. */
  async waitFor(taskId: string, ms: number): Promise<TaskRecord | undefined> {
    const task = await this.#store.getTask(taskId);
    if (!task || ms <= 0 || !this.#active.has(taskId)) return task;
    return new Promise((resolve) => {
      let set = this.#waiters.get(taskId);
      if (!set) {
        set = new Set();
        this.#waiters.set(taskId, set);
      }
      const waiter = (t: TaskRecord) => {
        clearTimeout(timer);
        resolve(t);
      };
      const timer = setTimeout(() => {
        set.delete(waiter);
        void this.#store.getTask(taskId).then(resolve, () => resolve(task));
      }, ms);
      set.add(waiter);
    });
  }

  async cancel(taskId: string): Promise<TaskRecord> {
    const task = await this.#store.getTask(taskId);
    if (!task) throw new FieldmeshError('FM_ERR_TASK_NOT_FOUND', `Task "${taskId}" does not exist`, { details: { task_id: taskId } });
    if (task.status === TaskStatus.Succeeded || task.status === TaskStatus.Failed || task.status === TaskStatus.Cancelled) {
      throw new FieldmeshError('FM_ERR_TASK_FINISHED', `Task "${taskId}" has already finished (${task.status})`, {
        details: { task_id: taskId, status: task.status },
      });
    }
    const active = this.#active.get(taskId);
    if (!active) {
      await this.#store.updateTask(taskId, { status: TaskStatus.Cancelled });
      return { ...task, status: TaskStatus.Cancelled };
    }
    const finished = new Promise<TaskRecord>((resolve) => {
      let set = this.#waiters.get(taskId);
      if (!set) {
        set = new Set();
        this.#waiters.set(taskId, set);
      }
      set.add(resolve);
    });
    active.cancelled = true;
    const current = active.current;
    if (current) {
      this.#send(current.nodeId, encodeFrame('CANCEL', { task_id: taskId, attempt: current.attempt, reason: 'cancelled by user' }));
      current.settle(failure({ code: 'FM_ERR_CANCELLED', message: 'Task was cancelled', retryable: false }));
    }
    return finished;
  }

  onAck(_entry: NodeEntry, frame: TaskAckFrame): void {
    const p = this.#pending.get(key(frame.task_id, frame.attempt));
    if (p) p.acked = true;
  }

  onResult(entry: NodeEntry, frame: TaskResultFrame): void {
    const p = this.#pending.get(key(frame.task_id, frame.attempt));
    if (!p || p.nodeId !== entry.record.node_id) {
      this.staleResults += 1;
      this.#opts.logger.debug('discarded result for an attempt not awaited', {
        task_id: frame.task_id,
        attempt: frame.attempt,
        node_id: entry.record.node_id,
      });
      return;
    }
    const body = frame.ok ? (frame.output ?? null) : (frame.error ?? null);
    let verified = true;
    let verify_error: string | undefined;
    if (resultHash(body) !== frame.result_hash) {
      verified = false;
      verify_error = 'result_hash does not match the result';
    } else if (!entry.record.public_key) {
      verified = false;
      verify_error = 'node has no signing key on record';
    } else if (
      !verifyResult(entry.record.public_key, frame.task_id, frame.attempt, frame.result_hash, frame.timestamp, frame.node_signature)
    ) {
      verified = false;
      verify_error = 'node_signature does not verify with the node key';
    }
    if (!verified)
      this.#opts.logger.warn('result failed verification', { task_id: frame.task_id, node_id: entry.record.node_id, reason: verify_error });
    const outcome: AttemptOutcome = {
      ok: frame.ok,
      verified,
      result_hash: frame.result_hash,
      duration_ms: frame.duration_ms,
    };
    if (verify_error) outcome.verify_error = verify_error;
    if (frame.ok) outcome.output = (frame.output ?? null) as JsonValue;
    else outcome.error = frame.error ?? { code: 'FM_ERR_EXECUTION', message: 'Node reported a failure without details' };
    p.settle(outcome);
  }

  /** An ERROR frame from a node that names a task fails that task's current attempt on the node. */
  onNodeError(entry: NodeEntry, frame: ErrorFrame): void {
    if (!frame.task_id) return;
    for (const p of this.#pending.values()) {
      if (p.taskId === frame.task_id && p.nodeId === entry.record.node_id) {
        p.settle(
          failure({
            code: frame.code,
            message: frame.message,
            retryable: isErrorCode(frame.code) ? ErrorCodes[frame.code].retryable : false,
          }),
        );
      }
    }
  }

  /** Fails every attempt in flight on a node whose connection is gone. */
  failNode(nodeId: string, error: ErrorBody): void {
    for (const p of [...this.#pending.values()]) if (p.nodeId === nodeId) p.settle(failure(error));
  }

  /** Stops accepting work and fails what is in flight, so callers get an answer. */
  stop(): void {
    this.#stopping = true;
    for (const p of [...this.#pending.values()]) p.settle(failure({ code: 'FM_ERR_SHUTTING_DOWN', message: 'Gateway is shutting down' }));
  }

  get inFlight(): number {
    return this.#pending.size;
  }

  #attempt(task: TaskRecord, attempt: number, entry: NodeEntry, active: ActiveTask): Promise<AttemptOutcome> {
    return new Promise((resolve) => {
      const k = key(task.task_id, attempt);
      const nodeId = entry.record.node_id;
      let settled = false;
      const pending: PendingAttempt = {
        taskId: task.task_id,
        attempt,
        nodeId,
        acked: false,
        timer: setTimeout(() => {
          this.#send(nodeId, encodeFrame('CANCEL', { task_id: task.task_id, attempt, reason: 'deadline passed' }));
          pending.settle(
            failure({
              code: 'FM_ERR_TOOL_TIMEOUT',
              message: `No result from node "${nodeId}" within ${task.timeout_ms} ms`,
              retryable: true,
            }),
          );
        }, task.timeout_ms + this.#opts.resultGraceMs),
        settle: (outcome) => {
          if (settled) return;
          settled = true;
          clearTimeout(pending.timer);
          this.#pending.delete(k);
          entry.inFlight = Math.max(0, entry.inFlight - 1);
          if (active.current === pending) active.current = null;
          resolve(outcome);
        },
      };
      this.#pending.set(k, pending);
      active.current = pending;
      entry.inFlight += 1;
      const frame = encodeFrame('TASK', {
        task_id: task.task_id,
        attempt,
        tool_name: task.tool_name,
        tool_args: task.tool_args,
        timeout_ms: task.timeout_ms,
      });
      if (!this.#send(nodeId, frame)) {
        pending.settle(failure({ code: 'FM_ERR_CONNECTION_LOST', message: `Node "${nodeId}" is not connected`, retryable: true }));
      }
    });
  }

  #send(nodeId: string, text: string): boolean {
    const conn = this.#registry.get(nodeId)?.conn;
    if (!conn) return false;
    try {
      conn.send(text);
      return true;
    } catch {
      return false;
    }
  }

  #checkArgs(toolName: string, schema: Record<string, unknown>, args: unknown): void {
    const cacheKey = JSON.stringify(schema);
    let validate = this.#validators.get(cacheKey);
    if (!validate) {
      try {
        validate = this.#ajv.compile(schema);
      } catch {
        return; // a node advertised a schema Ajv cannot compile; the node checks its own arguments
      }
      if (this.#validators.size > 1000) this.#validators.clear();
      this.#validators.set(cacheKey, validate);
    }
    if (!validate(args)) {
      const e = validate.errors?.[0];
      const where = e ? `tool_args${e.instancePath}` : 'tool_args';
      throw new FieldmeshError('FM_ERR_INVALID_ARGS', `Invalid arguments for tool "${toolName}": ${where} ${e?.message ?? 'is invalid'}`, {
        details: { tool_name: toolName, path: where },
      });
    }
  }
}
