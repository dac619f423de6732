/**
 * `ctx.state` across a worker's message port, shared by the node's tool
 * workers and the worker each deployed-function call runs in. The worker side
 * asks (`StateCall`); the side that owns the node's state documents answers
 * (`StateReply`) while the call that asked is still running, and refuses once
 * it has finished.
 */
import { type ErrorBody, FieldmeshError, isErrorCode, toErrorBody } from '../core/errors.js';
import type { StateDocument } from '../protocol/state.js';

/**
 * The node's named state documents, kept in sync with the gateway
 * (`GET/PUT /v1/nodes/{id}/state/{doc}`), as a tool or a deployed function
 * sees them. It sees the node's own copy: it adopts desired state written at
 * the gateway, and what it writes is journaled on the node and reported to the
 * gateway, at once when connected, on reconnect otherwise. Only the running
 * call may use it: a call made after it finished is refused with
 * FM_ERR_CANCELLED.
 */
export interface ContextState {
  /** The node's copy of a document (`{ version, data, checksum, updated_at }`), or null if it has none. */
  get(doc: string): Promise<StateDocument | null>;
  /**
   * Replaces the node's copy with `data` (a JSON object) as the next version.
   * Resolves once the change is durably journaled on the node, before the
   * gateway has confirmed it. Document names match `^[A-Za-z0-9][A-Za-z0-9_.-]*$`.
   */
  set(doc: string, data: Record<string, unknown>): Promise<StateDocument>;
}

/** The side that owns the state documents and answers `ctx.state` calls: on a node, the agent's journal. */
export interface StateHost {
  get(doc: string): StateDocument | null | Promise<StateDocument | null>;
  set(doc: string, data: unknown): Promise<StateDocument>;
}

/** A `ctx.state` call from a worker: `id` is the call (tool job) it comes from, `call` numbers the state call. */
export interface StateCall {
  type: 'state';
  id: number;
  call: number;
  op: 'get' | 'set';
  doc: string;
  /** The document data, for `set`. */
  data?: unknown;
}

export type StateReply =
  | { type: 'state_reply'; call: number; ok: true; value: StateDocument | null }
  | { type: 'state_reply'; call: number; ok: false; error: ErrorBody };

export interface StateClient {
  /** `ctx.state` for the call `id`. */
  stateFor(id: number): ContextState;
  /** Settles the state call a reply answers; a reply to nothing pending is ignored. */
  receive(reply: StateReply): void;
}

/**
 * The worker side of `ctx.state`: `post` sends a call, `receive` settles it.
 * `toError` turns a refusal into what the caller sees thrown; `busy` hears how
 * many calls await a reply, so a worker can keep its port referenced only
 * meanwhile.
 *
 * Self-contained on purpose (no imports, nothing from module scope): the
 * function worker runs from source text and embeds this as `String(stateClient)`.
 */
export function stateClient(
  post: (call: StateCall) => void,
  toError: (error: ErrorBody) => Error,
  busy?: (waiting: number) => void,
): StateClient {
  const waiting = new Map<number, { resolve: (value: StateDocument | null) => void; reject: (err: unknown) => void }>();
  let next = 1;
  const ask = (id: number, op: 'get' | 'set', doc: string, data?: unknown) =>
    new Promise<StateDocument | null>((resolve, reject) => {
      const call = next++;
      waiting.set(call, { resolve, reject });
      busy?.(waiting.size);
      try {
        post({ type: 'state', id, call, op, doc, data });
      } catch (err) {
        waiting.delete(call);
        busy?.(waiting.size);
        reject(err);
      }
    });
  return {
    stateFor: (id) => ({
      get: (doc) => ask(id, 'get', doc),
      set: async (doc, data) => {
        let json: unknown;
        try {
          json = JSON.parse(JSON.stringify(data) ?? 'null');
        } catch (err) {
          throw toError({
            code: 'FM_ERR_INVALID_REQUEST',
            message: `State document "${doc}": data is not JSON (${(err as Error).message})`,
          });
        }
        return (await ask(id, 'set', doc, json)) as StateDocument;
      },
    }),
    receive: (reply) => {
      const pending = waiting.get(reply.call);
      if (!pending) return;
      waiting.delete(reply.call);
      busy?.(waiting.size);
      if (reply.ok) pending.resolve(reply.value);
      else pending.reject(toError(reply.error));
    },
  };
}

/** A refusal as thrown in the worker: a FieldmeshError for a known code. */
export function stateError(error: ErrorBody): Error {
  return isErrorCode(error.code)
    ? new FieldmeshError(error.code, error.message)
    : Object.assign(new Error(error.message), { code: error.code });
}

/**
 * The owner side: answers one call through `reply`. `running` says whether
 * the call it comes from is still running; if not, or without a host, the
 * call is refused.
 */
export function serveStateCall(host: StateHost | undefined, msg: StateCall, running: boolean, reply: (r: StateReply) => void): void {
  const fail = (error: ErrorBody) => reply({ type: 'state_reply', call: msg.call, ok: false, error });
  if (!running) {
    fail({ code: 'FM_ERR_CANCELLED', message: 'The call has already finished' });
    return;
  }
  if (!host) {
    fail({ code: 'FM_ERR_INTERNAL', message: 'State documents are not available in this runtime' });
    return;
  }
  Promise.resolve()
    .then(() => (msg.op === 'get' ? host.get(msg.doc) : host.set(msg.doc, msg.data)))
    .then(
      (value) => reply({ type: 'state_reply', call: msg.call, ok: true, value }),
      (err: unknown) => fail(toErrorBody(err)),
    );
}

/** Replies to a worker; a worker already gone has nobody waiting for the answer. */
export function replyTo(port: { postMessage(value: unknown): void }): (r: StateReply) => void {
  return (r) => {
    try {
      port.postMessage(r);
    } catch {
      // The worker is gone.
    }
  };
}

/**
 * `ctx.state` for a call running in this thread: the same calls and refusals,
 * with what crosses copied as it would be between threads.
 */
export function localState(host: StateHost | undefined, running: () => boolean): ContextState {
  const client: StateClient = stateClient(
    (call) => serveStateCall(host, structuredClone(call), running(), (reply) => client.receive(structuredClone(reply))),
    stateError,
  );
  return client.stateFor(0);
}
