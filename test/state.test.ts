// State sync over the mesh with real processes: desired pushes, offline journaling across a node restart, conflict strategies, stale writes, resyncs and the CLI.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProcess } from '../src/cli/processes.js';
import { FieldmeshApiError } from '../src/client/index.js';
import type { StateDocView } from '../src/protocol/api.js';
import { type ConflictStrategy, SyncState } from '../src/protocol/state.js';
import { Cluster, cliPath, http, runCli, testToolsModule, waitFor } from './harness.js';
import { PartitionProxy } from './partition-proxy.js';

const DIRECT = 'state:direct';
const FIELD = 'state:field';
const explicit = (node_id: string) => ({ kind: 'explicit' as const, node_id });

/** Gateway log lines (JSON) printed after `from` characters of its output. */
function logLines(output: string, from: number): Record<string, unknown>[] {
  return output
    .slice(from)
    .split('\n')
    .flatMap((line) => {
      try {
        return [JSON.parse(line) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
}

describe('state sync', () => {
  const c = new Cluster();
  let proxy: PartitionProxy;
  let files: string;
  let fieldDataDir: string;

  const client = () => c.gateway.client;
  const status = async (id: string) => (await client().getNode(id)).status;
  const state = (node: string, doc: string) => client().getState(node, doc);
  const waitState = (what: string, node: string, doc: string, ok: (d: StateDocView) => boolean) =>
    waitFor(what, async () => {
      const d = await state(node, doc).catch(() => undefined);
      return d && ok(d) ? d : undefined;
    });
  /** What the node itself holds, read by a tool through ctx.state. */
  const nodeCopy = async (node: string, doc: string) => {
    const r = await client().toolCall({ tool_name: 'state_get', tool_args: { doc }, target: explicit(node) });
    expect(r.ok).toBe(true);
    return (r.output as { state: { version: number; data: unknown } | null }).state;
  };
  let fileCounter = 0;
  const file = (name: string) => join(files, `${++fileCounter}-${name}`);

  beforeAll(async () => {
    await c.startGateway();
    files = join(c.root, 'files');
    mkdirSync(files);
    proxy = new PartitionProxy(c.gateway.listen);
    await proxy.start();
    await c.startNode({ id: DIRECT });
    fieldDataDir = (await c.startNode({ id: FIELD, extraArgs: ['--gateway', proxy.address] })).dataDir;
  }, 60_000);

  afterAll(async () => {
    proxy?.close();
    await c.stop();
  });

  it('state - a desired write reaches an online node at once, which adopts it and reports it back', async () => {
    const put = await client().putState(DIRECT, 'config', { mode: 'eco', limits: { cpu: 2 } }, { strategy: 'remote_wins' });
    expect(put).toMatchObject({ ok: true, node_id: DIRECT, doc: 'config', strategy: 'remote_wins' });
    expect(put.desired).toMatchObject({ version: 1, data: { mode: 'eco', limits: { cpu: 2 } } });
    expect(put.desired?.checksum).toBe(SyncState.checksumOf({ limits: { cpu: 2 }, mode: 'eco' }));
    const synced = await waitState('config reported', DIRECT, 'config', (d) => d.in_sync);
    expect(synced.reported).toMatchObject({ version: 1, data: { mode: 'eco', limits: { cpu: 2 } }, checksum: put.desired?.checksum });
    expect(await nodeCopy(DIRECT, 'config')).toMatchObject({ version: 1, data: { mode: 'eco', limits: { cpu: 2 } } });

    // A tool's own write is a new reported version; desired stays as written.
    const r = await client().toolCall({
      tool_name: 'state_script',
      tool_args: { steps: [{ doc: 'config', data: { mode: 'turbo' } }] },
      target: explicit(DIRECT),
    });
    expect(r.output).toEqual({ written: [{ doc: 'config', version: 2 }] });
    const after = await waitState('tool write reported', DIRECT, 'config', (d) => d.reported?.version === 2);
    expect(after.reported?.data).toEqual({ mode: 'turbo' });
    expect(after.desired?.version).toBe(1);
    expect(after.in_sync).toBe(false);
    const list = await client().listState(DIRECT);
    expect(list).toContainEqual(expect.objectContaining({ doc: 'config', desired_version: 1, reported_version: 2, in_sync: false }));
  });

  it('state - a write based on a stale version is refused with 409 and the current version, and changes nothing', async () => {
    expect((await client().putState(DIRECT, 'limits', { max: 1 }, { version: 0 })).desired?.version).toBe(1);
    expect((await client().putState(DIRECT, 'limits', { max: 2 }, { version: 1 })).desired?.version).toBe(2);
    const stale = await http(
      c.gateway.api,
      'PUT',
      `/v1/nodes/${encodeURIComponent(DIRECT)}/state/limits`,
      JSON.stringify({ data: { max: 9 }, version: 1 }),
    );
    expect(stale.status).toBe(409);
    expect(stale.json.error).toMatchObject({ code: 'FM_ERR_VERSION_CONFLICT', details: { current_version: 2 } });
    const err = await client()
      .putState(DIRECT, 'limits', { max: 9 }, { version: 0 })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FieldmeshApiError);
    expect(err).toMatchObject({ code: 'FM_ERR_VERSION_CONFLICT', status: 409, details: { current_version: 2 } });
    const now = await waitState('limits reported', DIRECT, 'limits', (d) => d.in_sync);
    expect(now.desired).toMatchObject({ version: 2, data: { max: 2 } });
    expect(now.reported?.data).toEqual({ max: 2 });
  });

  it('state - unknown nodes and documents, bad names, data and strategies get clear errors', async () => {
    const base = `/v1/nodes/${encodeURIComponent(DIRECT)}/state`;
    expect((await http(c.gateway.api, 'GET', `${base}/nothing-here`)).json.error.code).toBe('FM_ERR_STATE_NOT_FOUND');
    expect((await http(c.gateway.api, 'GET', `${base}/nothing-here`)).status).toBe(404);
    expect((await http(c.gateway.api, 'GET', '/v1/nodes/nobody/state')).json.error.code).toBe('FM_ERR_NODE_NOT_FOUND');
    const put = (doc: string, body: unknown) => http(c.gateway.api, 'PUT', `${base}/${doc}`, JSON.stringify(body));
    expect(
      (await put('x', { data: { a: 1 } }).then(() => http(c.gateway.api, 'PUT', '/v1/nodes/nobody/state/x', '{"data":{}}'))).status,
    ).toBe(404);
    for (const [doc, body] of [
      ['.hidden', { data: { a: 1 } }],
      ['ok', { data: [1, 2] }],
      ['ok', { data: { a: 1 }, strategy: 'newest' }],
      ['ok', { data: { a: 1 }, version: -1 }],
      ['ok', { data: { a: 1 }, extra: true }],
    ] as const) {
      const res = await put(doc, body);
      expect(res.status).toBe(400);
      expect(res.json.error.code).toBe('FM_ERR_INVALID_REQUEST');
    }
    const big = await put('big', { data: { blob: 'x'.repeat(300 * 1024) } });
    expect(big.json.error.code).toBe('FM_ERR_PAYLOAD_TOO_LARGE');
    // The tool side refuses the same, and the node keeps serving.
    const r = await client().toolCall({
      tool_name: 'state_script',
      tool_args: { steps: [{ doc: 'a/b', data: { a: 1 } }] },
      target: explicit(DIRECT),
    });
    expect(r.ok).toBe(false);
    expect(r.error?.code).toBe('FM_ERR_INVALID_REQUEST');
    expect(await nodeCopy(DIRECT, 'config')).not.toBeNull();
  });

  it('state - the CLI sets, gets and lists documents and reports a stale version', async () => {
    const api = ['--api', c.gateway.api, '--data-dir', c.gateway.dataDir];
    const set = await runCli(['state', 'set', DIRECT, 'cli-doc', '{"greeting":"hello"}', '--strategy', 'latest_wins', ...api]);
    expect(set.code).toBe(0);
    expect(set.stdout).toContain('desired version 1 (latest_wins)');
    await waitState('cli-doc reported', DIRECT, 'cli-doc', (d) => d.in_sync);
    const get = await runCli(['state', 'get', DIRECT, 'cli-doc', '--json', ...api]);
    expect(get.code).toBe(0);
    const doc = JSON.parse(get.stdout) as StateDocView;
    expect(doc).toMatchObject({
      strategy: 'latest_wins',
      desired: { version: 1, data: { greeting: 'hello' } },
      reported: { data: { greeting: 'hello' } },
    });
    const text = await runCli(['state', 'get', DIRECT, 'cli-doc', ...api]);
    expect(text.stdout).toContain('cli-doc on state:direct (latest_wins, in sync)');
    expect(text.stdout).toContain('"greeting": "hello"');
    const next = await runCli(['state', 'set', DIRECT, 'cli-doc', '{"greeting":"hi"}', '--version', '1', ...api]);
    expect(next.code).toBe(0);
    expect(next.stdout).toContain('desired version 2');
    const stale = await runCli(['state', 'set', DIRECT, 'cli-doc', '{"greeting":"late"}', '--version', '1', ...api]);
    expect(stale.code).toBe(1);
    expect(stale.stderr).toContain('FM_ERR_VERSION_CONFLICT');
    expect(stale.stderr).toContain('desired version 2');
    const bad = await runCli(['state', 'set', DIRECT, 'cli-doc', '[1]', ...api]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toBe('error: the data of state document "cli-doc" must be a JSON object\n');
    const notJson = await runCli(['state', 'set', DIRECT, 'cli-doc', '{mode:1}', ...api]);
    expect(notJson.code).toBe(1);
    expect(notJson.stderr).toMatch(/^error: the data of state document "cli-doc": not valid JSON \(/);
    const list = await runCli(['state', 'list', DIRECT, ...api]);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/cli-doc\s+latest_wins\s+2\s+/);
    expect((await state(DIRECT, 'cli-doc')).desired?.data).toEqual({ greeting: 'hi' });
  });

  it('state - updates made while the gateway is unreachable survive a node restart and converge on reconnect, SYNCING until caught up', async () => {
    const trigger = file('go');
    const started = file('started');
    const done = [1, 2, 3].map((n) => file(`done-${n}`));
    const steps = done.map((d, i) => ({ doc: 'counter', data: { n: i + 1 }, wait_file: trigger, done_file: d }));
    await client().submitTask({ tool_name: 'state_script', tool_args: { started_file: started, steps }, target: explicit(FIELD) });
    await waitFor('script started', () => existsSync(started));

    proxy.sever();
    await waitFor('field node OFFLINE', async () => (await status(FIELD)) === 'OFFLINE');
    writeFileSync(trigger, '');
    await waitFor('offline writes journaled', () => done.every((d) => existsSync(d)));
    // The gateway has heard nothing of them.
    await expect(state(FIELD, 'counter')).rejects.toMatchObject({ code: 'FM_ERR_STATE_NOT_FOUND' });

    // Restart the node while it still cannot reach the gateway: its journal holds the pending changes.
    const old = c.procs.find((p) => p.proc.spawnargs.includes(FIELD) && p.proc.exitCode === null);
    await old?.stop();
    const journal = () => JSON.parse(readFileSync(join(fieldDataDir, 'state', 'counter.json'), 'utf8'));
    expect(journal().pending.map((p: { version: number }) => p.version)).toEqual([1, 2, 3]);
    const args = ['node', '--gateway', proxy.address, '--id', FIELD, '--data-dir', fieldDataDir, '--tools-module', testToolsModule];
    const { managed, ready } = await startProcess(args, 'node starting', { cliPath });
    c.procs.push(managed);
    expect(ready.state_docs).toBe(1);

    const mark = c.gateway.proc.output().length;
    proxy.heal();
    const synced = await waitState('counter converged', FIELD, 'counter', (d) => d.reported?.version === 3);
    expect(synced.reported).toMatchObject({ version: 3, data: { n: 3 }, checksum: SyncState.checksumOf({ n: 3 }) });
    await waitFor('field node ONLINE', async () => (await status(FIELD)) === 'ONLINE');
    await waitFor('confirmed changes dropped from the journal', () => journal().pending.length === 0);
    expect(await nodeCopy(FIELD, 'counter')).toMatchObject({ version: 3, data: { n: 3 } });

    // The node was SYNCING from its registration until its documents were applied, and ONLINE only after.
    const lines = logLines(c.gateway.proc.output(), mark);
    const at = (pred: (l: Record<string, unknown>) => boolean) => lines.findIndex(pred);
    const syncing = at((l) => l.msg === 'node status' && l.node_id === FIELD && l.status === 'SYNCING');
    const applied = at((l) => l.msg === 'state synced' && l.node_id === FIELD && l.doc === 'counter' && l.reported_version === 3);
    const online = at((l) => l.msg === 'node status' && l.node_id === FIELD && l.status === 'ONLINE');
    expect(syncing).toBeGreaterThanOrEqual(0);
    expect(applied).toBeGreaterThan(syncing);
    expect(online).toBeGreaterThan(applied);
  });

  it('state - each conflict strategy settles documents changed on both sides while the node was offline', async () => {
    const docs: [string, ConflictStrategy][] = [
      ['rw', 'remote_wins'],
      ['lw', 'local_wins'],
      ['lt-remote', 'latest_wins'],
      ['lt-local', 'latest_wins'],
    ];
    for (const [doc, strategy] of docs) await client().putState(FIELD, doc, { v: 'base' }, { strategy });
    for (const [doc] of docs) await waitState(`${doc} in sync`, FIELD, doc, (d) => d.in_sync && d.reported !== null);

    const first = file('first');
    const second = file('second');
    const firstDone = file('first-done');
    const secondDone = file('second-done');
    const started = file('started');
    const local = { v: 'local' };
    const steps = [
      { doc: 'rw', data: local, wait_file: first },
      { doc: 'lw', data: local, wait_file: first },
      { doc: 'lt-remote', data: local, wait_file: first, done_file: firstDone },
      { doc: 'lt-local', data: local, wait_file: second, done_file: secondDone },
    ];
    await client().submitTask({ tool_name: 'state_script', tool_args: { started_file: started, steps }, target: explicit(FIELD) });
    await waitFor('script started', () => existsSync(started));

    proxy.sever();
    await waitFor('field node OFFLINE', async () => (await status(FIELD)) === 'OFFLINE');
    const remote = { v: 'remote' };
    // rw and lw: the gateway writes first; lt-remote: the node writes, then the gateway; lt-local: the other way round.
    await client().putState(FIELD, 'rw', remote);
    await client().putState(FIELD, 'lw', remote);
    writeFileSync(first, '');
    await waitFor('first local writes', () => existsSync(firstDone));
    await client().putState(FIELD, 'lt-remote', remote);
    await client().putState(FIELD, 'lt-local', remote);
    writeFileSync(second, '');
    await waitFor('second local write', () => existsSync(secondDone));
    for (const [doc] of docs) expect((await state(FIELD, doc)).in_sync).toBe(false);

    proxy.heal();
    for (const [doc] of docs) await waitState(`${doc} settled`, FIELD, doc, (d) => d.in_sync);
    await waitFor('field node ONLINE', async () => (await status(FIELD)) === 'ONLINE');
    const expected: Record<string, { data: unknown; desired_version: number }> = {
      rw: { data: remote, desired_version: 2 },
      lw: { data: local, desired_version: 3 },
      'lt-remote': { data: remote, desired_version: 2 },
      'lt-local': { data: local, desired_version: 3 },
    };
    for (const [doc, strategy] of docs) {
      const d = await state(FIELD, doc);
      expect({ doc, strategy: d.strategy, desired: d.desired?.data, reported: d.reported?.data, version: d.desired?.version }).toEqual({
        doc,
        strategy,
        desired: expected[doc]?.data,
        reported: expected[doc]?.data,
        version: expected[doc]?.desired_version,
      });
      expect((await nodeCopy(FIELD, doc))?.data).toEqual(expected[doc]?.data);
    }
  });

  it('state - a checksum mismatch at the same version makes the owning side send the whole document again', async () => {
    await client().putState(DIRECT, 'resync-r', { x: 1 });
    await client().putState(DIRECT, 'resync-d', { y: 1 });
    for (const doc of ['resync-r', 'resync-d']) await waitState(`${doc} in sync`, DIRECT, doc, (d) => d.in_sync);
    const before = await state(DIRECT, 'resync-r');

    // The gateway's copies now disagree with the node's at the same versions (say, restored from an older backup).
    const { api, listen, dataDir, proc } = c.gateway;
    await proc.stop();
    const db = new BetterSqlite3(join(dataDir, 'fieldmesh.db'));
    try {
      const tampered = { x: 'gateway copy' };
      const rewritten = { y: 'gateway copy' };
      db.prepare('UPDATE state_docs SET reported_data = ?, reported_checksum = ? WHERE node_id = ? AND doc = ?').run(
        JSON.stringify(tampered),
        SyncState.checksumOf(tampered),
        DIRECT,
        'resync-r',
      );
      db.prepare('UPDATE state_docs SET desired_data = ?, desired_checksum = ? WHERE node_id = ? AND doc = ?').run(
        JSON.stringify(rewritten),
        SyncState.checksumOf(rewritten),
        DIRECT,
        'resync-d',
      );
    } finally {
      db.close();
    }
    await c.startGateway([], { api: api.replace(/^https?:\/\//, ''), listen });
    expect((await state(DIRECT, 'resync-r')).reported?.data).toEqual({ x: 'gateway copy' });

    // Reported belongs to the node: its whole copy replaces the gateway's. Desired belongs to the gateway: the node adopts it.
    const r = await waitState('reported resynced', DIRECT, 'resync-r', (d) => d.reported?.data.x === 1);
    expect(r.reported).toMatchObject({ version: before.reported?.version, checksum: before.reported?.checksum });
    const d = await waitState('desired resynced', DIRECT, 'resync-d', (v) => v.in_sync);
    expect(d.reported?.data).toEqual({ y: 'gateway copy' });
    expect(await nodeCopy(DIRECT, 'resync-d')).toMatchObject({ data: { y: 'gateway copy' } });
    const resynced = logLines(c.gateway.proc.output(), 0).filter((l) => l.msg === 'state synced' && l.resync === true);
    expect(resynced.map((l) => l.doc)).toContain('resync-r');
  });
});
