// The embedded Store: SQLite through better-sqlite3, queried with Kysely.
import fs from 'node:fs';
import path from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, type Migration, type MigrationProvider, Migrator, type Selectable, SqliteDialect, type Updateable } from 'kysely';
import { type ErrorBody, FieldmeshError } from '../../core/errors.js';
import type { JsonValue } from '../../protocol/json.js';
import type { ConflictStrategy, StateDocument, SyncData } from '../../protocol/state.js';
import { sqliteMigrations } from '../migrations.js';
import type {
  ApiTokenRecord,
  ApprovalRecord,
  AttemptRecord,
  CertificateRecord,
  FunctionNodeRecord,
  FunctionNodeStatus,
  FunctionRecord,
  InvocationRecord,
  InvocationSummary,
  NodeLoad,
  NodeRecord,
  NodeStatus,
  PairingCodeRecord,
  PairingRequestRecord,
  PairingRequestStatus,
  PeerRecord,
  RunPatch,
  RunRecord,
  RunStatus,
  StateDocRecord,
  StateDocVersions,
  Store,
  TaskOptions,
  TaskPatch,
  TaskRecord,
  TaskResult,
  TaskStatus,
  TokenScope,
  WorkflowRecord,
} from '../types.js';
import type {
  ApiTokensTable,
  Database,
  FunctionsTable,
  InvocationsTable,
  NodesTable,
  RunsTable,
  StateDocsTable,
  TasksTable,
} from './schema.js';

export type { Database } from './schema.js';

/** Cap on listRuns so a long-lived gateway cannot return an unbounded history in one call. */
const LIST_RUNS_LIMIT = 1000;

const migrationProvider: MigrationProvider = {
  async getMigrations(): Promise<Record<string, Migration>> {
    return sqliteMigrations;
  },
};

function parseJson<T>(text: string): T {
  return JSON.parse(text) as T;
}

function nodeToRow(node: NodeRecord): Selectable<NodesTable> {
  return {
    node_id: node.node_id,
    name: node.name,
    platform: node.platform,
    status: node.status,
    capabilities: JSON.stringify(node.capabilities),
    tools: JSON.stringify(node.tools),
    location_lat: node.location?.lat ?? null,
    location_lon: node.location?.lon ?? null,
    load: JSON.stringify(node.load),
    public_key: node.public_key,
    trusted: node.trusted ? 1 : 0,
    protocol_version: node.protocol_version,
    agent_version: node.agent_version,
    max_concurrency: node.max_concurrency,
    registered_at: node.registered_at,
    last_seen: node.last_seen,
  };
}

function rowToNode(row: Selectable<NodesTable>): NodeRecord {
  return {
    node_id: row.node_id,
    name: row.name,
    platform: row.platform,
    status: row.status as NodeStatus,
    capabilities: parseJson<string[]>(row.capabilities),
    tools: parseJson<JsonValue[]>(row.tools),
    // A half-set location is not a location; both columns are written together.
    location: row.location_lat !== null && row.location_lon !== null ? { lat: row.location_lat, lon: row.location_lon } : null,
    load: parseJson<NodeLoad>(row.load),
    public_key: row.public_key,
    trusted: row.trusted !== 0,
    protocol_version: row.protocol_version,
    agent_version: row.agent_version,
    max_concurrency: row.max_concurrency,
    registered_at: row.registered_at,
    last_seen: row.last_seen,
  };
}

function taskToRow(task: TaskRecord): Selectable<TasksTable> {
  return {
    task_id: task.task_id,
    run_id: task.run_id,
    step_id: task.step_id,
    tool_name: task.tool_name,
    tool_args: JSON.stringify(task.tool_args),
    target: JSON.stringify(task.target),
    timeout_ms: task.timeout_ms,
    status: task.status,
    attempts: JSON.stringify(task.attempts),
    result: task.result === null ? null : JSON.stringify(task.result),
    created_at: task.created_at,
    updated_at: task.updated_at,
    idempotency_key: task.idempotency_key ?? null,
    options: JSON.stringify(task.options ?? {}),
    expires_at: task.expires_at ?? null,
    approval: task.approval ? JSON.stringify(task.approval) : null,
  };
}

function rowToTask(row: Selectable<TasksTable>): TaskRecord {
  const task: TaskRecord = {
    task_id: row.task_id,
    run_id: row.run_id,
    step_id: row.step_id,
    tool_name: row.tool_name,
    tool_args: parseJson<JsonValue>(row.tool_args),
    target: parseJson<JsonValue>(row.target),
    timeout_ms: row.timeout_ms,
    status: row.status as TaskStatus,
    attempts: parseJson<AttemptRecord[]>(row.attempts),
    result: row.result === null ? null : parseJson<TaskResult>(row.result),
    created_at: row.created_at,
    updated_at: row.updated_at,
    idempotency_key: row.idempotency_key,
    options: parseJson<TaskOptions>(row.options),
    expires_at: row.expires_at,
  };
  if (row.approval !== null) task.approval = parseJson<ApprovalRecord>(row.approval);
  return task;
}

function runToRow(run: RunRecord): Selectable<RunsTable> {
  return {
    run_id: run.run_id,
    workflow_id: run.workflow_id,
    workflow: JSON.stringify(run.workflow),
    input: JSON.stringify(run.input),
    status: run.status,
    steps: JSON.stringify(run.steps),
    timeline: JSON.stringify(run.timeline),
    result: run.result === null ? null : JSON.stringify(run.result),
    created_at: run.created_at,
    updated_at: run.updated_at,
    trace_id: run.trace_id,
  };
}

function rowToRun(row: Selectable<RunsTable>): RunRecord {
  return {
    run_id: row.run_id,
    workflow_id: row.workflow_id,
    workflow: parseJson<JsonValue>(row.workflow),
    input: parseJson<JsonValue>(row.input),
    status: row.status as RunStatus,
    steps: parseJson<Record<string, JsonValue>>(row.steps),
    timeline: parseJson<JsonValue[]>(row.timeline),
    result: row.result === null ? null : parseJson<JsonValue>(row.result),
    created_at: row.created_at,
    updated_at: row.updated_at,
    trace_id: row.trace_id,
  };
}

function rowToApiToken(row: Selectable<ApiTokensTable>): ApiTokenRecord {
  return { ...row, scope: row.scope as TokenScope };
}

const TASK_COLUMNS = [
  'task_id',
  'run_id',
  'step_id',
  'tool_name',
  'tool_args',
  'target',
  'timeout_ms',
  'status',
  'attempts',
  'result',
  'created_at',
  'updated_at',
  'idempotency_key',
  'options',
  'expires_at',
  'approval',
] as const satisfies readonly (keyof TasksTable)[];

const INVOCATION_COLUMNS = [
  'tool',
  'function_id',
  'node_id',
  'task_id',
  'attempt',
  'duration_ms',
  'success',
  'timestamp',
  'error',
] as const satisfies readonly (keyof InvocationsTable)[];

const NODE_COLUMNS = [
  'node_id',
  'name',
  'platform',
  'status',
  'capabilities',
  'tools',
  'location_lat',
  'location_lon',
  'load',
  'public_key',
  'trusted',
  'protocol_version',
  'agent_version',
  'max_concurrency',
  'registered_at',
  'last_seen',
] as const satisfies readonly (keyof NodesTable)[];

const STATE_COLUMNS = [
  'node_id',
  'doc',
  'strategy',
  'desired_version',
  'desired_data',
  'desired_checksum',
  'desired_updated_at',
  'reported_version',
  'reported_data',
  'reported_checksum',
  'reported_updated_at',
  'created_at',
  'updated_at',
] as const satisfies readonly (keyof StateDocsTable)[];

function stateDocToRow(r: StateDocRecord): Selectable<StateDocsTable> {
  return {
    node_id: r.node_id,
    doc: r.doc,
    strategy: r.strategy,
    desired_version: r.desired?.version ?? 0,
    desired_data: r.desired ? JSON.stringify(r.desired.data) : null,
    desired_checksum: r.desired?.checksum ?? null,
    desired_updated_at: r.desired?.updated_at ?? null,
    reported_version: r.reported?.version ?? 0,
    reported_data: r.reported ? JSON.stringify(r.reported.data) : null,
    reported_checksum: r.reported?.checksum ?? null,
    reported_updated_at: r.reported?.updated_at ?? null,
    created_at: r.created_at,
    updated_at: r.updated_at,
  };
}

function rowToFunction(row: Selectable<FunctionsTable>): FunctionRecord {
  return { ...row, env: parseJson<Record<string, string>>(row.env), target: parseJson<JsonValue>(row.target) };
}

function stateSide(version: number, data: string | null, checksum: string | null, updatedAt: string | null): StateDocument | null {
  if (data === null) return null;
  return { version, data: parseJson<SyncData>(data), checksum: checksum ?? '', updated_at: updatedAt ?? '' };
}

function rowToStateDoc(row: Selectable<StateDocsTable>): StateDocRecord {
  return {
    node_id: row.node_id,
    doc: row.doc,
    strategy: row.strategy as ConflictStrategy,
    desired: stateSide(row.desired_version, row.desired_data, row.desired_checksum, row.desired_updated_at),
    reported: stateSide(row.reported_version, row.reported_data, row.reported_checksum, row.reported_updated_at),
    created_at: row.created_at,
    updated_at: row.updated_at,
  };
}

const TASK_PATCH_FIELDS = ['status', 'attempts', 'result', 'expires_at', 'approval'] as const;

interface QueuedWrite {
  run: () => unknown;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

/** A task row queued for INSERT in the next group commit; `inserted` once its statement ran. */
interface PendingInsert {
  row: Record<string, unknown>;
  inserted: boolean;
}

export class SqliteStore implements Store {
  readonly #db: Kysely<Database>;
  readonly #raw: BetterSqlite3.Database;
  /**
   * The statements on the task and node hot paths, prepared once. Kysely builds
   * and better-sqlite3 prepares a statement on every call, which was a fifth of
   * the gateway's CPU per tool call; the other queries stay on Kysely.
   */
  readonly #statements = new Map<string, BetterSqlite3.Statement>();
  /** Writes waiting for the next group commit. */
  #queue: QueuedWrite[] = [];
  /** Task INSERTs in #queue, by task id, which later patches in the same commit fold into. */
  readonly #pendingInserts = new Map<string, PendingInsert>();
  #flushScheduled = false;
  #closed = false;

  constructor(database: BetterSqlite3.Database) {
    this.#raw = database;
    this.#db = new Kysely<Database>({ dialect: new SqliteDialect({ database }) });
  }

  #statement(key: string, sql: () => string): BetterSqlite3.Statement {
    let st = this.#statements.get(key);
    if (!st) {
      st = this.#raw.prepare(sql());
      this.#statements.set(key, st);
    }
    return st;
  }

  /**
   * Group commit: writes issued while the event loop handles one batch of I/O
   * are committed together in one transaction at setImmediate, and each write's
   * promise settles only after that COMMIT, so nothing is acknowledged before
   * it is in the store. One transaction instead of one per write saves the WAL
   * frames of pages the writes share (the newest task pages, the status index)
   * and the lock calls around each commit. A statement that fails (a duplicate
   * idempotency key) is rolled back alone, as SQLite does for a statement
   * inside a transaction, and only its own promise rejects.
   */
  #write<T>(run: () => T): Promise<T> {
    if (this.#closed) return Promise.reject(new FieldmeshError('FM_ERR_INTERNAL', 'Store is closed'));
    return new Promise<T>((resolve, reject) => {
      this.#queue.push({ run, resolve: resolve as (value: unknown) => void, reject });
      if (!this.#flushScheduled) {
        this.#flushScheduled = true;
        setImmediate(() => this.#flush());
      }
    });
  }

  #flush(): void {
    this.#flushScheduled = false;
    // A Kysely transaction (migrations) spans awaits; joining it would tie these writes to its fate.
    if (this.#raw.inTransaction) {
      this.#flushScheduled = true;
      setImmediate(() => this.#flush());
      return;
    }
    const batch = this.#queue;
    this.#queue = [];
    // Patches from here on find the row in the table, not in a pending INSERT.
    this.#pendingInserts.clear();
    if (batch.length === 0) return;
    const outcomes: { ok: boolean; value: unknown }[] = [];
    const single = batch.length === 1;
    try {
      if (!single) this.#statement('begin', () => 'BEGIN IMMEDIATE').run();
      for (const w of batch) {
        try {
          outcomes.push({ ok: true, value: w.run() });
        } catch (err) {
          outcomes.push({ ok: false, value: err });
        }
      }
      if (!single) this.#statement('commit', () => 'COMMIT').run();
    } catch (err) {
      // BEGIN or COMMIT failed: none of the batch is known to be stored.
      if (this.#raw.inTransaction) this.#raw.exec('ROLLBACK');
      for (const w of batch) w.reject(err);
      return;
    }
    batch.forEach((w, i) => {
      const o = outcomes[i]!;
      if (o.ok) w.resolve(o.value);
      else w.reject(o.value);
    });
  }

  async migrate(): Promise<void> {
    const migrator = new Migrator({ db: this.#db, provider: migrationProvider, allowUnorderedMigrations: true });
    const { error, results } = await migrator.migrateToLatest();
    if (error !== undefined) {
      const failed = results?.find((r) => r.status === 'Error')?.migrationName;
      throw new FieldmeshError('FM_ERR_INTERNAL', `SQLite migration ${failed ?? '(unknown)'} failed`, { cause: error });
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    // Writes already accepted are committed before the database closes.
    if (this.#queue.length > 0) this.#flush();
    this.#closed = true;
    await this.#db.destroy();
  }

  upsertNode(node: NodeRecord): Promise<void> {
    const row = nodeToRow(node);
    return this.#write(() => {
      this.#statement(
        'upsertNode',
        () =>
          `INSERT INTO nodes (${NODE_COLUMNS.join(', ')}) VALUES (${NODE_COLUMNS.map((c) => `@${c}`).join(', ')}) ` +
          `ON CONFLICT (node_id) DO UPDATE SET ${NODE_COLUMNS.filter((c) => c !== 'node_id')
            .map((c) => `${c} = excluded.${c}`)
            .join(', ')}`,
      ).run(row);
    });
  }

  async getNode(nodeId: string): Promise<NodeRecord | undefined> {
    const row = await this.#db.selectFrom('nodes').selectAll().where('node_id', '=', nodeId).executeTakeFirst();
    return row === undefined ? undefined : rowToNode(row);
  }

  async listNodes(): Promise<NodeRecord[]> {
    const rows = await this.#db.selectFrom('nodes').selectAll().orderBy('node_id').execute();
    return rows.map(rowToNode);
  }

  updateNodeStatus(nodeId: string, status: NodeStatus, lastSeen: string): Promise<void> {
    return this.#write(() => {
      const st = this.#statement('updateNodeStatus', () => 'UPDATE nodes SET status = ?, last_seen = ? WHERE node_id = ?');
      if (st.run(status, lastSeen, nodeId).changes === 0) {
        throw new FieldmeshError('FM_ERR_NODE_NOT_FOUND', `Node ${nodeId} not found`, { details: { node_id: nodeId } });
      }
    });
  }

  insertTask(task: TaskRecord): Promise<void> {
    const row = taskToRow(task) as Record<string, unknown>;
    const pending: PendingInsert = { row, inserted: false };
    // A second INSERT of one id in a commit fails; patches fold into the first.
    if (!this.#pendingInserts.has(task.task_id)) this.#pendingInserts.set(task.task_id, pending);
    return this.#write(() => {
      this.#statement(
        'insertTask',
        () => `INSERT INTO tasks (${TASK_COLUMNS.join(', ')}) VALUES (${TASK_COLUMNS.map((c) => `@${c}`).join(', ')})`,
      ).run(row);
      pending.inserted = true;
    });
  }

  updateTask(taskId: string, patch: TaskPatch): Promise<void> {
    return this.#patchTask(taskId, patch, undefined).then((changed) => {
      if (!changed) throw new FieldmeshError('FM_ERR_TASK_NOT_FOUND', `Task ${taskId} not found`, { details: { task_id: taskId } });
    });
  }

  transitionTask(taskId: string, from: TaskStatus, patch: TaskPatch): Promise<boolean> {
    return this.#patchTask(taskId, patch, from);
  }

  /** One UPDATE of the patched fields, optionally only while the task is in status `from`; true if a row changed. */
  #patchTask(taskId: string, patch: TaskPatch, from: TaskStatus | undefined): Promise<boolean> {
    const set: Record<string, unknown> = { updated_at: new Date().toISOString(), task_id: taskId };
    if (patch.status !== undefined) set.status = patch.status;
    if (patch.attempts !== undefined) set.attempts = JSON.stringify(patch.attempts);
    if (patch.result !== undefined) set.result = patch.result === null ? null : JSON.stringify(patch.result);
    if (patch.expires_at !== undefined) set.expires_at = patch.expires_at;
    if (patch.approval !== undefined) set.approval = patch.approval === null ? null : JSON.stringify(patch.approval);
    // One statement per combination of patched fields (at most 64, each twice).
    const fields = TASK_PATCH_FIELDS.filter((f) => f in set);
    const guard = from === undefined ? '' : ' AND status = @from_status';
    const update = () =>
      this.#statement(
        `updateTask:${fields.join(',')}${guard}`,
        () => `UPDATE tasks SET ${['updated_at', ...fields].map((f) => `${f} = @${f}`).join(', ')} WHERE task_id = @task_id${guard}`,
      ).run(from === undefined ? set : { ...set, from_status: from }).changes > 0;
    const pending = this.#pendingInserts.get(taskId);
    if (pending && (from === undefined || pending.row.status === from)) {
      // The row still waits for this commit: the patch goes into its INSERT, one statement instead of two. Should
      // that INSERT fail (a row of that id already there), the UPDATE runs as it would have.
      for (const f of fields) pending.row[f] = set[f];
      pending.row.updated_at = set.updated_at;
      return this.#write(() => pending.inserted || update());
    }
    // An UPDATE queued behind the INSERT: any later patch of this task must queue behind it too, in order.
    if (pending) this.#pendingInserts.delete(taskId);
    return this.#write(update);
  }

  async getTask(taskId: string): Promise<TaskRecord | undefined> {
    const row = this.#statement('getTask', () => 'SELECT * FROM tasks WHERE task_id = ?').get(taskId) as Selectable<TasksTable> | undefined;
    return row === undefined ? undefined : rowToTask(row);
  }

  async getTaskByIdempotencyKey(key: string): Promise<TaskRecord | undefined> {
    const row = this.#statement('getTaskByIdempotencyKey', () => 'SELECT * FROM tasks WHERE idempotency_key = ?').get(key) as
      | Selectable<TasksTable>
      | undefined;
    return row === undefined ? undefined : rowToTask(row);
  }

  async listUnfinishedTasks(): Promise<TaskRecord[]> {
    const rows = await this.#db
      .selectFrom('tasks')
      .selectAll()
      .where('status', 'in', ['pending', 'running', 'queued', 'awaiting_approval'] satisfies TaskStatus[])
      // task_id breaks ties so recovery replays tasks in a stable order.
      .orderBy('created_at')
      .orderBy('task_id')
      .execute();
    return rows.map(rowToTask);
  }

  async listTasksByStatus(status: TaskStatus, limit = 1000): Promise<TaskRecord[]> {
    const rows = await this.#db
      .selectFrom('tasks')
      .selectAll()
      .where('status', '=', status)
      .orderBy('created_at')
      .orderBy('task_id')
      .limit(limit)
      .execute();
    return rows.map(rowToTask);
  }

  async insertRun(run: RunRecord): Promise<void> {
    await this.#db.insertInto('runs').values(runToRow(run)).execute();
  }

  async updateRun(runId: string, patch: RunPatch): Promise<void> {
    const set: Updateable<RunsTable> = { updated_at: new Date().toISOString() };
    if (patch.status !== undefined) set.status = patch.status;
    if (patch.steps !== undefined) set.steps = JSON.stringify(patch.steps);
    if (patch.timeline !== undefined) set.timeline = JSON.stringify(patch.timeline);
    if (patch.result !== undefined) set.result = patch.result === null ? null : JSON.stringify(patch.result);
    const res = await this.#db.updateTable('runs').set(set).where('run_id', '=', runId).executeTakeFirst();
    if (res.numUpdatedRows === 0n) {
      throw new FieldmeshError('FM_ERR_RUN_NOT_FOUND', `Run ${runId} not found`, { details: { run_id: runId } });
    }
  }

  async getRun(runId: string): Promise<RunRecord | undefined> {
    const row = await this.#db.selectFrom('runs').selectAll().where('run_id', '=', runId).executeTakeFirst();
    return row === undefined ? undefined : rowToRun(row);
  }

  async listRuns(filter: { workflow_id?: string; status?: RunStatus } = {}): Promise<RunRecord[]> {
    let query = this.#db.selectFrom('runs').selectAll();
    if (filter.workflow_id !== undefined) query = query.where('workflow_id', '=', filter.workflow_id);
    if (filter.status !== undefined) query = query.where('status', '=', filter.status);
    const rows = await query.orderBy('created_at', 'desc').orderBy('run_id', 'desc').limit(LIST_RUNS_LIMIT).execute();
    return rows.map(rowToRun);
  }

  async putWorkflow(workflowId: string, workflow: JsonValue): Promise<WorkflowRecord> {
    const now = new Date().toISOString();
    const existing = await this.getWorkflow(workflowId);
    const record: WorkflowRecord = {
      workflow_id: workflowId,
      workflow,
      version: (existing?.version ?? 0) + 1,
      created_at: existing?.created_at ?? now,
      updated_at: now,
    };
    const row = { ...record, workflow: JSON.stringify(workflow) };
    await this.#db
      .insertInto('workflows')
      .values(row)
      .onConflict((oc) =>
        oc.column('workflow_id').doUpdateSet({ workflow: row.workflow, version: row.version, updated_at: row.updated_at }),
      )
      .execute();
    return record;
  }

  async getWorkflow(workflowId: string): Promise<WorkflowRecord | undefined> {
    const row = await this.#db.selectFrom('workflows').selectAll().where('workflow_id', '=', workflowId).executeTakeFirst();
    return row === undefined ? undefined : { ...row, workflow: parseJson<JsonValue>(row.workflow) };
  }

  async listWorkflows(): Promise<WorkflowRecord[]> {
    const rows = await this.#db.selectFrom('workflows').selectAll().orderBy('workflow_id').execute();
    return rows.map((row) => ({ ...row, workflow: parseJson<JsonValue>(row.workflow) }));
  }

  appendInvocations(records: InvocationRecord[]): Promise<void> {
    if (records.length === 0) return Promise.resolve();
    // One prepared statement run per record, all in the next group commit: no query to build per batch.
    return this.#write(() => {
      const st = this.#statement(
        'appendInvocation',
        () => `INSERT INTO invocations (${INVOCATION_COLUMNS.join(', ')}) VALUES (${INVOCATION_COLUMNS.map(() => '?').join(', ')})`,
      );
      // Positional parameters in INVOCATION_COLUMNS' order: no object to build or names to bind per record.
      for (const r of records)
        st.run(r.tool, r.function_id, r.node_id, r.task_id, r.attempt, r.duration_ms, r.success ? 1 : 0, r.timestamp, r.error);
    });
  }

  async summarizeInvocations(filter: { tool?: string; node_id?: string } = {}): Promise<InvocationSummary> {
    let base = this.#db.selectFrom('invocations');
    if (filter.tool !== undefined) base = base.where('tool', '=', filter.tool);
    if (filter.node_id !== undefined) base = base.where('node_id', '=', filter.node_id);
    const agg = await base
      .select((eb) => [
        eb.fn.countAll<number>().as('total'),
        eb.fn.sum<number>('success').as('ok'),
        eb.fn.avg<number>('duration_ms').as('avg'),
      ])
      .executeTakeFirstOrThrow();
    const total = Number(agg.total);
    const at = async (q: number) => {
      if (total === 0) return 0;
      const row = await base
        .select('duration_ms')
        .orderBy('duration_ms')
        .limit(1)
        .offset(Math.min(total - 1, Math.max(0, Math.ceil(q * total) - 1)))
        .executeTakeFirst();
      return row?.duration_ms ?? 0;
    };
    const ok = Number(agg.ok ?? 0);
    return {
      total_invocations: total,
      success_rate: total === 0 ? 0 : Math.round((ok / total) * 10_000) / 100,
      avg_latency_ms: total === 0 ? 0 : Math.round(Number(agg.avg) * 1000) / 1000,
      p50_ms: await at(0.5),
      p99_ms: await at(0.99),
      error_count: total - ok,
    };
  }

  async getStateDoc(nodeId: string, doc: string): Promise<StateDocRecord | undefined> {
    const row = this.#statement('getStateDoc', () => 'SELECT * FROM state_docs WHERE node_id = ? AND doc = ?').get(nodeId, doc) as
      | Selectable<StateDocsTable>
      | undefined;
    return row === undefined ? undefined : rowToStateDoc(row);
  }

  async listStateDocs(nodeId: string): Promise<StateDocRecord[]> {
    const rows = await this.#db.selectFrom('state_docs').selectAll().where('node_id', '=', nodeId).orderBy('doc').execute();
    return rows.map(rowToStateDoc);
  }

  saveStateDoc(record: StateDocRecord, expected: StateDocVersions | null): Promise<boolean> {
    const row = stateDocToRow(record);
    return this.#write(() => {
      if (expected === null) {
        const insert = this.#statement(
          'insertStateDoc',
          () =>
            `INSERT INTO state_docs (${STATE_COLUMNS.join(', ')}) VALUES (${STATE_COLUMNS.map((c) => `@${c}`).join(', ')}) ` +
            'ON CONFLICT (node_id, doc) DO NOTHING',
        );
        return insert.run(row).changes === 1;
      }
      const update = this.#statement(
        'updateStateDoc',
        () =>
          `UPDATE state_docs SET ${STATE_COLUMNS.filter((c) => c !== 'node_id' && c !== 'doc' && c !== 'created_at')
            .map((c) => `${c} = @${c}`)
            .join(', ')} ` +
          'WHERE node_id = @node_id AND doc = @doc AND desired_version = @expected_desired AND reported_version = @expected_reported',
      );
      return update.run({ ...row, expected_desired: expected.desired_version, expected_reported: expected.reported_version }).changes === 1;
    });
  }

  async putFunction(fn: FunctionRecord): Promise<void> {
    const row = { ...fn, env: JSON.stringify(fn.env), target: JSON.stringify(fn.target) };
    const { name: _name, created_at: _created, ...update } = row;
    await this.#db
      .insertInto('functions')
      .values(row)
      .onConflict((oc) => oc.column('name').doUpdateSet(update))
      .execute();
  }

  async getFunction(name: string): Promise<FunctionRecord | undefined> {
    const row = await this.#db.selectFrom('functions').selectAll().where('name', '=', name).executeTakeFirst();
    return row === undefined ? undefined : rowToFunction(row);
  }

  async listFunctions(): Promise<FunctionRecord[]> {
    const rows = await this.#db.selectFrom('functions').selectAll().orderBy('name').execute();
    return rows.map(rowToFunction);
  }

  async deleteFunction(name: string): Promise<boolean> {
    return this.#db.transaction().execute(async (trx) => {
      await trx.deleteFrom('function_nodes').where('name', '=', name).execute();
      const res = await trx.deleteFrom('functions').where('name', '=', name).executeTakeFirst();
      return res.numDeletedRows > 0n;
    });
  }

  async putFunctionNode(record: FunctionNodeRecord): Promise<void> {
    const row = { ...record, error: record.error === null ? null : JSON.stringify(record.error) };
    const { name: _name, node_id: _node, ...update } = row;
    await this.#db
      .insertInto('function_nodes')
      .values(row)
      .onConflict((oc) => oc.columns(['name', 'node_id']).doUpdateSet(update))
      .execute();
  }

  async listFunctionNodes(filter: { name?: string; node_id?: string } = {}): Promise<FunctionNodeRecord[]> {
    let query = this.#db.selectFrom('function_nodes').selectAll();
    if (filter.name !== undefined) query = query.where('name', '=', filter.name);
    if (filter.node_id !== undefined) query = query.where('node_id', '=', filter.node_id);
    const rows = await query.orderBy('name').orderBy('node_id').execute();
    return rows.map((row) => ({
      ...row,
      status: row.status as FunctionNodeStatus,
      error: row.error === null ? null : parseJson<ErrorBody>(row.error),
    }));
  }

  async deleteFunctionNode(name: string, nodeId: string): Promise<void> {
    await this.#db.deleteFrom('function_nodes').where('name', '=', name).where('node_id', '=', nodeId).execute();
  }

  async appendAudit(runId: string, entry: JsonValue): Promise<void> {
    await this.#db
      .insertInto('audit_log')
      .values({ run_id: runId, entry: JSON.stringify(entry) })
      .execute();
  }

  async listAudit(runId: string): Promise<JsonValue[]> {
    const rows = await this.#db.selectFrom('audit_log').select('entry').where('run_id', '=', runId).orderBy('id').execute();
    return rows.map((r) => parseJson<JsonValue>(r.entry));
  }

  async insertPairingCode(code: PairingCodeRecord): Promise<void> {
    await this.#db.insertInto('pairing_codes').values(code).execute();
  }

  async getPairingCode(codeId: string): Promise<PairingCodeRecord | undefined> {
    return this.#db.selectFrom('pairing_codes').selectAll().where('code_id', '=', codeId).executeTakeFirst();
  }

  async consumePairingCode(codeId: string, nodeId: string, usedAt: string): Promise<boolean> {
    const res = await this.#db
      .updateTable('pairing_codes')
      .set({ used_at: usedAt, used_by: nodeId })
      .where('code_id', '=', codeId)
      .where('used_at', 'is', null)
      .executeTakeFirst();
    return res.numUpdatedRows === 1n;
  }

  async pruneExpiredPairingCodes(expiredBefore: string): Promise<number> {
    const res = await this.#db.deleteFrom('pairing_codes').where('expires_at', '<', expiredBefore).executeTakeFirst();
    return Number(res.numDeletedRows);
  }

  async putPairingRequest(request: PairingRequestRecord): Promise<void> {
    const { node_id: _id, ...rest } = request;
    await this.#db
      .insertInto('pairing_requests')
      .values(request)
      .onConflict((oc) => oc.column('node_id').doUpdateSet(rest))
      .execute();
  }

  async getPairingRequest(nodeId: string): Promise<PairingRequestRecord | undefined> {
    const row = await this.#db.selectFrom('pairing_requests').selectAll().where('node_id', '=', nodeId).executeTakeFirst();
    return row === undefined ? undefined : { ...row, status: row.status as PairingRequestStatus };
  }

  async listPairingRequests(status?: PairingRequestStatus): Promise<PairingRequestRecord[]> {
    let query = this.#db.selectFrom('pairing_requests').selectAll();
    if (status !== undefined) query = query.where('status', '=', status);
    const rows = await query.orderBy('requested_at').orderBy('node_id').execute();
    return rows.map((row) => ({ ...row, status: row.status as PairingRequestStatus }));
  }

  async deletePairingRequest(nodeId: string): Promise<void> {
    await this.#db.deleteFrom('pairing_requests').where('node_id', '=', nodeId).execute();
  }

  async insertCertificate(cert: CertificateRecord): Promise<void> {
    const { revoked_at: _r, ...row } = cert;
    await this.#db.insertInto('node_certificates').values(row).execute();
  }

  #certificates() {
    return this.#db
      .selectFrom('node_certificates as c')
      .leftJoin('revocations as r', 'r.serial', 'c.serial')
      .selectAll('c')
      .select('r.revoked_at');
  }

  async getCertificate(serial: string): Promise<CertificateRecord | undefined> {
    return this.#certificates().where('c.serial', '=', serial).executeTakeFirst();
  }

  async listCertificates(nodeId?: string): Promise<CertificateRecord[]> {
    let q = this.#certificates();
    if (nodeId !== undefined) q = q.where('c.node_id', '=', nodeId);
    return q.orderBy('c.issued_at').orderBy('c.serial').execute();
  }

  async revokeCertificates(nodeId: string, reason: string, revokedAt: string): Promise<string[]> {
    return this.#db.transaction().execute(async (trx) => {
      const live = await trx
        .selectFrom('node_certificates as c')
        .leftJoin('revocations as r', 'r.serial', 'c.serial')
        .select('c.serial')
        .where('c.node_id', '=', nodeId)
        .where('r.serial', 'is', null)
        .execute();
      if (live.length === 0) return [];
      await trx
        .insertInto('revocations')
        .values(live.map((c) => ({ serial: c.serial, node_id: nodeId, revoked_at: revokedAt, reason })))
        .execute();
      return live.map((c) => c.serial);
    });
  }

  async listRevokedSerials(): Promise<string[]> {
    return (await this.#db.selectFrom('revocations').select('serial').execute()).map((r) => r.serial);
  }

  async insertApiToken(token: ApiTokenRecord): Promise<void> {
    await this.#db.insertInto('api_tokens').values(token).execute();
  }

  async getApiToken(tokenId: string): Promise<ApiTokenRecord | undefined> {
    const row = await this.#db.selectFrom('api_tokens').selectAll().where('token_id', '=', tokenId).executeTakeFirst();
    return row === undefined ? undefined : rowToApiToken(row);
  }

  async listApiTokens(): Promise<ApiTokenRecord[]> {
    const rows = await this.#db.selectFrom('api_tokens').selectAll().orderBy('created_at').orderBy('token_id').execute();
    return rows.map(rowToApiToken);
  }

  async revokeApiToken(tokenId: string, revokedAt: string): Promise<ApiTokenRecord> {
    await this.#db
      .updateTable('api_tokens')
      .set({ revoked_at: revokedAt })
      .where('token_id', '=', tokenId)
      .where('revoked_at', 'is', null)
      .execute();
    const token = await this.getApiToken(tokenId);
    if (!token) throw new FieldmeshError('FM_ERR_TOKEN_NOT_FOUND', `API token ${tokenId} not found`, { details: { token_id: tokenId } });
    return token;
  }

  async touchApiToken(tokenId: string, usedAt: string): Promise<void> {
    await this.#db.updateTable('api_tokens').set({ last_used_at: usedAt }).where('token_id', '=', tokenId).execute();
  }

  async insertPeer(peer: PeerRecord): Promise<boolean> {
    const result = await this.#db
      .insertInto('peers')
      .values({ ...peer, capabilities: JSON.stringify(peer.capabilities) })
      .onConflict((oc) => oc.doNothing())
      .executeTakeFirst();
    return Number(result.numInsertedOrUpdatedRows ?? 0n) > 0;
  }

  async listPeers(): Promise<PeerRecord[]> {
    const rows = await this.#db.selectFrom('peers').selectAll().orderBy('created_at').orderBy('node_id').execute();
    return rows.map((r) => ({ ...r, capabilities: JSON.parse(r.capabilities) as string[] }));
  }

  async deletePeer(nodeId: string): Promise<boolean> {
    const result = await this.#db.deleteFrom('peers').where('node_id', '=', nodeId).executeTakeFirst();
    return Number(result.numDeletedRows) > 0;
  }

  async pruneRuns(finishedBefore: string): Promise<number> {
    return this.#db.transaction().execute(async (trx) => {
      const old = trx.selectFrom('runs').select('run_id').where('status', '!=', 'running').where('updated_at', '<', finishedBefore);
      await trx.deleteFrom('audit_log').where('run_id', 'in', old).execute();
      await trx.deleteFrom('tasks').where('run_id', 'in', old).execute();
      const res = await trx.deleteFrom('runs').where('status', '!=', 'running').where('updated_at', '<', finishedBefore).executeTakeFirst();
      return Number(res.numDeletedRows);
    });
  }
}

/** Opens (creating if needed) the database file and brings its schema up to date. */
export async function openSqliteStore(file: string): Promise<SqliteStore> {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  const database = new BetterSqlite3(file);
  try {
    // WAL lets reads run during a write. Under WAL, NORMAL survives a process crash and risks only the
    // latest commits on power loss, in exchange for far fewer fsyncs than FULL.
    database.pragma('journal_mode = WAL');
    database.pragma('synchronous = NORMAL');
    database.pragma('foreign_keys = ON');
    database.pragma('busy_timeout = 5000');
  } catch (err) {
    database.close();
    throw err;
  }
  const store = new SqliteStore(database);
  try {
    await store.migrate();
  } catch (err) {
    await store.close();
    throw err;
  }
  return store;
}
