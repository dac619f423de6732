/**
 * State documents: versioned, checksummed snapshots (SyncState) and the local
 * journal of changes awaiting confirmation (EdgeSynchronizer), after design
 * doc 002, section 2.3. The in-process SDK and the mesh's state sync (gateway
 * and node) share them, so both sides compute versions and checksums alike.
 */
import { createHash } from 'node:crypto';
import { FieldmeshError } from '../core/errors.js';
import { canonicalJson } from './signing.js';

export type SyncData = Record<string, unknown>;

export interface SyncStateInit {
  version: number;
  data: SyncData;
  checksum: string;
  /** @default now */
  updatedAt?: Date;
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/**
 * One snapshot of a node's state. The data is stored as the JSON it would be
 * on the wire and frozen, so the checksum keeps describing it: a caller
 * cannot change a snapshot after it was taken.
 */
export class SyncState {
  readonly version: number;
  readonly data: Readonly<SyncData>;
  /** `sha256:` and the hex SHA-256 of the data's canonical JSON, so any two parties agree on it. */
  readonly checksum: string;
  readonly updatedAt: Date;

  constructor(init: SyncStateInit) {
    if (!Number.isSafeInteger(init.version) || init.version < 0) {
      throw new FieldmeshError('FM_ERR_INVALID_OPTION', `SyncState.version: ${String(init.version)} is not a non-negative integer`);
    }
    if (typeof init.data !== 'object' || init.data === null || Array.isArray(init.data)) {
      throw new FieldmeshError('FM_ERR_INVALID_OPTION', 'SyncState.data: must be an object');
    }
    this.version = init.version;
    this.data = deepFreeze(JSON.parse(canonicalJson(init.data)) as SyncData);
    this.checksum = init.checksum;
    this.updatedAt = init.updatedAt ?? new Date();
  }

  /** A snapshot of `data` at `version`, with its checksum computed. */
  static fromData(data: SyncData, version: number): SyncState {
    return new SyncState({ version, data, checksum: SyncState.checksumOf(data) });
  }

  /** The checksum `data` should carry: SHA-256 over its canonical JSON (sorted keys, no spaces). */
  static checksumOf(data: SyncData): string {
    return `sha256:${createHash('sha256').update(canonicalJson(data)).digest('hex')}`;
  }

  /** True when the checksum matches the data, i.e. it arrived intact. */
  isValid(): boolean {
    return SyncState.checksumOf(this.data) === this.checksum;
  }
}

/**
 * Keeps a node's local state and the changes not yet confirmed by the other
 * side. Local updates count the version up from the current one; a remote
 * state replaces the local one only when it is newer and intact.
 *
 * Safe under concurrent use: the original guards these with a lock because
 * Python threads can switch between reading the version and writing the new
 * state. Here no method awaits, so nothing can run between that read and that
 * write, and interleaved async callers (`await`ing between their own calls)
 * each get a distinct version. The objects are not shared with worker threads.
 */
export class EdgeSynchronizer {
  private local: SyncState | undefined;
  private pending: SyncState[] = [];

  /** Starts empty, or from a journal: the local state and the changes still awaiting confirmation. */
  constructor(init: { local?: SyncState | undefined; pending?: readonly SyncState[] } = {}) {
    this.local = init.local;
    this.pending = [...(init.pending ?? [])].sort((a, b) => a.version - b.version);
  }

  /** Replaces the local data with a new version (one past the current) and journals it as a pending change. */
  updateLocal(data: SyncData): SyncState {
    const state = SyncState.fromData(data, (this.local?.version ?? 0) + 1);
    this.local = state;
    this.pending.push(state);
    return state;
  }

  /**
   * Adopts a remote state if its version is newer than the local one and its
   * checksum matches its data; false otherwise. Pending local changes stay
   * until `confirmSync` drops them, since the remote side has not confirmed
   * them by sending something newer.
   */
  applyRemote(state: SyncState): boolean {
    if (this.local !== undefined && state.version <= this.local.version) return false;
    if (!state.isValid()) return false;
    this.local = state;
    return true;
  }

  /**
   * Adopts a state whatever its version, if its checksum matches its data:
   * a full resync, when the two sides disagree about what a version holds.
   */
  replaceLocal(state: SyncState): boolean {
    if (!state.isValid()) return false;
    this.local = state;
    return true;
  }

  /** Local changes not yet confirmed, oldest first (a copy). */
  getPendingChanges(): SyncState[] {
    return [...this.pending];
  }

  /** Drops the pending changes up to and including `upToVersion`; returns how many were dropped. */
  confirmSync(upToVersion: number): number {
    const before = this.pending.length;
    this.pending = this.pending.filter((s) => s.version > upToVersion);
    return before - this.pending.length;
  }

  getLocalState(): SyncState | undefined {
    return this.local;
  }
}

/** A state document as it crosses the wire and the HTTP API: `{ version, data, checksum, updated_at }`. */
export interface StateDocument {
  version: number;
  data: SyncData;
  /** `sha256:<hex>` over the canonical JSON of `data`. */
  checksum: string;
  updated_at: string;
}

/** Names of state documents: also file names in a node's journal, so no path characters. */
export const STATE_DOC_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
export const STATE_DOC_MAX_LENGTH = 120;
/** Largest canonical JSON of one document's data, so a document and its pending change fit in one frame. */
export const STATE_DATA_MAX_BYTES = 256 * 1024;

/**
 * How a document settles a conflict (the node changed it while the gateway's
 * `desired` changed too): `remote_wins` keeps the gateway's desired data,
 * `local_wins` keeps the node's, `latest_wins` keeps the later write.
 */
export const ConflictStrategy = {
  RemoteWins: 'remote_wins',
  LocalWins: 'local_wins',
  LatestWins: 'latest_wins',
} as const;
export type ConflictStrategy = (typeof ConflictStrategy)[keyof typeof ConflictStrategy];
export const CONFLICT_STRATEGIES: readonly ConflictStrategy[] = Object.values(ConflictStrategy);
export const DEFAULT_CONFLICT_STRATEGY: ConflictStrategy = ConflictStrategy.RemoteWins;

/** Why a document name or data cannot be stored, or undefined when they can. */
export function checkStateDoc(
  doc: string,
  data?: unknown,
): { code: 'FM_ERR_INVALID_REQUEST' | 'FM_ERR_PAYLOAD_TOO_LARGE'; message: string } | undefined {
  if (typeof doc !== 'string' || doc.length === 0 || doc.length > STATE_DOC_MAX_LENGTH || !STATE_DOC_PATTERN.test(doc)) {
    return {
      code: 'FM_ERR_INVALID_REQUEST',
      message: `State document name "${String(doc).slice(0, 200)}" must match ${STATE_DOC_PATTERN.source} and be at most ${STATE_DOC_MAX_LENGTH} characters`,
    };
  }
  if (data === undefined) return undefined;
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    return { code: 'FM_ERR_INVALID_REQUEST', message: `State document "${doc}": data must be a JSON object` };
  }
  const size = Buffer.byteLength(canonicalJson(data));
  if (size > STATE_DATA_MAX_BYTES) {
    return {
      code: 'FM_ERR_PAYLOAD_TOO_LARGE',
      message: `State document "${doc}": data is ${size} bytes of JSON, over the limit of ${STATE_DATA_MAX_BYTES}`,
    };
  }
  return undefined;
}

/** The wire form of a snapshot. */
export function toStateDocument(state: SyncState): StateDocument {
  return { version: state.version, data: state.data as SyncData, checksum: state.checksum, updated_at: state.updatedAt.toISOString() };
}

/** A snapshot from its wire form, keeping the checksum it arrived with (check it with `isValid`). */
export function fromStateDocument(doc: StateDocument): SyncState {
  const at = new Date(doc.updated_at);
  return new SyncState({
    version: doc.version,
    data: doc.data,
    checksum: doc.checksum,
    updatedAt: Number.isNaN(at.getTime()) ? new Date(0) : at,
  });
}
