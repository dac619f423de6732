/**
 * Typed client for the gateway's HTTP API. The CLI is built on it; programs
 * use it as `new FieldmeshClient({ baseUrl, token })`. Requests go over one
 * keep-alive agent per client, so a busy client reuses its connections; with
 * `transport: 'ws'`, tool calls and task submissions go over one WebSocket
 * instead, many in flight at once (src/client/socket.ts).
 */
import { Agent as HttpAgent, request as httpRequest, type RequestOptions } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { type ErrorBody, FieldmeshError } from '../core/errors.js';
import type { ClientOp } from '../protocol/client-ws.js';
import type { DiscoveryResponse, Registered } from '../protocol/discovery-api.js';
import { ClientSocket } from './socket.js';
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
  FunctionDeployBody,
  FunctionDeployResult,
  FunctionUndeployResult,
  FunctionView,
  NodeCapabilities,
  NodeHealth,
  NodeView,
  PairingCodeView,
  PairingDecision,
  PendingApproval,
  PendingNodeView,
  RevocationView,
  RunView,
  StateDocSummary,
  StateDocView,
  StatePutBody,
  TaskView,
  TokenCreated,
  TokenView,
  ToolCallBody,
  ToolCallResult,
  Workflow,
  WorkflowRunResult,
} from '../protocol/api.js';

export interface FieldmeshClientOptions {
  /** Gateway API, e.g. `http://127.0.0.1:8787`. @default process.env.FIELDMESH_API ?? "http://127.0.0.1:8787" */
  baseUrl?: string;
  /** API token, sent as `Authorization: Bearer …`. @default process.env.FIELDMESH_TOKEN */
  token?: string;
  /** CA certificate (PEM) an `https` gateway's certificate is checked against, e.g. `<data-dir>/tls/ca.crt`. @default the system CAs */
  ca?: string | Buffer;
  /** Per-request time limit in ms. @default 120000 */
  timeoutMs?: number;
  /**
   * How `toolCall` and `submitTask` reach the gateway: `http`, one request each
   * over keep-alive connections; `ws`, all over one WebSocket (`/v1/ws`), many
   * in flight at once, opened at the first call and again after it dropped.
   * The other methods always use HTTP. @default "http"
   */
  transport?: 'http' | 'ws';
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

/** The error of an error answer, by its `{ ok: false, error }` body. */
function apiError(status: number, parsed: unknown): FieldmeshApiError {
  const error = (parsed as { error?: ErrorBody }).error;
  return new FieldmeshApiError(
    status,
    error && typeof error.code === 'string' ? error : { code: 'FM_ERR_INTERNAL', message: `HTTP ${status}` },
    parsed,
  );
}

export class FieldmeshClient {
  readonly baseUrl: string;
  readonly #token: string | undefined;
  readonly #timeoutMs: number;
  readonly #agent: HttpAgent;
  readonly #send: typeof httpRequest;
  readonly #socket: ClientSocket | undefined;

  constructor(options: FieldmeshClientOptions = {}) {
    const base = options.baseUrl ?? process.env.FIELDMESH_API ?? 'http://127.0.0.1:8787';
    this.baseUrl = (/^https?:\/\//.test(base) ? base : `http://${base}`).replace(/\/+$/, '');
    this.#token = options.token ?? process.env.FIELDMESH_TOKEN;
    this.#timeoutMs = options.timeoutMs ?? 120_000;
    const https = this.baseUrl.startsWith('https:');
    this.#agent = https
      ? new HttpsAgent({ keepAlive: true, ...(options.ca === undefined ? {} : { ca: options.ca }) })
      : new HttpAgent({ keepAlive: true });
    this.#send = https ? httpsRequest : httpRequest;
    const transport = options.transport ?? 'http';
    if (transport !== 'http' && transport !== 'ws') {
      throw new FieldmeshError('FM_ERR_INVALID_OPTION', `transport: "${String(transport)}" is not http or ws`, {
        details: { option: 'transport', value: transport },
      });
    }
    this.#socket =
      transport === 'ws'
        ? new ClientSocket({
            baseUrl: this.baseUrl,
            token: this.#token,
            ca: options.ca,
            timeoutMs: this.#timeoutMs,
            unreachable: (err) => this.#unreachable(err),
            refused: (status, body) => apiError(status, body ?? {}),
          })
        : undefined;
  }

  /** How tool calls and task submissions travel. */
  get transport(): 'http' | 'ws' {
    return this.#socket ? 'ws' : 'http';
  }

  /**
   * Closes the client's idle keep-alive connections and its WebSocket, whose
   * calls in flight fail. (Neither keeps a process alive while idle.)
   */
  close(): void {
    this.#agent.destroy();
    this.#socket?.close();
  }

  health(): Promise<{ ok: true; status: string; version: string; nodes_online: number }> {
    return this.#request('GET', '/healthz');
  }

  async listNodes(status?: 'online' | 'degraded' | 'offline' | 'syncing'): Promise<NodeView[]> {
    const q = status ? `?status=${encodeURIComponent(status)}` : '';
    return (await this.#request<{ nodes: NodeView[] }>('GET', `/v1/nodes${q}`)).nodes;
  }

  /** Nodes waiting for an operator to approve their pairing request. */
  async listPendingNodes(): Promise<PendingNodeView[]> {
    return (await this.#request<{ nodes: PendingNodeView[] }>('GET', '/v1/nodes?status=pending')).nodes;
  }

  /** A single-use pairing code for `fieldmesh node --pair`; `ttl_seconds` defaults to 600. */
  createPairingCode(opts: { node_id?: string; ttl_seconds?: number } = {}): Promise<PairingCodeView> {
    return this.#request('POST', '/v1/pairing-codes', opts);
  }

  approveNode(nodeId: string): Promise<PairingDecision> {
    return this.#request('POST', `/v1/nodes/${encodeURIComponent(nodeId)}/approve`);
  }

  denyNode(nodeId: string): Promise<PairingDecision> {
    return this.#request('POST', `/v1/nodes/${encodeURIComponent(nodeId)}/deny`);
  }

  /** Revokes a node's certificates; its live connection closes at once. */
  revokeNode(nodeId: string): Promise<RevocationView> {
    return this.#request('POST', `/v1/nodes/${encodeURIComponent(nodeId)}/revoke`);
  }

  /** Nodes heard by multicast (with paired/trusted), dropped advertisements, the discovery methods on, the peers dialed. */
  discovery(): Promise<DiscoveryResponse> {
    return this.#request('GET', '/v1/discovery');
  }

  /** Registers a listen-mode node (`fieldmesh node --listen`) for the gateway to dial; kept across gateway restarts. */
  registerNode(body: { node_id: string; endpoint: string; capabilities?: string[] }): Promise<Registered> {
    return this.#request('POST', '/v1/nodes/register', body);
  }

  /** Removes a registration: the gateway stops dialing the node and closes its connection. */
  unregisterNode(nodeId: string): Promise<Registered> {
    return this.#request('DELETE', `/v1/nodes/register/${encodeURIComponent(nodeId)}`);
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
    const isResult = (b: unknown) => typeof b === 'object' && b !== null && 'task_id' in b;
    if (this.#socket) return this.#call('tool_call', body, isResult);
    return this.#request('POST', '/v1/tool_call', body, isResult);
  }

  async submitTask(body: ToolCallBody): Promise<string> {
    if (this.#socket) return (await this.#call<{ task_id: string }>('submit_task', body)).task_id;
    return (await this.#request<{ task_id: string }>('POST', '/v1/tasks', body)).task_id;
  }

  /** One call over the WebSocket, answered as its HTTP route would answer it. */
  async #call<T>(op: ClientOp, body: unknown, isResult?: (body: unknown) => boolean): Promise<T> {
    const answer = await this.#socket!.call(op, body);
    return this.#answer<T>(answer.status, answer.body, isResult);
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

  /** Issues an API token (admin scope needed); the answer is the only time its secret is shown. */
  createToken(scope: 'read' | 'submit' | 'admin', name?: string): Promise<TokenCreated> {
    return this.#request('POST', '/v1/tokens', name === undefined ? { scope } : { scope, name });
  }

  /** API tokens without their secrets, revoked ones too. */
  async listTokens(): Promise<TokenView[]> {
    return (await this.#request<{ tokens: TokenView[] }>('GET', '/v1/tokens')).tokens;
  }

  revokeToken(tokenId: string): Promise<TokenView & { ok: true }> {
    return this.#request('POST', `/v1/tokens/${encodeURIComponent(tokenId)}/revoke`);
  }

  /** Tasks of supervised tools waiting for an approval, oldest first. */
  async listApprovals(): Promise<PendingApproval[]> {
    return (await this.#request<{ approvals: PendingApproval[] }>('GET', '/v1/approvals')).approvals;
  }

  /** Approves a task awaiting approval (admin scope); it then runs as usual. */
  approve(taskId: string, reason?: string): Promise<TaskView> {
    return this.#request('POST', `/v1/approvals/${encodeURIComponent(taskId)}/approve`, reason === undefined ? {} : { reason });
  }

  /** Rejects a task awaiting approval (admin scope); it fails with FM_ERR_APPROVAL_REJECTED. */
  reject(taskId: string, reason?: string): Promise<TaskView> {
    return this.#request('POST', `/v1/approvals/${encodeURIComponent(taskId)}/reject`, reason === undefined ? {} : { reason });
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

  /** Deploys a bundled function to the ONLINE nodes of its target that allow deploys; resolves with each node's outcome. */
  deployFunction(body: FunctionDeployBody): Promise<FunctionDeployResult> {
    return this.#request('POST', '/v1/functions', body);
  }

  /** Deployed functions with each node's outcome; with `nodeId`, only those on that node. */
  async listFunctions(nodeId?: string): Promise<FunctionView[]> {
    const q = nodeId === undefined ? '' : `?node_id=${encodeURIComponent(nodeId)}`;
    return (await this.#request<{ functions: FunctionView[] }>('GET', `/v1/functions${q}`)).functions;
  }

  /** Undeploys a function everywhere, or from one node. Throws FM_ERR_FUNCTION_NOT_FOUND for a name never deployed. */
  undeployFunction(name: string, nodeId?: string): Promise<FunctionUndeployResult> {
    const q = nodeId === undefined ? '' : `?node_id=${encodeURIComponent(nodeId)}`;
    return this.#request('DELETE', `/v1/functions/${encodeURIComponent(name)}${q}`);
  }

  openapi(): Promise<Record<string, unknown>> {
    return this.#request('GET', '/openapi.json');
  }

  async #request<T>(method: string, path: string, body?: unknown, isResult?: (body: unknown) => boolean): Promise<T> {
    const headers: Record<string, string | number> = { accept: 'application/json' };
    const payload = body === undefined ? undefined : JSON.stringify(body);
    if (payload !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = Buffer.byteLength(payload);
    }
    if (this.#token) headers.authorization = `Bearer ${this.#token}`;
    let res: { status: number; text: string };
    try {
      res = await this.#exchange(new URL(this.baseUrl + path), { method, headers, agent: this.#agent }, payload, true);
    } catch (err) {
      throw this.#unreachable(err);
    }
    let parsed: unknown;
    try {
      parsed = res.text === '' ? {} : JSON.parse(res.text);
    } catch {
      throw new FieldmeshError('FM_ERR_UNAVAILABLE', `Gateway answered ${res.status} with a body that is not JSON`);
    }
    return this.#answer<T>(res.status, parsed, isResult);
  }

  /** An answer's body when it is a success (or a result, for calls whose failure is a result); otherwise its error, thrown. */
  #answer<T>(status: number, parsed: unknown, isResult?: (body: unknown) => boolean): T {
    if ((status >= 200 && status < 300) || isResult?.(parsed)) return parsed as T;
    throw apiError(status, parsed);
  }

  /** The error for a gateway that could not be reached, with a hint for the usual causes. */
  #unreachable(err: unknown): FieldmeshError {
    const e = err as NodeJS.ErrnoException;
    const hint = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY/.test(e.code ?? '')
      ? ' (pass the gateway CA, <data-dir>/tls/ca.crt, as `ca` or --ca)'
      : '';
    // OpenSSL's own text spans lines and names its source files; an https URL for a plain-HTTP API is the usual cause.
    const why =
      e.code === 'EPROTO' || /wrong version number|SSL routines/.test(e.message)
        ? 'the TLS handshake failed (an https URL for a plain-HTTP API? the API is https only with --api-tls)'
        : e.message;
    return new FieldmeshError('FM_ERR_UNAVAILABLE', `Cannot reach the gateway at ${this.baseUrl}: ${why}${hint}`, { cause: err });
  }

  /** One request and its whole answer, within the client's time limit. */
  #exchange(url: URL, options: RequestOptions, payload: string | undefined, mayRetry: boolean): Promise<{ status: number; text: string }> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (fn: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        fn();
      };
      const req = this.#send(url, options, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => settle(() => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') })));
        res.on('error', (err) => settle(() => reject(err)));
        res.on('aborted', () => settle(() => reject(new Error('the connection closed before the whole answer arrived'))));
      });
      req.on('error', (err: NodeJS.ErrnoException) => {
        // A kept-alive connection the server closed while idle fails before the request reached it: send once more.
        if (mayRetry && req.reusedSocket && (err.code === 'ECONNRESET' || err.code === 'EPIPE')) {
          settle(() => resolve(this.#exchange(url, options, payload, false)));
        } else settle(() => reject(err));
      });
      const timer = setTimeout(() => req.destroy(new Error(`no answer within ${this.#timeoutMs} ms`)), this.#timeoutMs);
      req.end(payload);
    });
  }
}
