// Tests for SqliteStore against real SQLite files in a temporary directory.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isFieldmeshError } from '../../core/errors.js';
import { sqliteMigrations } from '../migrations.js';
import type { ApiTokenRecord, ApprovalRecord, NodeRecord, RunRecord, TaskRecord } from '../types.js';
import { openSqliteStore, type SqliteStore } from './index.js';

function node(overrides: Partial<NodeRecord> = {}): NodeRecord {
  return {
    node_id: 'node-a',
    name: 'Pump house',
    platform: 'linux-arm64',
    status: 'ONLINE',
    capabilities: ['gpio', 'camera'],
    tools: [{ name: 'read_sensor', input_schema: { type: 'object' } }],
    location: { lat: 52.52, lon: 13.405 },
    load: { cpu: 0.25, memory: 0.5, in_flight: 2 },
    public_key: '-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n',
    trusted: true,
    protocol_version: 1,
    agent_version: '0.1.0',
    max_concurrency: 4,
    registered_at: '2025-01-01T00:00:00.000Z',
    last_seen: '2025-01-01T00:00:05.000Z',
    ...overrides,
  };
}

function task(overrides: Partial<TaskRecord> = {}): TaskRecord {
  return {
    task_id: 'task-1',
    run_id: null,
    step_id: null,
    tool_name: 'read_sensor',
    tool_args: { sensor: 'temp', nested: [1, 'two', null, { ok: true }] },
    target: { node_id: 'node-a' },
    timeout_ms: 30_000,
    status: 'pending',
    attempts: [],
    result: null,
    created_at: '2025-01-01T00:00:00.000Z',
    updated_at: '2025-01-01T00:00:00.000Z',
    idempotency_key: null,
    options: {},
    expires_at: null,
    ...overrides,
  };
}

/** A supervised task's approval request, not yet decided. */
const approval: ApprovalRecord = {
  requested_at: '2025-01-01T00:00:00.000Z',
  expires_at: '2025-01-01T00:10:00.000Z',
  decision: null,
  decided_at: null,
  reason: null,
};

function run(overrides: Partial<RunRecord> = {}): RunRecord {
  return {
    run_id: 'run-1',
    workflow_id: 'wf-irrigate',
    workflow: { id: 'wf-irrigate', steps: [{ id: 's1', tool: 'read_sensor' }] },
    input: { field: 7 },
    status: 'running',
    steps: { s1: { status: 'pending' } },
    timeline: [{ at: '2025-01-01T00:00:00.000Z', event: 'started' }],
    result: null,
    created_at: '2025-01-01T00:00:00.000Z',
    updated_at: '2025-01-01T00:00:00.000Z',
    trace_id: 'trace-1',
    ...overrides,
  };
}

function apiToken(overrides: Partial<ApiTokenRecord> = {}): ApiTokenRecord {
  return {
    token_id: 'tok_1',
    name: 'ci',
    scope: 'submit',
    hash: 'b'.repeat(64),
    created_at: '2025-01-01T00:00:00.000Z',
    last_used_at: null,
    revoked_at: null,
    ...overrides,
  };
}

async function expectCode(promise: Promise<unknown>, code: string): Promise<void> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isFieldmeshError(err)).toBe(true);
  expect((err as { code: string }).code).toBe(code);
}

describe('SqliteStore', () => {
  let dir: string;
  let file: string;
  let store: SqliteStore;

  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fm-store-'));
    file = path.join(dir, 'nested', 'gateway.db');
    store = await openSqliteStore(file);
  });

  afterEach(async () => {
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('store - creates the parent directory and the file', () => {
    expect(fs.existsSync(file)).toBe(true);
  });

  it('store - node round-trips with JSON fields', async () => {
    const n = node();
    await store.upsertNode(n);
    expect(await store.getNode('node-a')).toEqual(n);
    expect(await store.getNode('missing')).toBeUndefined();
  });

  it('store - node round-trips with a null location and no key', async () => {
    const n = node({ location: null, public_key: null, trusted: false, tools: [], capabilities: [] });
    await store.upsertNode(n);
    expect(await store.getNode('node-a')).toEqual(n);
  });

  it('store - upsertNode replaces an existing node', async () => {
    await store.upsertNode(node());
    const replaced = node({ name: 'Renamed', status: 'DEGRADED', capabilities: ['gpio'], location: null, trusted: false });
    await store.upsertNode(replaced);
    expect(await store.getNode('node-a')).toEqual(replaced);
    expect(await store.listNodes()).toHaveLength(1);
  });

  it('store - listNodes orders by node_id', async () => {
    await store.upsertNode(node({ node_id: 'node-c' }));
    await store.upsertNode(node({ node_id: 'node-a' }));
    await store.upsertNode(node({ node_id: 'node-b' }));
    expect((await store.listNodes()).map((n) => n.node_id)).toEqual(['node-a', 'node-b', 'node-c']);
  });

  it('store - updateNodeStatus sets status and last_seen only', async () => {
    await store.upsertNode(node());
    await store.updateNodeStatus('node-a', 'OFFLINE', '2025-01-02T00:00:00.000Z');
    expect(await store.getNode('node-a')).toEqual(node({ status: 'OFFLINE', last_seen: '2025-01-02T00:00:00.000Z' }));
  });

  it('store - updateNodeStatus on an unknown node throws FM_ERR_NODE_NOT_FOUND', async () => {
    await expectCode(store.updateNodeStatus('ghost', 'ONLINE', '2025-01-02T00:00:00.000Z'), 'FM_ERR_NODE_NOT_FOUND');
  });

  it('store - task round-trips with attempts and result', async () => {
    const t = task({
      run_id: 'run-1',
      step_id: 's1',
      status: 'succeeded',
      attempts: [
        {
          attempt: 1,
          node_id: 'node-a',
          started_at: '2025-01-01T00:00:01.000Z',
          finished_at: '2025-01-01T00:00:02.000Z',
          outcome: 'failed',
          error: { code: 'FM_ERR_TOOL_TIMEOUT', message: 'slow', retryable: true },
          duration_ms: 1000,
          verified: null,
          result_hash: null,
        },
        {
          attempt: 2,
          node_id: 'node-b',
          started_at: '2025-01-01T00:00:02.000Z',
          finished_at: '2025-01-01T00:00:03.000Z',
          outcome: 'success',
          error: null,
          duration_ms: 900,
          verified: true,
          result_hash: 'abc',
        },
      ],
      result: {
        ok: true,
        task_id: 'task-1',
        node_id: 'node-b',
        output: { celsius: 21.5 },
        execution_path: ['node-a', 'node-b'],
        verified: true,
        degraded: false,
        duration_ms: 900,
        result_hash: 'abc',
      },
    });
    await store.insertTask(t);
    expect(await store.getTask('task-1')).toEqual(t);
    expect(await store.getTask('missing')).toBeUndefined();
  });

  it('store - updateTask applies only the given fields and bumps updated_at', async () => {
    await store.insertTask(task());
    await store.updateTask('task-1', { status: 'running' });
    const afterStatus = await store.getTask('task-1');
    expect(afterStatus?.status).toBe('running');
    expect(afterStatus?.attempts).toEqual([]);
    expect(afterStatus?.result).toBeNull();
    expect(afterStatus?.updated_at).not.toBe('2025-01-01T00:00:00.000Z');
    expect(afterStatus?.created_at).toBe('2025-01-01T00:00:00.000Z');

    const result = {
      ok: false,
      task_id: 'task-1',
      node_id: null,
      output: null,
      execution_path: [],
      verified: false,
      degraded: true,
      duration_ms: 5,
      result_hash: null,
      error: { code: 'FM_ERR_EXECUTION', message: 'boom' },
    };
    await store.updateTask('task-1', { result });
    const afterResult = await store.getTask('task-1');
    expect(afterResult?.status).toBe('running');
    expect(afterResult?.result).toEqual(result);

    await store.updateTask('task-1', { result: null });
    expect((await store.getTask('task-1'))?.result).toBeNull();
  });

  it('store - updateTask on an unknown task throws FM_ERR_TASK_NOT_FOUND', async () => {
    await expectCode(store.updateTask('ghost', { status: 'failed' }), 'FM_ERR_TASK_NOT_FOUND');
  });

  it('store - listUnfinishedTasks returns pending and running tasks oldest first', async () => {
    await store.insertTask(task({ task_id: 't-late', status: 'pending', created_at: '2025-01-01T00:00:03.000Z' }));
    await store.insertTask(task({ task_id: 't-done', status: 'succeeded', created_at: '2025-01-01T00:00:00.000Z' }));
    await store.insertTask(task({ task_id: 't-early', status: 'running', created_at: '2025-01-01T00:00:01.000Z' }));
    await store.insertTask(task({ task_id: 't-failed', status: 'failed', created_at: '2025-01-01T00:00:02.000Z' }));
    await store.insertTask(task({ task_id: 't-cancel', status: 'cancelled', created_at: '2025-01-01T00:00:02.000Z' }));
    expect((await store.listUnfinishedTasks()).map((t) => t.task_id)).toEqual(['t-early', 't-late']);

    await store.updateTask('t-early', { status: 'succeeded' });
    expect((await store.listUnfinishedTasks()).map((t) => t.task_id)).toEqual(['t-late']);
  });

  it('store - a supervised task keeps its approval and counts as unfinished while it waits', async () => {
    await store.insertTask(task({ task_id: 't-wait', status: 'awaiting_approval', approval }));
    await store.insertTask(task({ task_id: 't-run', status: 'running', created_at: '2025-01-01T00:00:01.000Z' }));
    expect((await store.getTask('t-wait'))?.approval).toEqual(approval);
    expect((await store.listUnfinishedTasks()).map((t) => t.task_id)).toEqual(['t-wait', 't-run']);
    expect((await store.listTasksByStatus('awaiting_approval')).map((t) => t.task_id)).toEqual(['t-wait']);
  });

  it('store - transitionTask applies only while the task is in the expected status', async () => {
    await store.insertTask(task({ task_id: 't-wait', status: 'awaiting_approval', approval }));
    const approved = { ...approval, decision: 'approved' as const, decided_at: '2025-01-01T00:01:00.000Z', reason: 'ok' };
    const timedOut = { ...approval, decision: 'timed_out' as const, decided_at: '2025-01-01T00:10:00.000Z' };
    // Two decisions race: both are issued before either commits, and only the first one applies.
    const [first, second] = await Promise.all([
      store.transitionTask('t-wait', 'awaiting_approval', { status: 'pending', approval: approved }),
      store.transitionTask('t-wait', 'awaiting_approval', { status: 'failed', approval: timedOut }),
    ]);
    expect([first, second]).toEqual([true, false]);
    const stored = await store.getTask('t-wait');
    expect(stored?.status).toBe('pending');
    expect(stored?.approval).toEqual(approved);
    expect(await store.transitionTask('ghost', 'awaiting_approval', { status: 'failed' })).toBe(false);
  });

  it('store - run round-trips with JSON fields', async () => {
    const r = run();
    await store.insertRun(r);
    expect(await store.getRun('run-1')).toEqual(r);
    expect(await store.getRun('missing')).toBeUndefined();

    const finished = run({ run_id: 'run-2', status: 'succeeded', result: { total: [1, 2, 3] } });
    await store.insertRun(finished);
    expect(await store.getRun('run-2')).toEqual(finished);
  });

  it('store - updateRun applies only the given fields', async () => {
    await store.insertRun(run());
    await store.updateRun('run-1', { steps: { s1: { status: 'succeeded' } }, timeline: [{ event: 'done' }] });
    const updated = await store.getRun('run-1');
    expect(updated?.status).toBe('running');
    expect(updated?.steps).toEqual({ s1: { status: 'succeeded' } });
    expect(updated?.timeline).toEqual([{ event: 'done' }]);
    expect(updated?.input).toEqual({ field: 7 });
    expect(updated?.updated_at).not.toBe('2025-01-01T00:00:00.000Z');

    await store.updateRun('run-1', { status: 'failed', result: { reason: 'step s1' } });
    const failed = await store.getRun('run-1');
    expect(failed?.status).toBe('failed');
    expect(failed?.result).toEqual({ reason: 'step s1' });
  });

  it('store - updateRun on an unknown run throws FM_ERR_RUN_NOT_FOUND', async () => {
    await expectCode(store.updateRun('ghost', { status: 'cancelled' }), 'FM_ERR_RUN_NOT_FOUND');
  });

  it('store - listRuns filters by workflow and status, newest first', async () => {
    await store.insertRun(run({ run_id: 'r1', workflow_id: 'wf-a', status: 'succeeded', created_at: '2025-01-01T00:00:01.000Z' }));
    await store.insertRun(run({ run_id: 'r2', workflow_id: 'wf-a', status: 'running', created_at: '2025-01-01T00:00:02.000Z' }));
    await store.insertRun(run({ run_id: 'r3', workflow_id: 'wf-b', status: 'running', created_at: '2025-01-01T00:00:03.000Z' }));

    const ids = (runs: RunRecord[]) => runs.map((r) => r.run_id);
    expect(ids(await store.listRuns())).toEqual(['r3', 'r2', 'r1']);
    expect(ids(await store.listRuns({}))).toEqual(['r3', 'r2', 'r1']);
    expect(ids(await store.listRuns({ workflow_id: 'wf-a' }))).toEqual(['r2', 'r1']);
    expect(ids(await store.listRuns({ status: 'running' }))).toEqual(['r3', 'r2']);
    expect(ids(await store.listRuns({ workflow_id: 'wf-a', status: 'running' }))).toEqual(['r2']);
    expect(await store.listRuns({ workflow_id: 'wf-none' })).toEqual([]);
  });

  it('store - the database file is in WAL mode', () => {
    const probe = new BetterSqlite3(file, { readonly: true });
    try {
      expect(probe.pragma('journal_mode', { simple: true })).toBe('wal');
    } finally {
      probe.close();
    }
  });

  it('store - data survives closing and reopening', async () => {
    await store.upsertNode(node());
    await store.insertTask(task());
    await store.insertRun(run());
    await store.close();

    store = await openSqliteStore(file);
    expect(await store.getNode('node-a')).toEqual(node());
    expect(await store.getTask('task-1')).toEqual(task());
    expect(await store.getRun('run-1')).toEqual(run());
  });

  it('store - migrations are idempotent across reopen and repeated migrate', async () => {
    await store.insertTask(task());
    await store.migrate();
    await store.close();

    store = await openSqliteStore(file);
    await store.migrate();
    await store.migrate();
    expect(await store.getTask('task-1')).toEqual(task());

    const probe = new BetterSqlite3(file, { readonly: true });
    try {
      const applied = probe.prepare('SELECT name FROM kysely_migration ORDER BY name').all() as { name: string }[];
      expect(applied.map((m) => m.name)).toEqual(Object.keys(sqliteMigrations).sort());
      expect(applied.map((m) => m.name)).toContain('0001_initial');
    } finally {
      probe.close();
    }
  });

  it('store - close is harmless when called twice', async () => {
    await store.close();
    await expect(store.close()).resolves.toBeUndefined();
  });
  it('store - idempotency keys find their task, options round-trip, and a key is unique', async () => {
    const t = task({
      task_id: 'task-key',
      idempotency_key: 'order-42',
      options: { retry: { max_attempts: 3, backoff_ms: 500 }, offline_behavior: { mode: 'queue', ttl_seconds: 60 } },
    });
    await store.insertTask(t);
    expect(await store.getTaskByIdempotencyKey('order-42')).toEqual(t);
    expect(await store.getTaskByIdempotencyKey('order-43')).toBeUndefined();
    await expect(store.insertTask(task({ task_id: 'task-key-2', idempotency_key: 'order-42' }))).rejects.toThrow();
    await store.updateTask('task-key', { status: 'queued', expires_at: '2030-01-01T00:00:00.000Z' });
    const queued = await store.getTask('task-key');
    expect(queued?.status).toBe('queued');
    expect(queued?.expires_at).toBe('2030-01-01T00:00:00.000Z');
    expect((await store.listUnfinishedTasks()).map((x) => x.task_id)).toContain('task-key');
  });
  it('store - invocation summaries count, average and take percentiles per tool and node', async () => {
    const at = '2025-01-01T00:00:00.000Z';
    const records = Array.from({ length: 100 }, (_, i) => ({
      tool: i < 80 ? 'unit_convert' : 'summarize',
      function_id: null,
      node_id: i % 2 === 0 ? 'node-a' : 'node-b',
      task_id: `t${i}`,
      attempt: 1,
      duration_ms: i + 1,
      success: i % 10 !== 0,
      timestamp: at,
      error: i % 10 === 0 ? 'FM_ERR_EXECUTION' : '',
    }));
    await store.appendInvocations(records);
    expect(await store.summarizeInvocations()).toEqual({
      total_invocations: 100,
      success_rate: 90,
      avg_latency_ms: 50.5,
      p50_ms: 50,
      p99_ms: 99,
      error_count: 10,
    });
    const convert = await store.summarizeInvocations({ tool: 'unit_convert', node_id: 'node-a' });
    expect(convert.total_invocations).toBe(40);
    expect(convert.error_count).toBe(8);
    expect(await store.summarizeInvocations({ tool: 'nothing' })).toMatchObject({ total_invocations: 0, p50_ms: 0, p99_ms: 0 });
  });

  it('store - writes issued together all land, and one that fails rejects alone', async () => {
    const results = await Promise.allSettled([
      store.insertTask(task({ task_id: 'task-a', idempotency_key: 'same' })),
      store.insertTask(task({ task_id: 'task-b', idempotency_key: 'same' })),
      store.insertTask(task({ task_id: 'task-c' })),
      store.updateTask('task-missing', { status: 'running' }),
      store.upsertNode(node()),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'rejected', 'fulfilled']);
    await expectCode(Promise.reject((results[3] as PromiseRejectedResult).reason), 'FM_ERR_TASK_NOT_FOUND');
    expect((await store.getTask('task-a'))?.idempotency_key).toBe('same');
    expect(await store.getTask('task-b')).toBeUndefined();
    expect(await store.getTask('task-c')).toBeDefined();
    expect(await store.getNode('node-a')).toEqual(node());
  });

  it('store - patches issued with the insert of their task land in it; a patch after a failed insert or off its status finds no row', async () => {
    const attempts = [
      {
        attempt: 1,
        node_id: 'node-a',
        started_at: '2025-01-01T00:00:01.000Z',
        finished_at: null,
        outcome: 'running' as const,
        error: null,
        duration_ms: null,
        verified: null,
        result_hash: null,
      },
    ];
    await store.insertTask(task({ task_id: 'task-old' }));
    const results = await Promise.allSettled([
      store.insertTask(task({ task_id: 'task-new' })),
      store.updateTask('task-new', { status: 'running', attempts }),
      store.transitionTask('task-new', 'pending', { status: 'failed' }),
      // The same id again: the INSERT fails, and the patch updates the row already stored.
      store.insertTask(task({ task_id: 'task-old', idempotency_key: 'other' })),
      store.updateTask('task-old', { status: 'cancelled' }),
      store.insertTask(task({ task_id: 'task-dup', idempotency_key: 'dup' })),
      store.insertTask(task({ task_id: 'task-dup-2', idempotency_key: 'dup' })),
      store.updateTask('task-dup-2', { status: 'running' }),
    ]);
    expect(results.map((r) => r.status)).toEqual([
      'fulfilled',
      'fulfilled',
      'fulfilled',
      'rejected',
      'fulfilled',
      'fulfilled',
      'rejected',
      'rejected',
    ]);
    // The transition from "pending" lost: the row was already "running" when it came.
    expect((results[2] as PromiseFulfilledResult<boolean>).value).toBe(false);
    await expectCode(Promise.reject((results[7] as PromiseRejectedResult).reason), 'FM_ERR_TASK_NOT_FOUND');
    const stored = await store.getTask('task-new');
    expect(stored?.status).toBe('running');
    expect(stored?.attempts).toEqual(attempts);
    expect(stored?.updated_at).not.toBe(task({ task_id: 'x' }).updated_at);
    expect((await store.getTask('task-old'))?.status).toBe('cancelled');
    expect(await store.getTask('task-dup-2')).toBeUndefined();
  });

  it('store - guarded patches of a task not yet committed apply in the order they were issued', async () => {
    const [ins, cancel, run] = await Promise.all([
      store.insertTask(task({ task_id: 'task-q', status: 'queued' })),
      store.transitionTask('task-q', 'running', { status: 'cancelled' }),
      store.transitionTask('task-q', 'queued', { status: 'running' }),
    ]);
    expect([ins, cancel, run]).toEqual([undefined, false, true]);
    expect((await store.getTask('task-q'))?.status).toBe('running');
  });

  it('store - a write resolves only once it can be read back, and close keeps writes already made', async () => {
    const inserted = store.insertTask(task({ task_id: 'task-late' }));
    await inserted;
    expect((await store.getTask('task-late'))?.status).toBe('pending');
    const updated = store.updateTask('task-late', { status: 'succeeded' });
    await store.close();
    await updated;
    store = await openSqliteStore(file);
    expect((await store.getTask('task-late'))?.status).toBe('succeeded');
  });

  it('store - API tokens round-trip, list oldest first, and keep only the hash', async () => {
    const admin = apiToken({ token_id: 'tok_admin', name: 'admin (data dir)', scope: 'admin', hash: 'a'.repeat(64) });
    const reader: ApiTokenRecord = { ...admin, token_id: 'tok_reader', name: null, scope: 'read', created_at: '2025-01-02T00:00:00.000Z' };
    await store.insertApiToken(reader);
    await store.insertApiToken(admin);
    expect(await store.getApiToken('tok_admin')).toEqual(admin);
    expect(await store.getApiToken('tok_missing')).toBeUndefined();
    expect((await store.listApiTokens()).map((t) => t.token_id)).toEqual(['tok_admin', 'tok_reader']);
    await expect(store.insertApiToken(admin)).rejects.toThrow();
    const probe = new BetterSqlite3(file, { readonly: true });
    try {
      expect(probe.prepare('SELECT * FROM api_tokens WHERE token_id = ?').get('tok_admin')).toEqual(admin);
    } finally {
      probe.close();
    }
  });

  it('store - revoking a token keeps the first revocation time; unknown ids throw FM_ERR_TOKEN_NOT_FOUND', async () => {
    const t = apiToken();
    await store.insertApiToken(t);
    await store.touchApiToken('tok_1', '2025-01-03T00:00:00.000Z');
    await store.touchApiToken('tok_missing', '2025-01-03T00:00:00.000Z');
    expect((await store.getApiToken('tok_1'))?.last_used_at).toBe('2025-01-03T00:00:00.000Z');
    expect(await store.revokeApiToken('tok_1', '2025-01-04T00:00:00.000Z')).toMatchObject({ revoked_at: '2025-01-04T00:00:00.000Z' });
    expect(await store.revokeApiToken('tok_1', '2025-01-05T00:00:00.000Z')).toMatchObject({ revoked_at: '2025-01-04T00:00:00.000Z' });
    await store.close();
    store = await openSqliteStore(file);
    expect(await store.getApiToken('tok_1')).toEqual({
      ...t,
      last_used_at: '2025-01-03T00:00:00.000Z',
      revoked_at: '2025-01-04T00:00:00.000Z',
    });
    await expectCode(store.revokeApiToken('tok_missing', '2025-01-05T00:00:00.000Z'), 'FM_ERR_TOKEN_NOT_FOUND');
  });
});
