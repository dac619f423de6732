/**
 * State sync, gateway side: the store of each node's named state documents,
 * desired writes from the API (pushed at once to a connected node), and the
 * SYNC_REQUEST / STATE_ACK exchange with nodes (decisions in state-merge.ts).
 * Everything about one node runs in order, one step at a time, so a PUT and a
 * node's sync never interleave on the same document. A (re)connected node
 * stays SYNCING until its documents are caught up: `catchUp` resolves once
 * what it sent is applied and every push and resync it was asked for is
 * answered.
 */
import { FieldmeshError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { StateDocSummary, StateDocView, StatePutBody } from '../protocol/api.js';
import { encodeFrame } from '../protocol/codec.js';
import type { StateAckFrame, SyncRequestFrame } from '../protocol/frames.js';
import { checkStateDoc, DEFAULT_CONFLICT_STRATEGY, type StateDocument, SyncState, toStateDocument } from '../protocol/state.js';
import type { StateDocRecord, StateDocVersions, Store } from '../store/types.js';
import type { NodeConnection, NodeEntry, Registry } from './registry.js';
import { resolveSync } from './state-merge.js';

export interface StateSyncOptions {
  logger: Logger;
  /** How long a reconnected node may stay SYNCING waiting for its answers before it is let online anyway. @default 15000 */
  catchUpTimeoutMs?: number;
}

/** What one connection still owes the gateway before its node counts as caught up. */
interface Session {
  /** Documents the node sent a SYNC_REQUEST for on this connection. */
  seen: Set<string>;
  /** doc → desired version pushed and not yet acknowledged. */
  pushed: Map<string, number>;
  /** Documents the node was asked to send in full. */
  resyncs: Set<string>;
  closed: boolean;
  waiters: (() => void)[];
}

/** Compare-and-set attempts before a sync gives up on a document another gateway keeps changing. */
const CAS_ATTEMPTS = 5;

function inSync(r: StateDocRecord): boolean {
  return r.desired === null || (r.reported !== null && r.reported.checksum === r.desired.checksum);
}

function versionsOf(r: StateDocRecord): StateDocVersions {
  return { desired_version: r.desired?.version ?? 0, reported_version: r.reported?.version ?? 0 };
}

export function stateDocView(r: StateDocRecord): StateDocView {
  return {
    ok: true,
    node_id: r.node_id,
    doc: r.doc,
    strategy: r.strategy,
    desired: r.desired,
    reported: r.reported,
    in_sync: inSync(r),
    updated_at: r.updated_at,
  };
}

function summary(r: StateDocRecord): StateDocSummary {
  return {
    doc: r.doc,
    strategy: r.strategy,
    desired_version: r.desired?.version ?? null,
    reported_version: r.reported?.version ?? null,
    in_sync: inSync(r),
    updated_at: r.updated_at,
  };
}

export class StateSync {
  readonly #store: Store;
  readonly #registry: Registry;
  readonly #log: Logger;
  readonly #catchUpTimeoutMs: number;
  readonly #chains = new Map<string, Promise<unknown>>();
  readonly #sessions = new WeakMap<NodeConnection, Session>();

  constructor(store: Store, registry: Registry, opts: StateSyncOptions) {
    this.#store = store;
    this.#registry = registry;
    this.#log = opts.logger;
    this.#catchUpTimeoutMs = opts.catchUpTimeoutMs ?? 15_000;
  }

  #node(nodeId: string): NodeEntry {
    const entry = this.#registry.get(nodeId);
    if (!entry) {
      throw new FieldmeshError('FM_ERR_NODE_NOT_FOUND', `Node "${nodeId}" is not known to this gateway`, { details: { node_id: nodeId } });
    }
    return entry;
  }

  /** Runs `fn` after everything queued for this node, whatever became of it. */
  #serial<T>(nodeId: string, fn: () => Promise<T>): Promise<T> {
    const next = (this.#chains.get(nodeId) ?? Promise.resolve()).then(fn, fn);
    const tail = next.catch(() => undefined);
    this.#chains.set(nodeId, tail);
    void tail.then(() => {
      if (this.#chains.get(nodeId) === tail) this.#chains.delete(nodeId);
    });
    return next;
  }

  #session(conn: NodeConnection): Session {
    let s = this.#sessions.get(conn);
    if (!s) {
      s = { seen: new Set(), pushed: new Map(), resyncs: new Set(), closed: false, waiters: [] };
      this.#sessions.set(conn, s);
    }
    return s;
  }

  #settle(s: Session): void {
    if (!s.closed && (s.pushed.size > 0 || s.resyncs.size > 0)) return;
    for (const wake of s.waiters.splice(0)) wake();
  }

  async list(nodeId: string): Promise<StateDocSummary[]> {
    this.#node(nodeId);
    return (await this.#store.listStateDocs(nodeId)).map(summary);
  }

  async get(nodeId: string, doc: string): Promise<StateDocView> {
    this.#node(nodeId);
    const r = await this.#store.getStateDoc(nodeId, doc);
    if (!r) {
      throw new FieldmeshError('FM_ERR_STATE_NOT_FOUND', `Node "${nodeId}" has no state document "${doc}"`, {
        details: { node_id: nodeId, doc },
      });
    }
    return stateDocView(r);
  }

  /**
   * Writes the desired side: the next version, or FM_ERR_VERSION_CONFLICT
   * (with the current version) when `version` is given and is not the current
   * one. A connected node gets it at once; another gets it when it reconnects.
   */
  writeDesired(nodeId: string, doc: string, body: StatePutBody): Promise<StateDocView> {
    const entry = this.#node(nodeId);
    const bad = checkStateDoc(doc, body.data);
    if (bad) throw new FieldmeshError(bad.code, bad.message, { details: { node_id: nodeId, doc } });
    return this.#serial(nodeId, async () => {
      const current = await this.#store.getStateDoc(nodeId, doc);
      const currentVersion = current?.desired?.version ?? 0;
      const conflict = (version: number) =>
        new FieldmeshError(
          'FM_ERR_VERSION_CONFLICT',
          `State document "${doc}" of node "${nodeId}" is at desired version ${version}, not ${body.version}`,
          { details: { node_id: nodeId, doc, current_version: version, expected_version: body.version ?? null } },
        );
      if (body.version !== undefined && body.version !== currentVersion) throw conflict(currentVersion);
      const now = new Date();
      const desired = toStateDocument(
        new SyncState({ version: currentVersion + 1, data: body.data, checksum: SyncState.checksumOf(body.data), updatedAt: now }),
      );
      const record: StateDocRecord = {
        node_id: nodeId,
        doc,
        strategy: body.strategy ?? current?.strategy ?? DEFAULT_CONFLICT_STRATEGY,
        desired,
        reported: current?.reported ?? null,
        created_at: current?.created_at ?? now.toISOString(),
        updated_at: now.toISOString(),
      };
      if (!(await this.#store.saveStateDoc(record, current ? versionsOf(current) : null))) {
        // Another gateway wrote first.
        const latest = await this.#store.getStateDoc(nodeId, doc);
        throw conflict(latest?.desired?.version ?? 0);
      }
      this.#log.info('desired state written', { node_id: nodeId, doc, version: desired.version, strategy: record.strategy });
      if (entry.conn) this.#push(entry.conn, doc, desired, false);
      return stateDocView(record);
    });
  }

  #push(conn: NodeConnection, doc: string, desired: StateDocument, resync: boolean): void {
    const s = this.#session(conn);
    s.pushed.set(doc, Math.max(desired.version, s.pushed.get(doc) ?? 0));
    conn.send(encodeFrame('STATE_PUSH', { doc, desired, resync }));
  }

  /** A node's SYNC_REQUEST: applies its changes, settles conflicts, and answers with acks, pushes or a resync. */
  onSyncRequest(entry: NodeEntry, conn: NodeConnection, frame: SyncRequestFrame): Promise<void> {
    const nodeId = entry.record.node_id;
    const s = this.#session(conn);
    return this.#serial(nodeId, async () => {
      s.seen.add(frame.doc);
      // Any request for the document answers a resync: if it still disagrees, the decision asks again.
      s.resyncs.delete(frame.doc);
      try {
        await this.#sync(nodeId, conn, s, frame);
      } catch (err) {
        this.#log.error('state sync failed', { node_id: nodeId, doc: frame.doc, error: String(err) });
      } finally {
        this.#settle(s);
      }
    });
  }

  async #sync(nodeId: string, conn: NodeConnection, s: Session, frame: SyncRequestFrame): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const stored = await this.#store.getStateDoc(nodeId, frame.doc);
      const now = new Date();
      const current: StateDocRecord = stored ?? {
        node_id: nodeId,
        doc: frame.doc,
        strategy: DEFAULT_CONFLICT_STRATEGY,
        desired: null,
        reported: null,
        created_at: now.toISOString(),
        updated_at: now.toISOString(),
      };
      const d = resolveSync(current, frame, now);
      if (d.changed && !(await this.#store.saveStateDoc(d.record, stored ? versionsOf(stored) : null))) {
        if (attempt >= CAS_ATTEMPTS) throw new Error(`document kept changing under ${CAS_ATTEMPTS} attempts`);
        continue;
      }
      if (d.changed || d.conflict || d.resync || d.restore || d.invalid > 0) {
        this.#log.info('state synced', {
          node_id: nodeId,
          doc: frame.doc,
          reported_version: d.record.reported?.version ?? null,
          desired_version: d.record.desired?.version ?? null,
          conflict: d.conflict?.winner,
          strategy: d.conflict ? d.record.strategy : undefined,
          resync: d.resync || undefined,
          restore: d.restore ? true : undefined,
          invalid: d.invalid || undefined,
        });
      }
      if (d.restore) conn.send(encodeFrame('SYNC_RESPONSE', { doc: frame.doc, resync: false, reported: d.restore }));
      if (d.resync) {
        s.resyncs.add(frame.doc);
        conn.send(encodeFrame('SYNC_RESPONSE', { doc: frame.doc, resync: true }));
      }
      if (d.ack !== null) conn.send(encodeFrame('STATE_ACK', { doc: frame.doc, side: 'reported', version: d.ack }));
      if (d.push) this.#push(conn, frame.doc, d.push.desired, d.push.resync);
      return;
    }
  }

  /**
   * A node confirms it holds desired state up to a version. Queued behind the
   * node's earlier frames, so the SYNC_REQUEST reporting what it adopted (sent
   * just before) is applied first.
   */
  onAck(entry: NodeEntry, conn: NodeConnection, frame: StateAckFrame): Promise<void> {
    const nodeId = entry.record.node_id;
    return this.#serial(nodeId, async () => {
      if (frame.side !== 'desired') {
        this.#log.warn('node acknowledged a reported version, which only the gateway confirms', { node_id: nodeId, doc: frame.doc });
        return;
      }
      const s = this.#session(conn);
      const waiting = s.pushed.get(frame.doc);
      if (waiting !== undefined && frame.version >= waiting) s.pushed.delete(frame.doc);
      this.#settle(s);
    });
  }

  /**
   * After a node's NODE_READY: sends what it did not ask about (documents it
   * has no copy of), then waits until it has answered every push and resync.
   * Resolves when the node may count as ONLINE.
   */
  async catchUp(entry: NodeEntry, conn: NodeConnection): Promise<void> {
    const nodeId = entry.record.node_id;
    const s = this.#session(conn);
    await this.#serial(nodeId, async () => {
      try {
        for (const r of await this.#store.listStateDocs(nodeId)) {
          if (s.seen.has(r.doc)) continue;
          if (r.reported) conn.send(encodeFrame('SYNC_RESPONSE', { doc: r.doc, resync: false, reported: r.reported }));
          if (r.desired) this.#push(conn, r.doc, r.desired, false);
        }
      } catch (err) {
        this.#log.error('could not send state documents to a reconnected node', { node_id: nodeId, error: String(err) });
      }
    });
    if (s.closed || (s.pushed.size === 0 && s.resyncs.size === 0)) return;
    let timer: NodeJS.Timeout | undefined;
    const caughtUp = new Promise<boolean>((resolve) => s.waiters.push(() => resolve(true)));
    const timedOut = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), this.#catchUpTimeoutMs);
    });
    const ok = await Promise.race([caughtUp, timedOut]);
    clearTimeout(timer);
    if (!ok) {
      this.#log.warn('node did not finish its state sync in time; letting it online', {
        node_id: nodeId,
        waiting_for: [...s.pushed.keys(), ...s.resyncs],
        timeout_ms: this.#catchUpTimeoutMs,
      });
    }
  }

  /** The connection closed: nothing more will come from it, so nobody waits for it. */
  connectionClosed(conn: NodeConnection): void {
    const s = this.#sessions.get(conn);
    if (!s) return;
    s.closed = true;
    this.#settle(s);
  }
}
