/**
 * Dispatcher (the original DistributedCoordinator and TaskMigrator): persists
 * a task, sends it to the best candidate as a TASK frame, waits for its signed
 * TASK_RESULT, and on failure retries with backoff, fails over to the next
 * candidate, migrates the task when its node is lost, or holds it in the
 * offline queue until its node is back. Attempt numbers fence late results, and
 * every attempt is kept in the task's record.
 */
import type { KeyObject } from 'node:crypto';
import { Ajv, type ValidateFunction } from 'ajv';
import { type ErrorBody, ErrorCodes, FieldmeshError, isErrorCode, toErrorBody } from '../core/errors.js';
import { newId } from '../core/ids.js';
import type { Logger } from '../core/logger.js';
import { encodeFrame } from '../protocol/codec.js';
import type { BatchedResult, ErrorFrame, ResultBatchFrame, TaskAckFrame, TaskResultFrame } from '../protocol/frames.js';
import type { JsonValue } from '../protocol/json.js';
import { type ResultBatchProof, resultBatchTree, resultHash, verifyResult, verifyResultBatchTree } from '../protocol/signing.js';
import { backoffBefore, type OfflineBehavior, type RetryPolicy, type Target } from '../protocol/target.js';
import { type AttemptRecord, NodeStatus, type Store, type TaskRecord, type TaskResult, TaskStatus } from '../store/types.js';
import { Approvals, approvalError } from './approvals.js';
import type { NodeEntry, Registry } from './registry.js';
import { isDispatchable, type Scheduler } from './scheduler.js';
import { TaskOutbox } from './task-outbox.js';
import { resolveTemplates, type TemplateContext } from './templates.js';
import type { CompiledToolPolicy } from './tool-policy.js';

export interface TaskRequest {
  tool_name: string;
  /** An object, or (with for_each) a template string such as "{{item}}". */
  tool_args?: Record<string, unknown> | string | undefined;
  target?: Target | undefined;
  timeout_ms?: number | undefined;
  retry?: RetryPolicy | undefined;
  offline_behavior?: OfflineBehavior | undefined;
  /** Items of a load-balanced fan-out, or a template yielding them. */
  for_each?: unknown[] | string | undefined;
  idempotency_key?: string | undefined;
  run_id?: string | undefined;
  step_id?: string | undefined;
  /** A task id chosen by the caller (a workflow records it before the task exists). */
  task_id?: string | undefined;
}

export interface DispatcherOptions {
  defaultTimeoutMs: number;
  /** A tool's own default time limit (a deployed function's), used before `defaultTimeoutMs` when a call sets none. */
  toolTimeoutMs?: (toolName: string) => number | undefined;
  maxAttempts: number;
  resultGraceMs: number;
  /** How long a task waits for an eligible node to come (back) online before it fails. */
  placementTimeoutMs: number;
  /** allow | deny | supervised per tool. */
  toolPolicy: CompiledToolPolicy;
  logger: Logger;
  /** The gateway's Ed25519 key: every TASK (and TASK_BATCH) frame is signed with it, and nodes refuse one that is not. */
  taskSigningKey: KeyObject;
  /** The frame limit a TASK_BATCH stays within. */
  maxFrameBytes: number;
  /** Called for every attempt that reached a node (it answered, or was lost or timed out there). */
  onAttempt?: (task: TaskRecord, attempt: AttemptRecord) => void;
}

interface AttemptOutcome {
  ok: boolean;
  output?: JsonValue;
  error?: ErrorBody;
  verified: boolean;
  verify_error?: string;
  result_hash: string | null;
  duration_ms: number | null;
  node_signature?: string;
  signed_at?: string;
  /** The result's inclusion proof, when `node_signature` is a RESULT_BATCH's. */
  result_batch?: ResultBatchProof;
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
  /** Wakes a task sleeping in a backoff or waiting for a node. */
  wake: (() => void) | null;
}

/** Extra fields a fan-out parent keeps in its options. */
interface FanOutOptions {
  items?: JsonValue[];
  parent_task_id?: string;
}

type StoredOptions = NonNullable<TaskRecord['options']> & FanOutOptions;

/** Losing a node is not the task's fault: it moves the task without using up its retries. */
const MIGRATION_CODES = new Set(['FM_ERR_CONNECTION_LOST', 'FM_ERR_NODE_OFFLINE', 'FM_ERR_UNAVAILABLE', 'FM_ERR_SHUTTING_DOWN']);
/** A task that keeps losing its node gives up after this many moves. */
const MAX_MIGRATIONS = 20;
/** Result signatures remembered to refuse one replayed for another task or attempt. */
const SEEN_SIGNATURES = 100_000;
/** setTimeout fires at once beyond a signed 32-bit delay. */
const MAX_TIMER_MS = 2 ** 31 - 1;

const key = (taskId: string, attempt: number) => `${taskId}#${attempt}`;

function failure(error: ErrorBody): AttemptOutcome {
  return { ok: false, error, verified: false, result_hash: null, duration_ms: null };
}

/** A result's output (or error) hashes to the result_hash the node signed. */
function hashMatches(r: BatchedResult): boolean {
  return resultHash(r.ok ? (r.output ?? null) : (r.error ?? null)) === r.result_hash;
}

/** What a result settles its attempt with; `verify_error` says why it did not check. */
function resultOutcome(r: BatchedResult, signature: string, signedAt: string, verify_error: string | undefined): AttemptOutcome {
  const outcome: AttemptOutcome = {
    ok: r.ok,
    verified: !verify_error,
    result_hash: r.result_hash,
    duration_ms: r.duration_ms,
    node_signature: signature,
    signed_at: signedAt,
  };
  if (verify_error) outcome.verify_error = verify_error;
  if (r.ok) outcome.output = (r.output ?? null) as JsonValue;
  else outcome.error = r.error ?? { code: 'FM_ERR_EXECUTION', message: 'Node reported a failure without details' };
  return outcome;
}

function isRetryable(error: ErrorBody): boolean {
  // A node's policy is its final answer, whatever the node says: the task is not moved to another node.
  if (error.code === 'FM_ERR_NODE_POLICY_DENIED') return false;
  if (typeof error.retryable === 'boolean') return error.retryable;
  return isErrorCode(error.code) ? ErrorCodes[error.code].retryable : false;
}

const finished = (s: TaskStatus) => s === TaskStatus.Succeeded || s === TaskStatus.Failed || s === TaskStatus.Cancelled;

export class Dispatcher {
  readonly #store: Store;
  readonly #registry: Registry;
  readonly #scheduler: Scheduler;
  readonly #opts: DispatcherOptions;
  readonly #pending = new Map<string, PendingAttempt>();
  readonly #active = new Map<string, ActiveTask>();
  readonly #waiters = new Map<string, Set<(task: TaskRecord) => void>>();
  readonly #queuedListeners = new Map<string, () => void>();
  readonly #ajv = new Ajv({ allErrors: false, strict: false });
  readonly #validators = new Map<string, ValidateFunction>();
  readonly #validatorsBySchema = new WeakMap<object, ValidateFunction>();
  #stopping = false;
  readonly #seenSignatures = new Map<string, string>();
  /** Results that arrived for an attempt no longer waited on (late, replayed or unknown). */
  staleResults = 0;
  /** RESULT_BATCH frames whose one signature verified, and the results they carried. */
  resultBatches = 0;
  batchedResults = 0;
  /** The tool policy's approvals: tasks of supervised tools wait here before placement. */
  readonly approvals: Approvals;
  /** Signs and sends TASK frames, batched per node and turn for nodes that take TASK_BATCH. */
  readonly outbox: TaskOutbox;

  constructor(store: Store, registry: Registry, scheduler: Scheduler, opts: DispatcherOptions) {
    this.#store = store;
    this.#registry = registry;
    this.#scheduler = scheduler;
    this.#opts = opts;
    this.outbox = new TaskOutbox(opts.taskSigningKey, opts.maxFrameBytes);
    this.approvals = new Approvals(store, opts.toolPolicy, opts.logger, (taskId) => this.#active.get(taskId)?.wake?.());
    // A node coming (back) online may be what a waiting task needs.
    registry.on('status', (entry) => {
      if (entry.record.status === NodeStatus.Online) for (const a of this.#active.values()) a.wake?.();
    });
  }

  /**
   * Checks a request against the mesh as it is now and writes the task to the
   * store. Errors a user can fix (unknown tool or node, bad arguments, no
   * capable node) are thrown before anything is stored. A repeated
   * idempotency key returns the task it first created.
   */
  async submit(req: TaskRequest, ctx: TemplateContext = {}): Promise<{ task: TaskRecord; existing: boolean }> {
    const prepared = await this.#prepare(req, ctx);
    if (prepared.existing) return prepared;
    return this.#insert(req, prepared.task);
  }

  /**
   * Submit and execute in one step, for a caller that waits for the result
   * (POST /v1/tool_call). A new task that will be placed at once has its
   * insert and its first attempt's record written in the same group commit:
   * both are issued in this tick, and the TASK frame goes out only once that
   * commit is done, so the task is in the store before it reaches a node or
   * the caller hears of it, with one store round trip fewer. Anything else
   * (an idempotency key, a caller-chosen id, an approval, the offline queue)
   * takes the path of submit; `result` is then left for the caller to start.
   */
  async submitAndExecute(
    req: TaskRequest,
    ctx: TemplateContext = {},
  ): Promise<{ task: TaskRecord; existing: boolean; result?: Promise<TaskResult> }> {
    const prepared = await this.#prepare(req, ctx);
    if (prepared.existing) return prepared;
    const { task } = prepared;
    if (req.idempotency_key || req.task_id || task.status !== TaskStatus.Pending || task.options?.offline_behavior?.mode === 'queue') {
      return this.#insert(req, task);
    }
    const stored = this.#store.insertTask(task);
    // execute() issues the attempt's write before its first await on I/O, so it joins the insert's commit;
    // if the insert fails, that write finds no row, and the task ends without ever being sent.
    const result = this.execute(task);
    await stored;
    return { task, existing: false, result };
  }

  /** Everything submit does before the insert: the task to store, or the one an idempotency key already made. */
  async #prepare(req: TaskRequest, ctx: TemplateContext): Promise<{ task: TaskRecord; existing: boolean }> {
    if (this.#stopping) throw new FieldmeshError('FM_ERR_SHUTTING_DOWN', 'Gateway is shutting down');
    if (req.idempotency_key) {
      const existing = await this.#store.getTaskByIdempotencyKey(req.idempotency_key);
      if (existing) return { task: existing, existing: true };
    }
    // The tool policy comes first: a denied tool is refused whatever else the request says.
    const supervised = this.approvals.needsApproval(req.tool_name);
    const target: Target = req.target ?? { kind: 'local' };
    const options: StoredOptions = {};
    if (req.retry) options.retry = req.retry;
    if (req.offline_behavior) options.offline_behavior = req.offline_behavior;
    let args: JsonValue;
    if (req.for_each !== undefined || target.kind === 'load_balanced') {
      const items = req.for_each === undefined ? undefined : resolveTemplates(req.for_each, ctx);
      if (!Array.isArray(items)) {
        throw new FieldmeshError(
          'FM_ERR_INVALID_REQUEST',
          'for_each must be (or yield) an array of items; a load_balanced target needs one',
          {
            details: { for_each: req.for_each ?? null },
          },
        );
      }
      options.items = items as JsonValue[];
      args = (req.tool_args ?? {}) as JsonValue;
      this.#checkFanOut(req.tool_name, target, items.length);
      // Check the first item's arguments now, so a bad template fails before anything runs.
      if (items.length > 0) this.#validateArgs(req.tool_name, target, resolveTemplates(args, { ...ctx, item: items[0], item_index: 0 }));
    } else {
      const resolved = resolveTemplates(req.tool_args ?? {}, ctx);
      if (typeof resolved !== 'object' || resolved === null || Array.isArray(resolved)) {
        throw new FieldmeshError(
          'FM_ERR_INVALID_ARGS',
          `tool_args must be an object, got ${Array.isArray(resolved) ? 'an array' : typeof resolved}`,
        );
      }
      args = resolved as JsonValue;
      this.#place(req.tool_name, target, req.offline_behavior, payloadSize(args));
      this.#validateArgs(req.tool_name, target, args);
    }
    const now = new Date().toISOString();
    const task: TaskRecord = {
      task_id: req.task_id ?? newId('task'),
      run_id: req.run_id ?? null,
      step_id: req.step_id ?? null,
      tool_name: req.tool_name,
      tool_args: args,
      target: target as JsonValue,
      timeout_ms: req.timeout_ms ?? this.#opts.toolTimeoutMs?.(req.tool_name) ?? this.#opts.defaultTimeoutMs,
      status: TaskStatus.Pending,
      attempts: [],
      result: null,
      created_at: now,
      updated_at: now,
      idempotency_key: req.idempotency_key ?? null,
      options,
      expires_at: null,
    };
    if (supervised) {
      // It waits for a person before anything else, holding no node; placement happens once it is approved.
      task.status = TaskStatus.AwaitingApproval;
      task.approval = this.approvals.request(now);
    } else if (this.willQueue(task)) {
      // A task for an offline node goes into the store already queued, so what the caller is told is what it reads back.
      task.status = TaskStatus.Queued;
      task.expires_at = new Date(Date.parse(now) + (req.offline_behavior?.ttl_seconds ?? 86_400) * 1000).toISOString();
    }
    return { task, existing: false };
  }

  async #insert(req: TaskRequest, task: TaskRecord): Promise<{ task: TaskRecord; existing: boolean }> {
    try {
      await this.#store.insertTask(task);
    } catch (err) {
      // Two submissions with one key raced: the first one stored wins.
      const existing = req.idempotency_key ? await this.#store.getTaskByIdempotencyKey(req.idempotency_key) : undefined;
      if (existing) return { task: existing, existing: true };
      throw err;
    }
    return { task, existing: false };
  }

  /** Runs a stored task to its end (or resumes one an earlier process left unfinished). Never throws. */
  async execute(task: TaskRecord): Promise<TaskResult> {
    const known = this.#active.get(task.task_id);
    if (known) return this.#resultOf(await this.#finishedTask(task.task_id));
    const active: ActiveTask = { cancelled: false, current: null, wake: null };
    this.#active.set(task.task_id, active);
    const started = Date.now();
    let result: TaskResult;
    let attempts: AttemptRecord[];
    try {
      const refused = task.status === TaskStatus.AwaitingApproval ? await this.#awaitApproval(task, active) : undefined;
      const items = (task.options as StoredOptions | undefined)?.items;
      if (refused) {
        attempts = task.attempts;
        result = this.#failedResult(task, attempts, refused, started);
      } else ({ result, attempts } = items ? await this.#fanOut(task, items, active) : await this.#run(task, active));
    } catch (err) {
      attempts = task.attempts;
      result = this.#failedResult(task, attempts, toErrorBody(err), started);
    }
    if (active.cancelled && !result.ok) {
      result = { ...result, error: { code: 'FM_ERR_CANCELLED', message: 'Task was cancelled', retryable: false } };
    }
    const status = result.ok ? TaskStatus.Succeeded : active.cancelled ? TaskStatus.Cancelled : TaskStatus.Failed;
    try {
      // A gateway going down leaves its unfinished tasks unfinished in the store, for the next process to resume.
      if (this.#stopping && !result.ok && !active.cancelled) await this.#store.updateTask(task.task_id, { attempts });
      else await this.#store.updateTask(task.task_id, { status, attempts, result });
    } catch (err) {
      this.#opts.logger.error('could not persist task result', { task_id: task.task_id, error: String(err) });
    }
    // Only now that the store holds the end state does the task stop counting as active: readers that find it
    // inactive read the store, and readers that find it active are woken below, in the same tick.
    this.#active.delete(task.task_id);
    this.#queuedListeners.delete(task.task_id);
    const done: TaskRecord = { ...task, status, attempts, result, updated_at: new Date().toISOString() };
    const waiters = this.#waiters.get(task.task_id);
    this.#waiters.delete(task.task_id);
    for (const w of waiters ?? []) w(done);
    return result;
  }

  /** True when the task's explicit node is offline and the task will wait for it in the offline queue. */
  willQueue(task: TaskRecord): boolean {
    const target = task.target as Target;
    if (target.kind !== 'explicit' || task.options?.offline_behavior?.mode !== 'queue') return false;
    const entry = this.#registry.get(target.node_id);
    return !entry || !isDispatchable(entry);
  }

  /** Calls `listener` once if the task enters the offline queue. */
  onQueued(taskId: string, listener: () => void): void {
    this.#queuedListeners.set(taskId, listener);
  }

  /**
   * Resumes every task an earlier gateway process left unfinished: an attempt
   * that was in flight becomes a failed attempt, and the task goes on with the
   * next one once an eligible node is connected.
   */
  async resumeUnfinished(): Promise<number> {
    let n = 0;
    for (const task of await this.#store.listUnfinishedTasks()) {
      // A fan-out child is resumed by its parent, a workflow step by its run.
      if ((task.options as StoredOptions | undefined)?.parent_task_id || task.run_id) continue;
      n += 1;
      void this.execute(task);
    }
    return n;
  }

  /** Resolves with the task once finished, or with its current record after `ms`. */
  async waitFor(taskId: string, ms: number): Promise<TaskRecord | undefined> {
    if (ms <= 0 || !this.#active.has(taskId)) return this.#store.getTask(taskId);
    return new Promise((resolve) => {
      const set = this.#waitersOf(taskId);
      const waiter = (t: TaskRecord) => {
        clearTimeout(timer);
        resolve(t);
      };
      const timer = setTimeout(() => {
        set.delete(waiter);
        void this.#store.getTask(taskId).then(resolve, () => resolve(undefined));
      }, ms);
      set.add(waiter);
    });
  }

  async cancel(taskId: string): Promise<TaskRecord> {
    const task = await this.#store.getTask(taskId);
    if (!task) throw new FieldmeshError('FM_ERR_TASK_NOT_FOUND', `Task "${taskId}" does not exist`, { details: { task_id: taskId } });
    if (finished(task.status)) {
      throw new FieldmeshError('FM_ERR_TASK_FINISHED', `Task "${taskId}" has already finished (${task.status})`, {
        details: { task_id: taskId, status: task.status },
      });
    }
    const active = this.#active.get(taskId);
    if (!active) {
      await this.#store.updateTask(taskId, { status: TaskStatus.Cancelled });
      return { ...task, status: TaskStatus.Cancelled };
    }
    const done = new Promise<TaskRecord>((resolve) => this.#waitersOf(taskId).add(resolve));
    this.#cancelActive(taskId, active);
    // A fan-out parent cancels its children too.
    for (const [id, child] of this.#active) if (id.startsWith(`${taskId}.`)) this.#cancelActive(id, child);
    return done;
  }

  /** Checks a result against the output_schema its node advertised for the tool (schema_strict workflows). */
  checkOutput(toolName: string, nodeId: string | null, output: unknown): void {
    const descriptor =
      (nodeId ? this.#registry.get(nodeId)?.tools.get(toolName) : undefined) ?? this.#descriptorFor(toolName, { kind: 'local' });
    if (!descriptor) return;
    const validate = this.#compile(descriptor.output_schema);
    if (validate && !validate(output)) {
      const e = validate.errors?.[0];
      throw new FieldmeshError(
        'FM_ERR_INVALID_OUTPUT',
        `Output of tool "${toolName}" does not match its output_schema: output${e?.instancePath ?? ''} ${e?.message ?? 'is invalid'}`,
        {
          details: { tool_name: toolName },
        },
      );
    }
  }

  /** Checks arguments against the input_schema of the tool on some node that offers it. */
  checkArgs(toolName: string, target: Target, args: unknown): void {
    this.#validateArgs(toolName, target, args);
  }

  /** The tool descriptor some node in the mesh advertises. */
  describeTool(toolName: string, target: Target = { kind: 'local' }) {
    return this.#descriptorFor(toolName, target);
  }

  onAck(_entry: NodeEntry, frame: TaskAckFrame): void {
    const p = this.#pending.get(key(frame.task_id, frame.attempt));
    if (p) p.acked = true;
  }

  /**
   * Settles the attempt a result answers. Returns the error to send back when
   * the result is refused: a node signature already seen on a result for
   * another task or attempt is a replay, and never settles anything.
   */
  onResult(entry: NodeEntry, frame: TaskResultFrame): ErrorBody | undefined {
    const k = key(frame.task_id, frame.attempt);
    const seenFor = this.#seenSignatures.get(signatureKey(frame.node_signature));
    if (seenFor !== undefined && seenFor !== k) {
      this.staleResults += 1;
      this.#opts.logger.warn('refused a replayed result', {
        task_id: frame.task_id,
        attempt: frame.attempt,
        node_id: entry.record.node_id,
      });
      return {
        code: 'FM_ERR_RESULT_REPLAYED',
        message: `This result's signature was already delivered for another task or attempt; refused for ${frame.task_id} attempt ${frame.attempt}`,
      };
    }
    if (seenFor === undefined) this.#rememberSignature(signatureKey(frame.node_signature), k);
    const p = this.#awaited(entry, frame);
    if (!p) return undefined;
    let verify_error: string | undefined;
    if (!hashMatches(frame)) verify_error = 'result_hash does not match the result';
    else if (!entry.record.public_key) verify_error = 'node has no signing key on record';
    else if (
      !verifyResult(entry.record.public_key, frame.task_id, frame.attempt, frame.result_hash, frame.timestamp, frame.node_signature)
    ) {
      verify_error = 'node_signature does not verify with the node key';
    }
    if (verify_error)
      this.#opts.logger.warn('result failed verification', { task_id: frame.task_id, node_id: entry.record.node_id, reason: verify_error });
    p.settle(resultOutcome(frame, frame.node_signature, frame.timestamp, verify_error));
    return undefined;
  }

  /**
   * Settles the attempts a RESULT_BATCH answers, after one check of its one
   * signature. A batch that does not check (its signature, any result's hash,
   * a result named twice, a result for an attempt this gateway awaits from
   * another node) is refused whole: each of its results that this node's
   * attempts await settles as a result whose signature failed
   * (`verified: false` with the reason), and the error to send back is
   * returned. A batch signature already seen is a replay: it settles nothing.
   * Attempts of other nodes are never touched.
   */
  onResultBatch(entry: NodeEntry, frame: ResultBatchFrame): ErrorBody | undefined {
    const nodeId = entry.record.node_id;
    const n = frame.results.length;
    if (this.#seenSignatures.has(signatureKey(frame.node_signature))) {
      this.staleResults += n;
      this.#opts.logger.warn('refused a replayed result batch', { node_id: nodeId, results: n });
      return {
        code: 'FM_ERR_RESULT_REPLAYED',
        message: `This RESULT_BATCH's signature was already delivered; refused for its ${n} results`,
      };
    }
    this.#rememberSignature(signatureKey(frame.node_signature), 'RESULT_BATCH');
    let why: string | undefined;
    const keys = new Set<string>();
    for (const r of frame.results) {
      const k = key(r.task_id, r.attempt);
      const other = this.#pending.get(k);
      if (keys.has(k)) why = `it names task ${r.task_id} attempt ${r.attempt} twice`;
      else if (other && other.nodeId !== nodeId) why = `task ${r.task_id} attempt ${r.attempt} is not awaited from this node`;
      else if (!hashMatches(r)) why = `result_hash of task ${r.task_id} attempt ${r.attempt} does not match its result`;
      if (why) break;
      keys.add(k);
    }
    // One pass over the tree gives the root the signature is checked against and each result's proof.
    const tree = resultBatchTree(frame.results);
    if (!why && !entry.record.public_key) why = 'node has no signing key on record';
    if (!why && !verifyResultBatchTree(entry.record.public_key as string, frame.timestamp, tree, frame.node_signature))
      why = 'node_signature does not verify with the node key';
    const verify_error = why && `RESULT_BATCH refused: ${why}`;
    const { proofs } = tree;
    frame.results.forEach((r, i) => {
      const outcome = resultOutcome(r, frame.node_signature, frame.timestamp, verify_error);
      outcome.result_batch = proofs[i];
      this.#awaited(entry, r)?.settle(outcome);
    });
    if (!verify_error) {
      this.resultBatches += 1;
      this.batchedResults += n;
      return undefined;
    }
    this.#opts.logger.warn('result batch failed verification', { node_id: nodeId, results: n, reason: verify_error });
    return { code: 'FM_ERR_RESULT_REFUSED', message: verify_error };
  }

  #rememberSignature(signature: string, k: string): void {
    this.#seenSignatures.set(signature, k);
    if (this.#seenSignatures.size > SEEN_SIGNATURES) this.#seenSignatures.delete(this.#seenSignatures.keys().next().value as string);
  }

  /** The attempt a result answers when this node's attempt awaits it; otherwise the result is stale, counted and dropped. */
  #awaited(entry: NodeEntry, r: { task_id: string; attempt: number }): PendingAttempt | undefined {
    const p = this.#pending.get(key(r.task_id, r.attempt));
    if (p && p.nodeId === entry.record.node_id) return p;
    this.staleResults += 1;
    this.#opts.logger.debug('discarded result for an attempt not awaited', {
      task_id: r.task_id,
      attempt: r.attempt,
      node_id: entry.record.node_id,
    });
    return undefined;
  }

  /** An ERROR frame from a node that names a task fails that task's current attempt on the node. */
  onNodeError(entry: NodeEntry, frame: ErrorFrame): void {
    if (!frame.task_id) return;
    for (const p of [...this.#pending.values()]) {
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

  /** Fails every attempt in flight on a node whose connection is gone; their tasks migrate. */
  failNode(nodeId: string, error: ErrorBody): void {
    for (const p of [...this.#pending.values()]) if (p.nodeId === nodeId) p.settle(failure(error));
  }

  /** Stops taking work. Tasks in flight stay unfinished in the store, and the next gateway process resumes them. */
  stop(): void {
    this.#stopping = true;
    for (const p of [...this.#pending.values()]) p.settle(failure({ code: 'FM_ERR_SHUTTING_DOWN', message: 'Gateway is shutting down' }));
    for (const a of this.#active.values()) a.wake?.();
  }

  get inFlight(): number {
    return this.#pending.size;
  }

  /** Tasks this gateway is running now (including those waiting for a node). */
  get activeTasks(): number {
    return this.#active.size;
  }

  /**
   * Waits for the approval of a supervised task without holding a node:
   * undefined once approved, or the error it ends with (rejected, timed out,
   * cancelled, or the gateway stopping, which leaves it waiting in the store).
   */
  async #awaitApproval(task: TaskRecord, active: ActiveTask): Promise<ErrorBody | undefined> {
    if (!task.approval) return undefined;
    for (;;) {
      let decided = this.approvals.take(task.task_id);
      if (!decided) {
        if (active.cancelled) return { code: 'FM_ERR_CANCELLED', message: 'Task was cancelled', retryable: false };
        if (this.#stopping) return { code: 'FM_ERR_SHUTTING_DOWN', message: 'Gateway is shutting down', retryable: true };
        const left = Date.parse(task.approval.expires_at) - Date.now();
        if (left > 0) {
          // Woken early by a decision, a cancel or shutdown (and by nodes coming online, which changes nothing here).
          await this.#sleep(active, Math.min(left, MAX_TIMER_MS));
          continue;
        }
        decided = await this.approvals.expire(task);
      }
      task.approval = decided;
      if (decided.decision === 'approved') {
        task.status = TaskStatus.Pending;
        return undefined;
      }
      return approvalError(task, decided);
    }
  }

  /** One task on one node at a time: attempts, retries with backoff, failover, migration, the offline queue. */
  async #run(task: TaskRecord, active: ActiveTask): Promise<{ result: TaskResult; attempts: AttemptRecord[] }> {
    const started = Date.now();
    const target = task.target as Target;
    const options = (task.options ?? {}) as StoredOptions;
    const retry = options.retry;
    const explicit = target.kind === 'explicit';
    const maxAttempts =
      retry?.max_attempts ?? (explicit ? 1 : target.kind === 'failover_chain' ? target.nodes.length : this.#opts.maxAttempts);
    const failover = retry?.failover ?? !explicit;
    const attempts: AttemptRecord[] = task.attempts.map((a) =>
      a.outcome === 'running'
        ? {
            ...a,
            outcome: 'failed' as const,
            finished_at: new Date().toISOString(),
            error: { code: 'FM_ERR_UNAVAILABLE', message: 'The gateway restarted while this attempt ran', retryable: true },
          }
        : a,
    );
    let counted = attempts.filter((a) => !MIGRATION_CODES.has(a.error?.code ?? '')).length;
    let migrations = attempts.length - counted;
    const excluded = new Set<string>();
    for (const a of attempts) if (failover && !MIGRATION_CODES.has(a.error?.code ?? '')) excluded.add(a.node_id);
    let last: AttemptOutcome | undefined;
    let lastNode: string | null = attempts.at(-1)?.node_id ?? null;
    let verifiedAll = true;

    while (!active.cancelled && !this.#stopping) {
      if (counted >= maxAttempts || migrations > MAX_MIGRATIONS) break;
      const wait = counted > 0 && last && !MIGRATION_CODES.has(last.error?.code ?? '') ? backoffBefore(counted + 1, retry) : 0;
      if (wait > 0) await this.#sleep(active, wait);
      if (active.cancelled || this.#stopping) break;
      const placed = await this.#awaitNode(task, target, options, excluded, failover ? null : lastNode, active);
      if ('error' in placed) {
        last = failure(placed.error);
        break;
      }
      const entry = placed.entry;
      this.#scheduler.picked(entry);
      const record: AttemptRecord = {
        attempt: attempts.length + 1,
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
      // A cancel that landed during the write above found no attempt to stop; honour it before sending one.
      const outcome = active.cancelled
        ? failure({ code: 'FM_ERR_CANCELLED', message: 'Task was cancelled', retryable: false })
        : await this.#attempt(task, record.attempt, entry, active);
      record.finished_at = new Date().toISOString();
      record.outcome = outcome.ok ? 'success' : 'failed';
      record.error = outcome.error ?? null;
      record.duration_ms = outcome.duration_ms ?? Date.now() - Date.parse(record.started_at);
      record.verified = outcome.result_hash ? outcome.verified : null;
      record.result_hash = outcome.result_hash;
      if (outcome.node_signature) {
        record.node_signature = outcome.node_signature;
        record.signed_at = outcome.signed_at ?? null;
        if (outcome.result_batch) record.result_batch = outcome.result_batch;
      }
      if (outcome.result_hash && !outcome.verified) verifiedAll = false;
      this.#opts.onAttempt?.(task, record);
      last = outcome;
      lastNode = entry.record.node_id;
      if (outcome.ok || active.cancelled) break;
      const code = outcome.error?.code ?? 'FM_ERR_INTERNAL';
      if (MIGRATION_CODES.has(code)) {
        migrations += 1;
        this.#opts.logger.warn('node lost, migrating task', { task_id: task.task_id, attempt: record.attempt, node_id: lastNode, code });
        continue;
      }
      counted += 1;
      if (!isRetryable(outcome.error ?? { code, message: '' })) break;
      if (failover) excluded.add(lastNode);
      // Persist the failed attempt before a backoff, so a crash during the wait does not lose it.
      await this.#store.updateTask(task.task_id, { attempts });
      this.#opts.logger.warn('attempt failed, retrying', { task_id: task.task_id, attempt: record.attempt, node_id: lastNode, code });
    }

    if (!last) last = failure({ code: 'FM_ERR_NO_CAPABLE_NODE', message: 'No node was available to run the task', retryable: false });
    if (this.#stopping && !last.ok) last = failure({ code: 'FM_ERR_SHUTTING_DOWN', message: 'Gateway is shutting down', retryable: true });
    const ok = last.ok;
    const result: TaskResult = {
      ok,
      task_id: task.task_id,
      node_id: attempts.at(-1)?.node_id ?? null,
      output: ok ? (last.output ?? null) : null,
      execution_path: executionPath(attempts),
      verified: ok && last.verified && verifiedAll,
      degraded: attempts.length > 1,
      duration_ms: Date.now() - started,
      result_hash: ok ? last.result_hash : null,
    };
    if (!ok) result.error = last.error ?? { code: 'FM_ERR_INTERNAL', message: 'Task failed' };
    if (last.verify_error) result.verification_error = last.verify_error;
    return { result, attempts };
  }

  /**
   * Picks the node for the next attempt, waiting when none is eligible now:
   * an explicit target with `offline_behavior.mode = "queue"` waits in the
   * offline queue until its TTL; other targets wait up to the placement timeout
   * for an eligible node to come (back) online.
   */
  async #awaitNode(
    task: TaskRecord,
    target: Target,
    options: StoredOptions,
    excluded: ReadonlySet<string>,
    sticky: string | null,
    active: ActiveTask,
  ): Promise<{ entry: NodeEntry } | { error: ErrorBody }> {
    const queue = target.kind === 'explicit' && options.offline_behavior?.mode === 'queue' ? options.offline_behavior : undefined;
    let deadline = Date.now() + this.#opts.placementTimeoutMs;
    let queued = false;
    const payload = payloadSize(task.tool_args);
    for (;;) {
      const picked = this.#pick(task, target, excluded, sticky, payload);
      if ('entry' in picked) {
        if (queued) this.#opts.logger.info('delivering queued task', { task_id: task.task_id, node_id: picked.entry.record.node_id });
        return picked;
      }
      // Every eligible node already failed this task: there is nothing to wait for.
      if (picked.exhausted) return { error: picked.error };
      if (target.kind === 'explicit' && !queue) return { error: picked.error };
      if (queue && !queued) {
        queued = true;
        const expires = task.expires_at ?? new Date(Date.parse(task.created_at) + (queue.ttl_seconds ?? 86_400) * 1000).toISOString();
        task.expires_at = expires;
        deadline = Date.parse(expires);
        await this.#store.updateTask(task.task_id, { status: TaskStatus.Queued, expires_at: expires });
        this.#opts.logger.info('task queued for offline node', {
          task_id: task.task_id,
          node_id: target.kind === 'explicit' ? target.node_id : null,
          expires_at: expires,
        });
        this.#queuedListeners.get(task.task_id)?.();
      }
      const left = deadline - Date.now();
      if (left <= 0 || active.cancelled || this.#stopping) {
        if (queue && left <= 0) {
          return {
            error: {
              code: 'FM_ERR_EXPIRED',
              message: `Task expired after waiting ${queue.ttl_seconds ?? 86_400} s for its node`,
              retryable: false,
            },
          };
        }
        return { error: picked.error };
      }
      // Wake on a node coming online, or re-check at the queue's retry interval.
      await this.#sleep(active, Math.min(left, (queue?.retry_interval_seconds ?? 300) * 1000));
    }
  }

  #pick(
    task: TaskRecord,
    target: Target,
    excluded: ReadonlySet<string>,
    sticky: string | null,
    payload: number,
  ): { entry: NodeEntry } | { error: ErrorBody; exhausted: boolean } {
    if (sticky) {
      const entry = this.#registry.get(sticky);
      if (entry && isDispatchable(entry) && entry.tools.has(task.tool_name)) return { entry };
    }
    try {
      const found = this.#scheduler.best(task.tool_name, target, excluded, payload);
      if (found) return { entry: found };
    } catch (err) {
      return { error: toErrorBody(err), exhausted: false };
    }
    // Candidates exist but every one already failed this task.
    let any: NodeEntry | undefined;
    try {
      any = this.#scheduler.best(task.tool_name, target, undefined, payload);
    } catch (err) {
      return { error: toErrorBody(err), exhausted: false };
    }
    return {
      error: { code: 'FM_ERR_NO_CAPABLE_NODE', message: 'Every eligible node has already failed this task', retryable: false },
      exhausted: any !== undefined,
    };
  }

  /**
   * A load-balanced fan-out: one child task per item, spread over at least
   * `min_nodes` nodes by load, each child failing over to the other nodes, and
   * the outputs gathered in item order.
   */
  async #fanOut(parent: TaskRecord, items: JsonValue[], active: ActiveTask): Promise<{ result: TaskResult; attempts: AttemptRecord[] }> {
    const started = Date.now();
    const target = parent.target as Target;
    const failover = target.kind === 'load_balanced' ? (target.failover ?? true) : true;
    const base: Target = { kind: 'local', required_capabilities: target.required_capabilities ?? [], prefer: target.prefer ?? [] };
    await this.#store.updateTask(parent.task_id, { status: TaskStatus.Running });
    const ranked = this.#scheduler.candidates(parent.tool_name, base);
    this.#checkFanOut(parent.tool_name, target, items.length);
    const order = ranked.map((e) => e.record.node_id);
    const concurrency = Math.max(
      1,
      ranked.reduce((n, e) => n + e.record.max_concurrency, 0),
    );
    const results: TaskResult[] = new Array(items.length);
    let next = 0;
    const worker = async () => {
      while (next < items.length && !active.cancelled && !this.#stopping) {
        const i = next++;
        results[i] = await this.#runChild(parent, i, items[i] ?? null, order, failover, active);
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
    const failed = results.findIndex((r) => !r?.ok);
    const used: string[] = [];
    const failedPaths: string[] = [];
    for (const r of results) {
      if (!r) continue;
      for (const p of r.execution_path) {
        const bare = p.replace(/ \((failed|success)\)$/, '');
        if (p.endsWith('(failed)')) {
          if (!failedPaths.includes(p)) failedPaths.push(p);
        } else if (!used.includes(bare)) used.push(bare);
      }
    }
    const ok = failed < 0 && results.length === items.length;
    const result: TaskResult = {
      ok,
      task_id: parent.task_id,
      node_id: used.length === 1 ? (used[0] ?? null) : null,
      output: ok ? { results: results.map((r) => r.output), items: items.length, nodes: used } : null,
      execution_path: [...used, ...failedPaths],
      verified: ok && results.every((r) => r.verified),
      degraded: results.some((r) => r?.degraded),
      duration_ms: Date.now() - started,
      result_hash: null,
    };
    if (ok) result.result_hash = resultHash(result.output);
    else {
      const bad = results[failed];
      const cause = bad?.error ?? { code: 'FM_ERR_CANCELLED', message: 'not run' };
      result.error = { code: cause.code, message: `Item ${failed} failed: ${cause.message}`, details: { item_index: failed, cause } };
    }
    return { result, attempts: [] };
  }

  async #runChild(
    parent: TaskRecord,
    index: number,
    item: JsonValue,
    order: string[],
    failover: boolean,
    active: ActiveTask,
  ): Promise<TaskResult> {
    const childId = `${parent.task_id}.${index}`;
    const existing = await this.#store.getTask(childId);
    if (existing?.result && finished(existing.status)) return existing.result;
    if (active.cancelled) return this.#failedResult(parent, [], { code: 'FM_ERR_CANCELLED', message: 'Task was cancelled' }, Date.now());
    // Start item i on node i mod n, so the items spread over every node before any node takes two.
    const rotated = [...order.slice(index % order.length), ...order.slice(0, index % order.length)];
    const parentTarget = parent.target as Target;
    const childTarget: Target = { kind: 'failover_chain', nodes: failover ? rotated : rotated.slice(0, 1) };
    if (parentTarget.required_capabilities?.length) childTarget.required_capabilities = parentTarget.required_capabilities;
    const child: TaskRecord = existing ?? {
      task_id: childId,
      run_id: parent.run_id,
      step_id: parent.step_id,
      tool_name: parent.tool_name,
      tool_args: resolveTemplates(parent.tool_args, { item, item_index: index }) as JsonValue,
      target: childTarget as JsonValue,
      timeout_ms: parent.timeout_ms,
      status: TaskStatus.Pending,
      attempts: [],
      result: null,
      created_at: new Date().toISOString(),
      updated_at: new Date().toISOString(),
      idempotency_key: null,
      options: {
        ...(parent.options?.retry
          ? { retry: { ...parent.options.retry, failover } }
          : { retry: { max_attempts: failover ? order.length : 1, backoff_ms: 0 } }),
        parent_task_id: parent.task_id,
      } as StoredOptions,
      expires_at: null,
    };
    if (!existing) await this.#store.insertTask(child);
    return this.execute(child);
  }

  #checkFanOut(toolName: string, target: Target, items: number): void {
    const minNodes = target.kind === 'load_balanced' ? (target.min_nodes ?? 2) : 1;
    const base: Target = { kind: 'local', required_capabilities: target.required_capabilities ?? [] };
    const available = this.#scheduler.candidates(toolName, base).length;
    if (available < minNodes && items > 0) {
      throw new FieldmeshError(
        'FM_ERR_NO_CAPABLE_NODE',
        `load_balanced needs ${minNodes} nodes with tool:${toolName}; ${available} online`,
        {
          details: { min_nodes: minNodes, available, required_capabilities: [`tool:${toolName}`, ...(target.required_capabilities ?? [])] },
        },
      );
    }
  }

  /** Throws unless some node could take the task now (or, for a queued explicit target, once it is back). */
  #place(toolName: string, target: Target, offline: OfflineBehavior | undefined, payload: number): void {
    if (target.kind === 'explicit') {
      const entry = this.#scheduler.checkExplicit(toolName, target.node_id, target);
      if (!isDispatchable(entry) && offline?.mode !== 'queue') {
        throw new FieldmeshError('FM_ERR_NODE_OFFLINE', `Node "${target.node_id}" is ${entry.record.status}`, {
          details: { node_id: target.node_id, status: entry.record.status },
        });
      }
      return;
    }
    this.#scheduler.best(toolName, target, undefined, payload);
  }

  #validateArgs(toolName: string, target: Target, args: unknown): void {
    const descriptor = this.#descriptorFor(toolName, target);
    if (descriptor) this.#checkArgs(toolName, descriptor.input_schema, args);
  }

  #descriptorFor(toolName: string, target: Target) {
    if (target.kind === 'explicit') return this.#registry.get(target.node_id)?.tools.get(toolName);
    for (const id of this.#registry.withCapability(`tool:${toolName}`) ?? []) {
      const d = this.#registry.get(id)?.tools.get(toolName);
      if (d) return d;
    }
    return undefined;
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
      const unsent = () =>
        pending.settle(failure({ code: 'FM_ERR_CONNECTION_LOST', message: `Node "${nodeId}" is not connected`, retryable: true }));
      const conn = this.#registry.get(nodeId)?.conn;
      if (!conn) {
        unsent();
        return;
      }
      this.outbox.send(conn, {
        fields: {
          task_id: task.task_id,
          attempt,
          node_id: nodeId,
          tool_name: task.tool_name,
          tool_args: task.tool_args,
          timeout_ms: task.timeout_ms,
        },
        wanted: () => !settled,
        unsent,
      });
    });
  }

  #cancelActive(taskId: string, active: ActiveTask): void {
    active.cancelled = true;
    active.wake?.();
    const current = active.current;
    if (current) {
      this.#send(current.nodeId, encodeFrame('CANCEL', { task_id: taskId, attempt: current.attempt, reason: 'cancelled by user' }));
      current.settle(failure({ code: 'FM_ERR_CANCELLED', message: 'Task was cancelled', retryable: false }));
    }
  }

  /** Sleeps up to `ms`, cut short by a wake (cancel, a node coming online, shutdown). */
  #sleep(active: ActiveTask, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        if (active.wake === done) active.wake = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      active.wake = done;
    });
  }

  #waitersOf(taskId: string): Set<(task: TaskRecord) => void> {
    let set = this.#waiters.get(taskId);
    if (!set) {
      set = new Set();
      this.#waiters.set(taskId, set);
    }
    return set;
  }

  #finishedTask(taskId: string): Promise<TaskRecord> {
    return new Promise((resolve) => this.#waitersOf(taskId).add(resolve));
  }

  #resultOf(task: TaskRecord): TaskResult {
    return (
      task.result ??
      this.#failedResult(task, task.attempts, { code: 'FM_ERR_INTERNAL', message: 'Task ended without a result' }, Date.now())
    );
  }

  #failedResult(task: TaskRecord, attempts: AttemptRecord[], error: ErrorBody, started: number): TaskResult {
    return {
      ok: false,
      task_id: task.task_id,
      node_id: attempts.at(-1)?.node_id ?? null,
      output: null,
      execution_path: executionPath(attempts),
      verified: false,
      degraded: attempts.length > 1,
      duration_ms: Date.now() - started,
      result_hash: null,
      error,
    };
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

  #compile(schema: Record<string, unknown>): ValidateFunction | undefined {
    // A node's descriptors keep their schema objects, so most calls find the validator without serialising the schema.
    const known = this.#validatorsBySchema.get(schema);
    if (known) return known;
    const cacheKey = JSON.stringify(schema);
    let validate = this.#validators.get(cacheKey);
    if (!validate) {
      try {
        validate = this.#ajv.compile(schema);
      } catch {
        return undefined; // a node advertised a schema Ajv cannot compile; the node checks its own data
      }
      if (this.#validators.size > 1000) this.#validators.clear();
      this.#validators.set(cacheKey, validate);
    }
    this.#validatorsBySchema.set(schema, validate);
    return validate;
  }

  #checkArgs(toolName: string, schema: Record<string, unknown>, args: unknown): void {
    const validate = this.#compile(schema);
    if (validate && !validate(args)) {
      const e = validate.errors?.[0];
      const where = e ? `tool_args${e.instancePath}` : 'tool_args';
      throw new FieldmeshError('FM_ERR_INVALID_ARGS', `Invalid arguments for tool "${toolName}": ${where} ${e?.message ?? 'is invalid'}`, {
        details: { tool_name: toolName, path: where },
      });
    }
  }
}

/** Bytes of a task's arguments as JSON, what a node's max_payload_bytes policy limits. */
function payloadSize(args: unknown): number {
  return Buffer.byteLength(JSON.stringify(args ?? {}));
}

/** `["a"]` for a first-try success, else every attempt marked `(failed)` or `(success)`. */
export function executionPath(attempts: readonly AttemptRecord[]): string[] {
  if (attempts.length === 1 && attempts[0]?.outcome === 'success') return [attempts[0].node_id];
  return attempts.map((a) => `${a.node_id} (${a.outcome === 'success' ? 'success' : 'failed'})`);
}

/**
 * A signature as the replay check knows it: its bytes in canonical base64, so the same signature written another
 * way (padding left off, whitespace, other trailing bits) is still the same signature.
 */
function signatureKey(signature: string): string {
  return Buffer.from(signature, 'base64').toString('base64');
}
