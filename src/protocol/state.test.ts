// Tests for the shared state-document pieces: wire form round trips, restoring a synchronizer from a journal, full resync, name and size checks.
import { describe, expect, it } from 'vitest';
import { checkStateDoc, EdgeSynchronizer, fromStateDocument, STATE_DATA_MAX_BYTES, SyncState, toStateDocument } from './state.js';

describe('state documents', () => {
  it('state - a snapshot survives its wire form with its checksum and time', () => {
    const s = new SyncState({
      version: 3,
      data: { b: [1, { c: null }], a: 'x' },
      checksum: SyncState.checksumOf({ a: 'x', b: [1, { c: null }] }),
      updatedAt: new Date('2025-02-03T04:05:06.007Z'),
    });
    const wire = toStateDocument(s);
    expect(wire).toEqual({
      version: 3,
      data: { a: 'x', b: [1, { c: null }] },
      checksum: s.checksum,
      updated_at: '2025-02-03T04:05:06.007Z',
    });
    const back = fromStateDocument(JSON.parse(JSON.stringify(wire)));
    expect(back.isValid()).toBe(true);
    expect(back.updatedAt.toISOString()).toBe('2025-02-03T04:05:06.007Z');
    expect(fromStateDocument({ ...wire, data: { a: 'changed' } }).isValid()).toBe(false);
  });

  it('state - a synchronizer restored from a journal continues its versions and keeps its pending changes in order', () => {
    const local = SyncState.fromData({ n: 5 }, 5);
    const sync = new EdgeSynchronizer({ local, pending: [SyncState.fromData({ n: 5 }, 5), SyncState.fromData({ n: 4 }, 4)] });
    expect(sync.getLocalState()).toBe(local);
    expect(sync.getPendingChanges().map((s) => s.version)).toEqual([4, 5]);
    expect(sync.updateLocal({ n: 6 }).version).toBe(6);
    expect(sync.confirmSync(5)).toBe(2);
  });

  it('state - replaceLocal adopts an intact state whatever its version, and refuses one that does not match its checksum', () => {
    const sync = new EdgeSynchronizer();
    sync.updateLocal({ n: 1 });
    sync.updateLocal({ n: 2 });
    const same = SyncState.fromData({ n: 'other copy' }, 2);
    expect(sync.applyRemote(same)).toBe(false);
    expect(sync.replaceLocal(same)).toBe(true);
    expect(sync.getLocalState()).toBe(same);
    expect(sync.replaceLocal(new SyncState({ version: 1, data: { n: 'x' }, checksum: same.checksum }))).toBe(false);
    expect(sync.getLocalState()).toBe(same);
  });

  it('state - document names and data are checked', () => {
    expect(checkStateDoc('config')).toBeUndefined();
    expect(checkStateDoc('sensor.calibration_v2-A', { a: 1 })).toBeUndefined();
    for (const bad of ['', '.hidden', '../x', 'a/b', 'a b', 'x'.repeat(121)])
      expect(checkStateDoc(bad)?.code).toBe('FM_ERR_INVALID_REQUEST');
    for (const data of [null, [], 'text', 3]) expect(checkStateDoc('ok', data)?.message).toContain('must be a JSON object');
    expect(checkStateDoc('ok', { blob: 'x'.repeat(STATE_DATA_MAX_BYTES) })?.code).toBe('FM_ERR_PAYLOAD_TOO_LARGE');
  });
});
