/** The v1 HTTP API routes, each with the schemas that also feed the OpenAPI document. */
import { Type } from '@sinclair/typebox';
import { FieldmeshError, isErrorCode, statusOf } from '../../core/errors.js';
import { VERSION } from '../../core/version.js';
import {
  NodeCapabilities,
  NodeDetail,
  NodeHealth,
  NodeList,
  type NodeView,
  TaskAccepted,
  TaskView,
  ToolCallBody,
  ToolCallResult,
  WorkflowRunBody,
  WorkflowRunResult,
} from '../../protocol/api.js';
import { NodeStatus, type Store, type TaskRecord } from '../../store/types.js';
import type { Dispatcher } from '../dispatcher.js';
import type { NodeEntry, Registry } from '../registry.js';
import type { WorkflowEngine } from '../workflows.js';
import { checker, type Router, reply } from './http.js';
import { buildOpenApi } from './openapi.js';

export interface ApiDeps {
  store: Store;
  registry: Registry;
  dispatcher: Dispatcher;
  workflows: WorkflowEngine;
  stats: () => Record<string, number>;
}

const statuses = new Set<string>(Object.values(NodeStatus));

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
    path: '/openapi.json',
    summary: 'This API as an OpenAPI 3.1 document',
    handler: () => buildOpenApi(router.routes),
  });

  router.add({
    method: 'GET',
    path: '/v1/nodes',
    summary: 'List known nodes, optionally by status',
    query: { status: { type: 'string', description: 'online | degraded | offline | syncing' } },
    response: NodeList,
    handler: ({ query }) => {
      const raw = query.get('status');
      const wanted = raw?.toUpperCase();
      if (wanted !== undefined && !statuses.has(wanted)) {
        throw new FieldmeshError('FM_ERR_INVALID_REQUEST', `status: "${raw}" is not one of online, degraded, offline, syncing`);
      }
      const nodes: NodeView[] = [];
      for (const e of registry.all()) if (!wanted || e.record.status === wanted) nodes.push(nodeView(e));
      nodes.sort((a, b) => a.node_id.localeCompare(b.node_id));
      return { ok: true, nodes };
    },
  });

  router.add({
    method: 'GET',
    path: '/v1/nodes/{node_id}',
    summary: 'One node',
    response: NodeDetail,
    handler: ({ params }) => ({ ok: true, node: nodeView(getEntry(params.node_id!)) }),
  });

  router.add({
    method: 'GET',
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
    path: '/v1/tool_call',
    summary: 'Run one tool call and wait for its result (202 with status "queued" if it waits in the offline queue)',
    body: ToolCallBody,
    response: ToolCallResult,
    handler: async ({ body }) => {
      const req = await body<ToolCallBody>(checker(ToolCallBody));
      const { task, existing } = await dispatcher.submit(req);
      let result: ToolCallResult | undefined;
      if (existing) {
        result = task.result ?? (await dispatcher.waitFor(task.task_id, 3_600_000))?.result ?? undefined;
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
    path: '/v1/tasks',
    summary: 'Submit a tool call; it is stored before the 202 and runs in the background',
    body: ToolCallBody,
    response: TaskAccepted,
    handler: async ({ body }) => {
      const req = await body<ToolCallBody>(checker(ToolCallBody));
      const { task, existing } = await dispatcher.submit(req);
      if (existing) return reply(200, { ok: true, task_id: task.task_id, status: task.status, existing: true });
      const queued = new Promise<void>((resolve) => dispatcher.onQueued(task.task_id, resolve));
      void dispatcher.execute(task);
      // Tell the caller at once whether its task waits in the offline queue.
      const status = await Promise.race([queued.then(() => 'queued'), new Promise<string>((r) => setImmediate(() => r(task.status)))]);
      return reply(202, { ok: true, task_id: task.task_id, status });
    },
  });

  router.add({
    method: 'GET',
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
    path: '/v1/tasks/{task_id}/cancel',
    summary: 'Cancel a task that has not finished',
    response: TaskView,
    handler: async ({ params }) => taskView(await dispatcher.cancel(params.task_id!)),
  });

  router.add({
    method: 'POST',
    path: '/v1/workflows/run',
    summary: 'Run a workflow and wait for it',
    body: WorkflowRunBody,
    response: WorkflowRunResult,
    handler: async ({ body }) => {
      const req = await body<WorkflowRunBody>(checker(WorkflowRunBody));
      const result = await workflows.run(req.workflow, req.input ?? {});
      return reply(result.ok ? 200 : 502, result);
    },
  });

  router.add({
    method: 'GET',
    path: '/v1/runs/{run_id}',
    summary: 'A workflow run: status, step states, timeline',
    handler: async ({ params }) => {
      const run = await store.getRun(params.run_id!);
      if (!run)
        throw new FieldmeshError('FM_ERR_RUN_NOT_FOUND', `Run "${params.run_id}" does not exist`, { details: { run_id: params.run_id } });
      return { ok: true, ...run };
    },
  });
}

/** A failed task answers with its error's status; codes from a tool outside the table are a bad gateway. */
function statusOfResult(code: string | undefined): number {
  return isErrorCode(code) ? statusOf(code) : 502;
}
