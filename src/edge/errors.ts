// Error codes and the error class of the in-process edge SDK (issue 7, item 2: errors as the original spec names them).
import type { ErrorCode } from '../core/errors.js';

/**
 * The codes an edge invocation can fail with, checked against the core table
 * so a rename there breaks the build instead of silently drifting.
 */
export const EdgeErrorCode = {
  FUNCTION_NOT_FOUND: 'FM_ERR_FUNCTION_NOT_FOUND',
  OUT_OF_MEMORY: 'FM_ERR_OUT_OF_MEMORY',
  TOOL_TIMEOUT: 'FM_ERR_TOOL_TIMEOUT',
  EXECUTION: 'FM_ERR_EXECUTION',
  INVALID_ARGS: 'FM_ERR_INVALID_ARGS',
  WORKER_CRASHED: 'FM_ERR_WORKER_CRASHED',
} as const satisfies Record<string, ErrorCode>;
export type EdgeErrorCode = (typeof EdgeErrorCode)[keyof typeof EdgeErrorCode];

export interface EdgeExecutionErrorOptions extends ErrorOptions {
  /** The function the call was for. */
  functionId?: string;
  /** The node whose runtime ran (or refused) the call. */
  nodeId?: string;
}

/**
 * Every failure of `EdgeRuntime.invoke`. What the function threw is kept as
 * `cause` (the original spec chains it with `raise ... from e`); recognise the
 * error by `code`/`name` as well as `instanceof`, since copies of the package
 * may coexist in one process.
 */
export class EdgeExecutionError extends Error {
  override readonly name = 'EdgeExecutionError';
  readonly code: EdgeErrorCode;
  readonly functionId: string | undefined;
  readonly nodeId: string | undefined;

  constructor(code: EdgeErrorCode, message: string, options: EdgeExecutionErrorOptions = {}) {
    super(message, 'cause' in options ? { cause: options.cause } : undefined);
    this.code = code;
    this.functionId = options.functionId;
    this.nodeId = options.nodeId;
  }
}

/** True for an {@link EdgeExecutionError}, also one from another copy of this module. */
export function isEdgeExecutionError(err: unknown): err is EdgeExecutionError {
  if (err instanceof EdgeExecutionError) return true;
  if (typeof err !== 'object' || err === null) return false;
  const e = err as { name?: unknown; code?: unknown };
  return e.name === 'EdgeExecutionError' && Object.values<unknown>(EdgeErrorCode).includes(e.code);
}
