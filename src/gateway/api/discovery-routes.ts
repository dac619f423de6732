/** `GET /v1/discovery` and the registration of listen-mode nodes the gateway dials. */
import { DiscoveryResponse, RegisterBody, Registered } from '../../protocol/discovery-api.js';
import type { GatewayDiscovery } from '../discovery.js';
import { checker, type Router, reply } from './http.js';

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
