// Tool worker thread: loads the built-in and custom tools and runs one tool call at a time for the ToolRuntime pool.
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parentPort, workerData } from 'node:worker_threads';
import { type ErrorBody, ErrorCodes, FieldmeshError, isErrorCode } from '../core/errors.js';
import { type StateReply, stateClient, stateError } from '../edge/state-port.js';
import { builtinTools } from './tools/index.js';
import type { ToolContext, ToolDefinition } from './tools/types.js';

/** Marks workerData so importing this module elsewhere (the runtime loads tools through it) starts no loop. */
export const WORKER_ROLE = 'fieldmesh-tool-worker';

export interface WorkerInit {
  role: typeof WORKER_ROLE;
  nodeId: string;
  toolModules: string[];
}

export type WorkerRequest =
  | { type: 'run'; id: number; tool_name: string; args: unknown; task_id: string; attempt: number }
  | { type: 'abort'; id: number; reason: string }
  | StateReply;

export type ToolCallOutcome = { ok: true; output: unknown } | { ok: false; error: ErrorBody };

export type WorkerResponse = { id: number } & ToolCallOutcome;

const TOOL_NAME = /^[A-Za-z0-9_.:-]+$/;

function checkTool(value: unknown, source: string, index: number): ToolDefinition {
  const t = value as Partial<ToolDefinition> | null;
  const where = `tool #${index} of ${source}`;
  const bad = (why: string) =>
    new FieldmeshError('FM_ERR_INVALID_OPTION', `node.toolModules: ${where} ${why}`, {
      details: { option: 'node.toolModules', module: source },
    });
  if (typeof t !== 'object' || t === null) throw bad('is not an object');
  if (typeof t.name !== 'string' || !TOOL_NAME.test(t.name) || t.name.length > 128) throw bad('has no valid "name" (^[A-Za-z0-9_.:-]+$)');
  if (typeof t.description !== 'string') throw bad(`("${t.name}") has no "description" string`);
  for (const key of ['input_schema', 'output_schema'] as const) {
    const s = t[key];
    if (typeof s !== 'object' || s === null || Array.isArray(s)) throw bad(`("${t.name}") has no "${key}" object`);
  }
  if (typeof t.run !== 'function') throw bad(`("${t.name}") has no "run" function`);
  if (t.inline !== undefined && typeof t.inline !== 'boolean') throw bad(`("${t.name}") has an "inline" that is not a boolean`);
  return t as ToolDefinition;
}

/**
 * The built-in tools followed by each module's tools, keyed by name; a later
 * definition replaces an earlier one so custom modules can override built-ins.
 */
export async function loadToolDefinitions(toolModules: readonly string[]): Promise<Map<string, ToolDefinition>> {
  const tools = new Map<string, ToolDefinition>();
  builtinTools.forEach((t, i) => {
    tools.set(t.name, checkTool(t, 'the built-in tools', i));
  });
  for (const path of toolModules) {
    let mod: { tools?: unknown; default?: unknown };
    try {
      mod = (await import(pathToFileURL(resolve(path)).href)) as { tools?: unknown; default?: unknown };
    } catch (err) {
      throw new FieldmeshError(
        'FM_ERR_INVALID_OPTION',
        `node.toolModules: cannot load "${path}": ${(err as Error)?.message ?? String(err)}`,
        {
          details: { option: 'node.toolModules', module: path },
          cause: err,
        },
      );
    }
    const list = Array.isArray(mod.tools) ? mod.tools : Array.isArray(mod.default) ? mod.default : undefined;
    if (!list) {
      throw new FieldmeshError(
        'FM_ERR_INVALID_OPTION',
        `node.toolModules: "${path}" exports neither "tools" nor a default array of tools`,
        {
          details: { option: 'node.toolModules', module: path },
        },
      );
    }
    list.forEach((t, i) => {
      const tool = checkTool(t, `"${path}"`, i);
      tools.set(tool.name, tool);
    });
  }
  return tools;
}

/** What a tool threw, as the wire sees it: known codes pass through, anything else becomes FM_ERR_EXECUTION. */
export function thrownToErrorBody(toolName: string, thrown: unknown): ErrorBody {
  const e = (typeof thrown === 'object' && thrown !== null ? thrown : {}) as {
    code?: unknown;
    message?: unknown;
    retryable?: unknown;
    details?: unknown;
  };
  const message = typeof e.message === 'string' ? e.message : typeof thrown === 'string' ? thrown : String(thrown);
  if (isErrorCode(e.code)) {
    const body: ErrorBody = {
      code: e.code,
      message: message || ErrorCodes[e.code].message,
      retryable: typeof e.retryable === 'boolean' ? e.retryable : ErrorCodes[e.code].retryable,
    };
    const details = jsonObject(e.details);
    if (details) body.details = details;
    return body;
  }
  return { code: 'FM_ERR_EXECUTION', message: `Tool "${toolName}" failed: ${message}`, retryable: e.retryable === true };
}

function jsonObject(value: unknown): Record<string, unknown> | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  try {
    return JSON.parse(JSON.stringify(value)) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

/** Runs one tool call in this thread: its output as JSON keeps it, or what it threw as the wire sees it. */
export async function callTool(tool: ToolDefinition, args: unknown, ctx: ToolContext): Promise<ToolCallOutcome> {
  try {
    const output = await tool.run(args, ctx);
    // The wire carries JSON, so hash and validate exactly what JSON keeps (undefined → null, Dates → strings).
    let json: string | undefined;
    try {
      json = JSON.stringify(output);
    } catch (err) {
      return {
        ok: false,
        error: {
          code: 'FM_ERR_INVALID_OUTPUT',
          message: `Tool "${tool.name}" returned a value that is not JSON: ${(err as Error).message}`,
        },
      };
    }
    return { ok: true, output: json === undefined ? null : JSON.parse(json) };
  } catch (err) {
    return { ok: false, error: thrownToErrorBody(tool.name, err) };
  }
}

async function serve(init: WorkerInit): Promise<void> {
  const port = parentPort;
  if (!port) return;
  const loading = loadToolDefinitions(init.toolModules);
  // Keep the rejection observed; each request reports it instead.
  loading.catch(() => undefined);
  const aborts = new Map<number, AbortController>();
  // ctx.state: each call crosses the message port to the node agent, which owns the journal.
  const state = stateClient((call) => port.postMessage(call), stateError);

  const run = async (req: Extract<WorkerRequest, { type: 'run' }>): Promise<WorkerResponse> => {
    let tools: Map<string, ToolDefinition>;
    try {
      tools = await loading;
    } catch (err) {
      return {
        id: req.id,
        ok: false,
        error: { code: 'FM_ERR_INTERNAL', message: `Worker could not load tools: ${(err as Error).message}` },
      };
    }
    const tool = tools.get(req.tool_name);
    if (!tool)
      return {
        id: req.id,
        ok: false,
        error: { code: 'FM_ERR_UNKNOWN_TOOL', message: `Tool "${req.tool_name}" is not offered by this node` },
      };
    const controller = new AbortController();
    aborts.set(req.id, controller);
    try {
      const ctx = {
        node_id: init.nodeId,
        task_id: req.task_id,
        attempt: req.attempt,
        signal: controller.signal,
        state: state.stateFor(req.id),
      };
      return { id: req.id, ...(await callTool(tool, req.args, ctx)) };
    } finally {
      aborts.delete(req.id);
    }
  };

  port.on('message', (req: WorkerRequest) => {
    if (req.type === 'state_reply') {
      state.receive(req);
      return;
    }
    if (req.type === 'abort') {
      aborts.get(req.id)?.abort(new FieldmeshError('FM_ERR_CANCELLED', req.reason));
      return;
    }
    void run(req).then((res) => port.postMessage(res));
  });
}

const init = workerData as Partial<WorkerInit> | null;
if (parentPort && init?.role === WORKER_ROLE) void serve(init as WorkerInit);
