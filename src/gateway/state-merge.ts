/**
 * State sync, the gateway's decision for one SYNC_REQUEST (no I/O). A
 * document has two sides, as in a device shadow: `desired`, written at the
 * gateway, and `reported`, the node's own state with its own version line.
 *
 * - The node's pending changes newer than the stored reported version are
 *   applied (the newest wins, as in EdgeSynchronizer.applyRemote) and
 *   confirmed with STATE_ACK up to the version they reach.
 * - A conflict is a change the node made (`origin: local`) on top of a desired
 *   version older than the gateway's: both sides changed the document. The
 *   document's strategy picks the winner; `local` makes the node's data the
 *   new desired version, `remote` leaves desired as it is.
 * - Desired that the node has not seen (or holds with another checksum) is
 *   pushed; the node adopts it as its local state.
 * - The same reported version with another checksum, or a node ahead of the
 *   gateway with nothing to show for it, asks the node for the whole document
 *   (a full resync); a node behind the gateway gets the gateway's copy back.
 */
import type { StateChange, SyncRequestFrame } from '../protocol/frames.js';
import { ConflictStrategy, fromStateDocument, type StateDocument } from '../protocol/state.js';
import type { StateDocRecord } from '../store/types.js';

export type SyncRequest = Pick<SyncRequestFrame, 'reported' | 'desired' | 'pending' | 'full'>;

export interface SyncDecision {
  /** The document as it should be stored. */
  record: StateDocRecord;
  /** Whether `record` differs from what was stored. */
  changed: boolean;
  /** Confirm the node's reported changes up to this version (STATE_ACK), or null. */
  ack: number | null;
  /** Ask the node for its whole document (SYNC_RESPONSE resync). */
  resync: boolean;
  /** The gateway's newer reported copy, for a node that is behind (SYNC_RESPONSE reported). */
  restore: StateDocument | null;
  /** Desired state to send (STATE_PUSH); `resync` replaces the node's copy whatever its version. */
  push: { desired: StateDocument; resync: boolean } | null;
  /** Set when both sides had changed the document. */
  conflict: { winner: 'local' | 'remote' } | null;
  /** Changes (or a full document) refused because their checksum does not match their data. */
  invalid: number;
}

function isIntact(doc: StateDocument): boolean {
  try {
    return fromStateDocument(doc).isValid();
  } catch {
    return false;
  }
}

function sideOf(change: StateDocument): StateDocument {
  return { version: change.version, data: change.data, checksum: change.checksum, updated_at: change.updated_at };
}

/** Which side keeps its data when both changed: ties in `latest_wins` go to the gateway, whose clock orders its writes. */
export function conflictWinner(strategy: ConflictStrategy, local: StateChange, desired: StateDocument): 'local' | 'remote' {
  if (strategy === ConflictStrategy.LocalWins) return 'local';
  if (strategy === ConflictStrategy.RemoteWins) return 'remote';
  return Date.parse(local.updated_at) > Date.parse(desired.updated_at) ? 'local' : 'remote';
}

/** Decides what one SYNC_REQUEST does to a stored document (`current`, blank for a new one) and what goes back to the node. */
export function resolveSync(current: StateDocRecord, req: SyncRequest, now: Date): SyncDecision {
  let reported = current.reported;
  let desired = current.desired;
  let invalid = 0;
  const known = reported?.version ?? 0;
  const fresh: StateChange[] = [];
  const intactVersions: number[] = [];
  for (const change of [...req.pending].sort((a, b) => a.version - b.version)) {
    if (!isIntact(change)) {
      invalid++;
      continue;
    }
    intactVersions.push(change.version);
    if (change.version > known) fresh.push(change);
  }
  let full = false;
  if (req.full !== undefined) {
    if (isIntact(req.full)) {
      // The node owns its reported side: its whole document replaces the gateway's copy, whatever the versions.
      reported = sideOf(req.full);
      intactVersions.push(req.full.version);
      full = true;
    } else {
      invalid++;
    }
  }
  const newest = fresh.at(-1);
  if (newest && (reported === null || newest.version > reported.version)) reported = sideOf(newest);

  let resync = invalid > 0 && !full;
  let restore: StateDocument | null = null;
  const head = req.reported;
  if (!full && head !== null) {
    if (reported === null || head.version > reported.version) resync = true;
    else if (head.version === reported.version && head.checksum !== reported.checksum) resync = true;
    else if (head.version < reported.version) restore = reported;
  }

  let conflict: SyncDecision['conflict'] = null;
  if (desired !== null) {
    const base = desired;
    const local = fresh.filter((c) => c.origin === 'local' && c.base_desired < base.version).at(-1);
    if (local) {
      const winner = conflictWinner(current.strategy, local, base);
      conflict = { winner };
      if (winner === 'local' && local.checksum !== base.checksum) {
        desired = { version: base.version + 1, data: local.data, checksum: local.checksum, updated_at: local.updated_at };
      }
    }
  }

  let push: SyncDecision['push'] = null;
  const seen = req.desired;
  if (desired !== null) {
    if (seen === null || seen.version < desired.version) push = { desired, resync: false };
    else if (seen.version > desired.version || seen.checksum !== desired.checksum) push = { desired, resync: true };
  }

  // A node behind the gateway rebases its changes on the copy it gets back, so nothing is confirmed to it yet.
  const ackable = restore === null && reported !== null ? intactVersions.filter((v) => v <= reported.version) : [];
  const ack = ackable.length > 0 ? Math.max(...ackable) : null;
  const changed = reported !== current.reported || desired !== current.desired;
  const record: StateDocRecord = changed ? { ...current, reported, desired, updated_at: now.toISOString() } : current;
  return { record, changed, ack, resync, restore, push, conflict, invalid };
}
