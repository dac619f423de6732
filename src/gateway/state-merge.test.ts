// Tests for the gateway's state sync decisions: applying pending changes, conflicts under each strategy, pushes and resyncs.
import { describe, expect, it } from 'vitest';
import type { StateChange, StateHead } from '../protocol/frames.js';
import { type ConflictStrategy, type StateDocument, SyncState, toStateDocument } from '../protocol/state.js';
import type { StateDocRecord } from '../store/types.js';
import { resolveSync, type SyncRequest } from './state-merge.js';

const T0 = '2025-01-01T00:00:00.000Z';
const now = new Date('2025-01-01T01:00:00.000Z');

function doc(data: Record<string, unknown>, version: number, updatedAt = T0): StateDocument {
  return toStateDocument(new SyncState({ version, data, checksum: SyncState.checksumOf(data), updatedAt: new Date(updatedAt) }));
}

function change(data: Record<string, unknown>, version: number, over: Partial<StateChange> = {}): StateChange {
  return { ...doc(data, version, over.updated_at ?? T0), origin: 'local', base_desired: 0, ...over };
}

const head = (d: StateDocument): StateHead => ({ version: d.version, checksum: d.checksum });

function record(over: Partial<StateDocRecord> = {}): StateDocRecord {
  return { node_id: 'n1', doc: 'config', strategy: 'remote_wins', desired: null, reported: null, created_at: T0, updated_at: T0, ...over };
}

function request(over: Partial<SyncRequest> = {}): SyncRequest {
  return { reported: null, desired: null, pending: [], ...over };
}

describe('state merge - reported changes', () => {
  it('state merge - pending changes of a new document are applied up to the newest and confirmed', () => {
    const v1 = change({ t: 1 }, 1);
    const v2 = change({ t: 2 }, 2);
    const d = resolveSync(record(), request({ reported: head(v2), pending: [v2, v1] }), now);
    expect(d.changed).toBe(true);
    expect(d.record.reported).toEqual(doc({ t: 2 }, 2));
    expect(d.record.updated_at).toBe(now.toISOString());
    expect(d.ack).toBe(2);
    expect(d).toMatchObject({ resync: false, restore: null, push: null, conflict: null, invalid: 0 });
  });

  it('state merge - changes the gateway already has are confirmed again without changing anything', () => {
    const v3 = change({ t: 3 }, 3);
    const stored = record({ reported: doc({ t: 3 }, 3) });
    const d = resolveSync(stored, request({ reported: head(v3), pending: [change({ t: 2 }, 2), v3] }), now);
    expect(d.changed).toBe(false);
    expect(d.record).toBe(stored);
    expect(d.ack).toBe(3);
  });

  it('state merge - a document already in step needs nothing', () => {
    const r = doc({ t: 3 }, 3);
    const des = doc({ mode: 'eco' }, 2);
    const d = resolveSync(record({ reported: r, desired: des }), request({ reported: head(r), desired: head(des) }), now);
    expect(d).toMatchObject({ changed: false, ack: null, resync: false, restore: null, push: null, conflict: null });
  });

  it('state merge - a change whose checksum does not match its data is refused and a resync asked for', () => {
    const good = change({ t: 1 }, 1);
    const bad = { ...change({ t: 2 }, 2), data: { t: 'tampered' } };
    const d = resolveSync(record(), request({ reported: head(bad), pending: [good, bad] }), now);
    expect(d.invalid).toBe(1);
    expect(d.record.reported?.data).toEqual({ t: 1 });
    expect(d.ack).toBe(1);
    expect(d.resync).toBe(true);
  });
});

describe('state merge - checksums and resync', () => {
  it('state merge - the same version with another checksum asks for a full resync', () => {
    const stored = doc({ t: 'gateway copy' }, 4);
    const node = doc({ t: 'node copy' }, 4);
    const d = resolveSync(record({ reported: stored }), request({ reported: head(node) }), now);
    expect(d.resync).toBe(true);
    expect(d.changed).toBe(false);
    expect(d.ack).toBeNull();
  });

  it('state merge - a node ahead of the gateway with no pending changes asks for a full resync', () => {
    expect(resolveSync(record({ reported: doc({ t: 1 }, 1) }), request({ reported: head(doc({ t: 5 }, 5)) }), now).resync).toBe(true);
    expect(resolveSync(record(), request({ reported: head(doc({ t: 5 }, 5)) }), now).resync).toBe(true);
  });

  it('state merge - the full document replaces the gateway copy whatever its version, and is confirmed', () => {
    const full = doc({ t: 'node copy' }, 4);
    const d = resolveSync(record({ reported: doc({ t: 'gateway copy' }, 9) }), request({ reported: head(full), full }), now);
    expect(d.record.reported).toEqual(full);
    expect(d).toMatchObject({ changed: true, ack: 4, resync: false, restore: null });
  });

  it('state merge - a full document that does not match its checksum is refused', () => {
    const stored = doc({ t: 1 }, 1);
    const full = { ...doc({ t: 2 }, 2), data: { t: 'tampered' } };
    const d = resolveSync(record({ reported: stored }), request({ reported: head(full), full }), now);
    expect(d.record.reported).toEqual(stored);
    expect(d.invalid).toBe(1);
    expect(d.resync).toBe(true);
  });

  it('state merge - a node behind the gateway gets the gateway copy back and nothing confirmed', () => {
    const stored = doc({ t: 7 }, 7);
    const old = change({ t: 'after a wipe' }, 1);
    const d = resolveSync(record({ reported: stored }), request({ reported: head(old), pending: [old] }), now);
    expect(d.restore).toEqual(stored);
    expect(d.ack).toBeNull();
    expect(d.changed).toBe(false);
  });

  it('state merge - desired held by the node with another checksum is pushed again as a resync', () => {
    const des = doc({ mode: 'eco' }, 3);
    const d = resolveSync(record({ desired: des }), request({ desired: head(doc({ mode: 'corrupt' }, 3)) }), now);
    expect(d.push).toEqual({ desired: des, resync: true });
  });

  it('state merge - a node that saw a newer desired than the gateway has gets the gateway one as a resync', () => {
    const des = doc({ mode: 'eco' }, 3);
    const d = resolveSync(record({ desired: des }), request({ desired: head(doc({ mode: 'x' }, 8)) }), now);
    expect(d.push).toEqual({ desired: des, resync: true });
  });
});

describe('state merge - desired and conflicts', () => {
  it('state merge - desired the node has not seen is pushed; without local changes there is no conflict', () => {
    const des = doc({ mode: 'eco' }, 2);
    const r = doc({ mode: 'old' }, 5);
    const d = resolveSync(
      record({ desired: des, reported: r }),
      request({ reported: head(r), desired: head(doc({ mode: 'old' }, 1)) }),
      now,
    );
    expect(d.push).toEqual({ desired: des, resync: false });
    expect(d.conflict).toBeNull();
    expect(resolveSync(record({ desired: des }), request(), now).push).toEqual({ desired: des, resync: false });
  });

  it('state merge - a local change made on top of the current desired is no conflict', () => {
    const des = doc({ mode: 'eco' }, 2);
    const v6 = change({ mode: 'turbo' }, 6, { base_desired: 2 });
    const d = resolveSync(record({ desired: des }), request({ reported: head(v6), desired: head(des), pending: [v6] }), now);
    expect(d.conflict).toBeNull();
    expect(d.record.desired).toBe(des);
    expect(d.record.reported?.data).toEqual({ mode: 'turbo' });
    expect(d.push).toBeNull();
  });

  it('state merge - a change that adopted desired data is never a conflict', () => {
    const des = doc({ mode: 'eco' }, 3);
    const v6 = change({ mode: 'eco-2' }, 6, { origin: 'desired', base_desired: 2 });
    const d = resolveSync(
      record({ desired: des }),
      request({ reported: head(v6), desired: head(doc({ mode: 'eco-2' }, 2)), pending: [v6] }),
      now,
    );
    expect(d.conflict).toBeNull();
    expect(d.push).toEqual({ desired: des, resync: false });
  });

  const conflictCase = (strategy: ConflictStrategy, localAt: string, desiredAt: string) => {
    const seen = doc({ mode: 'eco' }, 1);
    const des = doc({ mode: 'remote' }, 2, desiredAt);
    const v4 = change({ mode: 'local' }, 4, { base_desired: 1, updated_at: localAt });
    return resolveSync(record({ strategy, desired: des }), request({ reported: head(v4), desired: head(seen), pending: [v4] }), now);
  };

  it('state merge - remote_wins keeps the desired data and pushes it, while still taking the reported change', () => {
    const d = conflictCase('remote_wins', '2025-01-01T00:00:09.000Z', '2025-01-01T00:00:01.000Z');
    expect(d.conflict).toEqual({ winner: 'remote' });
    expect(d.record.desired).toEqual(doc({ mode: 'remote' }, 2, '2025-01-01T00:00:01.000Z'));
    expect(d.record.reported?.data).toEqual({ mode: 'local' });
    expect(d.ack).toBe(4);
    expect(d.push?.desired.data).toEqual({ mode: 'remote' });
  });

  it('state merge - local_wins makes the node data the next desired version and pushes that', () => {
    const d = conflictCase('local_wins', '2025-01-01T00:00:01.000Z', '2025-01-01T00:00:09.000Z');
    expect(d.conflict).toEqual({ winner: 'local' });
    expect(d.record.desired).toMatchObject({ version: 3, data: { mode: 'local' }, updated_at: '2025-01-01T00:00:01.000Z' });
    expect(d.record.desired?.checksum).toBe(SyncState.checksumOf({ mode: 'local' }));
    expect(d.push).toEqual({ desired: d.record.desired, resync: false });
    expect(d.changed).toBe(true);
  });

  it('state merge - latest_wins keeps whichever side wrote last, and a tie goes to the gateway', () => {
    expect(conflictCase('latest_wins', '2025-01-01T00:00:09.000Z', '2025-01-01T00:00:01.000Z').record.desired?.data).toEqual({
      mode: 'local',
    });
    expect(conflictCase('latest_wins', '2025-01-01T00:00:01.000Z', '2025-01-01T00:00:09.000Z').record.desired?.data).toEqual({
      mode: 'remote',
    });
    const tie = conflictCase('latest_wins', '2025-01-01T00:00:05.000Z', '2025-01-01T00:00:05.000Z');
    expect(tie.conflict).toEqual({ winner: 'remote' });
  });

  it('state merge - local_wins with the same data as desired makes no new desired version', () => {
    const seen = doc({ mode: 'eco' }, 1);
    const des = doc({ mode: 'same' }, 2);
    const v4 = change({ mode: 'same' }, 4, { base_desired: 1 });
    const d = resolveSync(
      record({ strategy: 'local_wins', desired: des }),
      request({ reported: head(v4), desired: head(seen), pending: [v4] }),
      now,
    );
    expect(d.record.desired).toBe(des);
    expect(d.push).toEqual({ desired: des, resync: false });
  });

  it('state merge - only changes newer than the stored reported version can conflict', () => {
    const des = doc({ mode: 'remote' }, 2);
    const v4 = change({ mode: 'local' }, 4, { base_desired: 1 });
    const d = resolveSync(
      record({ strategy: 'local_wins', desired: des, reported: doc({ mode: 'local' }, 4) }),
      request({ reported: head(v4), desired: head(des), pending: [v4] }),
      now,
    );
    expect(d.conflict).toBeNull();
    expect(d.record.desired).toBe(des);
  });
});
