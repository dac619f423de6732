/**
 * Wire frames between gateway and node: JSON text frames over WebSocket, each
 * `{ v, type, ... }`, one TypeBox schema per type. Names follow the original
 * swarm distribution design (REGISTER → WELCOME → NODE_READY, HEARTBEAT,
 * TASK/TASK_ACK/TASK_RESULT, CANCEL, ERROR) and of the edge module's state
 * sync (SYNC_REQUEST/SYNC_RESPONSE, STATE_PUSH/STATE_ACK) and deployable
 * functions (DEPLOY/UNDEPLOY, answered by DEPLOY_RESULT).
 */
import { type Static, Type } from '@sinclair/typebox';
import { STATE_DOC_MAX_LENGTH, STATE_DOC_PATTERN } from './state.js';

/** Protocol versions this build speaks, newest last. */
export const PROTOCOL_VERSIONS = [1] as const;
export const PROTOCOL_VERSION = 1;

export const FrameType = {
  Register: 'REGISTER',
  Welcome: 'WELCOME',
  NodeReady: 'NODE_READY',
  Heartbeat: 'HEARTBEAT',
  Task: 'TASK',
  TaskBatch: 'TASK_BATCH',
  TaskAck: 'TASK_ACK',
  TaskResult: 'TASK_RESULT',
  ResultBatch: 'RESULT_BATCH',
  Cancel: 'CANCEL',
  SyncRequest: 'SYNC_REQUEST',
  SyncResponse: 'SYNC_RESPONSE',
  StatePush: 'STATE_PUSH',
  StateAck: 'STATE_ACK',
  Error: 'ERROR',
  CertRenew: 'CERT_RENEW',
  CertIssued: 'CERT_ISSUED',
  Deploy: 'DEPLOY',
  Undeploy: 'UNDEPLOY',
  DeployResult: 'DEPLOY_RESULT',
} as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

export const NodeId = Type.String({
  minLength: 1,
  maxLength: 128,
  pattern: '^[A-Za-z0-9][A-Za-z0-9:._@/-]*$',
  description: 'a node id starts with a letter or digit and holds only letters, digits and : . _ @ / -',
});
const TaskId = Type.String({ minLength: 1, maxLength: 128 });
const Attempt = Type.Integer({ minimum: 1 });
const Json = Type.Unknown();

export const LocationSchema = Type.Object(
  { lat: Type.Number({ minimum: -90, maximum: 90 }), lon: Type.Number({ minimum: -180, maximum: 180 }) },
  { additionalProperties: false },
);

export const LoadSchema = Type.Object({
  cpu: Type.Number({ minimum: 0 }),
  memory: Type.Number({ minimum: 0, maximum: 1 }),
  in_flight: Type.Integer({ minimum: 0 }),
});

export const ToolDescriptorSchema = Type.Object({
  name: Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9_.:-]+$' }),
  description: Type.String({ maxLength: 4096 }),
  input_schema: Type.Record(Type.String(), Json),
  output_schema: Type.Record(Type.String(), Json),
  network: Type.Optional(Type.Boolean()),
});

export const ErrorBodySchema = Type.Object({
  code: Type.String({ minLength: 1 }),
  message: Type.String(),
  retryable: Type.Optional(Type.Boolean()),
  details: Type.Optional(Type.Record(Type.String(), Json)),
});

/** A node's own policy as it advertises it: the gateway places no task there that the node would refuse. */
export const NodePolicySchema = Type.Object({
  /** The only tools the node runs; null means every tool it offers. */
  allowed_tools: Type.Union([Type.Array(Type.String({ minLength: 1, maxLength: 128 }), { maxItems: 1024 }), Type.Null()]),
  max_concurrent_tasks: Type.Integer({ minimum: 1, maximum: 4096 }),
  /** Largest tool_args (bytes of JSON) the node accepts; null means only the frame limit. */
  max_payload_bytes: Type.Union([Type.Integer({ minimum: 1 }), Type.Null()]),
  allow_deploy: Type.Boolean(),
});
export type NodePolicy = Static<typeof NodePolicySchema>;

/** A deployed function's name: also its tool name, a file name on the node, and a URL segment. */
export const FUNCTION_NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9_.-]*$';
export const FunctionName = Type.String({
  minLength: 1,
  maxLength: 128,
  pattern: FUNCTION_NAME_PATTERN,
  description: 'a function name starts with a letter or digit and holds only letters, digits, "_", "." and "-"',
});
const BundleHash = Type.String({ pattern: '^sha256:[0-9a-f]{64}$' });

/** A function a node holds, as it advertises it: the gateway compares these with what it wants the node to hold. */
export const DeployedFunctionSchema = Type.Object({ name: FunctionName, bundle_sha256: BundleHash });

export const RegisterFrame = Type.Object({
  v: Type.Integer({ minimum: 1 }),
  type: Type.Literal('REGISTER'),
  /** Every protocol version the node speaks; the gateway picks the highest common one. */
  versions: Type.Array(Type.Integer({ minimum: 1 }), { minItems: 1, maxItems: 16 }),
  node_id: NodeId,
  name: Type.String({ minLength: 1, maxLength: 256 }),
  platform: Type.String({ minLength: 1, maxLength: 64 }),
  capabilities: Type.Array(Type.String({ minLength: 1, maxLength: 256 }), { maxItems: 4096 }),
  tools: Type.Array(ToolDescriptorSchema, { maxItems: 1024 }),
  location: Type.Optional(Type.Union([LocationSchema, Type.Null()])),
  public_key: Type.String({ minLength: 1, maxLength: 4096 }),
  agent_version: Type.String({ maxLength: 64 }),
  max_concurrency: Type.Integer({ minimum: 1, maximum: 4096 }),
  /** The node's own policy; absent from nodes that predate it. */
  policy: Type.Optional(NodePolicySchema),
  /** The deployed functions the node serves (each is also one of `tools`); absent from nodes that predate them. */
  functions: Type.Optional(Type.Array(DeployedFunctionSchema, { maxItems: 1024 })),
  /** Optional protocol features the node understands (see {@link NodeFeature}); absent from nodes that predate them. */
  features: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: 64 })),
});

/** Optional protocol features a node may advertise in REGISTER. */
export const NodeFeature = {
  /** The node takes TASK_BATCH frames: several tasks under one gateway signature. */
  TaskBatch: 'task_batch',
  /** The node sends RESULT_BATCH frames (several results under one node signature) once WELCOME lists this too. */
  ResultBatch: 'result_batch',
} as const;

export const WelcomeFrame = Type.Object({
  v: Type.Integer({ minimum: 1 }),
  type: Type.Literal('WELCOME'),
  version: Type.Integer({ minimum: 1 }),
  gateway_id: Type.String(),
  node_id: NodeId,
  leader_id: Type.String(),
  peers: Type.Array(Type.String()),
  heartbeat_interval_ms: Type.Integer({ minimum: 10 }),
  max_frame_bytes: Type.Integer({ minimum: 1024 }),
  /**
   * Of the features the node advertised in REGISTER, those this gateway speaks too; a node sends
   * RESULT_BATCH frames only when `result_batch` is here. Absent from gateways that predate it.
   */
  features: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: 64 })),
});

export const NodeReadyFrame = Type.Object({
  v: Type.Integer({ minimum: 1 }),
  type: Type.Literal('NODE_READY'),
  node_id: NodeId,
});

export const HeartbeatFrame = Type.Object({
  v: Type.Integer({ minimum: 1 }),
  type: Type.Literal('HEARTBEAT'),
  node_id: NodeId,
  seq: Type.Integer({ minimum: 0 }),
  load: LoadSchema,
  sent_at: Type.String(),
});

export const TaskFrame = Type.Object({
  v: Type.Integer({ minimum: 1 }),
  type: Type.Literal('TASK'),
  task_id: TaskId,
  attempt: Attempt,
  tool_name: Type.String({ minLength: 1, maxLength: 128 }),
  tool_args: Json,
  timeout_ms: Type.Integer({ minimum: 1 }),
  /** The node this attempt is for; a node refuses a TASK meant for another. */
  node_id: NodeId,
  issued_at: Type.String({ minLength: 1, maxLength: 64 }),
  /** The gateway's Ed25519 signature, base64, over the canonical task fields (see signing.ts). */
  gateway_signature: Type.String({ minLength: 1, maxLength: 512 }),
});

/** One task of a TASK_BATCH: a TASK frame's fields without those the batch carries once. */
export const BatchedTaskSchema = Type.Object({
  task_id: TaskId,
  attempt: Attempt,
  tool_name: Type.String({ minLength: 1, maxLength: 128 }),
  tool_args: Json,
  timeout_ms: Type.Integer({ minimum: 1 }),
});

/** The most tasks one TASK_BATCH frame carries. */
export const MAX_BATCH_TASKS = 4096;

/**
 * Gateway → node, to nodes that advertise `task_batch`: the tasks sent to one
 * node in one turn of the gateway's event loop under one signature (see
 * signing.ts). Each task is then handled exactly as a TASK with the batch's
 * `node_id` and `issued_at`; a batch whose signature fails is refused whole.
 */
export const TaskBatchFrame = Type.Object({
  v: Type.Integer({ minimum: 1 }),
  type: Type.Literal('TASK_BATCH'),
  node_id: NodeId,
  issued_at: Type.String({ minLength: 1, maxLength: 64 }),
  tasks: Type.Array(BatchedTaskSchema, { minItems: 1, maxItems: MAX_BATCH_TASKS }),
  /** The gateway's Ed25519 signature, base64, over the batch's canonical fields (see signing.ts). */
  gateway_signature: Type.String({ minLength: 1, maxLength: 512 }),
});

/** A node took a task; sent at the end of the node's turn, and left out when the TASK_RESULT is ready first. */
export const TaskAckFrame = Type.Object({
  v: Type.Integer({ minimum: 1 }),
  type: Type.Literal('TASK_ACK'),
  task_id: TaskId,
  attempt: Attempt,
});

/** One result of a RESULT_BATCH: a TASK_RESULT's fields without those the batch carries once. */
export const BatchedResultSchema = Type.Object({
  task_id: TaskId,
  attempt: Attempt,
  ok: Type.Boolean(),
  output: Type.Optional(Json),
  error: Type.Optional(ErrorBodySchema),
  duration_ms: Type.Number({ minimum: 0 }),
  /** `sha256:<hex>` of the canonical JSON of `output` (or of `error` when not ok). */
  result_hash: Type.String({ pattern: '^sha256:[0-9a-f]{64}$' }),
});

export const TaskResultFrame = Type.Object({
  v: Type.Integer({ minimum: 1 }),
  type: Type.Literal('TASK_RESULT'),
  ...BatchedResultSchema.properties,
  /** Ed25519 signature, base64, over task id, attempt, result_hash and timestamp. */
  node_signature: Type.String({ minLength: 1, maxLength: 512 }),
  timestamp: Type.String({ minLength: 1, maxLength: 64 }),
});

/** The most results one RESULT_BATCH frame carries. */
export const MAX_BATCH_RESULTS = 4096;

/**
 * Node → gateway, from nodes whose WELCOME lists `result_batch`: the results
 * the node had ready in one turn of its event loop under one signature, over
 * the root of a Merkle tree of their (task_id, attempt, result_hash) (see
 * signing.ts). The gateway verifies it once and settles each result as a
 * verified TASK_RESULT, keeping with each the batch signature, `timestamp`
 * and the result's inclusion proof; a batch that does not check (signature,
 * a result hash, a task not awaited from this node, a replay) is refused
 * whole, each of its results handled as a result whose signature failed.
 */
export const ResultBatchFrame = Type.Object({
  v: Type.Integer({ minimum: 1 }),
  type: Type.Literal('RESULT_BATCH'),
  results: Type.Array(BatchedResultSchema, { minItems: 1, maxItems: MAX_BATCH_RESULTS }),
  /** Ed25519 signature, base64, over `fieldmesh-result-batch-v1`, `timestamp`, the result count and the tree's root. */
  node_signature: Type.String({ minLength: 1, maxLength: 512 }),
  timestamp: Type.String({ minLength: 1, maxLength: 64 }),
});

export const CancelFrame = Type.Object({
  v: Type.Integer({ minimum: 1 }),
  type: Type.Literal('CANCEL'),
  task_id: TaskId,
  attempt: Type.Optional(Attempt),
  reason: Type.Optional(Type.String({ maxLength: 1024 })),
});

const StateDocName = Type.String({ minLength: 1, maxLength: STATE_DOC_MAX_LENGTH, pattern: STATE_DOC_PATTERN.source });
const Checksum = Type.String({ pattern: '^sha256:[0-9a-f]{64}$' });
const StateVersion = Type.Integer({ minimum: 0 });

/** One side of a state document: `{ version, data, checksum, updated_at }`. */
export const StateDocumentSchema = Type.Object({
  version: StateVersion,
  data: Type.Record(Type.String(), Json),
  checksum: Checksum,
  updated_at: Type.String({ minLength: 1, maxLength: 64 }),
});

/** What a side holds without its data, for comparing. */
export const StateHeadSchema = Type.Object({ version: StateVersion, checksum: Checksum });

/** A node's change not yet confirmed: a tool wrote it (`local`), or the node adopted desired data (`desired`). */
export const StateChangeSchema = Type.Object({
  ...StateDocumentSchema.properties,
  origin: Type.Union([Type.Literal('local'), Type.Literal('desired')]),
  /** The desired version the node had seen when it made the change; a newer desired means both sides changed. */
  base_desired: StateVersion,
});

/** Node → gateway, per document after WELCOME and after every local change: what the node holds and has not had confirmed. */
export const SyncRequestFrame = Type.Object({
  v: Type.Integer({ minimum: 1 }),
  type: Type.Literal('SYNC_REQUEST'),
  doc: StateDocName,
  /** The node's own (reported) state. */
  reported: Type.Union([StateHeadSchema, Type.Null()]),
  /** The desired state the node last received. */
  desired: Type.Union([StateHeadSchema, Type.Null()]),
  pending: Type.Array(StateChangeSchema, { maxItems: 1000 }),
  /** The whole reported state, sent when the gateway asked for a resync. */
  full: Type.Optional(StateDocumentSchema),
});

/** Gateway → node: `resync` asks for the whole document; `reported` returns the gateway's newer copy to a node that lost it. */
export const SyncResponseFrame = Type.Object({
  v: Type.Integer({ minimum: 1 }),
  type: Type.Literal('SYNC_RESPONSE'),
  doc: StateDocName,
  resync: Type.Boolean(),
  reported: Type.Optional(StateDocumentSchema),
});

/** Gateway → node: desired state to adopt; `resync` replaces the node's copy even at the same or a lower version. */
export const StatePushFrame = Type.Object({
  v: Type.Integer({ minimum: 1 }),
  type: Type.Literal('STATE_PUSH'),
  doc: StateDocName,
  desired: StateDocumentSchema,
  resync: Type.Boolean(),
});

/** Confirms one side of a document up to a version: gateway → node for `reported`, node → gateway for `desired`. */
export const StateAckFrame = Type.Object({
  v: Type.Integer({ minimum: 1 }),
  type: Type.Literal('STATE_ACK'),
  doc: StateDocName,
  side: Type.Union([Type.Literal('reported'), Type.Literal('desired')]),
  version: StateVersion,
});

export const ErrorFrame = Type.Object({
  v: Type.Integer({ minimum: 1 }),
  type: Type.Literal('ERROR'),
  code: Type.String(),
  message: Type.String(),
  /** The task the error concerns, if any. */
  task_id: Type.Optional(Type.String()),
});

/** A node asks for a new certificate over its live connection (at two thirds of its certificate's life). */
export const CertRenewFrame = Type.Object({
  v: Type.Integer({ minimum: 1 }),
  type: Type.Literal('CERT_RENEW'),
  node_id: NodeId,
  /** PKCS#10 request (PEM) for a fresh ECDSA P-256 key, CN = node id. */
  csr: Type.String({ minLength: 1, maxLength: 8192 }),
});

export const CertIssuedFrame = Type.Object({
  v: Type.Integer({ minimum: 1 }),
  type: Type.Literal('CERT_ISSUED'),
  node_id: NodeId,
  certificate: Type.String({ minLength: 1, maxLength: 16384 }),
  serial: Type.String({ minLength: 1, maxLength: 64 }),
  not_after: Type.String(),
});

/** A function's environment variables: names as a shell takes them, string values. */
export const FunctionEnvSchema = Type.Record(
  Type.String({ minLength: 1, maxLength: 256, pattern: '^[A-Za-z_][A-Za-z0-9_]*$' }),
  Type.String({ maxLength: 65_536 }),
);

/**
 * Gateway → node: store this function and serve it as tool `name`. The gateway
 * signs it (see signing.ts, {@link SignedDeployFields}); a node verifies the
 * signature with the key it received at pairing and that `bundle` hashes to
 * `bundle_sha256`, and refuses anything else.
 */
export const DeployFrame = Type.Object({
  v: Type.Integer({ minimum: 1 }),
  type: Type.Literal('DEPLOY'),
  /** Pairs the node's DEPLOY_RESULT with this request. */
  deploy_id: Type.String({ minLength: 1, maxLength: 128 }),
  node_id: NodeId,
  name: FunctionName,
  /** One ES module (esbuild output) whose default export is the handler `async (args, ctx) => output`. */
  bundle: Type.String({ minLength: 1 }),
  bundle_sha256: BundleHash,
  memory_mb: Type.Integer({ minimum: 1, maximum: 65_536 }),
  timeout_seconds: Type.Number({ exclusiveMinimum: 0, maximum: 86_400 }),
  /** The function's environment, and all of it: it never sees the node's own. */
  env: FunctionEnvSchema,
  issued_at: Type.String({ minLength: 1, maxLength: 64 }),
  gateway_signature: Type.String({ minLength: 1, maxLength: 512 }),
});

/** Gateway → node: stop serving and delete a function; signed like DEPLOY. */
export const UndeployFrame = Type.Object({
  v: Type.Integer({ minimum: 1 }),
  type: Type.Literal('UNDEPLOY'),
  deploy_id: Type.String({ minLength: 1, maxLength: 128 }),
  node_id: NodeId,
  name: FunctionName,
  issued_at: Type.String({ minLength: 1, maxLength: 64 }),
  gateway_signature: Type.String({ minLength: 1, maxLength: 512 }),
});

/** Node → gateway: the outcome of a DEPLOY or UNDEPLOY, with what the node offers now. */
export const DeployResultFrame = Type.Object({
  v: Type.Integer({ minimum: 1 }),
  type: Type.Literal('DEPLOY_RESULT'),
  deploy_id: Type.String({ minLength: 1, maxLength: 128 }),
  node_id: NodeId,
  name: FunctionName,
  action: Type.Union([Type.Literal('deploy'), Type.Literal('undeploy')]),
  ok: Type.Boolean(),
  error: Type.Optional(ErrorBodySchema),
  /** The node's tools, capabilities and functions after the change, as REGISTER would list them. */
  tools: Type.Array(ToolDescriptorSchema, { maxItems: 1024 }),
  capabilities: Type.Array(Type.String({ minLength: 1, maxLength: 256 }), { maxItems: 4096 }),
  functions: Type.Array(DeployedFunctionSchema, { maxItems: 1024 }),
});

export const FrameSchemas = {
  REGISTER: RegisterFrame,
  WELCOME: WelcomeFrame,
  NODE_READY: NodeReadyFrame,
  HEARTBEAT: HeartbeatFrame,
  TASK: TaskFrame,
  TASK_BATCH: TaskBatchFrame,
  TASK_ACK: TaskAckFrame,
  TASK_RESULT: TaskResultFrame,
  RESULT_BATCH: ResultBatchFrame,
  CANCEL: CancelFrame,
  SYNC_REQUEST: SyncRequestFrame,
  SYNC_RESPONSE: SyncResponseFrame,
  STATE_PUSH: StatePushFrame,
  STATE_ACK: StateAckFrame,
  ERROR: ErrorFrame,
  CERT_RENEW: CertRenewFrame,
  CERT_ISSUED: CertIssuedFrame,
  DEPLOY: DeployFrame,
  UNDEPLOY: UndeployFrame,
  DEPLOY_RESULT: DeployResultFrame,
} as const;

export type RegisterFrame = Static<typeof RegisterFrame>;
export type WelcomeFrame = Static<typeof WelcomeFrame>;
export type NodeReadyFrame = Static<typeof NodeReadyFrame>;
export type HeartbeatFrame = Static<typeof HeartbeatFrame>;
export type TaskFrame = Static<typeof TaskFrame>;
export type TaskBatchFrame = Static<typeof TaskBatchFrame>;
export type BatchedTask = Static<typeof BatchedTaskSchema>;
export type TaskAckFrame = Static<typeof TaskAckFrame>;
export type TaskResultFrame = Static<typeof TaskResultFrame>;
export type ResultBatchFrame = Static<typeof ResultBatchFrame>;
export type BatchedResult = Static<typeof BatchedResultSchema>;
export type CancelFrame = Static<typeof CancelFrame>;
export type ErrorFrame = Static<typeof ErrorFrame>;
export type CertRenewFrame = Static<typeof CertRenewFrame>;
export type CertIssuedFrame = Static<typeof CertIssuedFrame>;
export type DeployFrame = Static<typeof DeployFrame>;
export type UndeployFrame = Static<typeof UndeployFrame>;
export type DeployResultFrame = Static<typeof DeployResultFrame>;
export type DeployedFunction = Static<typeof DeployedFunctionSchema>;

export type SyncRequestFrame = Static<typeof SyncRequestFrame>;
export type SyncResponseFrame = Static<typeof SyncResponseFrame>;
export type StatePushFrame = Static<typeof StatePushFrame>;
export type StateAckFrame = Static<typeof StateAckFrame>;
export type StateChange = Static<typeof StateChangeSchema>;
export type StateHead = Static<typeof StateHeadSchema>;

export type Frame =
  | RegisterFrame
  | WelcomeFrame
  | NodeReadyFrame
  | HeartbeatFrame
  | TaskFrame
  | TaskBatchFrame
  | TaskAckFrame
  | TaskResultFrame
  | ResultBatchFrame
  | CancelFrame
  | ErrorFrame
  | CertRenewFrame
  | CertIssuedFrame
  | SyncRequestFrame
  | SyncResponseFrame
  | StatePushFrame
  | StateAckFrame
  | DeployFrame
  | UndeployFrame
  | DeployResultFrame;

/** A frame without its envelope version, as handlers build them. */
export type FrameBody<F extends Frame> = Omit<F, 'v'>;
