/** Builds the OpenAPI 3.1 document from the same TypeBox schemas the routes check with. */
import type { TSchema } from '@sinclair/typebox';
import { VERSION } from '../../core/version.js';
import { ErrorResponse } from '../../protocol/api.js';
import type { RouteSpec } from './http.js';

/** TypeBox schemas are JSON Schema plus symbol keys; JSON round-trip leaves the plain schema. */
const plain = (schema: TSchema): unknown => JSON.parse(JSON.stringify(schema));

export function buildOpenApi(routes: readonly RouteSpec[]): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const params: unknown[] = [...r.path.matchAll(/\{([a-z_]+)\}/g)].map((m) => ({
      name: m[1],
      in: 'path',
      required: true,
      schema: { type: 'string' },
    }));
    for (const [name, q] of Object.entries(r.query ?? {})) {
      params.push({ name, in: 'query', required: false, description: q.description, schema: { type: q.type } });
    }
    const op: Record<string, unknown> = {
      summary: r.summary,
      responses: {
        default: { description: 'Error', content: { 'application/json': { schema: plain(ErrorResponse) } } },
        ...(r.response
          ? {
              [r.successStatus ?? (r.method === 'POST' && r.path === '/v1/tasks' ? 202 : 200)]: {
                description: 'Success',
                content: { 'application/json': { schema: plain(r.response) } },
              },
            }
          : { '200': { description: 'Success' } }),
      },
    };
    if (r.scope === 'public') op.security = [];
    else {
      // OpenAPI lists scopes only for OAuth2; the token scope a route needs is an extension field.
      op['x-fieldmesh-scope'] = r.scope;
      op.security = [{ bearer: [] }];
      const responses = op.responses as Record<string, unknown>;
      responses['401'] = { description: 'FM_ERR_UNAUTHORIZED: no, unknown or revoked API token' };
      responses['403'] = { description: `FM_ERR_FORBIDDEN: the token's scope is narrower than "${r.scope}"` };
    }
    if (params.length > 0) op.parameters = params;
    if (r.body) op.requestBody = { required: true, content: { 'application/json': { schema: plain(r.body) } } };
    paths[r.path] ??= {};
    paths[r.path]![r.method.toLowerCase()] = op;
  }
  return {
    openapi: '3.1.0',
    info: { title: 'fieldmesh gateway API', version: VERSION, description: 'Run tool calls and workflows on a fleet of edge nodes.' },
    paths,
    components: {
      securitySchemes: {
        bearer: {
          type: 'http',
          scheme: 'bearer',
          description:
            'An API token (`fieldmesh tokens create`); scopes read < submit < admin. The admin token is in <data-dir>/admin-token.',
        },
      },
    },
    security: [{ bearer: [] }],
  };
}
