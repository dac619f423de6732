/**
 * Frame codec: turns a raw WebSocket message into a typed frame, or into the
 * error an ERROR frame reports. Nothing unchecked reaches a handler.
 */
import type { TSchema } from '@sinclair/typebox';
import { type TypeCheck, TypeCompiler, type ValueError, ValueErrorType } from '@sinclair/typebox/compiler';
import type { ErrorBody } from '../core/errors.js';
import { type Frame, FrameSchemas, type FrameType, PROTOCOL_VERSION } from './frames.js';
import { type PairingFrame, PairingFrameSchemas, type PairingFrameType } from './pairing.js';

type Checkers = Map<string, TypeCheck<TSchema>>;
const compileAll = (schemas: Record<string, TSchema>): Checkers =>
  new Map(Object.entries(schemas).map(([type, schema]) => [type, TypeCompiler.Compile(schema)]));
const checkers = compileAll(FrameSchemas);
const pairingCheckers = compileAll(PairingFrameSchemas);

export type DecodeResult<F = Frame> = { ok: true; frame: F } | { ok: false; error: ErrorBody; task_id?: string };

/** Describes the first schema violation as `path: message`, for error replies. */
export function describeSchemaError(check: TypeCheck<TSchema>, value: unknown): string {
  const first = check.Errors(value).First();
  if (!first) return 'invalid value';
  return explainError(first);
}

/** Errors saying the value is not of the variant's type at all (so that variant was not meant). */
const MISMATCH = new Set([
  ValueErrorType.Array,
  ValueErrorType.Boolean,
  ValueErrorType.Integer,
  ValueErrorType.Literal,
  ValueErrorType.Null,
  ValueErrorType.Number,
  ValueErrorType.Object,
  ValueErrorType.String,
]);

/**
 * A union's own error only says "Expected union value"; this looks into its
 * variants instead. A variant whose type (or whose literal discriminator such
 * as `kind`) the value does not have was not meant; of the others the first
 * one's first error is the explanation. When no variant was meant, it lists
 * what was expected: the discriminator values, or the variants' types.
 */
function explainError(err: ValueError): string {
  const path = err.path || '/';
  if (err.type === ValueErrorType.StringPattern && typeof err.schema.description === 'string')
    return `${path}: ${JSON.stringify(err.value)} is not valid; ${err.schema.description}`;
  if (err.type !== ValueErrorType.Union || err.errors.length === 0) return `${path}: ${err.message}`;
  const variants = err.errors.map((it) => [...it]);
  const isMismatch = (e: ValueError): boolean =>
    MISMATCH.has(e.type) && (e.path === err.path || (e.type === ValueErrorType.Literal && parentOf(e.path) === err.path));
  const meant = variants.find((errors) => errors.length > 0 && !errors.some(isMismatch));
  if (meant?.[0]) return explainError(meant[0]);
  const literals = variants.flatMap((errors) => errors.filter((e) => e.type === ValueErrorType.Literal && parentOf(e.path) === err.path));
  const at = literals[0]?.path;
  if (at && literals.every((e) => e.path === at)) {
    const allowed = literals.map((e) => JSON.stringify((e.schema as { const?: unknown }).const)).join(', ');
    const got = literals[0]?.value;
    return `${at}: ${got === undefined ? 'missing' : `${JSON.stringify(got)} is not valid`}; expected one of ${allowed}`;
  }
  const types = [...new Set((err.schema.anyOf as TSchema[] | undefined)?.map((s) => s.type ?? s.const).filter((t) => t !== undefined))];
  return types.length > 0 ? `${path}: expected ${types.join(' or ')}` : `${path}: ${err.message}`;
}

function parentOf(path: string): string {
  return path.slice(0, Math.max(0, path.lastIndexOf('/')));
}

export function decodeFrame(raw: string | Buffer, maxBytes: number): DecodeResult {
  return decodeWith<Frame>(checkers, raw, maxBytes);
}

/** Decodes a frame of the pairing exchange (see pairing.ts). */
export function decodePairingFrame(raw: string | Buffer, maxBytes: number): DecodeResult<PairingFrame> {
  return decodeWith<PairingFrame>(pairingCheckers, raw, maxBytes);
}

function decodeWith<F>(checkers: Checkers, raw: string | Buffer, maxBytes: number): DecodeResult<F> {
  const size = typeof raw === 'string' ? Buffer.byteLength(raw) : raw.length;
  if (size > maxBytes) {
    return {
      ok: false,
      error: { code: 'FM_ERR_FRAME_TOO_LARGE', message: `Frame of ${size} bytes exceeds the limit of ${maxBytes} bytes` },
    };
  }
  let value: unknown;
  try {
    value = JSON.parse(typeof raw === 'string' ? raw : raw.toString('utf8'));
  } catch {
    return { ok: false, error: { code: 'FM_ERR_MALFORMED_FRAME', message: 'Frame is not valid JSON' } };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, error: { code: 'FM_ERR_MALFORMED_FRAME', message: 'Frame must be a JSON object' } };
  }
  const obj = value as { type?: unknown; v?: unknown; task_id?: unknown };
  const taskId = typeof obj.task_id === 'string' ? obj.task_id : undefined;
  const withTask = (error: ErrorBody): DecodeResult<F> =>
    taskId === undefined ? { ok: false, error } : { ok: false, error, task_id: taskId };
  if (typeof obj.type !== 'string') {
    return withTask({ code: 'FM_ERR_MALFORMED_FRAME', message: 'Frame has no "type"' });
  }
  const check = checkers.get(obj.type);
  if (!check) {
    return withTask({ code: 'FM_ERR_MALFORMED_FRAME', message: `Unknown frame type "${obj.type.slice(0, 64)}"` });
  }
  // REGISTER carries the versions it speaks; every other frame must use the negotiated one.
  if (obj.type !== 'REGISTER' && obj.v !== PROTOCOL_VERSION) {
    return withTask({
      code: 'FM_ERR_PROTOCOL_VERSION',
      message: `Frame version ${String(obj.v)} is not supported (speaks ${PROTOCOL_VERSION})`,
    });
  }
  if (!check.Check(value)) {
    return withTask({ code: 'FM_ERR_MALFORMED_FRAME', message: `${obj.type} frame is invalid at ${describeSchemaError(check, value)}` });
  }
  return { ok: true, frame: value as F };
}

export function encodeFrame<T extends FrameType | PairingFrameType>(type: T, body: Record<string, unknown>): string {
  return JSON.stringify({ v: PROTOCOL_VERSION, type, ...body });
}

/** Picks the highest version both sides speak, or undefined. */
export function negotiateVersion(theirs: readonly number[], ours: readonly number[]): number | undefined {
  let best: number | undefined;
  for (const v of theirs) if (ours.includes(v) && (best === undefined || v > best)) best = v;
  return best;
}
