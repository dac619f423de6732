/**
 * Supervised approvals: a task of a `supervised` tool is stored as
 * `awaiting_approval` with the time its approval expires, and waits, holding
 * no node, until a person approves or rejects it or the time runs out. Every
 * decision is a conditional write in the store (only while the task still
 * awaits approval), so an approval racing the timeout or a second approver
 * has exactly one winner, and a gateway restarted in between finds the task
 * still waiting with its original deadline.
 */
import { EventEmitter } from 'node:events';
import { type ErrorBody, FieldmeshError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { type ApprovalRecord, type Store, type TaskRecord, type TaskResult, TaskStatus } from '../store/types.js';
import { type CompiledToolPolicy, checkToolPolicy } from './tool-policy.js';

export type ApprovalDecision = 'approved' | 'rejected';

export interface ApprovalEvents {
  /** A task's approval was decided (approved, rejected or timed out); the record holds the decision. */
  decided: [task: TaskRecord];
}

/** The error a task ends with when its approval is not given; undefined once approved. */
export function approvalError(task: Pick<TaskRecord, 'task_id' | 'tool_name'>, approval: ApprovalRecord): ErrorBody | undefined {
  if (approval.decision === 'approved') return undefined;
  const details: Record<string, unknown> = { task_id: task.task_id, tool_name: task.tool_name };
  if (approval.decision === 'rejected') {
    if (approval.reason) details.reason = approval.reason;
    return {
      code: 'FM_ERR_APPROVAL_REJECTED',
      message: `Task "${task.task_id}" (tool "${task.tool_name}") was rejected${approval.reason ? `: ${approval.reason}` : ''}`,
      retryable: false,
      details,
    };
  }
  if (approval.decision === 'timed_out') {
    details.expires_at = approval.expires_at;
    return {
      code: 'FM_ERR_APPROVAL_TIMEOUT',
      message: `Task "${task.task_id}" (tool "${task.tool_name}") was neither approved nor rejected by ${approval.expires_at}`,
      retryable: false,
      details,
    };
  }
  return { code: 'FM_ERR_CANCELLED', message: 'Task was cancelled before its approval was decided', retryable: false };
}

function failedResult(task: TaskRecord, error: ErrorBody): TaskResult {
  return {
    ok: false,
    task_id: task.task_id,
    node_id: null,
    output: null,
    execution_path: [],
    verified: false,
    degraded: false,
    duration_ms: Date.now() - Date.parse(task.created_at),
    result_hash: null,
    error,
  };
}

export class Approvals extends EventEmitter<ApprovalEvents> {
  readonly #store: Store;
  readonly #policy: CompiledToolPolicy;
  readonly #logger: Logger;
  readonly #wake: (taskId: string) => void;
  /** Decisions made in this process that the waiting task has not picked up yet. */
  readonly #decided = new Map<string, ApprovalRecord>();

  /** `wake` tells the dispatcher that a waiting task has its decision. */
  constructor(store: Store, policy: CompiledToolPolicy, logger: Logger, wake: (taskId: string) => void) {
    super();
    this.#store = store;
    this.#policy = policy;
    this.#logger = logger;
    this.#wake = wake;
  }

  /** Throws FM_ERR_TOOL_DENIED for a denied tool; otherwise whether a task of this tool must wait for an approval. */
  needsApproval(toolName: string): boolean {
    return checkToolPolicy(this.#policy, toolName) === 'supervised';
  }

  /** A fresh approval request, expiring after the configured approval timeout. */
  request(now: string): ApprovalRecord {
    return {
      requested_at: now,
      expires_at: new Date(Date.parse(now) + this.#policy.approvalTimeoutMs).toISOString(),
      decision: null,
      decided_at: null,
      reason: null,
    };
  }

  /** Tasks waiting for a decision, oldest first. */
  pending(): Promise<TaskRecord[]> {
    return this.#store.listTasksByStatus(TaskStatus.AwaitingApproval);
  }

  /**
   * Approves (the task goes on to placement) or rejects (it fails with
   * FM_ERR_APPROVAL_REJECTED) a task awaiting approval; any other task is
   * FM_ERR_NOT_AWAITING_APPROVAL.
   */
  async decide(taskId: string, decision: ApprovalDecision, reason?: string): Promise<TaskRecord> {
    const task = await this.#store.getTask(taskId);
    if (!task) throw new FieldmeshError('FM_ERR_TASK_NOT_FOUND', `Task "${taskId}" does not exist`, { details: { task_id: taskId } });
    const now = new Date().toISOString();
    if (task.status === TaskStatus.AwaitingApproval && task.approval) {
      const approval: ApprovalRecord = { ...task.approval, decision, decided_at: now, reason: reason ?? null };
      const error = approvalError(task, approval);
      const patch =
        decision === 'approved'
          ? { status: TaskStatus.Pending, approval }
          : { status: TaskStatus.Failed, approval, result: failedResult(task, error!) };
      if (await this.#store.transitionTask(taskId, TaskStatus.AwaitingApproval, patch)) {
        const decided: TaskRecord = { ...task, ...patch, updated_at: now };
        this.#logger.info(`task ${decision}`, { task_id: taskId, tool: task.tool_name, reason: reason ?? null });
        this.#decided.set(taskId, approval);
        this.emit('decided', decided);
        this.#wake(taskId);
        return decided;
      }
    }
    const current = (await this.#store.getTask(taskId)) ?? task;
    throw new FieldmeshError('FM_ERR_NOT_AWAITING_APPROVAL', `Task "${taskId}" is not awaiting approval (it is ${current.status})`, {
      details: { task_id: taskId, status: current.status, approval: current.approval ?? null },
    });
  }

  /** The decision made for a waiting task since it last looked, if any. */
  take(taskId: string): ApprovalRecord | undefined {
    const approval = this.#decided.get(taskId);
    this.#decided.delete(taskId);
    return approval;
  }

  /** Fails a task whose approval expired; if a decision got there first, returns that decision instead. */
  async expire(task: TaskRecord): Promise<ApprovalRecord> {
    const approval: ApprovalRecord = { ...task.approval!, decision: 'timed_out', decided_at: new Date().toISOString() };
    const error = approvalError(task, approval)!;
    if (
      await this.#store.transitionTask(task.task_id, TaskStatus.AwaitingApproval, {
        status: TaskStatus.Failed,
        approval,
        result: failedResult(task, error),
      })
    ) {
      this.#logger.warn('approval timed out', { task_id: task.task_id, tool: task.tool_name, expires_at: approval.expires_at });
      this.#decided.delete(task.task_id);
      this.emit('decided', { ...task, status: TaskStatus.Failed, approval });
      return approval;
    }
    const stored = await this.#store.getTask(task.task_id);
    this.#decided.delete(task.task_id);
    return stored?.approval ?? { ...task.approval!, decision: null };
  }
}
