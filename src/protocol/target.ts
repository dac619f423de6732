/**
 * Where a task may run: the target kinds of the original targeting design
 * (local, explicit, capability, geographic, load_balanced, failover_chain).
 * Any target may add `required_capabilities` (all must match) and `prefer`
 * (capabilities that rank a node higher but never exclude one).
 */
import { type Static, type TProperties, Type } from '@sinclair/typebox';

export const TargetKind = {
  Local: 'local',
  Explicit: 'explicit',
  Capability: 'capability',
  Geographic: 'geographic',
  LoadBalanced: 'load_balanced',
  FailoverChain: 'failover_chain',
} as const;
export type TargetKind = (typeof TargetKind)[keyof typeof TargetKind];

const Capability = Type.String({ minLength: 1, maxLength: 256 });
const NodeIdRef = Type.String({ minLength: 1, maxLength: 128 });

const common = {
  required_capabilities: Type.Optional(Type.Array(Capability, { maxItems: 64 })),
  prefer: Type.Optional(Type.Array(Capability, { maxItems: 64, description: 'Capabilities that rank a node higher; never exclude' })),
};

function target<P extends TProperties>(props: P) {
  return Type.Object({ ...common, ...props }, { additionalProperties: false });
}

export const LocalTarget = target({ kind: Type.Literal('local') });
export const ExplicitTarget = target({ kind: Type.Literal('explicit'), node_id: NodeIdRef });
export const CapabilityTarget = Type.Object(
  {
    kind: Type.Literal('capability'),
    required_capabilities: Type.Array(Capability, { minItems: 1, maxItems: 64 }),
    prefer: common.prefer,
  },
  { additionalProperties: false },
);
export const GeographicTarget = target({
  kind: Type.Literal('geographic'),
  center: Type.Object(
    { lat: Type.Number({ minimum: -90, maximum: 90 }), lon: Type.Number({ minimum: -180, maximum: 180 }) },
    { additionalProperties: false },
  ),
  radius_meters: Type.Number({ exclusiveMinimum: 0, maximum: 20_100_000 }),
});
export const LoadBalancedTarget = target({
  kind: Type.Literal('load_balanced'),
  min_nodes: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000, default: 2 })),
  failover: Type.Optional(Type.Boolean({ default: true })),
});
export const FailoverChainTarget = target({
  kind: Type.Literal('failover_chain'),
  nodes: Type.Array(NodeIdRef, { minItems: 1, maxItems: 64 }),
});

export const TargetSchema = Type.Union([
  LocalTarget,
  ExplicitTarget,
  CapabilityTarget,
  GeographicTarget,
  LoadBalancedTarget,
  FailoverChainTarget,
]);
export type Target = Static<typeof TargetSchema>;

/** Retry policy of a call or step; waits before attempt n ≥ 2 are `backoff_ms × backoff_multiplier^(n-2)`, capped. */
export const RetryPolicySchema = Type.Object(
  {
    max_attempts: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
    backoff_ms: Type.Optional(Type.Integer({ minimum: 0, maximum: 3_600_000 })),
    backoff_multiplier: Type.Optional(Type.Number({ minimum: 1, maximum: 100 })),
    max_backoff_ms: Type.Optional(Type.Integer({ minimum: 0, maximum: 3_600_000 })),
    failover: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
export type RetryPolicy = Static<typeof RetryPolicySchema>;

/** What happens to a task for an explicit node that is offline: wait for it (store-and-forward) or fail. */
export const OfflineBehaviorSchema = Type.Object(
  {
    mode: Type.Union([Type.Literal('queue'), Type.Literal('fail')]),
    ttl_seconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 30 * 86_400 })),
    retry_interval_seconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 86_400 })),
  },
  { additionalProperties: false },
);
export type OfflineBehavior = Static<typeof OfflineBehaviorSchema>;

/** Wait before attempt `n` (1-based): none for the first, then exponential from `backoff_ms`, capped. */
export function backoffBefore(n: number, retry: RetryPolicy | undefined): number {
  if (n <= 1 || !retry) return 0;
  const base = retry.backoff_ms ?? 1000;
  const mult = retry.backoff_multiplier ?? 1;
  const cap = retry.max_backoff_ms ?? 10_000;
  return Math.min(base * mult ** (n - 2), cap);
}

/** Great-circle distance in metres (haversine, mean Earth radius). */
export function haversineMeters(a: { lat: number; lon: number }, b: { lat: number; lon: number }): number {
  const R = 6_371_008.8;
  const rad = Math.PI / 180;
  const dLat = (b.lat - a.lat) * rad;
  const dLon = (b.lon - a.lon) * rad;
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * R * Math.asin(Math.min(1, Math.sqrt(h)));
}
