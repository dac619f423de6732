/**
 * Workflow engine: steps form a DAG (`depends_on`, defaulting to the step
 * before), independent steps run in parallel, data flows through `{{…}}`
 * templates, and policies are checked before a run starts. Every step
 * transition is committed to the run record before the engine acts on it, so
 * a gateway killed mid-run resumes the run under the same run_id: finished
 * steps are kept, the step in flight goes on as its task's next attempt.
 */
import { type ErrorBody, FieldmeshError, toErrorBody } from '../core/errors.js';
import { newId } from '../core/ids.js';
import type { Logger } from '../core/logger.js';
import type { StepState, TimelineEntry, Workflow, WorkflowRunResult, WorkflowStep } from '../protocol/api.js';
import type { JsonValue } from '../protocol/json.js';
import { resultHash } from '../protocol/signing.js';
import type { Target } from '../protocol/target.js';
import { type RunRecord, RunStatus, type Store, type TaskRecord, type TaskResult, TaskStatus } from '../store/types.js';
import type { Dispatcher } from './dispatcher.js';
import type { Registry } from './registry.js';
import { isDispatchable } from './scheduler.js';
import { resolveTemplates, type TemplateContext } from './templates.js';

export interface WorkflowEngineOptions {
  logger: Logger;
  /** Environment variables `{{env.NAME}}` may read; no other is visible. */
  envAllow: readonly string[];
  /** Tools that send data off the mesh; `privacy_strict` requires redaction before them. */
  egressTools: readonly string[];
}

/** A validated workflow: each step with its resolved dependencies, in a topological order. */
export interface CompiledWorkflow {
  workflow: Workflow;
  steps: Map<string, WorkflowStep & { deps: string[] }>;
  order: string[];
}

const TEMPLATE_REF = /\{\{\s*([^{}]+?)\s*\}\}/g;

function invalid(workflow: Workflow, message: string, details: Record<string, unknown> = {}): FieldmeshError {
  return new FieldmeshError('FM_ERR_INVALID_WORKFLOW', `Workflow "${workflow.workflow_id}": ${message}`, {
    details: { workflow_id: workflow.workflow_id, ...details },
  });
}

/** Every `{{path}}` referenced anywhere in a value. */
export function templateRefs(value: unknown, out: string[] = []): string[] {
  if (typeof value === 'string') for (const m of value.matchAll(TEMPLATE_REF)) out.push(m[1]!.trim());
  else if (Array.isArray(value)) for (const v of value) templateRefs(v, out);
  else if (value !== null && typeof value === 'object') for (const v of Object.values(value)) templateRefs(v, out);
  return out;
}

function stepRef(ref: string): string | undefined {
  const m = /^steps\.([A-Za-z0-9_.-]+?)\.(output|status)\b/.exec(ref) ?? /^steps\.([A-Za-z0-9_-]+)$/.exec(ref);
  return m?.[1];
}

/**
 * Checks ids, dependencies and template references, and orders the steps
 * (Kahn's algorithm). Unknown ids, cycles, duplicate ids, and references to
 * steps that are not ancestors are rejected before anything runs.
 */
export function compileWorkflow(workflow: Workflow): CompiledWorkflow {
  const steps = new Map<string, WorkflowStep & { deps: string[] }>();
  let previous: string | undefined;
  for (const step of workflow.steps) {
    if (steps.has(step.step_id)) throw invalid(workflow, `two steps have step_id "${step.step_id}"`, { step_id: step.step_id });
    const deps = step.depends_on ?? (previous === undefined ? [] : [previous]);
    steps.set(step.step_id, { ...step, deps: [...new Set(deps)] });
    previous = step.step_id;
  }
  for (const step of steps.values()) {
    for (const dep of step.deps) {
      if (!steps.has(dep))
        throw invalid(workflow, `step "${step.step_id}" depends on unknown step "${dep}"`, { step_id: step.step_id, depends_on: dep });
      if (dep === step.step_id) throw invalid(workflow, `step "${step.step_id}" depends on itself`, { step_id: step.step_id });
    }
  }
  const indegree = new Map([...steps.keys()].map((id) => [id, steps.get(id)!.deps.length]));
  const children = new Map<string, string[]>([...steps.keys()].map((id) => [id, []]));
  for (const step of steps.values()) for (const dep of step.deps) children.get(dep)!.push(step.step_id);
  const queue = [...steps.keys()].filter((id) => indegree.get(id) === 0);
  const order: string[] = [];
  while (queue.length > 0) {
    const id = queue.shift()!;
    order.push(id);
    for (const child of children.get(id) ?? []) {
      indegree.set(child, indegree.get(child)! - 1);
      if (indegree.get(child) === 0) queue.push(child);
    }
  }
  if (order.length !== steps.size) {
    const cyclic = [...steps.keys()].filter((id) => !order.includes(id));
    throw invalid(workflow, `steps form a cycle: ${cyclic.join(' → ')}`, { steps: cyclic });
  }
  const compiled: CompiledWorkflow = { workflow, steps, order };
  for (const step of steps.values()) {
    const ancestors = ancestorsOf(compiled, step.step_id);
    for (const ref of templateRefs([step.tool_args, step.for_each, step.target])) {
      const root = ref.split(/[.[]/)[0];
      if (root !== 'input' && root !== 'steps' && root !== 'env' && root !== 'item' && root !== 'item_index') {
        throw invalid(workflow, `step "${step.step_id}" uses "{{${ref}}}"; templates start with input., steps., env., item or item_index`, {
          step_id: step.step_id,
        });
      }
      const target = root === 'steps' ? stepRef(ref) : undefined;
      if (root === 'steps' && (!target || !steps.has(target))) {
        throw invalid(workflow, `step "${step.step_id}" references unknown step in "{{${ref}}}"`, { step_id: step.step_id, ref });
      }
      if (target && !ancestors.has(target)) {
        throw invalid(workflow, `step "${step.step_id}" reads "{{${ref}}}" but does not depend on step "${target}"`, {
          step_id: step.step_id,
          ref,
        });
      }
    }
  }
  return compiled;
}

/** Every step a step depends on, directly or through its dependencies. */
export function ancestorsOf(compiled: CompiledWorkflow, stepId: string): Set<string> {
  const seen = new Set<string>();
  const stack = [...(compiled.steps.get(stepId)?.deps ?? [])];
  while (stack.length > 0) {
    const id = stack.pop()!;
    if (seen.has(id)) continue;
    seen.add(id);
    stack.push(...(compiled.steps.get(id)?.deps ?? []));
  }
  return seen;
}

interface LiveRun {
  record: RunRecord;
  compiled: CompiledWorkflow;
  steps: Record<string, StepState>;
  started: number;
  cancelled: boolean;
  done: Promise<WorkflowRunResult>;
}

function newStepState(): StepState {
  return {
    status: 'waiting',
    task_id: null,
    node_id: null,
    node: null,
    started_at: null,
    finished_at: null,
    duration_ms: null,
    attempts: 0,
    verified: false,
    degraded: false,
    result_hash: null,
    execution_path: [],
  };
}

export class WorkflowEngine {
  readonly #store: Store;
  readonly #dispatcher: Dispatcher;
  readonly #registry: Registry;
  readonly #opts: WorkflowEngineOptions;
  readonly #live = new Map<string, LiveRun>();

  constructor(store: Store, dispatcher: Dispatcher, registry: Registry, opts: WorkflowEngineOptions) {
    this.#store = store;
    this.#dispatcher = dispatcher;
    this.#registry = registry;
    this.#opts = opts;
    dispatcher.approvals.on('decided', (task) => this.#onApprovalDecided(task));
  }

  /** Validates and policy-checks a workflow, stores the run, and starts it. */
  async start(workflow: Workflow, input: Record<string, unknown> = {}): Promise<{ run_id: string; done: Promise<WorkflowRunResult> }> {
    const compiled = compileWorkflow(workflow);
    this.checkPolicies(compiled);
    const now = new Date().toISOString();
    const steps: Record<string, StepState> = {};
    for (const id of compiled.order) steps[id] = newStepState();
    const record: RunRecord = {
      run_id: newId('run'),
      trace_id: newId('trace'),
      workflow_id: workflow.workflow_id,
      workflow: workflow as unknown as JsonValue,
      input: input as JsonValue,
      status: RunStatus.Running,
      steps: steps as unknown as Record<string, JsonValue>,
      timeline: [],
      result: null,
      created_at: now,
      updated_at: now,
    };
    await this.#store.insertRun(record);
    const live = this.#drive(record, compiled, steps);
    return { run_id: record.run_id, done: live.done };
  }

  /** Runs a workflow and waits for its result. */
  async run(workflow: Workflow, input: Record<string, unknown> = {}): Promise<WorkflowRunResult> {
    return (await this.start(workflow, input)).done;
  }

  /** Resolves with the run's result once it finishes, or undefined after `ms`. */
  async wait(runId: string, ms: number): Promise<WorkflowRunResult | undefined> {
    const live = this.#live.get(runId);
    if (!live) return undefined;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), ms);
    });
    const result = await Promise.race([live.done, timeout]);
    clearTimeout(timer);
    return result;
  }

  /** Resumes every run an earlier gateway process left running. */
  async resumeRunning(): Promise<number> {
    const runs = await this.#store.listRuns({ status: RunStatus.Running });
    for (const record of runs) {
      let compiled: CompiledWorkflow;
      try {
        compiled = compileWorkflow(record.workflow as unknown as Workflow);
      } catch (err) {
        await this.#store.updateRun(record.run_id, {
          status: RunStatus.Failed,
          result: { ok: false, error: toErrorBody(err) } as unknown as JsonValue,
        });
        continue;
      }
      const steps = record.steps as unknown as Record<string, StepState>;
      this.#opts.logger.info('resuming workflow run', { run_id: record.run_id, workflow_id: record.workflow_id });
      this.#drive(record, compiled, steps);
    }
    return runs.length;
  }

  async cancel(runId: string): Promise<RunRecord> {
    const record = await this.#store.getRun(runId);
    if (!record) throw new FieldmeshError('FM_ERR_RUN_NOT_FOUND', `Run "${runId}" does not exist`, { details: { run_id: runId } });
    const live = this.#live.get(runId);
    if (!live || record.status !== RunStatus.Running) {
      throw new FieldmeshError('FM_ERR_TASK_FINISHED', `Run "${runId}" has already finished (${record.status})`, {
        details: { run_id: runId, status: record.status },
      });
    }
    live.cancelled = true;
    for (const state of Object.values(live.steps)) {
      if ((state.status === 'running' || state.status === 'awaiting_approval') && state.task_id) {
        await this.#dispatcher.cancel(state.task_id).catch(() => undefined);
      }
    }
    await live.done;
    return (await this.#store.getRun(runId))!;
  }

  /** Policies of the original design, checked before the run starts; a violation says why. */
  checkPolicies(compiled: CompiledWorkflow): void {
    const policies = new Set(compiled.workflow.policies ?? []);
    const violation = (policy: string, message: string, details: Record<string, unknown> = {}) =>
      new FieldmeshError('FM_ERR_POLICY_VIOLATION', `Policy ${policy}: ${message}`, { details: { policy, ...details } });
    for (const id of compiled.order) {
      const step = compiled.steps.get(id)!;
      // The gateway tool policy: a run that would reach a denied tool is refused before any step runs.
      try {
        this.#dispatcher.approvals.needsApproval(step.tool_name);
      } catch (err) {
        throw new FieldmeshError('FM_ERR_TOOL_DENIED', `Step "${id}": ${(err as Error).message}`, {
          details: { step_id: id, tool_name: step.tool_name },
        });
      }
      if (policies.has('offline_capable')) {
        const holders = [...(this.#registry.withCapability(`tool:${step.tool_name}`) ?? [])].map((n) => this.#registry.get(n)!);
        if (!holders.some((e) => e && isDispatchable(e))) {
          throw violation('offline_capable', `step "${id}" needs tool "${step.tool_name}", which no node in the mesh offers now`, {
            step_id: id,
          });
        }
        if (holders.some((e) => e?.tools.get(step.tool_name)?.network === true)) {
          throw violation('offline_capable', `step "${id}" uses tool "${step.tool_name}", which needs a network beyond the mesh`, {
            step_id: id,
          });
        }
      }
      if (policies.has('schema_strict')) {
        if (!this.#dispatcher.describeTool(step.tool_name)) {
          throw violation('schema_strict', `step "${id}" uses tool "${step.tool_name}", whose schema no node in the mesh advertises`, {
            step_id: id,
          });
        }
        // Arguments without templates can be checked now; the rest once their templates resolve.
        if (step.for_each === undefined && templateRefs(step.tool_args ?? {}).length === 0) {
          try {
            this.#dispatcher.checkArgs(step.tool_name, step.target ?? { kind: 'local' }, step.tool_args ?? {});
          } catch (err) {
            throw violation('schema_strict', `step "${id}": ${(err as Error).message}`, { step_id: id });
          }
        }
      }
      if (policies.has('privacy_strict') && this.#opts.egressTools.includes(step.tool_name)) {
        this.#checkPrivacy(compiled, id, (message) => violation('privacy_strict', message, { step_id: id }));
      }
    }
  }

  /** Text that reaches an egress tool from the input or another step must pass a pii_redact step first. */
  #checkPrivacy(compiled: CompiledWorkflow, id: string, fail: (message: string) => FieldmeshError): void {
    const step = compiled.steps.get(id)!;
    const ancestors = ancestorsOf(compiled, id);
    const redacts = [...ancestors].filter((a) => compiled.steps.get(a)?.tool_name === 'pii_redact');
    for (const ref of templateRefs([step.tool_args, step.for_each])) {
      if (ref.startsWith('input')) {
        const covered = redacts.some((r) =>
          templateRefs(compiled.steps.get(r)?.tool_args ?? {}).some((x) => x === ref || ref.startsWith(`${x}.`) || x.startsWith(`${ref}.`)),
        );
        if (!covered) {
          throw fail(`step "${id}" (${step.tool_name}) receives "{{${ref}}}" without depending on a pii_redact step over that text`);
        }
      } else if (ref.startsWith('steps.')) {
        const source = stepRef(ref)!;
        const sourceIsRedacted =
          compiled.steps.get(source)?.tool_name === 'pii_redact' || redacts.some((r) => ancestorsOf(compiled, source).has(r));
        if (!sourceIsRedacted) {
          throw fail(`step "${id}" (${step.tool_name}) receives "{{${ref}}}" from step "${source}", which no pii_redact step comes before`);
        }
      }
    }
  }

  #drive(record: RunRecord, compiled: CompiledWorkflow, steps: Record<string, StepState>): LiveRun {
    let resolveDone!: (r: WorkflowRunResult) => void;
    const live: LiveRun = {
      record,
      compiled,
      steps,
      started: Date.parse(record.created_at),
      cancelled: false,
      done: new Promise((r) => {
        resolveDone = r;
      }),
    };
    this.#live.set(record.run_id, live);
    void this.#loop(live).then(
      (result) => {
        this.#live.delete(record.run_id);
        resolveDone(result);
      },
      (err: unknown) => {
        this.#opts.logger.error('workflow run crashed', { run_id: record.run_id, error: String(err) });
        this.#live.delete(record.run_id);
        resolveDone(this.#result(live, { code: 'FM_ERR_INTERNAL', message: 'Workflow engine error' }));
      },
    );
    return live;
  }

  async #loop(live: LiveRun): Promise<WorkflowRunResult> {
    const { compiled, steps } = live;
    const running = new Map<string, Promise<void>>();
    let failure: ErrorBody | undefined;
    // Steps that were in flight when an earlier process stopped go on where they were.
    for (const id of compiled.order) {
      const status = steps[id]!.status;
      if (status === 'running' || status === 'awaiting_approval') running.set(id, this.#runStep(live, id));
    }
    for (;;) {
      const required = compiled.order.find((id) => steps[id]!.status === 'failed' && compiled.steps.get(id)!.on_failure !== 'continue');
      if (required && !failure) failure = this.#stepError(required, steps[required]!);
      if (!failure && !live.cancelled) {
        for (const id of compiled.order) {
          const state = steps[id]!;
          if (state.status !== 'waiting' || running.has(id)) continue;
          const deps = compiled.steps.get(id)!.deps.map((d) => steps[d]!);
          if (deps.some((d) => d.status === 'skipped' || d.status === 'cancelled')) {
            state.status = 'skipped';
            continue;
          }
          if (deps.every((d) => d.status === 'succeeded' || d.status === 'failed')) running.set(id, this.#runStep(live, id));
        }
      }
      if (running.size === 0) break;
      const finished = await Promise.race([...running.entries()].map(([id, p]) => p.then(() => id)));
      running.delete(finished);
    }
    for (const state of Object.values(steps)) if (state.status === 'waiting') state.status = live.cancelled ? 'cancelled' : 'skipped';
    if (live.cancelled && !failure) failure = { code: 'FM_ERR_CANCELLED', message: 'Run was cancelled' };
    const result = this.#result(live, failure);
    await this.#store.updateRun(live.record.run_id, {
      status: result.status as RunStatus,
      steps: steps as unknown as Record<string, JsonValue>,
      timeline: result.timeline as unknown as JsonValue[],
      result: result as unknown as JsonValue,
    });
    this.#opts.logger.info('workflow finished', {
      run_id: live.record.run_id,
      workflow_id: live.record.workflow_id,
      ok: result.ok,
      duration_ms: result.duration_ms,
    });
    return result;
  }

  async #runStep(live: LiveRun, id: string): Promise<void> {
    const step = live.compiled.steps.get(id)!;
    const state = live.steps[id]!;
    const policies = new Set(live.compiled.workflow.policies ?? []);
    try {
      let task = state.task_id ? await this.#store.getTask(state.task_id) : undefined;
      if (!task) {
        // The step is marked running with its task id before the task exists, so a crash in between still finds it.
        state.status = 'running';
        state.task_id ??= newId('task');
        state.started_at = new Date().toISOString();
        await this.#persist(live);
        const ctx = this.#context(live);
        const target = step.target ? (resolveTemplates(step.target, ctx) as Target) : undefined;
        ({ task } = await this.#dispatcher.submit(
          {
            task_id: state.task_id,
            tool_name: step.tool_name,
            tool_args: step.tool_args,
            target,
            timeout_ms: step.timeout_ms,
            retry: step.retry,
            offline_behavior: step.offline_behavior,
            for_each: step.for_each,
            run_id: live.record.run_id,
            step_id: id,
          },
          ctx,
        ));
      }
      if (task.status === TaskStatus.AwaitingApproval && task.approval) {
        // The run shows the step waiting for a person; the decision comes through #onApprovalDecided.
        state.status = 'awaiting_approval';
        state.approval = task.approval;
        await this.#persist(live);
      }
      const ended = task.status === TaskStatus.Succeeded || task.status === TaskStatus.Failed || task.status === TaskStatus.Cancelled;
      const result = ended ? (task.result ?? cancelledResult(task.task_id)) : await this.#dispatcher.execute(task);
      if (result.ok && policies.has('schema_strict')) this.#dispatcher.checkOutput(step.tool_name, result.node_id, result.output);
      this.#record(state, result);
      // A step stopped by the run's cancel is cancelled, not failed: the run ends as cancelled, not as a step failure.
      if (!result.ok && live.cancelled && result.error?.code === 'FM_ERR_CANCELLED') state.status = 'cancelled';
      if (policies.has('audit_full')) await this.#audit(live, id, task.task_id, task.tool_args);
    } catch (err) {
      state.status = 'failed';
      state.finished_at = new Date().toISOString();
      state.duration_ms = state.started_at ? Date.parse(state.finished_at) - Date.parse(state.started_at) : 0;
      state.error = toErrorBody(err);
      delete state.output;
    }
    await this.#persist(live);
  }

  /** A decision on a step's approval shows in the run at once: approved steps run, the others end with the task. */
  #onApprovalDecided(task: TaskRecord): void {
    const live = task.run_id ? this.#live.get(task.run_id) : undefined;
    const state = task.step_id ? live?.steps[task.step_id] : undefined;
    if (!live || !state || state.task_id !== task.task_id || !task.approval) return;
    state.approval = task.approval;
    if (task.approval.decision === 'approved' && state.status === 'awaiting_approval') state.status = 'running';
    this.#persist(live).catch((err: unknown) =>
      this.#opts.logger.error('could not persist an approval decision', { run_id: live.record.run_id, error: String(err) }),
    );
  }

  #record(state: StepState, result: TaskResult): void {
    state.status = result.ok ? 'succeeded' : 'failed';
    state.node_id = result.node_id;
    state.node = result.node_id ? (this.#registry.get(result.node_id)?.record.name ?? result.node_id) : null;
    state.finished_at = new Date().toISOString();
    state.duration_ms = result.duration_ms;
    state.attempts = result.execution_path.length;
    state.verified = result.verified;
    state.degraded = result.degraded;
    state.result_hash = result.result_hash;
    state.execution_path = result.execution_path;
    if (result.ok) state.output = result.output;
    else state.error = result.error ?? { code: 'FM_ERR_EXECUTION', message: 'Step failed' };
  }

  async #audit(live: LiveRun, stepId: string, taskId: string, args: JsonValue): Promise<void> {
    const task = await this.#store.getTask(taskId);
    for (const a of task?.attempts ?? []) {
      await this.#store.appendAudit(live.record.run_id, {
        run_id: live.record.run_id,
        step: stepId,
        task_id: taskId,
        attempt: a.attempt,
        node_id: a.node_id,
        input_hash: resultHash(args),
        output_hash: a.result_hash,
        node_signature: a.node_signature ?? null,
        signed_at: a.signed_at ?? null,
        ...(a.result_batch ? { result_batch: a.result_batch } : {}),
        verified: a.verified === true,
        recorded_at: new Date().toISOString(),
      });
    }
  }

  #context(live: LiveRun): TemplateContext {
    const steps: Record<string, { output: unknown; status: string }> = {};
    for (const [id, s] of Object.entries(live.steps))
      if (s.status === 'succeeded' || s.status === 'failed') steps[id] = { output: s.output, status: s.status };
    const env: Record<string, string> = {};
    for (const name of this.#opts.envAllow) {
      const v = process.env[name];
      if (v !== undefined) env[name] = v;
    }
    return { input: live.record.input, steps, env };
  }

  #persist(live: LiveRun): Promise<void> {
    return this.#store.updateRun(live.record.run_id, {
      steps: live.steps as unknown as Record<string, JsonValue>,
      timeline: timelineOf(live.steps) as unknown as JsonValue[],
    });
  }

  #stepError(id: string, state: StepState): ErrorBody {
    const cause = state.error ?? { code: 'FM_ERR_EXECUTION', message: 'step failed' };
    return { code: 'FM_ERR_STEP_FAILED', message: `Step "${id}" failed: ${cause.code}: ${cause.message}`, details: { step: id, cause } };
  }

  #result(live: LiveRun, error: ErrorBody | undefined): WorkflowRunResult {
    const states = live.steps;
    const timeline = timelineOf(states);
    const ran = Object.values(states).filter((s) => s.status === 'succeeded' || s.status === 'failed');
    const outputs: Record<string, JsonValue> = {};
    for (const [id, s] of Object.entries(states)) if (s.status === 'succeeded') outputs[id] = (s.output ?? null) as JsonValue;
    const ok = error === undefined;
    const result: WorkflowRunResult = {
      ok,
      run_id: live.record.run_id,
      trace_id: live.record.trace_id,
      workflow_id: live.record.workflow_id,
      status: ok ? RunStatus.Succeeded : live.cancelled ? RunStatus.Cancelled : RunStatus.Failed,
      verified: ok && ran.every((s) => s.verified),
      execution_path: timeline.flatMap((t) => states[t.step]?.execution_path ?? []),
      timeline,
      degraded: ran.some((s) => s.degraded || s.status === 'failed'),
      outputs,
      duration_ms: Date.now() - live.started,
    };
    if (error) result.error = error;
    return result;
  }
}

function cancelledResult(taskId: string): TaskResult {
  return {
    ok: false,
    task_id: taskId,
    node_id: null,
    output: null,
    execution_path: [],
    verified: false,
    degraded: false,
    duration_ms: 0,
    result_hash: null,
    error: { code: 'FM_ERR_CANCELLED', message: 'Task was cancelled' },
  };
}

/** Timeline entries of the steps that ran, in the order they started. */
export function timelineOf(steps: Record<string, StepState>): TimelineEntry[] {
  return Object.entries(steps)
    .filter(([, s]) => s.started_at && s.status !== 'waiting' && s.status !== 'skipped')
    .sort(([, a], [, b]) => (a.started_at ?? '').localeCompare(b.started_at ?? ''))
    .map(([id, s]) => ({
      step: id,
      node: s.node,
      node_id: s.node_id,
      timestamp: s.started_at ?? '',
      duration_ms: s.duration_ms ?? 0,
      attempts: s.attempts,
      verified: s.verified,
      ok: s.status === 'succeeded',
      result_hash: s.result_hash,
      task_id: s.task_id ?? '',
      ...(s.approval ? { approval: s.approval } : {}),
    }));
}
