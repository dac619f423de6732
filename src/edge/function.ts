// EdgeFunction: a deployable function with its memory and time limits and its own environment (design doc 002, section 2.2).

import { isAbsolute } from 'node:path';
import { FieldmeshError } from '../core/errors.js';
import type { ContextState } from './state-port.js';

/** What a function receives besides its arguments. */
export interface EdgeContext {
  functionId: string;
  nodeId: string;
  /** The function's own `environment` and nothing else. */
  env: Readonly<Record<string, string>>;
  /**
   * Aborted when an in-process handler passes its time limit, so a cooperative
   * handler can stop its work. A worker handler is terminated instead, so its
   * signal never fires.
   */
  signal: AbortSignal;
  /**
   * The node's state documents, served by the runtime's `state` host (on a
   * mesh node, the node's own copies, synced with the gateway). Without a host
   * its calls fail with FM_ERR_INTERNAL; once the call has finished, with
   * FM_ERR_CANCELLED. A worker handler's calls cross its message port.
   */
  state: ContextState;
}

/** A handler given as a plain function; it runs in the caller's thread (see {@link EdgeFunction}). */
export type EdgeHandlerFunction = (args: unknown, ctx: EdgeContext) => unknown;

/** An ES module on disk whose default export is the handler; runs in a worker thread. */
export interface EdgeModuleHandler {
  /** Absolute path or `file:` URL. */
  module: string | URL;
}

/**
 * ES module source text whose default export is the handler; runs in a worker
 * thread. It may import `node:` built-ins but nothing relative or from
 * `node_modules`, because it is loaded from a `data:` URL.
 */
export interface EdgeSourceHandler {
  source: string;
}

export type EdgeHandler = EdgeHandlerFunction | EdgeModuleHandler | EdgeSourceHandler;

export interface EdgeFunctionInit {
  id: string;
  name: string;
  handler: EdgeHandler;
  /** Old-generation heap limit of the function's worker. @default 128 */
  memoryMb?: number;
  /** Seconds a call may take, fractions allowed. @default 30 */
  timeoutSeconds?: number;
  /** Environment variables the function sees, and the only ones. @default {} */
  environment?: Record<string, string>;
}

/**
 * A function deployable to edge nodes.
 *
 * How the limits hold depends on the handler:
 * - `{ module }` or `{ source }`: each call runs in a worker thread with
 *   `resourceLimits.maxOldGenerationSizeMb = memoryMb`, `process.env` set to
 *   `environment` alone, and is terminated at `timeoutSeconds`. A thread that
 *   a call left healthy runs later calls of the same function object, so
 *   module-level state may persist between them (see `EdgeRuntime`).
 *   Arguments and results cross the thread boundary by structured clone. The heap limit
 *   covers JavaScript objects, strings and arrays; the bytes behind
 *   ArrayBuffers and Buffers live outside the V8 heap and are not counted.
 * - a plain function: a closure cannot be moved to another thread (it may
 *   capture anything), so it runs in the caller's thread. Only the time limit
 *   holds, by racing the call against a timer; on time-out the call fails with
 *   FM_ERR_TOOL_TIMEOUT and `ctx.signal` is aborted, but the handler's own work
 *   goes on unless it listens to the signal, and a handler that never yields
 *   (a synchronous endless loop) blocks the thread and cannot be stopped.
 *   `memoryMb` is not enforced, and `process.env` is the host's, so the
 *   function's environment is `ctx.env`.
 */
export class EdgeFunction {
  readonly id: string;
  readonly name: string;
  readonly handler: EdgeHandler;
  readonly memoryMb: number;
  readonly timeoutSeconds: number;
  readonly environment: Readonly<Record<string, string>>;

  constructor(init: EdgeFunctionInit) {
    if (typeof init.id !== 'string' || init.id === '')
      throw new FieldmeshError('FM_ERR_INVALID_OPTION', 'EdgeFunction.id: must be a non-empty string');
    const memoryMb = init.memoryMb ?? 128;
    if (!Number.isInteger(memoryMb) || memoryMb < 1) {
      throw new FieldmeshError('FM_ERR_INVALID_OPTION', `EdgeFunction.memoryMb: ${String(memoryMb)} is not a positive integer`);
    }
    const timeoutSeconds = init.timeoutSeconds ?? 30;
    if (typeof timeoutSeconds !== 'number' || !Number.isFinite(timeoutSeconds) || timeoutSeconds <= 0) {
      throw new FieldmeshError('FM_ERR_INVALID_OPTION', `EdgeFunction.timeoutSeconds: ${String(timeoutSeconds)} is not a positive number`);
    }
    const environment: Record<string, string> = {};
    for (const [key, value] of Object.entries(init.environment ?? {})) {
      if (typeof value !== 'string')
        throw new FieldmeshError('FM_ERR_INVALID_OPTION', `EdgeFunction.environment.${key}: ${String(value)} is not a string`);
      environment[key] = value;
    }
    this.id = init.id;
    this.name = init.name;
    this.handler = checkHandler(init.handler);
    this.memoryMb = memoryMb;
    this.timeoutSeconds = timeoutSeconds;
    // Frozen copy: the caller's object cannot change what a deployed function sees.
    this.environment = Object.freeze(environment);
  }
}

function checkHandler(handler: EdgeHandler): EdgeHandler {
  if (typeof handler === 'function') return handler;
  if (typeof handler === 'object' && handler !== null) {
    if ('module' in handler) {
      const m = handler.module;
      if (m instanceof URL ? m.protocol === 'file:' : typeof m === 'string' && (isAbsolute(m) || m.startsWith('file:'))) {
        return Object.freeze({ module: m instanceof URL ? new URL(m.href) : m });
      }
      // A relative path would resolve against whatever the working directory is at call time.
      throw new FieldmeshError('FM_ERR_INVALID_OPTION', `EdgeFunction.handler.module: ${String(m)} is not an absolute path or file: URL`);
    }
    if ('source' in handler && typeof handler.source === 'string') return Object.freeze({ source: handler.source });
  }
  throw new FieldmeshError('FM_ERR_INVALID_OPTION', 'EdgeFunction.handler: must be a function, { module } or { source }');
}
