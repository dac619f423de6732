/**
 * Workflow engine for the seed workflow format: steps run in order, each one
 * a task through the dispatcher. Every step transition is written to the run
 * record before the engine moves on, so a run's progress is always in the store.
 */
import { type ErrorBody, FieldmeshError, toErrorBody } from '../core/errors.js';
import { newId } from '../core/ids.js';
import type { Logger } from '../core/logger.js';
import type { TimelineEntry, Workflow, WorkflowRunResult } from '../protocol/api.js';
import type { JsonValue } from '../protocol/json.js';
import { type RunRecord, RunStatus, type Store } from '../store/types.js';
import type { Dispatcher } from './dispatcher.js';
import type { Registry } from './registry.js';

export function validateWorkflow(workflow: Workflow): void {
  const seen = new Set<string>();
  for (const step of workflow.steps) {
    if (seen.has(step.step_id)) {
      throw new FieldmeshError(
        'FM_ERR_INVALID_WORKFLOW',
        `Workflow "${workflow.workflow_id}" has two steps with step_id "${step.step_id}"`,
        {
          details: { workflow_id: workflow.workflow_id, step_id: step.step_id },
        },
      );
    }
    seen.add(step.step_id);
  }
}

interface StepState {
  status: 'pending' | 'running' | 'succeeded' | 'failed';
  task_id: string | null;
  [key: string]: JsonValue;
}

export class WorkflowEngine {
  readonly #store: Store;
  readonly #dispatcher: Dispatcher;
  readonly #registry: Registry;
  readonly #logger: Logger;

  constructor(store: Store, dispatcher: Dispatcher, registry: Registry, logger: Logger) {
    this.#store = store;
    this.#dispatcher = dispatcher;
    this.#registry = registry;
    this.#logger = logger;
  }

  async run(workflow: Workflow, input: Record<string, unknown> = {}): Promise<WorkflowRunResult> {
    validateWorkflow(workflow);
    const started = Date.now();
    const now = new Date(started).toISOString();
    const steps: Record<string, StepState> = {};
    for (const s of workflow.steps) steps[s.step_id] = { status: 'pending', task_id: null };
    const run: RunRecord = {
      run_id: newId('run'),
      workflow_id: workflow.workflow_id,
      workflow: workflow as unknown as JsonValue,
      input: input as JsonValue,
      status: RunStatus.Running,
      steps,
      timeline: [],
      result: null,
      created_at: now,
      updated_at: now,
    };
    await this.#store.insertRun(run);
    const timeline: TimelineEntry[] = [];
    const executionPath: string[] = [];
    const outputs: Record<string, JsonValue> = {};
    let degraded = false;
    let verified = true;
    let error: ErrorBody | undefined;

    for (const step of workflow.steps) {
      const state = steps[step.step_id]!;
      const stepStart = new Date();
      let taskId: string | null = null;
      try {
        const ctx = { input, steps: Object.fromEntries(Object.entries(outputs).map(([id, output]) => [id, { output }])) };
        const { task } = await this.#dispatcher.submit(
          {
            tool_name: step.tool_name,
            tool_args: step.tool_args,
            target: step.target,
            timeout_ms: step.timeout_ms,
            retry: step.retry,
            offline_behavior: step.offline_behavior,
            for_each: step.for_each,
            run_id: run.run_id,
            step_id: step.step_id,
          },
          ctx,
        );
        taskId = task.task_id;
        state.status = 'running';
        state.task_id = taskId;
        await this.#store.updateRun(run.run_id, { steps });
        const result = await this.#dispatcher.execute(task);
        executionPath.push(...result.execution_path);
        degraded ||= result.degraded;
        verified &&= result.verified;
        const node = result.node_id ? (this.#registry.get(result.node_id)?.record.name ?? result.node_id) : null;
        timeline.push({
          step: step.step_id,
          node,
          node_id: result.node_id,
          timestamp: stepStart.toISOString(),
          duration_ms: result.duration_ms,
          attempts: result.execution_path.length,
          verified: result.verified,
          ok: result.ok,
          result_hash: result.result_hash,
          task_id: task.task_id,
        });
        if (result.ok) {
          state.status = 'succeeded';
          outputs[step.step_id] = result.output;
        } else {
          state.status = 'failed';
          const cause = result.error ?? { code: 'FM_ERR_EXECUTION', message: 'step failed' };
          error = {
            code: 'FM_ERR_STEP_FAILED',
            message: `Step "${step.step_id}" failed: ${cause.code}: ${cause.message}`,
            details: { step: step.step_id, cause },
          };
        }
      } catch (err) {
        state.status = 'failed';
        verified = false;
        const cause = toErrorBody(err);
        timeline.push({
          step: step.step_id,
          node: null,
          node_id: null,
          timestamp: stepStart.toISOString(),
          duration_ms: Date.now() - stepStart.getTime(),
          attempts: 0,
          verified: false,
          ok: false,
          result_hash: null,
          task_id: taskId ?? '',
        });
        error = {
          code: 'FM_ERR_STEP_FAILED',
          message: `Step "${step.step_id}" failed: ${cause.code}: ${cause.message}`,
          details: { step: step.step_id, cause },
        };
      }
      await this.#store.updateRun(run.run_id, { steps, timeline: timeline as unknown as JsonValue[] });
      if (error) break;
    }

    const ok = error === undefined;
    const result: WorkflowRunResult = {
      ok,
      run_id: run.run_id,
      workflow_id: workflow.workflow_id,
      status: ok ? RunStatus.Succeeded : RunStatus.Failed,
      verified: ok && verified,
      execution_path: executionPath,
      timeline,
      degraded,
      outputs,
      duration_ms: Date.now() - started,
    };
    if (error) result.error = error;
    await this.#store.updateRun(run.run_id, { status: result.status as RunStatus, result: result as unknown as JsonValue });
    this.#logger.info('workflow finished', { run_id: run.run_id, workflow_id: workflow.workflow_id, ok, duration_ms: result.duration_ms });
    return result;
  }
}
