// Tests for SyncState and EdgeSynchronizer: checksums over canonical JSON, versioning, remote states, pending changes and confirmation.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { canonicalJson } from '../protocol/signing.js';
import { EdgeSynchronizer, SyncState } from './sync.js';

describe('edge - SyncState', () => {
  it('edge - fromData computes a sha256 checksum over the canonical JSON of the data', () => {
    const data = { sensor_data: [1, 2, 3], site: { b: 2, a: 1 } };
    const state = SyncState.fromData(data, 5);
    const expected = createHash('sha256').update(canonicalJson(data)).digest('hex');
    expect(state.version).toBe(5);
    expect(state.checksum).toBe(`sha256:${expected}`);
    expect(state.data).toEqual(data);
    expect(state.updatedAt).toBeInstanceOf(Date);
    expect(state.isValid()).toBe(true);
  });

  it('edge - the checksum does not depend on key order and changes with the data', () => {
    expect(SyncState.fromData({ a: 1, b: { c: 2, d: 3 } }, 1).checksum).toBe(SyncState.fromData({ b: { d: 3, c: 2 }, a: 1 }, 9).checksum);
    expect(SyncState.fromData({ a: 1 }, 1).checksum).not.toBe(SyncState.fromData({ a: 2 }, 1).checksum);
  });

  it('edge - a snapshot keeps its data even if the caller changes the original, and cannot be changed itself', () => {
    const data = { readings: [1, 2] };
    const state = SyncState.fromData(data, 1);
    data.readings.push(3);
    expect(state.data).toEqual({ readings: [1, 2] });
    expect(() => (state.data.readings as number[]).push(4)).toThrow(TypeError);
    expect(state.isValid()).toBe(true);
  });

  it('edge - a state whose checksum does not match its data is not valid', () => {
    const good = SyncState.fromData({ a: 1 }, 1);
    expect(new SyncState({ version: 1, data: { a: 2 }, checksum: good.checksum }).isValid()).toBe(false);
  });

  it('edge - a bad version is refused', () => {
    expect(() => SyncState.fromData({}, -1)).toThrow('SyncState.version: -1');
    expect(() => SyncState.fromData({}, 1.5)).toThrow('SyncState.version: 1.5');
  });
});

describe('edge - synchronizer', () => {
  it('edge - updateLocal counts the version up and journals each change', () => {
    const sync = new EdgeSynchronizer();
    expect(sync.getLocalState()).toBeUndefined();
    const first = sync.updateLocal({ sensor_data: [1, 2, 3] });
    const second = sync.updateLocal({ sensor_data: [4] });
    expect([first.version, second.version]).toEqual([1, 2]);
    expect(sync.getLocalState()).toBe(second);
    expect(sync.getPendingChanges().map((s) => s.version)).toEqual([1, 2]);
    expect(sync.getPendingChanges()[0]?.data).toEqual({ sensor_data: [1, 2, 3] });
  });

  it('edge - applyRemote accepts a newer valid state and local updates continue from its version', () => {
    const sync = new EdgeSynchronizer();
    sync.updateLocal({ v: 'local' });
    const remote = SyncState.fromData({ sensor_data: [4, 5, 6] }, 5);
    expect(sync.applyRemote(remote)).toBe(true);
    expect(sync.getLocalState()).toBe(remote);
    expect(sync.updateLocal({ v: 'next' }).version).toBe(6);
  });

  it('edge - applyRemote accepts any valid state when there is no local state yet', () => {
    const sync = new EdgeSynchronizer();
    expect(sync.applyRemote(SyncState.fromData({ a: 1 }, 0))).toBe(true);
    expect(sync.getLocalState()?.version).toBe(0);
  });

  it('edge - applyRemote rejects an older or equal version', () => {
    const sync = new EdgeSynchronizer();
    sync.updateLocal({ n: 1 });
    sync.updateLocal({ n: 2 });
    sync.updateLocal({ n: 3 });
    const local = sync.getLocalState();
    expect(sync.applyRemote(SyncState.fromData({ n: 'old' }, 2))).toBe(false);
    expect(sync.applyRemote(SyncState.fromData({ n: 'same' }, 3))).toBe(false);
    expect(sync.getLocalState()).toBe(local);
  });

  it('edge - applyRemote rejects a newer state whose checksum does not match its data', () => {
    const sync = new EdgeSynchronizer();
    sync.updateLocal({ n: 1 });
    const tampered = new SyncState({ version: 9, data: { n: 'tampered' }, checksum: SyncState.fromData({ n: 'original' }, 9).checksum });
    expect(sync.applyRemote(tampered)).toBe(false);
    expect(sync.applyRemote(new SyncState({ version: 9, data: { n: 1 }, checksum: 'garbage' }))).toBe(false);
    expect(sync.getLocalState()?.data).toEqual({ n: 1 });
  });

  it('edge - confirmSync drops pending changes up to and including the version', () => {
    const sync = new EdgeSynchronizer();
    for (let i = 1; i <= 5; i++) sync.updateLocal({ i });
    expect(sync.confirmSync(3)).toBe(3);
    expect(sync.getPendingChanges().map((s) => s.version)).toEqual([4, 5]);
    expect(sync.confirmSync(3)).toBe(0);
    expect(sync.confirmSync(10)).toBe(2);
    expect(sync.getPendingChanges()).toEqual([]);
    expect(sync.getLocalState()?.version).toBe(5);
  });

  it('edge - a remote state leaves pending changes until they are confirmed', () => {
    const sync = new EdgeSynchronizer();
    sync.updateLocal({ a: 1 });
    sync.updateLocal({ a: 2 });
    expect(sync.applyRemote(SyncState.fromData({ a: 'remote' }, 7))).toBe(true);
    expect(sync.getPendingChanges().map((s) => s.version)).toEqual([1, 2]);
    sync.confirmSync(2);
    expect(sync.getPendingChanges()).toEqual([]);
  });

  it('edge - getPendingChanges returns a copy', () => {
    const sync = new EdgeSynchronizer();
    sync.updateLocal({ a: 1 });
    sync.getPendingChanges().pop();
    expect(sync.getPendingChanges()).toHaveLength(1);
  });

  it('edge - concurrent updateLocal calls each get a distinct version and every change is journaled', async () => {
    const sync = new EdgeSynchronizer();
    const states = await Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        await null;
        const before = sync.getLocalState()?.version ?? 0;
        await Promise.resolve();
        const state = sync.updateLocal({ writer: i, sawVersion: before });
        return state.version;
      }),
    );
    expect([...states].sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    expect(sync.getLocalState()?.version).toBe(50);
    expect(sync.getPendingChanges().map((s) => s.version)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
  });

  it('edge - interleaved local updates, remote states and confirmations keep versions increasing', async () => {
    const sync = new EdgeSynchronizer();
    await Promise.all([
      (async () => {
        for (let i = 0; i < 10; i++) {
          sync.updateLocal({ local: i });
          await null;
        }
      })(),
      (async () => {
        for (let v = 3; v <= 30; v += 9) {
          await null;
          sync.applyRemote(SyncState.fromData({ remote: v }, v));
        }
      })(),
      (async () => {
        for (let i = 0; i < 5; i++) {
          await null;
          sync.confirmSync(sync.getLocalState()?.version ?? 0);
        }
      })(),
    ]);
    const pending = sync.getPendingChanges().map((s) => s.version);
    expect(pending).toEqual([...pending].sort((a, b) => a - b));
    expect(new Set(pending).size).toBe(pending.length);
    expect(sync.getLocalState()?.isValid()).toBe(true);
    const next = sync.updateLocal({ last: true });
    expect(next.version).toBeGreaterThan(Math.max(0, ...pending));
  });
});
