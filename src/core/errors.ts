/**
 * The one table of fieldmesh error codes. Every error that reaches a client,
 * a node or a log carries one of these codes, the HTTP status it maps to and
 * whether a retry on another node may succeed.
 */
export const ErrorCodes = {
  FM_ERR_INVALID_JSON: { status: 400, retryable: false, message: 'Body is not valid JSON' },
  FM_ERR_INVALID_REQUEST: { status: 400, retryable: false, message: 'Request failed validation' },
  FM_ERR_PAYLOAD_TOO_LARGE: { status: 413, retryable: false, message: 'Payload is too large' },
  FM_ERR_ROUTE_NOT_FOUND: { status: 404, retryable: false, message: 'No such route' },
  FM_ERR_METHOD_NOT_ALLOWED: { status: 405, retryable: false, message: 'Method not allowed' },
  FM_ERR_NODE_NOT_FOUND: { status: 404, retryable: false, message: 'Node not found' },
  FM_ERR_TASK_NOT_FOUND: { status: 404, retryable: false, message: 'Task not found' },
  FM_ERR_RUN_NOT_FOUND: { status: 404, retryable: false, message: 'Run not found' },
  FM_ERR_UNKNOWN_TOOL: { status: 404, retryable: false, message: 'No node in the mesh offers this tool' },
  FM_ERR_NO_CAPABLE_NODE: { status: 503, retryable: false, message: 'No node can run this task' },
  FM_ERR_NO_NODE_IN_AREA: { status: 503, retryable: false, message: 'No node lies within the target area' },
  FM_ERR_EXPIRED: { status: 410, retryable: false, message: 'Task expired before its node came back' },
  FM_ERR_TEMPLATE: { status: 400, retryable: false, message: 'A template reference could not be resolved' },
  FM_ERR_NODE_OFFLINE: { status: 503, retryable: true, message: 'Node is offline' },
  FM_ERR_CONNECTION_LOST: { status: 503, retryable: true, message: 'Connection to the node was lost' },
  FM_ERR_TOOL_TIMEOUT: { status: 504, retryable: true, message: 'Tool did not finish in time' },
  FM_ERR_INVALID_ARGS: { status: 400, retryable: false, message: 'Tool arguments do not match its input_schema' },
  FM_ERR_INVALID_OUTPUT: { status: 502, retryable: false, message: 'Tool output does not match its output_schema' },
  FM_ERR_UNKNOWN_UNIT: { status: 400, retryable: false, message: 'Unknown unit' },
  FM_ERR_INCOMPATIBLE_UNITS: { status: 400, retryable: false, message: 'Units measure different quantities' },
  FM_ERR_EXECUTION: { status: 502, retryable: false, message: 'Tool failed while running' },
  FM_ERR_WORKER_CRASHED: { status: 502, retryable: true, message: 'Worker thread exited while running the tool' },
  FM_ERR_RESULT_TOO_LARGE: { status: 502, retryable: false, message: 'Tool output exceeds the frame limit' },
  FM_ERR_NODE_BUSY: { status: 503, retryable: true, message: 'Node is at its concurrency limit' },
  FM_ERR_CANCELLED: { status: 409, retryable: false, message: 'Task was cancelled' },
  FM_ERR_TASK_FINISHED: { status: 409, retryable: false, message: 'Task has already finished' },
  FM_ERR_SHUTTING_DOWN: { status: 503, retryable: true, message: 'Shutting down' },
  FM_ERR_PROTOCOL_VERSION: { status: 400, retryable: false, message: 'No common protocol version' },
  FM_ERR_MALFORMED_FRAME: { status: 400, retryable: false, message: 'Frame is malformed' },
  FM_ERR_FRAME_TOO_LARGE: { status: 413, retryable: false, message: 'Frame exceeds the size limit' },
  FM_ERR_NOT_REGISTERED: { status: 400, retryable: false, message: 'Connection has not registered' },
  FM_ERR_DUPLICATE_NODE: { status: 409, retryable: false, message: 'Node id is already connected' },
  FM_ERR_GATEWAY_IDENTITY: { status: 495, retryable: false, message: 'Gateway certificate does not match the pinned one' },
  FM_ERR_UNAUTHORIZED: { status: 401, retryable: false, message: 'A valid API token is required' },
  FM_ERR_FORBIDDEN: { status: 403, retryable: false, message: 'The API token lacks the scope this call needs' },
  FM_ERR_TOKEN_NOT_FOUND: { status: 404, retryable: false, message: 'API token not found' },
  FM_ERR_INVALID_OPTION: { status: 400, retryable: false, message: 'Invalid option' },
  FM_ERR_NOT_PAIRED: { status: 400, retryable: false, message: 'Node holds no certificate from the gateway: pair it first' },
  FM_ERR_PAIRING_CODE_INVALID: { status: 401, retryable: false, message: 'Pairing code is not valid' },
  FM_ERR_PAIRING_CODE_EXPIRED: { status: 410, retryable: false, message: 'Pairing code has expired' },
  FM_ERR_PAIRING_CODE_USED: { status: 409, retryable: false, message: 'Pairing code has already been used' },
  FM_ERR_TOO_MANY_CALLS: { status: 429, retryable: true, message: 'Too many calls in flight on this connection' },
  FM_ERR_PAIRING_LOCKED: { status: 429, retryable: true, message: 'Too many failed pairing attempts from this address' },
  FM_ERR_PAIRING_DENIED: { status: 403, retryable: false, message: 'An operator denied the pairing request' },
  FM_ERR_PAIRING_REFUSED: { status: 400, retryable: false, message: 'Pairing request refused' },
  FM_ERR_PAIRING_NOT_PENDING: { status: 404, retryable: false, message: 'No pairing request is pending for this node' },
  FM_ERR_CERT_REVOKED: { status: 403, retryable: false, message: 'Node certificate has been revoked' },
  FM_ERR_CERT_UNKNOWN: { status: 403, retryable: false, message: 'Node certificate was not issued by this gateway' },
  FM_ERR_CERT_EXPIRED: { status: 403, retryable: false, message: 'Node certificate has expired' },
  FM_ERR_NODE_ID_MISMATCH: { status: 403, retryable: false, message: 'Node id differs from the one in its certificate' },
  FM_ERR_SIGNING_KEY_MISMATCH: { status: 403, retryable: false, message: 'Node signing key differs from the one bound at pairing' },
  FM_ERR_TASK_SIGNATURE: { status: 403, retryable: false, message: 'TASK frame does not carry a valid gateway signature' },
  FM_ERR_RESULT_REPLAYED: { status: 409, retryable: false, message: 'Result was already delivered for another task or attempt' },
  FM_ERR_RESULT_REFUSED: { status: 403, retryable: false, message: 'RESULT_BATCH did not check and was refused whole' },
  FM_ERR_INVALID_WORKFLOW: { status: 400, retryable: false, message: 'Workflow is invalid' },
  FM_ERR_POLICY_VIOLATION: { status: 400, retryable: false, message: 'Workflow violates one of its policies' },
  FM_ERR_WORKFLOW_NOT_FOUND: { status: 404, retryable: false, message: 'Workflow not found' },
  FM_ERR_STEP_FAILED: { status: 502, retryable: false, message: 'Workflow step failed' },
  FM_ERR_TOOL_DENIED: { status: 403, retryable: false, message: 'The gateway tool policy denies this tool' },
  FM_ERR_APPROVAL_REJECTED: { status: 403, retryable: false, message: 'The task was rejected by an approver' },
  FM_ERR_APPROVAL_TIMEOUT: { status: 504, retryable: false, message: 'No approval decision came in time' },
  FM_ERR_NOT_AWAITING_APPROVAL: { status: 409, retryable: false, message: 'Task is not awaiting approval' },
  FM_ERR_NODE_POLICY_DENIED: { status: 403, retryable: false, message: "The node's own policy refuses this task" },
  FM_ERR_FUNCTION_NOT_FOUND: { status: 404, retryable: false, message: 'Function is not deployed' },
  FM_ERR_OUT_OF_MEMORY: { status: 502, retryable: false, message: 'Function ran out of memory' },
  FM_ERR_BAD_SIGNATURE: { status: 403, retryable: false, message: 'Bundle does not carry a valid gateway signature' },
  FM_ERR_DEPLOY_NOT_ALLOWED: { status: 403, retryable: false, message: "The node's own policy refuses deploys" },
  FM_ERR_STATE_NOT_FOUND: { status: 404, retryable: false, message: 'State document not found' },
  FM_ERR_VERSION_CONFLICT: { status: 409, retryable: false, message: 'The document changed since the version this write was based on' },
  FM_ERR_UNAVAILABLE: { status: 503, retryable: true, message: 'Gateway is unavailable' },
  FM_ERR_NO_GATEWAY_FOUND: { status: 503, retryable: true, message: 'No gateway answered discovery' },
  FM_ERR_DISCOVERY_UNAVAILABLE: { status: 503, retryable: false, message: 'Discovery could not start on this network interface' },
  FM_ERR_INTERNAL: { status: 500, retryable: false, message: 'Internal error' },
} as const satisfies Record<string, { status: number; retryable: boolean; message: string }>;

export type ErrorCode = keyof typeof ErrorCodes;

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ErrorCodes, value);
}

/** The JSON shape of an error on the wire and in the HTTP API. */
export interface ErrorBody {
  code: string;
  message: string;
  retryable?: boolean;
  details?: Record<string, unknown>;
}

export interface FieldmeshErrorOptions extends ErrorOptions {
  details?: Record<string, unknown>;
  retryable?: boolean;
}

/** An error with a code from {@link ErrorCodes}; recognise it by `code`, not only `instanceof`. */
export class FieldmeshError extends Error {
  override readonly name = 'FieldmeshError';
  readonly code: ErrorCode;
  readonly status: number;
  readonly retryable: boolean;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message?: string, options: FieldmeshErrorOptions = {}) {
    super(message ?? ErrorCodes[code].message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.status = ErrorCodes[code].status;
    this.retryable = options.retryable ?? ErrorCodes[code].retryable;
    this.details = options.details;
  }

  toJSON(): ErrorBody {
    const body: ErrorBody = { code: this.code, message: this.message, retryable: this.retryable };
    if (this.details !== undefined) body.details = this.details;
    return body;
  }
}

export function isFieldmeshError(err: unknown): err is FieldmeshError {
  return (
    err instanceof FieldmeshError ||
    (typeof err === 'object' &&
      err !== null &&
      (err as { name?: unknown }).name === 'FieldmeshError' &&
      isErrorCode((err as { code?: unknown }).code))
  );
}

/** Turns anything thrown into a wire-safe error body, never leaking a stack. */
export function toErrorBody(err: unknown): ErrorBody {
  if (isFieldmeshError(err)) return err.toJSON();
  if (typeof err === 'object' && err !== null) {
    const e = err as { code?: unknown; message?: unknown; retryable?: unknown };
    if (isErrorCode(e.code)) {
      return {
        code: e.code,
        message: typeof e.message === 'string' ? e.message : ErrorCodes[e.code].message,
        retryable: typeof e.retryable === 'boolean' ? e.retryable : ErrorCodes[e.code].retryable,
      };
    }
  }
  return { code: 'FM_ERR_INTERNAL', message: ErrorCodes.FM_ERR_INTERNAL.message, retryable: false };
}

/** HTTP status for an error code, or 500 for codes this table does not know. */
export function statusOf(code: string): number {
  return isErrorCode(code) ? ErrorCodes[code].status : 500;
}
