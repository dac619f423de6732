/**
 * HTTP API bodies, written once: they give the TypeScript types for the
 * client SDK, the run-time checks in the gateway and the OpenAPI document.
 */
import { type Static, Type } from '@sinclair/typebox';
import {
  ErrorBodySchema,
  FunctionEnvSchema,
  FunctionName,
  LoadSchema,
  LocationSchema,
  NodeId,
  NodePolicySchema,
  StateDocumentSchema,
  ToolDescriptorSchema,
} from './frames.js';
import { OfflineBehaviorSchema, RetryPolicySchema, TargetSchema } from './target.js';

const Json = Type.Unknown();

/** Tool arguments: an object, or a `{{…}}` template string that yields one (e.g. `"{{item}}"`). */
export const ToolArgs = Type.Union([
  Type.Record(Type.String(), Json, { description: 'Arguments checked against the tool input_schema' }),
  Type.String({
    pattern: '^\\s*\\{\\{.*\\}\\}\\s*$',
    description: 'a string here must be a {{…}} template yielding the whole arguments object',
  }),
]);

/** Items a load-balanced call or step fans out over: an array, or a template yielding one. */
export const ForEach = Type.Union([Type.Array(Json, { maxItems: 100_000 }), Type.String({ minLength: 1 })]);

const callFields = {
  tool_name: Type.String({ minLength: 1, maxLength: 128, description: 'Name of the tool to run' }),
  tool_args: Type.Optional(ToolArgs),
  target: Type.Optional(TargetSchema),
  timeout_ms: Type.Optional(Type.Integer({ minimum: 1, maximum: 3_600_000 })),
  retry: Type.Optional(RetryPolicySchema),
  offline_behavior: Type.Optional(OfflineBehaviorSchema),
  for_each: Type.Optional(ForEach),
};

export const ToolCallBody = Type.Object(
  {
    ...callFields,
    idempotency_key: Type.Optional(Type.String({ minLength: 1, maxLength: 256, description: 'A repeated key returns the existing task' })),
  },
  { additionalProperties: false },
);
export type ToolCallBody = Static<typeof ToolCallBody>;

export const ToolCallResult = Type.Object({
  ok: Type.Boolean(),
  /** "queued" when the call waits in the offline queue (HTTP 202); the result is then read with GET /v1/tasks/{task_id}. */
  status: Type.Optional(Type.String()),
  task_id: Type.String(),
  node_id: Type.Union([Type.String(), Type.Null()]),
  output: Json,
  execution_path: Type.Array(Type.String()),
  verified: Type.Boolean(),
  degraded: Type.Boolean(),
  duration_ms: Type.Number(),
  result_hash: Type.Union([Type.String(), Type.Null()]),
  verification_error: Type.Optional(Type.String()),
  error: Type.Optional(ErrorBodySchema),
});
export type ToolCallResult = Static<typeof ToolCallResult>;

export const TaskAccepted = Type.Object({ ok: Type.Literal(true), task_id: Type.String(), status: Type.Optional(Type.String()) });

export const TaskStatusSchema = Type.Union([
  Type.Literal('pending'),
  Type.Literal('running'),
  Type.Literal('succeeded'),
  Type.Literal('failed'),
  Type.Literal('cancelled'),
  Type.Literal('queued'),
  Type.Literal('awaiting_approval'),
]);

/** The approval a task of a supervised tool waits for, and its decision once made. */
export const ApprovalSchema = Type.Object({
  requested_at: Type.String(),
  /** When the task fails with FM_ERR_APPROVAL_TIMEOUT unless decided before. */
  expires_at: Type.String(),
  decision: Type.Union([Type.Literal('approved'), Type.Literal('rejected'), Type.Literal('timed_out'), Type.Null()]),
  decided_at: Type.Union([Type.String(), Type.Null()]),
  reason: Type.Union([Type.String(), Type.Null()]),
});
export type ApprovalView = Static<typeof ApprovalSchema>;

/** A result's place in the Merkle tree its RESULT_BATCH signature covers (see signing.ts). */
export const ResultBatchProofSchema = Type.Object({
  size: Type.Integer({ minimum: 1 }),
  index: Type.Integer({ minimum: 0 }),
  path: Type.Array(Type.String()),
});

export const AttemptSchema = Type.Object({
  attempt: Type.Integer(),
  node_id: Type.String(),
  started_at: Type.String(),
  finished_at: Type.Union([Type.String(), Type.Null()]),
  outcome: Type.String(),
  error: Type.Union([ErrorBodySchema, Type.Null()]),
  duration_ms: Type.Union([Type.Number(), Type.Null()]),
  verified: Type.Union([Type.Boolean(), Type.Null()]),
  result_hash: Type.Union([Type.String(), Type.Null()]),
  node_signature: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  signed_at: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  /** Set when the result came in a RESULT_BATCH: `node_signature` is the batch's, and this is the result's inclusion proof. */
  result_batch: Type.Optional(Type.Union([ResultBatchProofSchema, Type.Null()])),
});

export const TaskView = Type.Object({
  ok: Type.Literal(true),
  task_id: Type.String(),
  status: TaskStatusSchema,
  tool_name: Type.String(),
  target: Json,
  attempts: Type.Array(AttemptSchema),
  created_at: Type.String(),
  updated_at: Type.String(),
  approval: Type.Optional(ApprovalSchema),
  result: Type.Optional(ToolCallResult),
});
export type TaskView = Static<typeof TaskView>;

const StepId = Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9_.-]+$' });

export const WorkflowStep = Type.Object(
  {
    step_id: StepId,
    ...callFields,
    depends_on: Type.Optional(
      Type.Array(StepId, { maxItems: 1000, description: 'Steps this one waits for; without it, the step before (sequential order)' }),
    ),
    on_failure: Type.Optional(
      Type.Union([Type.Literal('fail'), Type.Literal('continue')], { description: '"continue" lets the run go on when this step fails' }),
    ),
  },
  { additionalProperties: false },
);
export type WorkflowStep = Static<typeof WorkflowStep>;

export const Workflow = Type.Object(
  {
    workflow_id: Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9_.-]+$' }),
    description: Type.Optional(Type.String({ maxLength: 4096 })),
    steps: Type.Array(WorkflowStep, { minItems: 1, maxItems: 1000 }),
    policies: Type.Optional(
      Type.Array(
        Type.Union([
          Type.Literal('schema_strict'),
          Type.Literal('privacy_strict'),
          Type.Literal('offline_capable'),
          Type.Literal('audit_full'),
        ]),
        { maxItems: 8, description: 'Checked before the run starts; a violation rejects the run' },
      ),
    ),
  },
  { additionalProperties: false },
);
export type Workflow = Static<typeof Workflow>;

export const SavedWorkflowRunBody = Type.Object(
  { input: Type.Optional(Type.Record(Type.String(), Json)) },
  { additionalProperties: false },
);
export type SavedWorkflowRunBody = Static<typeof SavedWorkflowRunBody>;

export const StepState = Type.Object({
  status: Type.Union([
    Type.Literal('waiting'),
    Type.Literal('running'),
    Type.Literal('succeeded'),
    Type.Literal('failed'),
    Type.Literal('skipped'),
    Type.Literal('cancelled'),
    Type.Literal('awaiting_approval'),
  ]),
  task_id: Type.Union([Type.String(), Type.Null()]),
  node_id: Type.Union([Type.String(), Type.Null()]),
  node: Type.Union([Type.String(), Type.Null()]),
  started_at: Type.Union([Type.String(), Type.Null()]),
  finished_at: Type.Union([Type.String(), Type.Null()]),
  duration_ms: Type.Union([Type.Number(), Type.Null()]),
  attempts: Type.Integer(),
  verified: Type.Boolean(),
  degraded: Type.Boolean(),
  result_hash: Type.Union([Type.String(), Type.Null()]),
  execution_path: Type.Array(Type.String()),
  output: Type.Optional(Json),
  error: Type.Optional(ErrorBodySchema),
  /** Set for a step of a supervised tool: when approval was requested and how it was decided. */
  approval: Type.Optional(ApprovalSchema),
});
export type StepState = Static<typeof StepState>;

export const WorkflowRunBody = Type.Object(
  { workflow: Workflow, input: Type.Optional(Type.Record(Type.String(), Json)) },
  { additionalProperties: false },
);
export type WorkflowRunBody = Static<typeof WorkflowRunBody>;

export const TimelineEntry = Type.Object({
  step: Type.String(),
  node: Type.Union([Type.String(), Type.Null()]),
  node_id: Type.Union([Type.String(), Type.Null()]),
  timestamp: Type.String(),
  duration_ms: Type.Number(),
  attempts: Type.Integer(),
  verified: Type.Boolean(),
  ok: Type.Boolean(),
  result_hash: Type.Union([Type.String(), Type.Null()]),
  task_id: Type.String(),
  /** The approval request and its decision, for a step of a supervised tool. */
  approval: Type.Optional(ApprovalSchema),
});
export type TimelineEntry = Static<typeof TimelineEntry>;

export const WorkflowRunResult = Type.Object({
  ok: Type.Boolean(),
  run_id: Type.String(),
  trace_id: Type.String(),
  workflow_id: Type.String(),
  status: Type.String(),
  verified: Type.Boolean(),
  execution_path: Type.Array(Type.String()),
  timeline: Type.Array(TimelineEntry),
  degraded: Type.Boolean(),
  outputs: Type.Record(Type.String(), Json),
  duration_ms: Type.Number(),
  error: Type.Optional(ErrorBodySchema),
});
export type WorkflowRunResult = Static<typeof WorkflowRunResult>;

export const RunView = Type.Object({
  ok: Type.Literal(true),
  run_id: Type.String(),
  trace_id: Type.String(),
  workflow_id: Type.String(),
  workflow: Json,
  status: Type.String(),
  input: Json,
  steps: Type.Record(Type.String(), StepState),
  timeline: Type.Array(TimelineEntry),
  result: Type.Union([WorkflowRunResult, Type.Null()]),
  created_at: Type.String(),
  updated_at: Type.String(),
});
export type RunView = Static<typeof RunView>;

export const AuditEntry = Type.Object({
  run_id: Type.String(),
  step: Type.String(),
  task_id: Type.String(),
  attempt: Type.Integer(),
  node_id: Type.String(),
  input_hash: Type.String(),
  output_hash: Type.Union([Type.String(), Type.Null()]),
  node_signature: Type.Union([Type.String(), Type.Null()]),
  signed_at: Type.Union([Type.String(), Type.Null()]),
  result_batch: Type.Optional(Type.Union([ResultBatchProofSchema, Type.Null()])),
  verified: Type.Boolean(),
  recorded_at: Type.String(),
});
export type AuditEntry = Static<typeof AuditEntry>;

export const NodeView = Type.Object({
  node_id: Type.String(),
  name: Type.String(),
  status: Type.String(),
  platform: Type.String(),
  capabilities: Type.Array(Type.String()),
  location: Type.Union([LocationSchema, Type.Null()]),
  load: LoadSchema,
  last_seen: Type.String(),
  trusted: Type.Boolean(),
  /** The node's own policy as it advertised it; null when it advertised none. */
  policy: Type.Optional(Type.Union([NodePolicySchema, Type.Null()])),
});
export type NodeView = Static<typeof NodeView>;

/** A node waiting for an operator to approve its pairing request (`GET /v1/nodes?status=pending`). */
export const PendingNodeView = Type.Composite([
  NodeView,
  Type.Object({
    /** Compare with the fingerprint the node logged before approving. */
    fingerprint: Type.String(),
    remote_address: Type.String(),
    requested_at: Type.String(),
  }),
]);
export type PendingNodeView = Static<typeof PendingNodeView>;

export const NodeList = Type.Object({ ok: Type.Literal(true), nodes: Type.Array(Type.Union([NodeView, PendingNodeView])) });
export const NodeDetail = Type.Object({ ok: Type.Literal(true), node: NodeView });

export const NodeHealth = Type.Object({
  ok: Type.Literal(true),
  node_id: Type.String(),
  status: Type.String(),
  healthy: Type.Boolean(),
  last_seen: Type.String(),
  seconds_since_heartbeat: Type.Number(),
  load: LoadSchema,
  connected: Type.Boolean(),
});
export type NodeHealth = Static<typeof NodeHealth>;

export const NodeCapabilities = Type.Object({
  ok: Type.Literal(true),
  node_id: Type.String(),
  capabilities: Type.Array(Type.String()),
  tools: Type.Array(ToolDescriptorSchema),
});
export type NodeCapabilities = Static<typeof NodeCapabilities>;

/** One task waiting at `GET /v1/approvals`, with what it would run. */
export const PendingApproval = Type.Object({
  task_id: Type.String(),
  tool_name: Type.String(),
  tool_args: Json,
  target: Json,
  run_id: Type.Union([Type.String(), Type.Null()]),
  step_id: Type.Union([Type.String(), Type.Null()]),
  requested_at: Type.String(),
  expires_at: Type.String(),
});
export type PendingApproval = Static<typeof PendingApproval>;

export const ApprovalList = Type.Object({ ok: Type.Literal(true), approvals: Type.Array(PendingApproval) });

export const ApprovalDecisionBody = Type.Object(
  { reason: Type.Optional(Type.String({ maxLength: 4096, description: 'Why, kept with the decision' })) },
  { additionalProperties: false },
);
export type ApprovalDecisionBody = Static<typeof ApprovalDecisionBody>;

export const ErrorResponse = Type.Object({ ok: Type.Literal(false), error: ErrorBodySchema });

export const PairingCodeBody = Type.Object(
  {
    node_id: Type.Optional(NodeId),
    ttl_seconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 604_800, description: 'Life of the code (default 600)' })),
  },
  { additionalProperties: false },
);
export type PairingCodeBody = Static<typeof PairingCodeBody>;

export const PairingCodeView = Type.Object({
  ok: Type.Literal(true),
  /** Give it to `fieldmesh node --pair`; it also carries the gateway CA fingerprint. Single use. */
  code: Type.String(),
  expires_at: Type.String(),
  node_id: Type.Union([Type.String(), Type.Null()]),
  ca_fingerprint: Type.String(),
});
export type PairingCodeView = Static<typeof PairingCodeView>;

export const PairingDecision = Type.Object({
  ok: Type.Literal(true),
  node_id: Type.String(),
  status: Type.Union([Type.Literal('approved'), Type.Literal('denied')]),
  fingerprint: Type.String(),
});
export type PairingDecision = Static<typeof PairingDecision>;

export const RevocationView = Type.Object({
  ok: Type.Literal(true),
  node_id: Type.String(),
  /** Serials revoked by this call (empty if they all were already). */
  revoked_serials: Type.Array(Type.String()),
});
export type RevocationView = Static<typeof RevocationView>;

export const TokenScopeSchema = Type.Union([Type.Literal('read'), Type.Literal('submit'), Type.Literal('admin')], {
  description: 'read < submit < admin; each includes the ones before it',
});

export const TokenCreateBody = Type.Object(
  {
    scope: TokenScopeSchema,
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 100, pattern: '^[^\\u0000-\\u001f\\u007f]+$', description: 'A label' })),
  },
  { additionalProperties: false },
);
export type TokenCreateBody = Static<typeof TokenCreateBody>;

const tokenFields = {
  token_id: Type.String(),
  name: Type.Union([Type.String(), Type.Null()]),
  scope: TokenScopeSchema,
  created_at: Type.String(),
};

/** A new token: the only answer that ever carries its secret. */
export const TokenCreated = Type.Object({
  ok: Type.Literal(true),
  ...tokenFields,
  token: Type.String({ description: 'The bearer token; shown once' }),
});
export type TokenCreated = Static<typeof TokenCreated>;

export const TokenView = Type.Object({
  ...tokenFields,
  last_used_at: Type.Union([Type.String(), Type.Null()], { description: 'Updated at most once a minute' }),
  revoked_at: Type.Union([Type.String(), Type.Null()]),
});
export type TokenView = Static<typeof TokenView>;

export const TokenList = Type.Object({ ok: Type.Literal(true), tokens: Type.Array(TokenView) });
export const TokenRevoked = Type.Object({ ok: Type.Literal(true), ...TokenView.properties });

export const ConflictStrategySchema = Type.Union([Type.Literal('remote_wins'), Type.Literal('local_wins'), Type.Literal('latest_wins')], {
  description: 'Who wins when the node and the gateway both changed the document: the gateway, the node, or the later write',
});

export const StatePutBody = Type.Object(
  {
    data: Type.Record(Type.String(), Json, { description: 'The desired state, a JSON object' }),
    version: Type.Optional(
      Type.Integer({
        minimum: 0,
        description: 'The desired version this write is based on (0: a new document); a stale one is refused with 409',
      }),
    ),
    strategy: Type.Optional(ConflictStrategySchema),
  },
  { additionalProperties: false },
);
export type StatePutBody = Static<typeof StatePutBody>;

export const StateDocView = Type.Object({
  ok: Type.Literal(true),
  node_id: Type.String(),
  doc: Type.String(),
  strategy: ConflictStrategySchema,
  /** Written at the gateway. */
  desired: Type.Union([StateDocumentSchema, Type.Null()]),
  /** What the node last reported holding. */
  reported: Type.Union([StateDocumentSchema, Type.Null()]),
  /** True when the node reports the desired data (or nothing is desired). */
  in_sync: Type.Boolean(),
  updated_at: Type.String(),
});
export type StateDocView = Static<typeof StateDocView>;

export const StateDocSummary = Type.Object({
  doc: Type.String(),
  strategy: ConflictStrategySchema,
  desired_version: Type.Union([Type.Integer(), Type.Null()]),
  reported_version: Type.Union([Type.Integer(), Type.Null()]),
  in_sync: Type.Boolean(),
  updated_at: Type.String(),
});
export type StateDocSummary = Static<typeof StateDocSummary>;

export const StateDocList = Type.Object({ ok: Type.Literal(true), node_id: Type.String(), docs: Type.Array(StateDocSummary) });
export type StateDocList = Static<typeof StateDocList>;

/** `POST /v1/functions`: a bundled ES module whose default export is the handler, its limits, environment and target. */
export const FunctionDeployBody = Type.Object(
  {
    name: FunctionName,
    bundle: Type.String({ minLength: 1, description: 'One ES module; its default export is `async (args, ctx) => output`' }),
    memory_mb: Type.Optional(Type.Integer({ minimum: 1, maximum: 65_536, default: 128 })),
    timeout_seconds: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 86_400, default: 30 })),
    env: Type.Optional(FunctionEnvSchema),
    target: Type.Optional(TargetSchema),
  },
  { additionalProperties: false },
);
export type FunctionDeployBody = Static<typeof FunctionDeployBody>;

/** What one node did with a deploy or undeploy. */
export const FunctionNodeOutcome = Type.Object({
  node_id: Type.String(),
  /**
   * `deployed`/`undeployed`: the node took it; `failed`: it refused or did not
   * answer (`error`); `skipped`: its policy refuses deploys; `offline`: it gets
   * the change when it reconnects.
   */
  status: Type.Union([
    Type.Literal('deployed'),
    Type.Literal('undeployed'),
    Type.Literal('failed'),
    Type.Literal('skipped'),
    Type.Literal('offline'),
  ]),
  error: Type.Optional(ErrorBodySchema),
});
export type FunctionNodeOutcome = Static<typeof FunctionNodeOutcome>;

export const FunctionView = Type.Object({
  name: Type.String(),
  version: Type.Integer(),
  bundle_sha256: Type.String(),
  bundle_bytes: Type.Integer(),
  memory_mb: Type.Integer(),
  timeout_seconds: Type.Number(),
  /** The names of its environment variables; their values stay on the gateway and the nodes. */
  env_keys: Type.Array(Type.String()),
  target: TargetSchema,
  created_at: Type.String(),
  updated_at: Type.String(),
  /** Each node's last outcome for this function. */
  nodes: Type.Array(
    Type.Object({
      node_id: Type.String(),
      status: Type.Union([Type.Literal('deployed'), Type.Literal('failed'), Type.Literal('undeployed')]),
      bundle_sha256: Type.Union([Type.String(), Type.Null()]),
      error: Type.Union([ErrorBodySchema, Type.Null()]),
      updated_at: Type.String(),
    }),
  ),
});
export type FunctionView = Static<typeof FunctionView>;

export const FunctionDeployResult = Type.Object({
  ok: Type.Literal(true),
  function: FunctionView,
  /** Nodes inside the target, whatever their status. */
  matched: Type.Integer(),
  /** Nodes that took the function now. */
  deployed: Type.Integer(),
  nodes: Type.Array(FunctionNodeOutcome),
});
export type FunctionDeployResult = Static<typeof FunctionDeployResult>;

export const FunctionList = Type.Object({ ok: Type.Literal(true), functions: Type.Array(FunctionView) });
export type FunctionList = Static<typeof FunctionList>;

export const FunctionUndeployResult = Type.Object({
  ok: Type.Literal(true),
  name: Type.String(),
  /** Nodes that removed it now. */
  undeployed: Type.Integer(),
  nodes: Type.Array(FunctionNodeOutcome),
});
export type FunctionUndeployResult = Static<typeof FunctionUndeployResult>;
