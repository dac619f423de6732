/** `GET /v1/discovery` and the registration of listen-mode nodes the gateway dials. */
import { type Static, Type } from '@sinclair/typebox';
import { DiscoveryViewNodeSchema } from '../../protocol/discovery.js';
import { NodeId } from '../../protocol/frames.js';
import type { GatewayDiscovery } from '../discovery.js';
import { checker, type Router, reply } from './http.js';

const PeerStatusSchema = Type.Object({
  endpoint: Type.String(),
  node_id: Type.Union([Type.String(), Type.Null()]),
  source: Type.Union([Type.Literal('static'), Type.Literal('registered')]),
  connected: Type.Boolean(),
  failures: Type.Integer(),
  last_error: Type.Union([Type.String(), Type.Null()]),
  last_connected_at: Type.Union([Type.String(), Type.Null()]),
});

const DiscoveryResponse = Type.Object({
  ok: Type.Literal(true),
  nodes: Type.Array(DiscoveryViewNodeSchema, { description: 'Nodes heard by multicast; discovered is not trusted' }),
  dropped: Type.Record(Type.String(), Type.Integer(), { description: 'Advertisements dropped, by reason (signature, stale, replay, …)' }),
  multicast: Type.Object({ enabled: Type.Boolean() }, { additionalProperties: true }),
  mdns: Type.Object({ enabled: Type.Boolean() }, { additionalProperties: true }),
  peers: Type.Array(PeerStatusSchema, { description: 'Listen-mode nodes this gateway dials' }),
});

const RegisterBody = Type.Object(
  {
    node_id: NodeId,
    /** `host:port` (or `https://host:port`) of the node's `--listen` address. */
    endpoint: Type.String({ minLength: 1, maxLength: 300 }),
    capabilities: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 256 }), { maxItems: 4096 })),
  },
  { additionalProperties: false },
);
type RegisterBody = Static<typeof RegisterBody>;

const Registered = Type.Object({
  ok: Type.Literal(true),
  node_id: Type.String(),
  endpoint: Type.String(),
  capabilities: Type.Array(Type.String()),
  created_at: Type.String(),
});

export function registerDiscoveryRoutes(router: Router, discovery: GatewayDiscovery): void {
  router.add({
    method: 'GET',
    scope: 'read',
    path: '/v1/discovery',
    summary: 'Nodes heard by multicast (with paired/trusted), dropped advertisements, the discovery methods on, and the peers dialed',
    response: DiscoveryResponse,
    handler: () => ({ ok: true, ...discovery.state() }),
  });

  router.add({
    method: 'POST',
    scope: 'admin',
    path: '/v1/nodes/register',
    summary: 'Register a listen-mode node (fieldmesh node --listen) for the gateway to dial; kept across restarts',
    body: RegisterBody,
    response: Registered,
    successStatus: 201,
    handler: async ({ body }) => {
      const req = await body<RegisterBody>(checker(RegisterBody));
      return reply(201, { ok: true, ...(await discovery.register(req)) });
    },
  });

  router.add({
    method: 'DELETE',
    scope: 'admin',
    path: '/v1/nodes/register/{node_id}',
    summary: 'Remove a registration: the gateway stops dialing the node and closes its connection',
    response: Registered,
    handler: async ({ params }) => ({ ok: true, ...(await discovery.unregister(params.node_id!)) }),
  });
}
