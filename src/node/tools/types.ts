import type { ContextState } from '../../edge/state-port.js';
import type { JsonSchema } from '../../protocol/json.js';

/** A tool's `ctx.state`: the node's state documents, as deployed functions see them too. */
export type ToolState = ContextState;

/** What a running tool may use from its node. */
export interface ToolContext {
  /** The node this tool runs on. */
  node_id: string;
  task_id: string;
  attempt: number;
  /** Aborted when the task is cancelled or its deadline passes. */
  signal: AbortSignal;
  /** The node's state documents. Tools run in worker threads; these calls go to the node agent over the worker's message port. */
  state: ToolState;
}

/**
 * A tool a node can run. Descriptors follow MCP: `input_schema` and
 * `output_schema` are plain JSON Schema, checked before and after `run`.
 */
export interface ToolDefinition<A = unknown, O = unknown> {
  name: string;
  description: string;
  input_schema: JsonSchema;
  output_schema: JsonSchema;
  /** True when the tool needs a network beyond the mesh. */
  network?: boolean;
  /**
   * Runs on the node's own thread instead of a worker thread, saving the hand-off (about 0.1 ms a call). Only for
   * tools that finish in microseconds and never block: no deadline can stop synchronous code there, and a crash
   * there is the node's. Schema checks, task slots, cancellation (`ctx.signal`) and `ctx.state` work as in a worker,
   * except that a call that timed out or was cancelled frees its slot while its own code may still be finishing.
   */
  inline?: boolean;
  run(args: A, ctx: ToolContext): O | Promise<O>;
}

/** The part of a tool that crosses the wire in REGISTER. */
export interface ToolDescriptor {
  name: string;
  description: string;
  input_schema: JsonSchema;
  output_schema: JsonSchema;
  network?: boolean;
}

export function describeTool(tool: ToolDefinition): ToolDescriptor {
  const d: ToolDescriptor = {
    name: tool.name,
    description: tool.description,
    input_schema: tool.input_schema,
    output_schema: tool.output_schema,
  };
  if (tool.network !== undefined) d.network = tool.network;
  return d;
}
