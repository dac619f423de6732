// Versioned schema migrations, provided in code so the compiled package needs no migration files on disk.
import { type Kysely, type Migration, sql } from 'kysely';

// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on today's table types
type AnyDb = Kysely<any>;

/**
 * Kysely's Migrator does not wrap SQLite migrations in a transaction, so each
 * one opens its own, and uses IF NOT EXISTS so that a crash between the schema
 * change and the migrator's bookkeeping row cannot wedge the next start.
 */
const initial: Migration = {
  async up(db: AnyDb): Promise<void> {
    await db.transaction().execute(async (trx) => {
      await trx.schema
        .createTable('nodes')
        .ifNotExists()
        .addColumn('node_id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('platform', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('capabilities', 'text', (c) => c.notNull())
        .addColumn('tools', 'text', (c) => c.notNull())
        .addColumn('location_lat', 'real')
        .addColumn('location_lon', 'real')
        .addColumn('load', 'text', (c) => c.notNull())
        .addColumn('public_key', 'text')
        .addColumn('trusted', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('protocol_version', 'integer', (c) => c.notNull())
        .addColumn('agent_version', 'text', (c) => c.notNull())
        .addColumn('max_concurrency', 'integer', (c) => c.notNull())
        .addColumn('registered_at', 'text', (c) => c.notNull())
        .addColumn('last_seen', 'text', (c) => c.notNull())
        .execute();

      await trx.schema
        .createTable('tasks')
        .ifNotExists()
        .addColumn('task_id', 'text', (c) => c.primaryKey())
        .addColumn('run_id', 'text')
        .addColumn('step_id', 'text')
        .addColumn('tool_name', 'text', (c) => c.notNull())
        .addColumn('tool_args', 'text', (c) => c.notNull())
        .addColumn('target', 'text', (c) => c.notNull())
        .addColumn('timeout_ms', 'integer', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('attempts', 'text', (c) => c.notNull())
        .addColumn('result', 'text')
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .execute();
      await trx.schema.createIndex('tasks_status_idx').ifNotExists().on('tasks').column('status').execute();
      await trx.schema.createIndex('tasks_run_id_idx').ifNotExists().on('tasks').column('run_id').execute();

      await trx.schema
        .createTable('runs')
        .ifNotExists()
        .addColumn('run_id', 'text', (c) => c.primaryKey())
        .addColumn('workflow_id', 'text', (c) => c.notNull())
        .addColumn('workflow', 'text', (c) => c.notNull())
        .addColumn('input', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('steps', 'text', (c) => c.notNull())
        .addColumn('timeline', 'text', (c) => c.notNull())
        .addColumn('result', 'text')
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .execute();
      await trx.schema.createIndex('runs_workflow_id_idx').ifNotExists().on('runs').column('workflow_id').execute();
      await trx.schema.createIndex('runs_status_idx').ifNotExists().on('runs').column('status').execute();
    });
  },

  async down(db: AnyDb): Promise<void> {
    await db.transaction().execute(async (trx) => {
      await trx.schema.dropTable('runs').ifExists().execute();
      await trx.schema.dropTable('tasks').ifExists().execute();
      await trx.schema.dropTable('nodes').ifExists().execute();
    });
  },
};

/** Applied in key order, so names sort by their numeric prefix. */
/** Resilience: idempotency keys, per-task options (retry, offline behaviour) and the offline queue's expiry. */
const taskOptions: Migration = {
  async up(db: AnyDb): Promise<void> {
    await db.transaction().execute(async (trx) => {
      const cols = await sql<{ name: string }>`SELECT name FROM pragma_table_info('tasks')`.execute(trx);
      const have = new Set(cols.rows.map((r) => r.name));
      if (!have.has('idempotency_key')) await trx.schema.alterTable('tasks').addColumn('idempotency_key', 'text').execute();
      if (!have.has('options'))
        await trx.schema
          .alterTable('tasks')
          .addColumn('options', 'text', (c) => c.notNull().defaultTo('{}'))
          .execute();
      if (!have.has('expires_at')) await trx.schema.alterTable('tasks').addColumn('expires_at', 'text').execute();
      await sql`CREATE UNIQUE INDEX IF NOT EXISTS tasks_idempotency_key_idx ON tasks (idempotency_key) WHERE idempotency_key IS NOT NULL`.execute(
        trx,
      );
    });
  },
  async down(db: AnyDb): Promise<void> {
    await sql`DROP INDEX IF EXISTS tasks_idempotency_key_idx`.execute(db);
    await db.schema.alterTable('tasks').dropColumn('expires_at').execute();
    await db.schema.alterTable('tasks').dropColumn('options').execute();
    await db.schema.alterTable('tasks').dropColumn('idempotency_key').execute();
  },
};

/** Workflows: trace ids on runs, saved workflows, and the audit log of audit_full runs. */
const workflows: Migration = {
  async up(db: AnyDb): Promise<void> {
    await db.transaction().execute(async (trx) => {
      const cols = await sql<{ name: string }>`SELECT name FROM pragma_table_info('runs')`.execute(trx);
      if (!cols.rows.some((r) => r.name === 'trace_id')) {
        await trx.schema
          .alterTable('runs')
          .addColumn('trace_id', 'text', (c) => c.notNull().defaultTo(''))
          .execute();
      }
      await trx.schema
        .createTable('workflows')
        .ifNotExists()
        .addColumn('workflow_id', 'text', (c) => c.primaryKey())
        .addColumn('workflow', 'text', (c) => c.notNull())
        .addColumn('version', 'integer', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .execute();
      await trx.schema
        .createTable('audit_log')
        .ifNotExists()
        .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
        .addColumn('run_id', 'text', (c) => c.notNull())
        .addColumn('entry', 'text', (c) => c.notNull())
        .execute();
      await trx.schema.createIndex('audit_log_run_id_idx').ifNotExists().on('audit_log').column('run_id').execute();
      await trx.schema.createIndex('runs_updated_at_idx').ifNotExists().on('runs').column('updated_at').execute();
    });
  },
  async down(db: AnyDb): Promise<void> {
    await db.schema.dropTable('audit_log').ifExists().execute();
    await db.schema.dropTable('workflows').ifExists().execute();
    await sql`DROP INDEX IF EXISTS runs_updated_at_idx`.execute(db);
    await db.schema.alterTable('runs').dropColumn('trace_id').execute();
  },
};

/** Invocation records behind /v1/metrics/summary. */
const invocations: Migration = {
  async up(db: AnyDb): Promise<void> {
    await db.transaction().execute(async (trx) => {
      await trx.schema
        .createTable('invocations')
        .ifNotExists()
        .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
        .addColumn('tool', 'text', (c) => c.notNull())
        .addColumn('function_id', 'text')
        .addColumn('node_id', 'text', (c) => c.notNull())
        .addColumn('task_id', 'text', (c) => c.notNull())
        .addColumn('attempt', 'integer', (c) => c.notNull())
        .addColumn('duration_ms', 'real', (c) => c.notNull())
        .addColumn('success', 'integer', (c) => c.notNull())
        .addColumn('timestamp', 'text', (c) => c.notNull())
        .addColumn('error', 'text', (c) => c.notNull().defaultTo(''))
        .execute();
      await trx.schema.createIndex('invocations_tool_idx').ifNotExists().on('invocations').columns(['tool', 'duration_ms']).execute();
      await trx.schema.createIndex('invocations_node_idx').ifNotExists().on('invocations').columns(['node_id', 'duration_ms']).execute();
      await trx.schema.createIndex('invocations_timestamp_idx').ifNotExists().on('invocations').column('timestamp').execute();
    });
  },
  async down(db: AnyDb): Promise<void> {
    await db.schema.dropTable('invocations').ifExists().execute();
  },
};

/** Security: pairing codes (stored as derived values only), pending pairing requests, issued node certificates, revocations. */
const security: Migration = {
  async up(db: AnyDb): Promise<void> {
    await db.transaction().execute(async (trx) => {
      await trx.schema
        .createTable('pairing_codes')
        .ifNotExists()
        .addColumn('code_id', 'text', (c) => c.primaryKey())
        .addColumn('key', 'text', (c) => c.notNull())
        .addColumn('node_id', 'text')
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('expires_at', 'text', (c) => c.notNull())
        .addColumn('used_at', 'text')
        .addColumn('used_by', 'text')
        .execute();
      await trx.schema
        .createTable('pairing_requests')
        .ifNotExists()
        .addColumn('node_id', 'text', (c) => c.primaryKey())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('name', 'text')
        .addColumn('platform', 'text')
        .addColumn('csr', 'text', (c) => c.notNull())
        .addColumn('signing_public_key', 'text', (c) => c.notNull())
        .addColumn('fingerprint', 'text', (c) => c.notNull())
        .addColumn('remote_address', 'text', (c) => c.notNull())
        .addColumn('requested_at', 'text', (c) => c.notNull())
        .addColumn('decided_at', 'text')
        .execute();
      await trx.schema
        .createTable('node_certificates')
        .ifNotExists()
        .addColumn('serial', 'text', (c) => c.primaryKey())
        .addColumn('node_id', 'text', (c) => c.notNull())
        .addColumn('fingerprint256', 'text', (c) => c.notNull())
        .addColumn('signing_public_key', 'text', (c) => c.notNull())
        .addColumn('not_before', 'text', (c) => c.notNull())
        .addColumn('not_after', 'text', (c) => c.notNull())
        .addColumn('issued_at', 'text', (c) => c.notNull())
        .execute();
      await trx.schema.createIndex('node_certificates_node_id_idx').ifNotExists().on('node_certificates').column('node_id').execute();
      await trx.schema
        .createTable('revocations')
        .ifNotExists()
        .addColumn('serial', 'text', (c) => c.primaryKey())
        .addColumn('node_id', 'text', (c) => c.notNull())
        .addColumn('revoked_at', 'text', (c) => c.notNull())
        .addColumn('reason', 'text', (c) => c.notNull())
        .execute();
    });
  },
  async down(db: AnyDb): Promise<void> {
    await db.schema.dropTable('revocations').ifExists().execute();
    await db.schema.dropTable('node_certificates').ifExists().execute();
    await db.schema.dropTable('pairing_requests').ifExists().execute();
    await db.schema.dropTable('pairing_codes').ifExists().execute();
  },
};

/** API tokens: only a SHA-256 of each secret is kept. */
const apiTokens: Migration = {
  async up(db: AnyDb): Promise<void> {
    await db.transaction().execute(async (trx) => {
      await trx.schema
        .createTable('api_tokens')
        .ifNotExists()
        .addColumn('token_id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text')
        .addColumn('scope', 'text', (c) => c.notNull())
        .addColumn('hash', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('last_used_at', 'text')
        .addColumn('revoked_at', 'text')
        .execute();
    });
  },
  async down(db: AnyDb): Promise<void> {
    await db.schema.dropTable('api_tokens').ifExists().execute();
  },
};

/** Tool policy: the approval a supervised task waits for (the status `awaiting_approval` needs no schema change). */
const approvals: Migration = {
  async up(db: AnyDb): Promise<void> {
    await db.transaction().execute(async (trx) => {
      const cols = await sql<{ name: string }>`SELECT name FROM pragma_table_info('tasks')`.execute(trx);
      if (!cols.rows.some((r) => r.name === 'approval')) await trx.schema.alterTable('tasks').addColumn('approval', 'text').execute();
    });
  },
  async down(db: AnyDb): Promise<void> {
    await db.schema.alterTable('tasks').dropColumn('approval').execute();
  },
};

/** Named state documents per node: the desired and reported sides, each with its version, data and checksum. */
const state: Migration = {
  async up(db: AnyDb): Promise<void> {
    await db.transaction().execute(async (trx) => {
      await trx.schema
        .createTable('state_docs')
        .ifNotExists()
        .addColumn('node_id', 'text', (c) => c.notNull())
        .addColumn('doc', 'text', (c) => c.notNull())
        .addColumn('strategy', 'text', (c) => c.notNull())
        .addColumn('desired_version', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('desired_data', 'text')
        .addColumn('desired_checksum', 'text')
        .addColumn('desired_updated_at', 'text')
        .addColumn('reported_version', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('reported_data', 'text')
        .addColumn('reported_checksum', 'text')
        .addColumn('reported_updated_at', 'text')
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('state_docs_pk', ['node_id', 'doc'])
        .execute();
    });
  },
  async down(db: AnyDb): Promise<void> {
    await db.schema.dropTable('state_docs').ifExists().execute();
  },
};

/** Deployed functions: what the gateway wants deployed (with its target), and each node's outcome. */
const functions: Migration = {
  async up(db: AnyDb): Promise<void> {
    await db.transaction().execute(async (trx) => {
      await trx.schema
        .createTable('functions')
        .ifNotExists()
        .addColumn('name', 'text', (c) => c.primaryKey())
        .addColumn('version', 'integer', (c) => c.notNull())
        .addColumn('bundle', 'text', (c) => c.notNull())
        .addColumn('bundle_sha256', 'text', (c) => c.notNull())
        .addColumn('memory_mb', 'integer', (c) => c.notNull())
        .addColumn('timeout_seconds', 'real', (c) => c.notNull())
        .addColumn('env', 'text', (c) => c.notNull())
        .addColumn('target', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .execute();
      await trx.schema
        .createTable('function_nodes')
        .ifNotExists()
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('node_id', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('bundle_sha256', 'text')
        .addColumn('error', 'text')
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('function_nodes_pk', ['name', 'node_id'])
        .execute();
      await trx.schema.createIndex('function_nodes_node_idx').ifNotExists().on('function_nodes').column('node_id').execute();
    });
  },
  async down(db: AnyDb): Promise<void> {
    await db.schema.dropTable('function_nodes').ifExists().execute();
    await db.schema.dropTable('functions').ifExists().execute();
  },
};

/** Listen-mode nodes registered through the API, which the gateway dials; one row per node id and per endpoint. */
const peers: Migration = {
  async up(db: AnyDb): Promise<void> {
    await db.transaction().execute(async (trx) => {
      await trx.schema
        .createTable('peers')
        .ifNotExists()
        .addColumn('node_id', 'text', (c) => c.primaryKey())
        .addColumn('endpoint', 'text', (c) => c.notNull().unique())
        .addColumn('capabilities', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .execute();
    });
  },
  async down(db: AnyDb): Promise<void> {
    await db.schema.dropTable('peers').ifExists().execute();
  },
};

/**
 * Tool calls outside a workflow, most tasks, have no run_id: the run_id index
 * leaves them out, so storing a task updates one B-tree fewer. Lookups by
 * run_id (`run_id = ?`, `run_id IN (...)`) imply `run_id IS NOT NULL` and use it.
 */
const taskRunIdPartialIndex: Migration = {
  async up(db: AnyDb): Promise<void> {
    await db.transaction().execute(async (trx) => {
      await sql`DROP INDEX IF EXISTS tasks_run_id_idx`.execute(trx);
      await sql`CREATE INDEX tasks_run_id_idx ON tasks (run_id) WHERE run_id IS NOT NULL`.execute(trx);
    });
  },
  async down(db: AnyDb): Promise<void> {
    await db.transaction().execute(async (trx) => {
      await sql`DROP INDEX IF EXISTS tasks_run_id_idx`.execute(trx);
      await sql`CREATE INDEX tasks_run_id_idx ON tasks (run_id)`.execute(trx);
    });
  },
};

export const sqliteMigrations: Record<string, Migration> = {
  '0001_initial': initial,
  '0002_task_options': taskOptions,
  '0003_workflows': workflows,
  '0004_security': security,
  '0005_invocations': invocations,
  '0006_api_tokens': apiTokens,
  '0007_approvals': approvals,
  '0008_state': state,
  '0009_functions': functions,
  '0010_peers': peers,
  '0011_task_run_id_partial_index': taskRunIdPartialIndex,
};
