/** Where a task may run: the target kinds of the original targeting design. */
import { type Static, Type } from '@sinclair/typebox';

export const TargetKind = {
  Local: 'local',
  Explicit: 'explicit',
  Capability: 'capability',
} as const;
export type TargetKind = (typeof TargetKind)[keyof typeof TargetKind];

const Capabilities = Type.Array(Type.String({ minLength: 1, maxLength: 256 }), { maxItems: 64 });

export const LocalTarget = Type.Object(
  { kind: Type.Literal('local'), required_capabilities: Type.Optional(Capabilities) },
  { additionalProperties: false },
);
export const ExplicitTarget = Type.Object(
  { kind: Type.Literal('explicit'), node_id: Type.String({ minLength: 1, maxLength: 128 }) },
  { additionalProperties: false },
);
export const CapabilityTarget = Type.Object(
  {
    kind: Type.Literal('capability'),
    required_capabilities: Type.Array(Type.String({ minLength: 1, maxLength: 256 }), { minItems: 1, maxItems: 64 }),
  },
  { additionalProperties: false },
);

export const TargetSchema = Type.Union([LocalTarget, ExplicitTarget, CapabilityTarget]);
export type Target = Static<typeof TargetSchema>;
