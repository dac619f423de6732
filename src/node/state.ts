/**
 * State sync, node side: the node's named state documents and its durable
 * journal. Each document keeps the node's own (reported) state and the
 * changes the gateway has not confirmed yet, in an EdgeSynchronizer, plus the
 * last desired state the gateway sent. Every change is on disk before it is
 * acknowledged: one JSON file per document under `<dataDir>/state/`, written
 * to a temporary file, fsynced, and renamed over the old one, so a crash
 * leaves either the old or the new file and never half of one. While the
 * gateway is unreachable, local writes keep versioning and stay pending; they
 * are sent on reconnect (SYNC_REQUEST) and dropped once confirmed (STATE_ACK).
 */
import { mkdir, open, readdir, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { FieldmeshError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { FrameBody, StateChange, SyncRequestFrame } from '../protocol/frames.js';
import {
  checkStateDoc,
  EdgeSynchronizer,
  fromStateDocument,
  STATE_DOC_MAX_LENGTH,
  STATE_DOC_PATTERN,
  type StateDocument,
  type SyncData,
  SyncState,
  toStateDocument,
} from '../protocol/state.js';

export const STATE_DIR = 'state';

/** Where a pending change came from and which desired version it was made on. */
type ChangeMeta = Pick<StateChange, 'origin' | 'base_desired'>;

/** One document's journal file. */
interface JournalFile {
  doc: string;
  local: StateDocument | null;
  pending: StateChange[];
  desired: StateDocument | null;
}

interface DocState {
  doc: string;
  file: string;
  sync: EdgeSynchronizer;
  meta: Map<number, ChangeMeta>;
  desired: SyncState | undefined;
  /** The journal write in progress (never rejects). */
  writing: Promise<void>;
  /** A write queued behind it, which will capture every change made until it starts. */
  queued: Promise<void> | undefined;
}

/** What applying a STATE_PUSH did. */
export interface DesiredOutcome {
  /** False when the pushed document did not match its checksum. */
  accepted: boolean;
  /** The desired version the node now holds. */
  version: number;
  /** True when the node adopted the data as a new local version, to be reported. */
  adopted: boolean;
}

/** File name of a document: case-insensitive file systems must not merge `Config` and `config`, so capitals become `^` + the letter. */
export function journalFileName(doc: string): string {
  return `${doc.replace(/[A-Z]/g, (c) => `^${c.toLowerCase()}`)}.json`;
}

function validDocName(doc: unknown): doc is string {
  return typeof doc === 'string' && doc.length <= STATE_DOC_MAX_LENGTH && STATE_DOC_PATTERN.test(doc);
}

function pendingChange(s: DocState, state: SyncState): StateChange {
  return { ...toStateDocument(state), ...(s.meta.get(state.version) ?? { origin: 'local', base_desired: 0 }) };
}

let tmpCounter = 0;

export class NodeStateJournal {
  readonly #dir: string;
  readonly #log: Logger;
  readonly #docs = new Map<string, DocState>();

  private constructor(dir: string, log: Logger) {
    this.#dir = dir;
    this.#log = log;
  }

  /** Opens (creating if needed) `<dataDir>/state` and loads every document's journal. */
  static async open(dataDir: string, log: Logger): Promise<NodeStateJournal> {
    const dir = join(dataDir, STATE_DIR);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const journal = new NodeStateJournal(dir, log);
    for (const name of await readdir(dir)) {
      const path = join(dir, name);
      // A temporary file is a write that never got renamed into place: the previous file still holds that document.
      if (name.includes('.tmp-')) {
        await unlink(path).catch(() => undefined);
        continue;
      }
      if (!name.endsWith('.json')) continue;
      try {
        journal.#load(path, JSON.parse(await readFile(path, 'utf8')) as JournalFile);
      } catch (err) {
        throw new FieldmeshError('FM_ERR_INVALID_OPTION', `node.dataDir: state journal ${path} is unreadable: ${(err as Error).message}`, {
          details: { option: 'node.dataDir', file: path },
          cause: err,
        });
      }
    }
    return journal;
  }

  #load(path: string, j: JournalFile): void {
    if (!validDocName(j.doc) || journalFileName(j.doc) !== path.slice(this.#dir.length + 1)) {
      throw new Error(`names document ${JSON.stringify(j.doc)}, which does not belong in this file`);
    }
    // A journal entry whose checksum no longer matches was changed on disk; the data is what the node has, so its checksum is recomputed.
    const snapshot = (d: StateDocument, what: string): SyncState => {
      const s = fromStateDocument(d);
      if (s.isValid()) return s;
      this.#log.warn('state journal entry does not match its checksum; using its data', {
        doc: j.doc,
        side: what,
        version: d.version,
        file: path,
      });
      return new SyncState({
        version: s.version,
        data: s.data as SyncData,
        checksum: SyncState.checksumOf(s.data as SyncData),
        updatedAt: s.updatedAt,
      });
    };
    const pending = (j.pending ?? []).map((c) => snapshot(c, 'pending'));
    const state: DocState = {
      doc: j.doc,
      file: path,
      sync: new EdgeSynchronizer({ local: j.local ? snapshot(j.local, 'local') : undefined, pending }),
      meta: new Map((j.pending ?? []).map((c) => [c.version, { origin: c.origin, base_desired: c.base_desired }])),
      desired: j.desired ? snapshot(j.desired, 'desired') : undefined,
      writing: Promise.resolve(),
      queued: undefined,
    };
    this.#docs.set(j.doc, state);
  }

  #state(doc: string): DocState {
    let s = this.#docs.get(doc);
    if (!s) {
      s = {
        doc,
        file: join(this.#dir, journalFileName(doc)),
        sync: new EdgeSynchronizer(),
        meta: new Map(),
        desired: undefined,
        writing: Promise.resolve(),
        queued: undefined,
      };
      this.#docs.set(doc, s);
    }
    return s;
  }

  /** Names of every document the node holds. */
  docs(): string[] {
    return [...this.#docs.keys()].sort();
  }

  /** The node's copy of a document, or null. */
  get(doc: string): StateDocument | null {
    const bad = checkStateDoc(doc);
    if (bad) throw new FieldmeshError(bad.code, bad.message, { details: { doc } });
    const local = this.#docs.get(doc)?.sync.getLocalState();
    return local ? toStateDocument(local) : null;
  }

  /** Writes the node's copy as the next version, pending until the gateway confirms it; resolves once it is on disk. */
  async set(doc: string, data: unknown): Promise<StateDocument> {
    const bad = checkStateDoc(doc, data);
    if (bad) throw new FieldmeshError(bad.code, bad.message, { details: { doc } });
    const s = this.#state(doc);
    const state = this.#updateLocal(s, data as SyncData, { origin: 'local', base_desired: s.desired?.version ?? 0 });
    await this.#persist(s);
    return toStateDocument(state);
  }

  #updateLocal(s: DocState, data: SyncData, meta: ChangeMeta): SyncState {
    const state = s.sync.updateLocal(data);
    s.meta.set(state.version, meta);
    return state;
  }

  /**
   * The SYNC_REQUEST body for a document: heads of both sides and the pending
   * changes, newest kept first when they exceed `budgetBytes`; with `full`,
   * the whole local state too.
   */
  syncRequest(doc: string, budgetBytes: number, full = false): Omit<FrameBody<SyncRequestFrame>, 'type'> {
    const s = this.#state(doc);
    const local = s.sync.getLocalState();
    const changes = s.sync.getPendingChanges();
    const pending: StateChange[] = [];
    let size = 0;
    for (let i = changes.length - 1; i >= 0 && pending.length < 1000; i--) {
      const c = changes[i]!;
      const change = pendingChange(s, c);
      size += Buffer.byteLength(JSON.stringify(change));
      if (pending.length > 0 && size > budgetBytes) break;
      pending.unshift(change);
    }
    const body: Omit<FrameBody<SyncRequestFrame>, 'type'> = {
      doc,
      reported: local ? { version: local.version, checksum: local.checksum } : null,
      desired: s.desired ? { version: s.desired.version, checksum: s.desired.checksum } : null,
      pending,
    };
    if (full && local) body.full = toStateDocument(local);
    return body;
  }

  /** STATE_ACK for the reported side: drops the pending changes up to `version`. */
  async confirm(doc: string, version: number): Promise<number> {
    const s = this.#docs.get(doc);
    if (!s) return 0;
    const dropped = s.sync.confirmSync(version);
    for (const v of [...s.meta.keys()]) if (v <= version) s.meta.delete(v);
    if (dropped > 0) await this.#persist(s);
    return dropped;
  }

  /**
   * STATE_PUSH: keeps a newer desired state (any, with `resync`) and adopts
   * its data as the next local version unless the node already holds it.
   */
  async applyDesired(doc: string, pushed: StateDocument, resync: boolean): Promise<DesiredOutcome> {
    const s = this.#state(doc);
    const incoming = fromStateDocument(pushed);
    if (!incoming.isValid()) return { accepted: false, version: s.desired?.version ?? 0, adopted: false };
    if (!resync && s.desired !== undefined && incoming.version <= s.desired.version) {
      return { accepted: true, version: s.desired.version, adopted: false };
    }
    s.desired = incoming;
    const adopted = s.sync.getLocalState()?.checksum !== incoming.checksum;
    if (adopted) this.#updateLocal(s, incoming.data as SyncData, { origin: 'desired', base_desired: incoming.version });
    await this.#persist(s);
    return { accepted: true, version: incoming.version, adopted };
  }

  /**
   * SYNC_RESPONSE with the gateway's copy of the reported side, newer than
   * the node's (the node lost its journal, or part of it): the node takes it
   * and replays its newest pending change on top. False when it was not newer.
   */
  async restore(doc: string, reported: StateDocument): Promise<boolean> {
    const s = this.#state(doc);
    const incoming = fromStateDocument(reported);
    const local = s.sync.getLocalState();
    if (!incoming.isValid() || (local !== undefined && incoming.version <= local.version)) return false;
    const newest = s.sync.getPendingChanges().at(-1);
    const meta = newest ? s.meta.get(newest.version) : undefined;
    s.sync = new EdgeSynchronizer({ local: incoming });
    s.meta.clear();
    if (newest && newest.checksum !== incoming.checksum) {
      this.#updateLocal(s, newest.data as SyncData, meta ?? { origin: 'local', base_desired: s.desired?.version ?? 0 });
    }
    await this.#persist(s);
    return true;
  }

  /** Resolves once the document's current state is on disk. Writes are coalesced: one queued write covers every change before it starts. */
  #persist(s: DocState): Promise<void> {
    if (!s.queued) {
      const queued = s.writing.then(() => {
        s.queued = undefined;
        return this.#write(s);
      });
      s.queued = queued;
      s.writing = queued.catch(() => undefined);
    }
    return s.queued;
  }

  async #write(s: DocState): Promise<void> {
    const local = s.sync.getLocalState();
    const file: JournalFile = {
      doc: s.doc,
      local: local ? toStateDocument(local) : null,
      pending: s.sync.getPendingChanges().map((c) => pendingChange(s, c)),
      desired: s.desired ? toStateDocument(s.desired) : null,
    };
    const tmp = `${s.file}.tmp-${process.pid}-${++tmpCounter}`;
    try {
      const fh = await open(tmp, 'w', 0o600);
      try {
        await fh.writeFile(JSON.stringify(file));
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, s.file);
      await this.#syncDir();
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      this.#log.error('could not write the state journal', { doc: s.doc, file: s.file, error: (err as Error).message });
      throw new FieldmeshError('FM_ERR_INTERNAL', `Could not write the state journal for "${s.doc}": ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  /** Makes the rename itself durable; some platforms cannot fsync a directory, and there the rename is as durable as it gets. */
  async #syncDir(): Promise<void> {
    try {
      const dh = await open(this.#dir, 'r');
      try {
        await dh.sync();
      } finally {
        await dh.close();
      }
    } catch {
      // not supported here
    }
  }
}
