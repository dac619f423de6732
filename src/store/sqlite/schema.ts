import type { Generated } from 'kysely';
// Kysely table types for the SQLite store: rows as stored, JSON fields still as TEXT.

export interface NodesTable {
  node_id: string;
  name: string;
  platform: string;
  status: string;
  /** JSON array of strings. */
  capabilities: string;
  /** JSON array of tool descriptors. */
  tools: string;
  location_lat: number | null;
  location_lon: number | null;
  /** JSON NodeLoad. */
  load: string;
  public_key: string | null;
  /** 0 or 1: SQLite has no boolean type. */
  trusted: number;
  protocol_version: number;
  agent_version: string;
  max_concurrency: number;
  registered_at: string;
  last_seen: string;
}

export interface TasksTable {
  task_id: string;
  run_id: string | null;
  step_id: string | null;
  tool_name: string;
  tool_args: string;
  target: string;
  timeout_ms: number;
  status: string;
  /** JSON array of AttemptRecord. */
  attempts: string;
  /** JSON TaskResult, or NULL until the task finishes. */
  result: string | null;
  created_at: string;
  updated_at: string;
  idempotency_key: string | null;
  /** JSON TaskOptions (retry, offline_behavior). */
  options: string;
  /** When a queued task expires, ISO 8601. */
  expires_at: string | null;
  /** JSON ApprovalRecord of a supervised task, or NULL. */
  approval: string | null;
}

export interface RunsTable {
  run_id: string;
  workflow_id: string;
  workflow: string;
  input: string;
  status: string;
  /** JSON object keyed by step_id. */
  steps: string;
  timeline: string;
  result: string | null;
  created_at: string;
  updated_at: string;
  trace_id: string;
}

export interface WorkflowsTable {
  workflow_id: string;
  workflow: string;
  version: number;
  created_at: string;
  updated_at: string;
}

export interface AuditLogTable {
  id: Generated<number>;
  run_id: string;
  /** JSON AuditEntry. */
  entry: string;
}

export interface InvocationsTable {
  id: Generated<number>;
  tool: string;
  function_id: string | null;
  node_id: string;
  task_id: string;
  attempt: number;
  duration_ms: number;
  success: number;
  timestamp: string;
  error: string;
}

export interface PairingCodesTable {
  code_id: string;
  key: string;
  node_id: string | null;
  created_at: string;
  expires_at: string;
  used_at: string | null;
  used_by: string | null;
}

export interface PairingRequestsTable {
  node_id: string;
  status: string;
  name: string | null;
  platform: string | null;
  csr: string;
  signing_public_key: string;
  fingerprint: string;
  remote_address: string;
  requested_at: string;
  decided_at: string | null;
}

export interface NodeCertificatesTable {
  serial: string;
  node_id: string;
  fingerprint256: string;
  signing_public_key: string;
  not_before: string;
  not_after: string;
  issued_at: string;
}

export interface RevocationsTable {
  serial: string;
  node_id: string;
  revoked_at: string;
  reason: string;
}

export interface ApiTokensTable {
  token_id: string;
  name: string | null;
  scope: string;
  /** Hex SHA-256 of the bearer token. */
  hash: string;
  created_at: string;
  last_used_at: string | null;
  revoked_at: string | null;
}

/** One state document; a side never written has version 0 and NULL data. */
export interface StateDocsTable {
  node_id: string;
  doc: string;
  strategy: string;
  desired_version: number;
  /** JSON object. */
  desired_data: string | null;
  desired_checksum: string | null;
  desired_updated_at: string | null;
  reported_version: number;
  reported_data: string | null;
  reported_checksum: string | null;
  reported_updated_at: string | null;
  created_at: string;
  updated_at: string;
}

export interface FunctionsTable {
  name: string;
  version: number;
  bundle: string;
  bundle_sha256: string;
  memory_mb: number;
  timeout_seconds: number;
  /** JSON object of strings. */
  env: string;
  /** JSON target. */
  target: string;
  created_at: string;
  updated_at: string;
}

export interface FunctionNodesTable {
  name: string;
  node_id: string;
  status: string;
  bundle_sha256: string | null;
  /** JSON error body. */
  error: string | null;
  updated_at: string;
}

/** A listen-mode node registered through the API, which the gateway dials. */
export interface PeersTable {
  node_id: string;
  endpoint: string;
  /** JSON array of strings. */
  capabilities: string;
  created_at: string;
}

export interface Database {
  nodes: NodesTable;
  tasks: TasksTable;
  runs: RunsTable;
  workflows: WorkflowsTable;
  audit_log: AuditLogTable;
  invocations: InvocationsTable;
  pairing_codes: PairingCodesTable;
  pairing_requests: PairingRequestsTable;
  node_certificates: NodeCertificatesTable;
  revocations: RevocationsTable;
  api_tokens: ApiTokensTable;
  state_docs: StateDocsTable;
  functions: FunctionsTable;
  function_nodes: FunctionNodesTable;
  peers: PeersTable;
}
