/** The deployable function routes: deploy to the nodes of a target, list, undeploy. */
import { FunctionDeployBody, FunctionDeployResult, FunctionList, FunctionUndeployResult } from '../../protocol/api.js';
import type { FunctionService } from '../functions.js';
import { checker, type Router } from './http.js';

const nodeQuery = { node_id: { type: 'string', description: 'Only this node' } };

export function registerFunctionRoutes(router: Router, functions: FunctionService): void {
  router.add({
    method: 'POST',
    scope: 'admin',
    path: '/v1/functions',
    summary:
      'Deploy a function (one bundled ES module whose default export is the handler) to every ONLINE node in the target that allows deploys; the gateway signs it. Answers how many nodes took it and what each one did; nodes offline now get it when they reconnect',
    body: FunctionDeployBody,
    response: FunctionDeployResult,
    handler: async ({ body }) => functions.deploy(await body<FunctionDeployBody>(checker(FunctionDeployBody))),
  });

  router.add({
    method: 'GET',
    scope: 'read',
    path: '/v1/functions',
    summary: 'Deployed functions with each node outcome (environment variable names only, never their values)',
    query: nodeQuery,
    response: FunctionList,
    handler: async ({ query }) => ({ ok: true, functions: await functions.list(query.get('node_id') ?? undefined) }),
  });

  router.add({
    method: 'DELETE',
    scope: 'admin',
    path: '/v1/functions/{name}',
    summary:
      'Undeploy a function from every node (then it is forgotten), or with `node_id` from that node only; nodes offline now remove it when they reconnect',
    query: nodeQuery,
    response: FunctionUndeployResult,
    handler: ({ params, query }) => functions.undeploy(params.name!, query.get('node_id') ?? undefined),
  });
}
