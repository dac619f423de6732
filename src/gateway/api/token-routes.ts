/** The admin routes that issue, list and revoke API tokens. */
import type { TokenCreateBody as CreateBody, TokenView as View } from '../../protocol/api.js';
import { TokenCreateBody, TokenCreated, TokenList, TokenRevoked } from '../../protocol/api.js';
import type { ApiTokenRecord } from '../../store/types.js';
import type { ApiTokens } from '../tokens.js';
import { checker, type Router, reply } from './http.js';

/** A token as the API shows it: everything but its hash. */
function tokenView(record: ApiTokenRecord): View {
  const { hash: _hash, ...view } = record;
  return view;
}

export function registerTokenRoutes(router: Router, tokens: ApiTokens): void {
  router.add({
    method: 'POST',
    scope: 'admin',
    path: '/v1/tokens',
    summary: 'Issue an API token; the answer is the only time its secret is shown',
    body: TokenCreateBody,
    response: TokenCreated,
    successStatus: 201,
    handler: async ({ body }) => {
      const req = await body<CreateBody>(checker(TokenCreateBody));
      const { record, token } = await tokens.create(req.scope, req.name ?? null);
      return reply(201, {
        ok: true,
        token_id: record.token_id,
        token,
        scope: record.scope,
        name: record.name,
        created_at: record.created_at,
      });
    },
  });

  router.add({
    method: 'GET',
    scope: 'admin',
    path: '/v1/tokens',
    summary: 'API tokens, oldest first, revoked ones too (never their secrets)',
    response: TokenList,
    handler: async () => ({ ok: true, tokens: (await tokens.list()).map(tokenView) }),
  });

  router.add({
    method: 'POST',
    scope: 'admin',
    path: '/v1/tokens/{token_id}/revoke',
    summary: 'Revoke an API token: its next request is refused with 401',
    response: TokenRevoked,
    handler: async ({ params }) => ({ ok: true, ...tokenView(await tokens.revoke(params.token_id!)) }),
  });
}
