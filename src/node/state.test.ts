// Tests for the node's state journal: durable pending changes across reopen, confirmation, desired pushes, restores and file handling.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../core/logger.js';
import { type StateDocument, SyncState, toStateDocument } from '../protocol/state.js';
import { journalFileName, NodeStateJournal, STATE_DIR } from './state.js';

const desired = (data: Record<string, unknown>, version: number): StateDocument => toStateDocument(SyncState.fromData(data, version));

describe('node state journal', () => {
  let dir: string;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'fm-journal-'));
  });

  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  const open = () => NodeStateJournal.open(dir, silentLogger);

  it('node state - local writes count versions up and stay pending across a reopen', async () => {
    const j = await open();
    expect(j.get('config')).toBeNull();
    expect((await j.set('config', { n: 1 })).version).toBe(1);
    expect((await j.set('config', { n: 2 })).version).toBe(2);
    const again = await open();
    expect(again.docs()).toEqual(['config']);
    expect(again.get('config')).toMatchObject({ version: 2, data: { n: 2 }, checksum: SyncState.checksumOf({ n: 2 }) });
    const req = again.syncRequest('config', 1 << 20);
    expect(req.reported).toEqual({ version: 2, checksum: SyncState.checksumOf({ n: 2 }) });
    expect(req.desired).toBeNull();
    expect(req.pending.map((c) => [c.version, c.origin, c.base_desired])).toEqual([
      [1, 'local', 0],
      [2, 'local', 0],
    ]);
    expect(req.full).toBeUndefined();
    expect((await again.set('config', { n: 3 })).version).toBe(3);
  });

  it('node state - confirmed changes are dropped, and stay dropped after a reopen', async () => {
    const j = await open();
    for (let n = 1; n <= 4; n++) await j.set('config', { n });
    expect(await j.confirm('config', 3)).toBe(3);
    expect(j.syncRequest('config', 1 << 20).pending.map((c) => c.version)).toEqual([4]);
    const again = await open();
    expect(again.syncRequest('config', 1 << 20).pending.map((c) => c.version)).toEqual([4]);
    expect(await again.confirm('unknown', 9)).toBe(0);
  });

  it('node state - pushed desired state is kept and adopted as the next local version; an old push changes nothing', async () => {
    const j = await open();
    await j.set('config', { mode: 'mine' });
    const first = await j.applyDesired('config', desired({ mode: 'eco' }, 2), false);
    expect(first).toEqual({ accepted: true, version: 2, adopted: true });
    expect(j.get('config')).toMatchObject({ version: 2, data: { mode: 'eco' } });
    const req = j.syncRequest('config', 1 << 20);
    expect(req.desired).toEqual({ version: 2, checksum: SyncState.checksumOf({ mode: 'eco' }) });
    expect(req.pending.at(-1)).toMatchObject({ version: 2, origin: 'desired', base_desired: 2 });
    expect(await j.applyDesired('config', desired({ mode: 'older' }, 1), false)).toEqual({ accepted: true, version: 2, adopted: false });
    expect(j.get('config')?.data).toEqual({ mode: 'eco' });
    // Local writes after it are based on the desired version seen.
    await j.set('config', { mode: 'after' });
    expect(j.syncRequest('config', 1 << 20).pending.at(-1)).toMatchObject({ origin: 'local', base_desired: 2 });
    expect((await open()).syncRequest('config', 1 << 20).desired?.version).toBe(2);
  });

  it('node state - a push the node already holds adopts nothing, a resync replaces whatever the version, a bad checksum is refused', async () => {
    const j = await open();
    expect(await j.applyDesired('config', desired({ mode: 'eco' }, 3), false)).toMatchObject({ adopted: true });
    expect(await j.applyDesired('config', desired({ mode: 'fixed' }, 3), true)).toEqual({ accepted: true, version: 3, adopted: true });
    expect(j.get('config')?.data).toEqual({ mode: 'fixed' });
    const tampered = { ...desired({ mode: 'x' }, 9), data: { mode: 'y' } };
    expect(await j.applyDesired('config', tampered, false)).toEqual({ accepted: false, version: 3, adopted: false });
    expect(j.get('config')?.data).toEqual({ mode: 'fixed' });
    const same = await open();
    await same.set('other', { a: 1 });
    expect(await same.applyDesired('other', desired({ a: 1 }, 1), false)).toEqual({ accepted: true, version: 1, adopted: false });
  });

  it('node state - a newer gateway copy is restored and the newest pending change replayed on top', async () => {
    const j = await open();
    await j.set('config', { n: 'lost-1' });
    await j.set('config', { n: 'mine' });
    expect(await j.restore('config', desired({ n: 'gateway' }, 7))).toBe(true);
    expect(j.get('config')).toMatchObject({ version: 8, data: { n: 'mine' } });
    expect(j.syncRequest('config', 1 << 20).pending.map((c) => c.version)).toEqual([8]);
    expect(await j.restore('config', desired({ n: 'older' }, 5))).toBe(false);
    expect(await j.restore('fresh', desired({ n: 'kept' }, 4))).toBe(true);
    expect(j.get('fresh')).toMatchObject({ version: 4, data: { n: 'kept' } });
    expect(j.syncRequest('fresh', 1 << 20).pending).toEqual([]);
  });

  it('node state - syncRequest keeps the newest pending changes within the budget and adds the whole document for a resync', async () => {
    const j = await open();
    for (let n = 1; n <= 5; n++) await j.set('big', { blob: 'x'.repeat(1000), n });
    const small = j.syncRequest('big', 2500);
    expect(small.pending.map((c) => c.version)).toEqual([4, 5]);
    expect(j.syncRequest('big', 1).pending.map((c) => c.version)).toEqual([5]);
    expect(j.syncRequest('big', 1 << 20, true).full).toMatchObject({ version: 5, data: { n: 5 } });
  });

  it('node state - bad names and data are refused with clear errors', async () => {
    const j = await open();
    await expect(j.set('../escape', { a: 1 })).rejects.toMatchObject({ code: 'FM_ERR_INVALID_REQUEST' });
    await expect(j.set('ok', [1, 2] as unknown as Record<string, unknown>)).rejects.toMatchObject({ code: 'FM_ERR_INVALID_REQUEST' });
    await expect(j.set('ok', { blob: 'x'.repeat(300 * 1024) })).rejects.toMatchObject({ code: 'FM_ERR_PAYLOAD_TOO_LARGE' });
    expect(() => j.get('a/b')).toThrow(/must match/);
    expect(j.docs()).toEqual([]);
  });

  it('node state - files are written whole: capitals are escaped in names, leftover temporary files are removed', async () => {
    const j = await open();
    await j.set('Config', { a: 1 });
    await j.set('config', { a: 2 });
    const stateDir = join(dir, STATE_DIR);
    expect(readdirSync(stateDir).sort()).toEqual(['^config.json', 'config.json']);
    expect(journalFileName('Sensor.Cal-2')).toBe('^sensor.^cal-2.json');
    writeFileSync(join(stateDir, 'config.json.tmp-1-1'), '{"half');
    const again = await open();
    expect(again.get('Config')?.data).toEqual({ a: 1 });
    expect(again.get('config')?.data).toEqual({ a: 2 });
    expect(existsSync(join(stateDir, 'config.json.tmp-1-1'))).toBe(false);
  });

  it('node state - an entry edited on disk keeps its data with a recomputed checksum; an unreadable file stops the start', async () => {
    const j = await open();
    await j.set('config', { a: 1 });
    await j.confirm('config', 1);
    const file = join(dir, STATE_DIR, 'config.json');
    const journal = JSON.parse(readFileSync(file, 'utf8'));
    journal.local.data = { a: 'edited' };
    writeFileSync(file, JSON.stringify(journal));
    const again = await open();
    expect(again.get('config')).toMatchObject({ version: 1, data: { a: 'edited' }, checksum: SyncState.checksumOf({ a: 'edited' }) });
    writeFileSync(file, '{ not json');
    await expect(open()).rejects.toMatchObject({ code: 'FM_ERR_INVALID_OPTION' });
  });
});
