/** Bodies of `GET /v1/discovery` and `POST /v1/nodes/register`, shared by the gateway routes and the client. */
import { type Static, Type } from '@sinclair/typebox';
import { type DiscoveryViewNode, DiscoveryViewNodeSchema } from './discovery.js';
import { NodeId } from './frames.js';

export const PeerStatusSchema = Type.Object({
  endpoint: Type.String(),
  node_id: Type.Union([Type.String(), Type.Null()]),
  source: Type.Union([Type.Literal('static'), Type.Literal('registered')]),
  connected: Type.Boolean(),
  failures: Type.Integer(),
  last_error: Type.Union([Type.String(), Type.Null()]),
  last_connected_at: Type.Union([Type.String(), Type.Null()]),
});

export const DiscoveryResponse = Type.Object({
  ok: Type.Literal(true),
  nodes: Type.Array(DiscoveryViewNodeSchema, { description: 'Nodes heard by multicast; discovered is not trusted' }),
  dropped: Type.Record(Type.String(), Type.Integer(), { description: 'Advertisements dropped, by reason (signature, stale, replay, …)' }),
  multicast: Type.Object({ enabled: Type.Boolean() }, { additionalProperties: true }),
  mdns: Type.Object({ enabled: Type.Boolean() }, { additionalProperties: true }),
  peers: Type.Array(PeerStatusSchema, { description: 'Listen-mode nodes this gateway dials' }),
});

export const RegisterBody = Type.Object(
  {
    node_id: NodeId,
    /** `host:port` (or `https://host:port`) of the node's `--listen` address. */
    endpoint: Type.String({ minLength: 1, maxLength: 300 }),
    capabilities: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 256 }), { maxItems: 4096 })),
  },
  { additionalProperties: false },
);
export type RegisterBody = Static<typeof RegisterBody>;

export const Registered = Type.Object({
  ok: Type.Literal(true),
  node_id: Type.String(),
  endpoint: Type.String(),
  capabilities: Type.Array(Type.String()),
  created_at: Type.String(),
});

export type PeerStatusView = Static<typeof PeerStatusSchema>;
export type DiscoveryResponse = Static<typeof DiscoveryResponse> & { nodes: DiscoveryViewNode[] };
export type Registered = Static<typeof Registered>;
