/** The state sync routes: a node's named state documents, desired written here, reported by the node. */
import { StateDocList, StateDocView, StatePutBody } from '../../protocol/api.js';
import type { StateSync } from '../state-sync.js';
import { checker, type Router } from './http.js';

export function registerStateRoutes(router: Router, state: StateSync): void {
  router.add({
    method: 'GET',
    scope: 'read',
    path: '/v1/nodes/{node_id}/state',
    summary: "A node's state documents with the versions of both sides",
    response: StateDocList,
    handler: async ({ params }) => ({ ok: true, node_id: params.node_id!, docs: await state.list(params.node_id!) }),
  });

  router.add({
    method: 'GET',
    scope: 'read',
    path: '/v1/nodes/{node_id}/state/{doc}',
    summary: 'One state document: desired (written at the gateway) and reported (held by the node), each with its version',
    response: StateDocView,
    handler: ({ params }) => state.get(params.node_id!, params.doc!),
  });

  router.add({
    method: 'PUT',
    scope: 'submit',
    path: '/v1/nodes/{node_id}/state/{doc}',
    summary:
      'Write the desired side of a state document; sent to the node at once, or when it reconnects. With `version`, a stale write is refused (409 FM_ERR_VERSION_CONFLICT with the current version)',
    body: StatePutBody,
    response: StateDocView,
    handler: async ({ params, body }) => {
      const req = await body<StatePutBody>(checker(StatePutBody));
      return state.writeDesired(params.node_id!, params.doc!, req);
    },
  });
}
