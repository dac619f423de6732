/**
 * The gateway's durable state behind one interface. SQLite is the embedded
 * implementation; PostgreSQL implements the same interface for clusters. No
 * module above this one writes SQL.
 */
import type { ErrorBody } from '../core/errors.js';
import type { JsonValue } from '../protocol/json.js';
import type { ResultBatchProof } from '../protocol/signing.js';
import type { ConflictStrategy, StateDocument } from '../protocol/state.js';
import type { OfflineBehavior, RetryPolicy } from '../protocol/target.js';

export const NodeStatus = {
  Online: 'ONLINE',
  Degraded: 'DEGRADED',
  Offline: 'OFFLINE',
  Syncing: 'SYNCING',
} as const;
export type NodeStatus = (typeof NodeStatus)[keyof typeof NodeStatus];

export interface Location {
  lat: number;
  lon: number;
}

export interface NodeLoad {
  /** 0..1, one-minute load average divided by CPU count. */
  cpu: number;
  /** 0..1, share of memory in use. */
  memory: number;
  in_flight: number;
}

export interface NodeRecord {
  node_id: string;
  name: string;
  platform: string;
  status: NodeStatus;
  capabilities: string[];
  /** Tool descriptors as the node advertised them in REGISTER. */
  tools: JsonValue[];
  location: Location | null;
  load: NodeLoad;
  /** Ed25519 public key (SPKI PEM) the node signs results with. */
  public_key: string | null;
  trusted: boolean;
  protocol_version: number;
  agent_version: string;
  max_concurrency: number;
  registered_at: string;
  last_seen: string;
}

export const TaskStatus = {
  Pending: 'pending',
  Running: 'running',
  Succeeded: 'succeeded',
  Failed: 'failed',
  Cancelled: 'cancelled',
  /** Waiting in the offline queue for its explicit node to come back. */
  Queued: 'queued',
  /** A supervised tool's task waiting for a person to approve or reject it; it holds no node. */
  AwaitingApproval: 'awaiting_approval',
} as const;
export type TaskStatus = (typeof TaskStatus)[keyof typeof TaskStatus];

export interface AttemptRecord {
  attempt: number;
  node_id: string;
  started_at: string;
  finished_at: string | null;
  outcome: 'running' | 'success' | 'failed';
  error: ErrorBody | null;
  duration_ms: number | null;
  verified: boolean | null;
  result_hash: string | null;
  /**
   * The node's Ed25519 signature over the result, and the timestamp it signed. For a result that came in a
   * RESULT_BATCH, the batch's signature and timestamp, and `result_batch` holds this result's inclusion proof;
   * `verifyResultEvidence` (src/protocol/signing.ts) re-checks either kind with the node's public key.
   */
  node_signature?: string | null;
  signed_at?: string | null;
  result_batch?: ResultBatchProof | null;
}

/** What a finished task produced, as the API returns it. */
export interface TaskResult {
  ok: boolean;
  task_id: string;
  node_id: string | null;
  output: JsonValue | null;
  execution_path: string[];
  verified: boolean;
  degraded: boolean;
  duration_ms: number;
  result_hash: string | null;
  /** Why `verified` is false when a result arrived but did not check. */
  verification_error?: string;
  error?: ErrorBody;
}

/** The approval a supervised task waits for, and how it was decided. */
export interface ApprovalRecord {
  requested_at: string;
  /** When the task fails with FM_ERR_APPROVAL_TIMEOUT unless decided before. */
  expires_at: string;
  decision: 'approved' | 'rejected' | 'timed_out' | null;
  decided_at: string | null;
  reason: string | null;
}

/** How a task is run, beyond where: retry policy, offline behaviour. */
export interface TaskOptions {
  retry?: RetryPolicy;
  offline_behavior?: OfflineBehavior;
}

export interface TaskRecord {
  task_id: string;
  /** The run this task belongs to, when it is a workflow step. */
  run_id: string | null;
  step_id: string | null;
  tool_name: string;
  tool_args: JsonValue;
  target: JsonValue;
  timeout_ms: number;
  status: TaskStatus;
  attempts: AttemptRecord[];
  result: TaskResult | null;
  created_at: string;
  updated_at: string;
  /** A repeated submission with this key returns this task. */
  idempotency_key: string | null;
  options: TaskOptions;
  /** When a queued task gives up waiting for its node. */
  expires_at: string | null;
  /** Set for a task of a supervised tool. */
  approval?: ApprovalRecord | null;
}

export const RunStatus = {
  Running: 'running',
  Succeeded: 'succeeded',
  Failed: 'failed',
  Cancelled: 'cancelled',
} as const;
export type RunStatus = (typeof RunStatus)[keyof typeof RunStatus];

export interface RunRecord {
  run_id: string;
  /** One id for everything the run caused, for tracing across the gateway and nodes. */
  trace_id: string;
  workflow_id: string;
  workflow: JsonValue;
  input: JsonValue;
  status: RunStatus;
  /** Per-step state, keyed by step_id. */
  steps: Record<string, JsonValue>;
  timeline: JsonValue[];
  result: JsonValue | null;
  created_at: string;
  updated_at: string;
}

/** A saved workflow; every PUT makes a new version. */
export interface WorkflowRecord {
  workflow_id: string;
  workflow: JsonValue;
  version: number;
  created_at: string;
  updated_at: string;
}

/** One tool or function invocation on a node (the original InvocationRecord). */
export interface InvocationRecord {
  tool: string;
  function_id: string | null;
  node_id: string;
  task_id: string;
  attempt: number;
  duration_ms: number;
  success: boolean;
  timestamp: string;
  /** Error code, or "" on success. */
  error: string;
}

export interface InvocationSummary {
  total_invocations: number;
  /** 0..100 */
  success_rate: number;
  avg_latency_ms: number;
  p50_ms: number;
  p99_ms: number;
  error_count: number;
}

/** A one-time pairing code; only values derived from it are stored. */
export interface PairingCodeRecord {
  /** Public id derived from the code's secret. */
  code_id: string;
  /** HMAC key derived from the code's secret (hex), to check the node's proof. */
  key: string;
  /** The only node id the code may pair, if the operator named one. */
  node_id: string | null;
  created_at: string;
  expires_at: string;
  used_at: string | null;
  used_by: string | null;
}

export const PairingRequestStatus = { Pending: 'pending', Approved: 'approved', Denied: 'denied' } as const;
export type PairingRequestStatus = (typeof PairingRequestStatus)[keyof typeof PairingRequestStatus];

/** A node that asked to pair without a code and waits for an operator. */
export interface PairingRequestRecord {
  node_id: string;
  status: PairingRequestStatus;
  name: string | null;
  platform: string | null;
  /** PKCS#10 request (PEM) for the node's TLS key. */
  csr: string;
  /** Ed25519 key (SPKI PEM) the node will sign results with. */
  signing_public_key: string;
  /** SHA-256 over the CSR's public key and the signing key, for an operator to compare with the node's log. */
  fingerprint: string;
  remote_address: string;
  requested_at: string;
  decided_at: string | null;
}

/** A node certificate the gateway CA issued. */
export interface CertificateRecord {
  /** Upper-case hex, as Node prints serials. */
  serial: string;
  node_id: string;
  fingerprint256: string;
  /** The Ed25519 key bound to the node at pairing; results must verify with it. */
  signing_public_key: string;
  not_before: string;
  not_after: string;
  issued_at: string;
  /** Set once the certificate is revoked. */
  revoked_at: string | null;
}

/** What an API token may do; each scope includes the ones before it (read < submit < admin). */
export const TokenScope = {
  Read: 'read',
  Submit: 'submit',
  Admin: 'admin',
} as const;
export type TokenScope = (typeof TokenScope)[keyof typeof TokenScope];

/** An API token as stored: only the SHA-256 of its secret, never the secret itself. */
export interface ApiTokenRecord {
  token_id: string;
  name: string | null;
  scope: TokenScope;
  /** Hex SHA-256 of the whole bearer token. */
  hash: string;
  created_at: string;
  last_used_at: string | null;
  revoked_at: string | null;
}

/**
 * One named state document of a node, as in a device shadow: `desired` is
 * written at the gateway, `reported` is what the node holds. Each side has its
 * own version line; null until first written.
 */
export interface StateDocRecord {
  node_id: string;
  doc: string;
  strategy: ConflictStrategy;
  desired: StateDocument | null;
  reported: StateDocument | null;
  created_at: string;
  updated_at: string;
}

/** The versions a compare-and-set write expects to find (0 for a side never written). */
export interface StateDocVersions {
  desired_version: number;
  reported_version: number;
}

/** A function the gateway deploys: its bundle, limits, environment and the target that picks its nodes. */
export interface FunctionRecord {
  name: string;
  /** Bumped by every deploy of the name. */
  version: number;
  bundle: string;
  bundle_sha256: string;
  memory_mb: number;
  timeout_seconds: number;
  env: Record<string, string>;
  target: JsonValue;
  created_at: string;
  updated_at: string;
}

export const FunctionNodeStatus = {
  /** The node took this version. */
  Deployed: 'deployed',
  /** The node refused it or did not answer; `error` says why. */
  Failed: 'failed',
  /** Undeployed from this node alone: it is not sent there again. */
  Undeployed: 'undeployed',
} as const;
export type FunctionNodeStatus = (typeof FunctionNodeStatus)[keyof typeof FunctionNodeStatus];

/** One node's outcome for a function. */
export interface FunctionNodeRecord {
  name: string;
  node_id: string;
  status: FunctionNodeStatus;
  /** The bundle the node holds, when deployed. */
  bundle_sha256: string | null;
  error: ErrorBody | null;
  updated_at: string;
}

export interface TaskPatch {
  status?: TaskStatus;
  expires_at?: string | null;
  attempts?: AttemptRecord[];
  result?: TaskResult | null;
  approval?: ApprovalRecord | null;
}

export interface RunPatch {
  status?: RunStatus;
  steps?: Record<string, JsonValue>;
  timeline?: JsonValue[];
  result?: JsonValue | null;
}

/** A listen-mode node registered through `POST /v1/nodes/register`: the gateway dials its endpoint. */
export interface PeerRecord {
  node_id: string;
  /** `host:port` of the node's TLS listener. */
  endpoint: string;
  /** What the registration said the node offers (the node's REGISTER is what the scheduler uses). */
  capabilities: string[];
  created_at: string;
}

export interface Store {
  /** Applies pending migrations; safe to call on every start. */
  migrate(): Promise<void>;
  close(): Promise<void>;

  upsertNode(node: NodeRecord): Promise<void>;
  getNode(nodeId: string): Promise<NodeRecord | undefined>;
  listNodes(): Promise<NodeRecord[]>;
  updateNodeStatus(nodeId: string, status: NodeStatus, lastSeen: string): Promise<void>;

  insertTask(task: TaskRecord): Promise<void>;
  /** Applies a patch and bumps `updated_at`; throws FM_ERR_TASK_NOT_FOUND for an unknown id. */
  updateTask(taskId: string, patch: TaskPatch): Promise<void>;
  getTask(taskId: string): Promise<TaskRecord | undefined>;
  getTaskByIdempotencyKey(key: string): Promise<TaskRecord | undefined>;
  /** Tasks not yet finished (pending, running, queued or awaiting approval), oldest first. */
  listUnfinishedTasks(): Promise<TaskRecord[]>;
  /** Tasks in one status, oldest first, at most `limit` (default 1000). */
  listTasksByStatus(status: TaskStatus, limit?: number): Promise<TaskRecord[]>;
  /**
   * Applies a patch only while the task is still in status `from`, atomically;
   * false when it was not (another decision got there first).
   */
  transitionTask(taskId: string, from: TaskStatus, patch: TaskPatch): Promise<boolean>;

  insertRun(run: RunRecord): Promise<void>;
  updateRun(runId: string, patch: RunPatch): Promise<void>;
  getRun(runId: string): Promise<RunRecord | undefined>;
  listRuns(filter?: { workflow_id?: string; status?: RunStatus }): Promise<RunRecord[]>;
  /** Deletes finished runs last updated before the cutoff, with their tasks and audit entries; returns how many runs. */
  pruneRuns(finishedBefore: string): Promise<number>;

  putWorkflow(workflowId: string, workflow: JsonValue): Promise<WorkflowRecord>;
  getWorkflow(workflowId: string): Promise<WorkflowRecord | undefined>;
  listWorkflows(): Promise<WorkflowRecord[]>;

  appendInvocations(records: InvocationRecord[]): Promise<void>;
  summarizeInvocations(filter?: { tool?: string; node_id?: string }): Promise<InvocationSummary>;

  getStateDoc(nodeId: string, doc: string): Promise<StateDocRecord | undefined>;
  /** A node's documents by name. */
  listStateDocs(nodeId: string): Promise<StateDocRecord[]>;
  /**
   * Writes a document if its stored versions are still `expected` (`null`:
   * only if it does not exist yet); false, writing nothing, when another
   * write came first.
   */
  saveStateDoc(record: StateDocRecord, expected: StateDocVersions | null): Promise<boolean>;

  /** Creates or replaces a function by name. */
  putFunction(fn: FunctionRecord): Promise<void>;
  getFunction(name: string): Promise<FunctionRecord | undefined>;
  /** Every function by name. */
  listFunctions(): Promise<FunctionRecord[]>;
  /** Deletes a function and its per-node outcomes; false when there was none. */
  deleteFunction(name: string): Promise<boolean>;
  putFunctionNode(record: FunctionNodeRecord): Promise<void>;
  /** Per-node outcomes, by function then node, optionally of one function or one node. */
  listFunctionNodes(filter?: { name?: string; node_id?: string }): Promise<FunctionNodeRecord[]>;
  deleteFunctionNode(name: string, nodeId: string): Promise<void>;

  appendAudit(runId: string, entry: JsonValue): Promise<void>;
  listAudit(runId: string): Promise<JsonValue[]>;

  insertPairingCode(code: PairingCodeRecord): Promise<void>;
  getPairingCode(codeId: string): Promise<PairingCodeRecord | undefined>;
  /** Marks an unused code used; false when it was used already (single use, decided by the store). */
  consumePairingCode(codeId: string, nodeId: string, usedAt: string): Promise<boolean>;
  /** Deletes codes that expired before the cutoff; returns how many. */
  pruneExpiredPairingCodes(expiredBefore: string): Promise<number>;

  putPairingRequest(request: PairingRequestRecord): Promise<void>;
  getPairingRequest(nodeId: string): Promise<PairingRequestRecord | undefined>;
  listPairingRequests(status?: PairingRequestStatus): Promise<PairingRequestRecord[]>;
  deletePairingRequest(nodeId: string): Promise<void>;

  insertCertificate(cert: CertificateRecord): Promise<void>;
  getCertificate(serial: string): Promise<CertificateRecord | undefined>;
  /** One node's certificates, or every node's when `nodeId` is left out. */
  listCertificates(nodeId?: string): Promise<CertificateRecord[]>;
  /** Revokes every certificate of a node not yet revoked; returns their serials. */
  revokeCertificates(nodeId: string, reason: string, revokedAt: string): Promise<string[]>;
  listRevokedSerials(): Promise<string[]>;
  insertApiToken(token: ApiTokenRecord): Promise<void>;
  getApiToken(tokenId: string): Promise<ApiTokenRecord | undefined>;
  /** Every token, revoked ones too, oldest first. */
  listApiTokens(): Promise<ApiTokenRecord[]>;
  /** Marks a token revoked (keeping an earlier revocation time) and returns it; throws FM_ERR_TOKEN_NOT_FOUND for an unknown id. */
  revokeApiToken(tokenId: string, revokedAt: string): Promise<ApiTokenRecord>;
  /** Records when a token was last used; an unknown id is ignored. */
  touchApiToken(tokenId: string, usedAt: string): Promise<void>;

  /** Adds a registered peer; false (nothing written) when its node id or endpoint is registered already. */
  insertPeer(peer: PeerRecord): Promise<boolean>;
  /** Registered peers, oldest first. */
  listPeers(): Promise<PeerRecord[]>;
  /** Removes a registered peer; false when there was none with that id. */
  deletePeer(nodeId: string): Promise<boolean>;
}
