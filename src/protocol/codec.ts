/**
 * Frame codec: turns a raw WebSocket message into a typed frame, or into the
 * error an ERROR frame reports. Nothing unchecked reaches a handler.
 */
import type { TSchema } from '@sinclair/typebox';
import { type TypeCheck, TypeCompiler } from '@sinclair/typebox/compiler';
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
  return `${first.path || '/'}: ${first.message}`;
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
