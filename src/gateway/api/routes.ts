/** The v1 HTTP API routes, each with the schemas that also feed the OpenAPI document. */
import { Type } from '@sinclair/typebox';
import { FieldmeshError, isErrorCode, statusOf } from '../../core/errors.js';
import { VERSION } from '../../core/version.js';
import {
  ApprovalDecisionBody,
  ApprovalList,
  NodeCapabilities,
  NodeDetail,
  NodeHealth,
  NodeList,
  type NodeView,
  PairingCodeBody,
  PairingCodeView,
  PairingDecision,
  type PendingNodeView,
  RevocationView,
  RunView,
  SavedWorkflowRunBody,
  TaskAccepted,
  TaskView,
  ToolCallBody,
  ToolCallResult,
  Workflow,
  WorkflowRunBody,
  WorkflowRunResult,
} from '../../protocol/api.js';
import type { JsonValue } from '../../protocol/json.js';
import {
  NodeStatus,
  type PairingRequestRecord,
  type RunRecord,
  RunStatus,
  type Store,
  type TaskRecord,
  TaskStatus,
} from '../../store/types.js';
import type { Dispatcher } from '../dispatcher.js';
import type { FunctionService } from '../functions.js';
import type { GatewayMetrics } from '../metrics.js';
import type { PairingService } from '../pairing.js';
import type { NodeEntry, Registry } from '../registry.js';
import type { StateSync } from '../state-sync.js';
import { compileWorkflow, type WorkflowEngine } from '../workflows.js';
import { registerFunctionRoutes } from './function-routes.js';
import { checker, type Router, reply, textReply } from './http.js';
import { buildOpenApi } from './openapi.js';
import { registerStateRoutes } from './state-routes.js';

export interface ApiDeps {
  store: Store;
  registry: Registry;
  dispatcher: Dispatcher;
  workflows: WorkflowEngine;
  metrics: GatewayMetrics;
  pairing: PairingService;
  state: StateSync;
  functions: FunctionService;
  stats: () => Record<string, number>;
}

const statuses = new Set<string>(Object.values(NodeStatus));
/** Not a registry status: nodes waiting for an operator to approve their pairing. */
const PENDING = 'PENDING';

function pendingView(r: PairingRequestRecord): PendingNodeView {
  return {
    node_id: r.node_id,
    name: r.name ?? r.node_id,
    status: PENDING,
    platform: r.platform ?? 'unknown',
    capabilities: [],
    location: null,
    load: { cpu: 0, memory: 0, in_flight: 0 },
    last_seen: r.requested_at,
    trusted: false,
    fingerprint: r.fingerprint,
    remote_address: r.remote_address,
    requested_at: r.requested_at,
  };
}

export function nodeView(entry: NodeEntry): NodeView {
  const r = entry.record;
  return {
    node_id: r.node_id,
    name: r.name,
    status: r.status,
    platform: r.platform,
    capabilities: r.capabilities,
    location: r.location,
    load: { ...r.load, in_flight: Math.max(r.load.in_flight, entry.inFlight) },
    last_seen: r.last_seen,
    trusted: r.trusted,
    policy: entry.policy,
  };
}

function taskView(task: TaskRecord) {
  const view: Record<string, unknown> = {
    ok: true,
    task_id: task.task_id,
    status: task.status,
    tool_name: task.tool_name,
    target: task.target,
    attempts: task.attempts,
    created_at: task.created_at,
    updated_at: task.updated_at,
  };
  if (task.approval) view.approval = task.approval;
  if (task.result) view.result = task.result;
  return view;
}

function waitMs(query: URLSearchParams): number {
  const raw = query.get('wait_ms');
  if (raw === null) return 0;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(n) || n > 300_000) {
    throw new FieldmeshError('FM_ERR_INVALID_REQUEST', `wait_ms: "${raw}" is not an integer in 0..300000`);
  }
  return n;
}

export function registerRoutes(router: Router, deps: ApiDeps): void {
  const { registry, dispatcher, workflows, store } = deps;
  const getEntry = (id: string) => {
    const entry = registry.get(id);
    if (!entry)
      throw new FieldmeshError('FM_ERR_NODE_NOT_FOUND', `Node "${id}" is not known to this gateway`, { details: { node_id: id } });
    return entry;
  };

  router.add({
    method: 'GET',
    scope: 'public',
    path: '/healthz',
    summary: 'Liveness of the gateway',
    response: Type.Object({ ok: Type.Literal(true), status: Type.String(), version: Type.String(), nodes_online: Type.Integer() }),
    handler: () => {
      let online = 0;
      for (const e of registry.all()) if (e.record.status === NodeStatus.Online) online += 1;
      return { ok: true, status: 'ok', version: VERSION, nodes_online: online, ...deps.stats() };
    },
  });

  router.add({
    method: 'GET',
    scope: 'read',
    path: '/metrics',
    summary: 'Prometheus metrics: invocations and latency by tool and node, nodes by status, queue depths, process',
    handler: async () => textReply(200, await deps.metrics.prom.metrics(), deps.metrics.prom.contentType),
  });

  router.add({
    method: 'GET',
    scope: 'read',
    path: '/v1/metrics/summary',
    summary: 'Invocation summary, optionally for one tool or node',
    query: { tool: { type: 'string', description: 'Only this tool' }, node_id: { type: 'string', description: 'Only this node' } },
    handler: async ({ query }) => {
      await deps.metrics.flush();
      const filter: { tool?: string; node_id?: string } = {};
      const tool = query.get('tool');
      const node = query.get('node_id');
      if (tool) filter.tool = tool;
      if (node) filter.node_id = node;
      return { ok: true, ...filter, ...(await store.summarizeInvocations(filter)) };
    },
  });

  router.add({
    method: 'GET',
    scope: 'public',
    path: '/openapi.json',
    summary: 'This API as an OpenAPI 3.1 document',
    handler: () => buildOpenApi(router.routes),
  });

  router.add({
    method: 'GET',
    scope: 'read',
    path: '/v1/nodes',
    summary: 'List known nodes, optionally by status',
    query: { status: { type: 'string', description: 'online | degraded | offline | syncing | pending (waiting for approval)' } },
    response: NodeList,
    handler: async ({ query }) => {
      const raw = query.get('status');
      const wanted = raw?.toUpperCase();
      if (wanted === PENDING) return { ok: true, nodes: (await deps.pairing.listPending()).map(pendingView) };
      if (wanted !== undefined && !statuses.has(wanted)) {
        throw new FieldmeshError('FM_ERR_INVALID_REQUEST', `status: "${raw}" is not one of online, degraded, offline, syncing, pending`);
      }
      const nodes: NodeView[] = [];
      for (const e of registry.all()) if (!wanted || e.record.status === wanted) nodes.push(nodeView(e));
      nodes.sort((a, b) => a.node_id.localeCompare(b.node_id));
      return { ok: true, nodes };
    },
  });

  router.add({
    method: 'GET',
    scope: 'read',
    path: '/v1/nodes/{node_id}',
    summary: 'One node',
    response: NodeDetail,
    handler: ({ params }) => ({ ok: true, node: nodeView(getEntry(params.node_id!)) }),
  });

  router.add({
    method: 'GET',
    scope: 'read',
    path: '/v1/nodes/{node_id}/health',
    summary: 'Health of one node from its heartbeats',
    response: NodeHealth,
    handler: ({ params }) => {
      const e = getEntry(params.node_id!);
      return {
        ok: true,
        node_id: e.record.node_id,
        status: e.record.status,
        healthy: e.record.status === NodeStatus.Online,
        last_seen: e.record.last_seen,
        seconds_since_heartbeat: Math.max(0, (Date.now() - e.lastSeenMs) / 1000),
        load: nodeView(e).load,
        connected: e.conn !== null,
      };
    },
  });

  router.add({
    method: 'GET',
    scope: 'read',
    path: '/v1/nodes/{node_id}/capabilities',
    summary: 'Capabilities and tool descriptors of one node',
    response: NodeCapabilities,
    handler: ({ params }) => {
      const e = getEntry(params.node_id!);
      return { ok: true, node_id: e.record.node_id, capabilities: e.record.capabilities, tools: [...e.tools.values()] };
    },
  });

  router.add({
    method: 'POST',
    scope: 'admin',
    path: '/v1/pairing-codes',
    summary: 'Create a single-use pairing code for `fieldmesh node --pair` (default life 10 minutes)',
    body: PairingCodeBody,
    response: PairingCodeView,
    handler: async ({ body }) => {
      const req = await body<PairingCodeBody>(checker(PairingCodeBody));
      const code = await deps.pairing.createCode(req);
      return reply(201, { ok: true, ...code, ca_fingerprint: deps.pairing.caFingerprint });
    },
  });

  for (const decision of ['approve', 'deny'] as const) {
    router.add({
      method: 'POST',
      scope: 'admin',
      path: `/v1/nodes/{node_id}/${decision}`,
      summary:
        decision === 'approve'
          ? 'Approve a pending pairing request; the waiting node receives its certificate'
          : 'Deny a pending pairing request; the waiting node is told and stops',
      response: PairingDecision,
      handler: async ({ params }) => {
        const id = params.node_id!;
        const r = decision === 'approve' ? await deps.pairing.approve(id) : await deps.pairing.deny(id);
        return { ok: true, node_id: r.node_id, status: r.status, fingerprint: r.fingerprint };
      },
    });
  }

  router.add({
    method: 'POST',
    scope: 'admin',
    path: '/v1/nodes/{node_id}/revoke',
    summary: "Revoke a node's certificates: its live connection closes at once (4003) and it can never connect with them again",
    response: RevocationView,
    handler: async ({ params }) => {
      const id = params.node_id!;
      const revoked = await deps.pairing.revoke(id);
      if (revoked.length === 0 && !registry.get(id)) {
        throw new FieldmeshError('FM_ERR_NODE_NOT_FOUND', `Node "${id}" is not known to this gateway`, { details: { node_id: id } });
      }
      return { ok: true, node_id: id, revoked_serials: revoked };
    },
  });

  router.add({
    method: 'POST',
    scope: 'submit',
    path: '/v1/tool_call',
    summary: 'Run one tool call and wait for its result (202 with status "queued" if it waits in the offline queue)',
    body: ToolCallBody,
    response: ToolCallResult,
    handler: async ({ body }) => {
      const req = await body<ToolCallBody>(checker(ToolCallBody));
      const { task, existing, result: running } = await dispatcher.submitAndExecute(req);
      let result: ToolCallResult | undefined;
      if (task.status === TaskStatus.AwaitingApproval) {
        // A person decides when; the caller follows the task with GET /v1/tasks/{task_id}.
        void dispatcher.execute(task);
        return reply(202, { ok: true, task_id: task.task_id, status: task.status, approval: task.approval });
      }
      if (existing) {
        result = task.result ?? (await dispatcher.waitFor(task.task_id, 3_600_000))?.result ?? undefined;
      } else if (running) {
        result = await running;
      } else {
        const queued = new Promise<'queued'>((resolve) => dispatcher.onQueued(task.task_id, () => resolve('queued')));
        const outcome = await Promise.race([dispatcher.execute(task), queued]);
        if (outcome !== 'queued') result = outcome;
      }
      if (!result) return reply(202, { ok: true, task_id: task.task_id, status: 'queued' });
      return reply(result.ok ? 200 : statusOfResult(result.error?.code), result);
    },
  });

  router.add({
    method: 'POST',
    scope: 'submit',
    path: '/v1/tasks',
    summary: 'Submit a tool call; it is stored before the 202 and runs in the background',
    body: ToolCallBody,
    response: TaskAccepted,
    handler: async ({ body }) => {
      const req = await body<ToolCallBody>(checker(ToolCallBody));
      const { task, existing } = await dispatcher.submit(req);
      if (existing) return reply(200, { ok: true, task_id: task.task_id, status: task.status, existing: true });
      void dispatcher.execute(task);
      // Tell the caller at once whether its task waits for an approval or in the offline queue.
      const status = task.status !== TaskStatus.AwaitingApproval && dispatcher.willQueue(task) ? 'queued' : task.status;
      return reply(202, { ok: true, task_id: task.task_id, status });
    },
  });

  router.add({
    method: 'GET',
    scope: 'read',
    path: '/v1/tasks/{task_id}',
    summary: 'A task, its attempts and its result; wait_ms long-polls until it finishes',
    query: { wait_ms: { type: 'integer', description: 'Wait up to this long for the task to finish' } },
    response: TaskView,
    handler: async ({ params, query }) => {
      const task = await dispatcher.waitFor(params.task_id!, waitMs(query));
      if (!task)
        throw new FieldmeshError('FM_ERR_TASK_NOT_FOUND', `Task "${params.task_id}" does not exist`, {
          details: { task_id: params.task_id },
        });
      return taskView(task);
    },
  });

  router.add({
    method: 'POST',
    scope: 'submit',
    path: '/v1/tasks/{task_id}/cancel',
    summary: 'Cancel a task that has not finished',
    response: TaskView,
    handler: async ({ params }) => taskView(await dispatcher.cancel(params.task_id!)),
  });

  const isAsync = (query: URLSearchParams) => {
    const v = query.get('async');
    if (v === null || v === 'false') return false;
    if (v === 'true' || v === '') return true;
    throw new FieldmeshError('FM_ERR_INVALID_REQUEST', `async: "${v}" is not true or false`);
  };

  /** Starts a run; with ?async=true answers at once, otherwise waits for its result. */
  const startRun = async (workflow: Workflow, input: Record<string, unknown>, query: URLSearchParams) => {
    const { run_id, done } = await workflows.start(workflow, input);
    if (isAsync(query)) return reply(202, { ok: true, run_id });
    const result = await done;
    return reply(result.ok ? 200 : result.error?.code === 'FM_ERR_CANCELLED' ? 409 : 502, result);
  };

  const getRun = async (runId: string) => {
    const run = await store.getRun(runId);
    if (!run) throw new FieldmeshError('FM_ERR_RUN_NOT_FOUND', `Run "${runId}" does not exist`, { details: { run_id: runId } });
    return run;
  };

  const runView = (run: RunRecord) => ({
    ok: true,
    run_id: run.run_id,
    trace_id: run.trace_id,
    workflow_id: run.workflow_id,
    workflow: run.workflow,
    status: run.status,
    input: run.input,
    steps: run.steps,
    timeline: run.timeline,
    result: run.result,
    created_at: run.created_at,
    updated_at: run.updated_at,
  });

  router.add({
    method: 'POST',
    scope: 'submit',
    path: '/v1/workflows/run',
    summary: 'Run a workflow; waits for its result unless ?async=true (then 202 { run_id })',
    query: { async: { type: 'boolean', description: 'Answer at once with the run id' } },
    body: WorkflowRunBody,
    response: WorkflowRunResult,
    handler: async ({ body, query }) => {
      const req = await body<WorkflowRunBody>(checker(WorkflowRunBody));
      return startRun(req.workflow, req.input ?? {}, query);
    },
  });

  router.add({
    method: 'GET',
    scope: 'read',
    path: '/v1/workflows',
    summary: 'Saved workflows',
    handler: async () => ({
      ok: true,
      workflows: (await store.listWorkflows()).map((w) => ({
        workflow_id: w.workflow_id,
        version: w.version,
        steps: ((w.workflow as { steps?: unknown[] }).steps ?? []).length,
        updated_at: w.updated_at,
      })),
    }),
  });

  router.add({
    method: 'PUT',
    scope: 'submit',
    path: '/v1/workflows/{workflow_id}',
    summary: 'Save a workflow (validated; each save is a new version)',
    body: Workflow,
    handler: async ({ params, body }) => {
      const workflow = await body<Workflow>(checker(Workflow));
      if (workflow.workflow_id !== params.workflow_id) {
        throw new FieldmeshError(
          'FM_ERR_INVALID_REQUEST',
          `Body workflow_id "${workflow.workflow_id}" differs from the path's "${params.workflow_id}"`,
        );
      }
      compileWorkflow(workflow);
      const saved = await store.putWorkflow(workflow.workflow_id, workflow as unknown as JsonValue);
      return { ok: true, workflow_id: saved.workflow_id, version: saved.version, updated_at: saved.updated_at };
    },
  });

  const getWorkflow = async (id: string) => {
    const w = await store.getWorkflow(id);
    if (!w) throw new FieldmeshError('FM_ERR_WORKFLOW_NOT_FOUND', `Workflow "${id}" is not saved`, { details: { workflow_id: id } });
    return w;
  };

  router.add({
    method: 'GET',
    scope: 'read',
    path: '/v1/workflows/{workflow_id}',
    summary: 'A saved workflow',
    handler: async ({ params }) => {
      const w = await getWorkflow(params.workflow_id!);
      return { ok: true, workflow_id: w.workflow_id, version: w.version, workflow: w.workflow, updated_at: w.updated_at };
    },
  });

  router.add({
    method: 'POST',
    scope: 'submit',
    path: '/v1/workflows/{workflow_id}/runs',
    summary: 'Run a saved workflow; waits unless ?async=true',
    query: { async: { type: 'boolean', description: 'Answer at once with the run id' } },
    body: SavedWorkflowRunBody,
    response: WorkflowRunResult,
    handler: async ({ params, body, query }) => {
      const w = await getWorkflow(params.workflow_id!);
      const req = await body<SavedWorkflowRunBody>(checker(SavedWorkflowRunBody));
      return startRun(w.workflow as unknown as Workflow, req.input ?? {}, query);
    },
  });

  router.add({
    method: 'GET',
    scope: 'read',
    path: '/v1/runs',
    summary: 'Workflow runs, newest first, by workflow and status',
    query: {
      workflow_id: { type: 'string', description: 'Only runs of this workflow' },
      status: { type: 'string', description: 'running | succeeded | failed | cancelled' },
    },
    handler: async ({ query }) => {
      const status = query.get('status') ?? undefined;
      if (status !== undefined && !(Object.values(RunStatus) as string[]).includes(status)) {
        throw new FieldmeshError('FM_ERR_INVALID_REQUEST', `status: "${status}" is not one of ${Object.values(RunStatus).join(', ')}`);
      }
      const filter: { workflow_id?: string; status?: RunStatus } = {};
      const wf = query.get('workflow_id');
      if (wf) filter.workflow_id = wf;
      if (status) filter.status = status as RunStatus;
      const runs = await store.listRuns(filter);
      return {
        ok: true,
        runs: runs.map((r) => ({
          run_id: r.run_id,
          workflow_id: r.workflow_id,
          status: r.status,
          created_at: r.created_at,
          updated_at: r.updated_at,
          steps: Object.keys(r.steps).length,
        })),
      };
    },
  });

  router.add({
    method: 'GET',
    scope: 'read',
    path: '/v1/runs/{run_id}',
    summary: "A workflow run: status, each step's state, the timeline so far",
    response: RunView,
    handler: async ({ params }) => runView(await getRun(params.run_id!)),
  });

  router.add({
    method: 'POST',
    scope: 'submit',
    path: '/v1/runs/{run_id}/cancel',
    summary: 'Cancel a running workflow run: running steps are cancelled, waiting ones never start',
    response: RunView,
    handler: async ({ params }) => runView(await workflows.cancel(params.run_id!)),
  });

  router.add({
    method: 'GET',
    scope: 'read',
    path: '/v1/runs/{run_id}/audit',
    summary: "Audit log of an audit_full run: each step's input and output hash, node and signature",
    handler: async ({ params }) => {
      const run = await getRun(params.run_id!);
      return { ok: true, run_id: run.run_id, entries: await store.listAudit(run.run_id) };
    },
  });

  router.add({
    method: 'GET',
    scope: 'read',
    path: '/v1/approvals',
    summary: 'Tasks of supervised tools waiting for an approval, oldest first, with what they would run',
    response: ApprovalList,
    handler: async () => ({
      ok: true,
      approvals: (await dispatcher.approvals.pending()).map((t) => ({
        task_id: t.task_id,
        tool_name: t.tool_name,
        tool_args: t.tool_args,
        target: t.target,
        run_id: t.run_id,
        step_id: t.step_id,
        requested_at: t.approval?.requested_at ?? t.created_at,
        expires_at: t.approval?.expires_at ?? t.created_at,
      })),
    }),
  });

  for (const [action, decision] of [
    ['approve', 'approved'],
    ['reject', 'rejected'],
  ] as const) {
    router.add({
      method: 'POST',
      scope: 'admin',
      path: `/v1/approvals/{task_id}/${action}`,
      summary:
        action === 'approve'
          ? 'Approve a task awaiting approval: it goes on to placement as usual'
          : 'Reject a task awaiting approval: it fails with FM_ERR_APPROVAL_REJECTED',
      body: ApprovalDecisionBody,
      response: TaskView,
      handler: async ({ params, optionalBody }) => {
        const req = await optionalBody<ApprovalDecisionBody>(checker(ApprovalDecisionBody));
        return taskView(await dispatcher.approvals.decide(params.task_id!, decision, req?.reason));
      },
    });
  }
  registerStateRoutes(router, deps.state);
  registerFunctionRoutes(router, deps.functions);
}

/** A failed task answers with its error's status; codes from a tool outside the table are a bad gateway. */
function statusOfResult(code: string | undefined): number {
  return isErrorCode(code) ? statusOf(code) : 502;
}
