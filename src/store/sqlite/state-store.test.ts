// Tests for the state documents in the SQLite store: round trips, compare-and-set writes, listing and persistence.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SyncState, toStateDocument } from '../../protocol/state.js';
import type { StateDocRecord } from '../types.js';
import { openSqliteStore, type SqliteStore } from './index.js';

const at = '2025-01-01T00:00:00.000Z';

function side(data: Record<string, unknown>, version: number) {
  return toStateDocument(new SyncState({ version, data, checksum: SyncState.checksumOf(data), updatedAt: new Date(at) }));
}

function record(over: Partial<StateDocRecord> = {}): StateDocRecord {
  return {
    node_id: 'node-a',
    doc: 'config',
    strategy: 'remote_wins',
    desired: side({ mode: 'eco', limits: { cpu: 2 } }, 1),
    reported: null,
    created_at: at,
    updated_at: at,
    ...over,
  };
}

describe('SqliteStore - state documents', () => {
  let dir: string;
  let file: string;
  let store: SqliteStore;

  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fm-state-store-'));
    file = path.join(dir, 'gateway.db');
    store = await openSqliteStore(file);
  });

  afterEach(async () => {
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('store - a state document round-trips with both sides, and an unknown one is undefined', async () => {
    const r = record({ reported: side({ mode: 'turbo' }, 4), strategy: 'latest_wins' });
    expect(await store.saveStateDoc(r, null)).toBe(true);
    expect(await store.getStateDoc('node-a', 'config')).toEqual(r);
    expect(await store.getStateDoc('node-a', 'other')).toBeUndefined();
    expect(await store.getStateDoc('node-b', 'config')).toBeUndefined();
  });

  it('store - creating a document that already exists writes nothing', async () => {
    expect(await store.saveStateDoc(record(), null)).toBe(true);
    expect(await store.saveStateDoc(record({ desired: side({ mode: 'other' }, 1) }), null)).toBe(false);
    expect((await store.getStateDoc('node-a', 'config'))?.desired?.data).toEqual({ mode: 'eco', limits: { cpu: 2 } });
  });

  it('store - a write expecting the stored versions lands; one expecting stale versions writes nothing', async () => {
    await store.saveStateDoc(record(), null);
    const next = record({ desired: side({ mode: 'v2' }, 2), updated_at: '2025-01-02T00:00:00.000Z' });
    expect(await store.saveStateDoc(next, { desired_version: 1, reported_version: 0 })).toBe(true);
    const stale = record({ desired: side({ mode: 'lost' }, 2) });
    expect(await store.saveStateDoc(stale, { desired_version: 1, reported_version: 0 })).toBe(false);
    expect(await store.saveStateDoc(stale, { desired_version: 2, reported_version: 3 })).toBe(false);
    const stored = await store.getStateDoc('node-a', 'config');
    expect(stored?.desired).toEqual(next.desired);
    // created_at is the first write's, updated_at the last one's.
    expect(stored?.created_at).toBe(at);
    expect(stored?.updated_at).toBe('2025-01-02T00:00:00.000Z');
  });

  it('store - the reported side is written and its version checked like the desired one', async () => {
    await store.saveStateDoc(record({ desired: null }), null);
    expect(
      await store.saveStateDoc(record({ desired: null, reported: side({ t: 20 }, 7) }), { desired_version: 0, reported_version: 0 }),
    ).toBe(true);
    expect(
      await store.saveStateDoc(record({ desired: null, reported: side({ t: 21 }, 8) }), { desired_version: 0, reported_version: 0 }),
    ).toBe(false);
    const stored = await store.getStateDoc('node-a', 'config');
    expect(stored?.desired).toBeNull();
    expect(stored?.reported).toEqual(side({ t: 20 }, 7));
  });

  it('store - lists one node’s documents by name', async () => {
    await store.saveStateDoc(record({ doc: 'zeta' }), null);
    await store.saveStateDoc(record({ doc: 'alpha' }), null);
    await store.saveStateDoc(record({ node_id: 'node-b', doc: 'beta' }), null);
    expect((await store.listStateDocs('node-a')).map((d) => d.doc)).toEqual(['alpha', 'zeta']);
    expect((await store.listStateDocs('node-b')).map((d) => d.doc)).toEqual(['beta']);
    expect(await store.listStateDocs('node-c')).toEqual([]);
  });

  it('store - state documents survive closing and reopening', async () => {
    const r = record({ reported: side({ nested: { list: [1, 2, { x: null }] } }, 3) });
    await store.saveStateDoc(r, null);
    await store.close();
    store = await openSqliteStore(file);
    expect(await store.getStateDoc('node-a', 'config')).toEqual(r);
  });
});
