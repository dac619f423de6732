/**
 * Typed client for the gateway's HTTP API. The CLI is built on it; programs
 * use it as `new FieldmeshClient({ baseUrl })`.
 */
import { type ErrorBody, FieldmeshError } from '../core/errors.js';
/** One line of `GET /v1/runs`. */
export interface RunSummary {
  run_id: string;
  workflow_id: string;
  status: string;
  created_at: string;
  updated_at: string;
  steps: number;
}

import type {
  AuditEntry,
  NodeCapabilities,
  NodeHealth,
  NodeView,
  RunView,
  StateDocSummary,
  StateDocView,
  StatePutBody,
  TaskView,
  ToolCallBody,
  ToolCallResult,
  Workflow,
  WorkflowRunResult,
} from '../protocol/api.js';

export interface FieldmeshClientOptions {
  /** Gateway API, e.g. `http://127.0.0.1:8787`. @default process.env.FIELDMESH_API ?? "http://127.0.0.1:8787" */
  baseUrl?: string;
  /** Bearer token for gateways that require one. */
  token?: string;
  /** Per-request time limit in ms. @default 120000 */
  timeoutMs?: number;
}

/** An error answer from the gateway; `code` is its FM_ERR_… code. */
export class FieldmeshApiError extends Error {
  override readonly name = 'FieldmeshApiError';
  readonly code: string;
  readonly status: number;
  readonly body: unknown;
  /** The error's details, e.g. `current_version` of FM_ERR_VERSION_CONFLICT. */
  readonly details: Record<string, unknown> | undefined;

  constructor(status: number, error: ErrorBody, body: unknown) {
    super(error.message);
    this.code = error.code;
    this.status = status;
    this.body = body;
    this.details = error.details;
  }
}

export class FieldmeshClient {
  readonly baseUrl: string;
  readonly #token: string | undefined;
  readonly #timeoutMs: number;

  constructor(options: FieldmeshClientOptions = {}) {
    const base = options.baseUrl ?? process.env.FIELDMESH_API ?? 'http://127.0.0.1:8787';
    this.baseUrl = (/^https?:\/\//.test(base) ? base : `http://${base}`).replace(/\/+$/, '');
    this.#token = options.token ?? process.env.FIELDMESH_TOKEN;
    this.#timeoutMs = options.timeoutMs ?? 120_000;
  }

  health(): Promise<{ ok: true; status: string; version: string; nodes_online: number }> {
    return this.#request('GET', '/healthz');
  }

  async listNodes(status?: 'online' | 'degraded' | 'offline' | 'syncing'): Promise<NodeView[]> {
    const q = status ? `?status=${encodeURIComponent(status)}` : '';
    return (await this.#request<{ nodes: NodeView[] }>('GET', `/v1/nodes${q}`)).nodes;
  }

  async getNode(nodeId: string): Promise<NodeView> {
    return (await this.#request<{ node: NodeView }>('GET', `/v1/nodes/${encodeURIComponent(nodeId)}`)).node;
  }

  nodeHealth(nodeId: string): Promise<NodeHealth> {
    return this.#request('GET', `/v1/nodes/${encodeURIComponent(nodeId)}/health`);
  }

  nodeCapabilities(nodeId: string): Promise<NodeCapabilities> {
    return this.#request('GET', `/v1/nodes/${encodeURIComponent(nodeId)}/capabilities`);
  }

  /** Runs a tool call and waits. A failed call resolves with `ok: false` and its `execution_path`; a rejected request throws. */
  toolCall(body: ToolCallBody): Promise<ToolCallResult> {
    return this.#request('POST', '/v1/tool_call', body, (b) => typeof b === 'object' && b !== null && 'task_id' in b);
  }

  async submitTask(body: ToolCallBody): Promise<string> {
    return (await this.#request<{ task_id: string }>('POST', '/v1/tasks', body)).task_id;
  }

  getTask(taskId: string, waitMs?: number): Promise<TaskView> {
    const q = waitMs ? `?wait_ms=${waitMs}` : '';
    return this.#request('GET', `/v1/tasks/${encodeURIComponent(taskId)}${q}`);
  }

  cancelTask(taskId: string): Promise<TaskView> {
    return this.#request('POST', `/v1/tasks/${encodeURIComponent(taskId)}/cancel`);
  }

  /** Runs a workflow and waits. A failed run resolves with `ok: false`; a rejected workflow throws. */
  runWorkflow(workflow: Workflow, input?: Record<string, unknown>): Promise<WorkflowRunResult> {
    const body: Record<string, unknown> = { workflow };
    if (input !== undefined) body.input = input;
    return this.#request('POST', '/v1/workflows/run', body, (b) => typeof b === 'object' && b !== null && 'run_id' in b);
  }

  /** Starts a workflow run without waiting; follow it with getRun. */
  async startWorkflow(workflow: Workflow, input?: Record<string, unknown>): Promise<string> {
    const body: Record<string, unknown> = { workflow };
    if (input !== undefined) body.input = input;
    return (await this.#request<{ run_id: string }>('POST', '/v1/workflows/run?async=true', body)).run_id;
  }

  getRun(runId: string): Promise<RunView> {
    return this.#request('GET', `/v1/runs/${encodeURIComponent(runId)}`);
  }

  async listRuns(filter: { workflow_id?: string; status?: string } = {}): Promise<RunSummary[]> {
    const q = new URLSearchParams();
    if (filter.workflow_id) q.set('workflow_id', filter.workflow_id);
    if (filter.status) q.set('status', filter.status);
    const qs = q.toString();
    return (await this.#request<{ runs: RunSummary[] }>('GET', `/v1/runs${qs ? `?${qs}` : ''}`)).runs;
  }

  cancelRun(runId: string): Promise<RunView> {
    return this.#request('POST', `/v1/runs/${encodeURIComponent(runId)}/cancel`);
  }

  async runAudit(runId: string): Promise<AuditEntry[]> {
    return (await this.#request<{ entries: AuditEntry[] }>('GET', `/v1/runs/${encodeURIComponent(runId)}/audit`)).entries;
  }

  putWorkflow(workflow: Workflow): Promise<{ workflow_id: string; version: number; updated_at: string }> {
    return this.#request('PUT', `/v1/workflows/${encodeURIComponent(workflow.workflow_id)}`, workflow);
  }

  async listWorkflows(): Promise<{ workflow_id: string; version: number; steps: number; updated_at: string }[]> {
    return (
      await this.#request<{ workflows: { workflow_id: string; version: number; steps: number; updated_at: string }[] }>(
        'GET',
        '/v1/workflows',
      )
    ).workflows;
  }

  /** Runs a saved workflow; `async` answers at once with its run id. */
  runSavedWorkflow(workflowId: string, input?: Record<string, unknown>): Promise<WorkflowRunResult> {
    return this.#request(
      'POST',
      `/v1/workflows/${encodeURIComponent(workflowId)}/runs`,
      { input: input ?? {} },
      (b) => typeof b === 'object' && b !== null && 'run_id' in b,
    );
  }

  /** A node's state documents with the versions of both sides. */
  async listState(nodeId: string): Promise<StateDocSummary[]> {
    return (await this.#request<{ docs: StateDocSummary[] }>('GET', `/v1/nodes/${encodeURIComponent(nodeId)}/state`)).docs;
  }

  /** One state document: desired (written here) and reported (held by the node). Throws FM_ERR_STATE_NOT_FOUND for none. */
  getState(nodeId: string, doc: string): Promise<StateDocView> {
    return this.#request('GET', `/v1/nodes/${encodeURIComponent(nodeId)}/state/${encodeURIComponent(doc)}`);
  }

  /**
   * Writes the desired side of a state document. With `version` (the desired
   * version it is based on, 0 for a new document) a stale write throws
   * FM_ERR_VERSION_CONFLICT, whose `details.current_version` is the current one.
   */
  putState(nodeId: string, doc: string, data: Record<string, unknown>, options: Omit<StatePutBody, 'data'> = {}): Promise<StateDocView> {
    return this.#request('PUT', `/v1/nodes/${encodeURIComponent(nodeId)}/state/${encodeURIComponent(doc)}`, { data, ...options });
  }

  openapi(): Promise<Record<string, unknown>> {
    return this.#request('GET', '/openapi.json');
  }

  async #request<T>(method: string, path: string, body?: unknown, isResult?: (body: unknown) => boolean): Promise<T> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (this.#token) headers.authorization = `Bearer ${this.#token}`;
    let res: Response;
    try {
      res = await fetch(this.baseUrl + path, {
        method,
        headers,
        body: body === undefined ? null : JSON.stringify(body),
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
    } catch (err) {
      throw new FieldmeshError('FM_ERR_UNAVAILABLE', `Cannot reach the gateway at ${this.baseUrl}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const text = await res.text();
    let parsed: unknown;
    try {
      parsed = text === '' ? {} : JSON.parse(text);
    } catch {
      throw new FieldmeshError('FM_ERR_UNAVAILABLE', `Gateway answered ${res.status} with a body that is not JSON`);
    }
    if (res.ok || isResult?.(parsed)) return parsed as T;
    const error = (parsed as { error?: ErrorBody }).error;
    throw new FieldmeshApiError(
      res.status,
      error && typeof error.code === 'string' ? error : { code: 'FM_ERR_INTERNAL', message: `HTTP ${res.status}` },
      parsed,
    );
  }
}
