import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FieldmeshApiError, FieldmeshClient } from '../src/client/index.js';
import { Cluster, http, runCli } from './harness.js';

const convert = {
  tool_name: 'unit_convert',
  tool_args: { value: 10, from_unit: 'miles', to_unit: 'km' },
  target: { kind: 'explicit' as const, node_id: 'tok:node' },
};

/** The API error a call fails with. */
async function apiError(call: Promise<unknown>): Promise<FieldmeshApiError> {
  const err = await call.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(FieldmeshApiError);
  return err as FieldmeshApiError;
}

describe('tokens', () => {
  const c = new Cluster();
  let api: string;
  const clientWith = (token: string) => new FieldmeshClient({ baseUrl: api, token });

  beforeAll(async () => {
    await c.startGateway();
    api = c.gateway.api;
    await c.startNode({ id: 'tok:node' });
  }, 60_000);
  afterAll(() => c.stop());

  it('tokens - a call without a token, with a malformed header or with an unknown or wrong token is 401 FM_ERR_UNAUTHORIZED', async () => {
    const admin = c.gateway.token;
    const wrongSecret = `${admin.slice(0, -1)}${admin.endsWith('A') ? 'B' : 'A'}`;
    const unknown = `tok_0000000000000000.${admin.split('.')[1]}`;
    const ran = async () => (await http(api, 'GET', '/v1/metrics/summary?tool=unit_convert')).json.total_invocations as number;
    const ranBefore = await ran();
    const cases: [string, Record<string, string>][] = [
      ['none', {}],
      ['basic', { authorization: `Basic ${Buffer.from('admin:admin').toString('base64')}` }],
      ['empty bearer', { authorization: 'Bearer ' }],
      ['garbage', { authorization: 'Bearer not-a-token' }],
      ['unknown id', { authorization: `Bearer ${unknown}` }],
      ['wrong secret', { authorization: `Bearer ${wrongSecret}` }],
    ];
    for (const [what, headers] of cases) {
      for (const [method, path, body] of [
        ['GET', '/v1/nodes', undefined],
        ['GET', '/metrics', undefined],
        ['POST', '/v1/tool_call', JSON.stringify(convert)],
        ['GET', '/v1/tokens', undefined],
      ] as const) {
        const res = await http(api, method, path, body, headers, null);
        expect(res.status, `${what}: ${method} ${path}`).toBe(401);
        expect(res.json).toMatchObject({ ok: false, error: { code: 'FM_ERR_UNAUTHORIZED' } });
        expect(res.headers['www-authenticate']).toMatch(/^Bearer realm="fieldmesh"/);
        expect(res.text).not.toContain(admin);
      }
    }
    // None of the refused calls ran.
    expect(await ran()).toBe(ranBefore);
  });

  it('tokens - /healthz and /openapi.json need no token', async () => {
    expect((await http(api, 'GET', '/healthz', undefined, {}, null)).json).toMatchObject({ ok: true, status: 'ok' });
    expect((await http(api, 'GET', '/openapi.json', undefined, {}, null)).json).toMatchObject({ openapi: '3.1.0' });
  });

  it('tokens - read reads but cannot submit, submit runs calls but cannot manage tokens, admin can do both (403 names the scope)', async () => {
    const admin = c.gateway.client;
    const read = await admin.createToken('read', 'dashboard');
    const submit = await admin.createToken('submit');
    expect(read).toMatchObject({ ok: true, scope: 'read', name: 'dashboard', token_id: expect.stringMatching(/^tok_/) });
    expect(submit).toMatchObject({ scope: 'submit', name: null });
    expect(read.token.startsWith(`${read.token_id}.`)).toBe(true);

    const reader = clientWith(read.token);
    expect((await reader.listNodes()).map((n) => n.node_id)).toEqual(['tok:node']);
    const denied = await apiError(reader.toolCall(convert));
    expect(denied).toMatchObject({ status: 403, code: 'FM_ERR_FORBIDDEN' });
    expect(denied.message).toContain('"submit"');
    const raw = await http(api, 'POST', '/v1/tasks', JSON.stringify(convert), {}, read.token);
    expect(raw.status).toBe(403);
    expect(raw.headers['www-authenticate']).toContain('error="insufficient_scope"');
    expect(raw.json.error.details).toEqual({ needed_scope: 'submit', token_scope: 'read' });

    const submitter = clientWith(submit.token);
    expect(await submitter.toolCall(convert)).toMatchObject({ ok: true, node_id: 'tok:node' });
    expect((await submitter.listNodes()).length).toBe(1);
    for (const call of [submitter.createToken('admin'), submitter.listTokens(), submitter.revokeToken(read.token_id)]) {
      const err = await apiError(call);
      expect(err).toMatchObject({ status: 403, code: 'FM_ERR_FORBIDDEN' });
      expect(err.message).toContain('"admin"');
    }
    // The refused revocation did nothing.
    expect((await reader.listNodes()).length).toBe(1);

    expect(await admin.toolCall(convert)).toMatchObject({ ok: true });
    const minted = await admin.createToken('admin', 'second admin');
    expect((await clientWith(minted.token).listTokens()).map((t) => t.token_id)).toContain(read.token_id);

    const invalid = await http(api, 'POST', '/v1/tokens', JSON.stringify({ scope: 'root' }));
    expect(invalid).toMatchObject({ status: 400, json: { error: { code: 'FM_ERR_INVALID_REQUEST' } } });
  });

  it('tokens - a revoked token is refused at its next call; lists never show secrets or hashes', async () => {
    const admin = c.gateway.client;
    const t = await admin.createToken('submit', 'to revoke');
    const user = clientWith(t.token);
    expect(await user.toolCall(convert)).toMatchObject({ ok: true });

    const revoked = await admin.revokeToken(t.token_id);
    expect(revoked).toMatchObject({ ok: true, token_id: t.token_id, revoked_at: expect.any(String) });
    const err = await apiError(user.toolCall(convert));
    expect(err).toMatchObject({ status: 401, code: 'FM_ERR_UNAUTHORIZED' });
    expect((await apiError(user.listNodes())).status).toBe(401);

    const res = await http(api, 'GET', '/v1/tokens');
    expect(res.status).toBe(200);
    const listed = res.json.tokens.find((x: { token_id: string }) => x.token_id === t.token_id);
    expect(Object.keys(listed).sort()).toEqual(['created_at', 'last_used_at', 'name', 'revoked_at', 'scope', 'token_id']);
    expect(listed).toMatchObject({ scope: 'submit', name: 'to revoke', revoked_at: revoked.revoked_at, last_used_at: expect.any(String) });
    expect(res.text).not.toContain(t.token.split('.')[1]);
    expect(res.text).not.toContain(c.gateway.token.split('.')[1]);

    expect(await apiError(admin.revokeToken('tok_nope'))).toMatchObject({ status: 404, code: 'FM_ERR_TOKEN_NOT_FOUND' });
  });

  it('tokens - the OpenAPI document declares the bearer scheme and the scope of each route', async () => {
    const doc = (await http(api, 'GET', '/openapi.json', undefined, {}, null)).json;
    expect(doc.components.securitySchemes.bearer).toMatchObject({ type: 'http', scheme: 'bearer' });
    expect(doc.security).toEqual([{ bearer: [] }]);
    expect(doc.paths['/healthz'].get.security).toEqual([]);
    expect(doc.paths['/openapi.json'].get.security).toEqual([]);
    expect(doc.paths['/v1/nodes'].get).toMatchObject({ 'x-fieldmesh-scope': 'read', security: [{ bearer: [] }] });
    expect(doc.paths['/v1/tool_call'].post['x-fieldmesh-scope']).toBe('submit');
    expect(doc.paths['/v1/tokens'].post).toMatchObject({ 'x-fieldmesh-scope': 'admin' });
    expect(doc.paths['/v1/tokens'].post.responses['201']).toBeDefined();
    expect(doc.paths['/v1/tool_call'].post.responses['401']).toBeDefined();
    expect(doc.paths['/v1/tool_call'].post.responses['403']).toBeDefined();
  });

  it('tokens - the CLI takes --token, else FIELDMESH_TOKEN, else the admin token in --data-dir, and says how when it has none', async () => {
    const empty = mkdtempSync(join(tmpdir(), 'fm-no-token-'));
    try {
      const none = await runCli(['nodes', 'list', '--api', api, '--data-dir', empty], 30_000, { FIELDMESH_TOKEN: '' });
      expect(none.code).toBe(1);
      expect(none.stderr).toContain('no API token');
      expect(none.stderr).toContain('--token');
      expect(none.stderr).toContain('FIELDMESH_TOKEN');
      expect(none.stderr).toContain(join(empty, 'admin-token'));

      const fromDir = await runCli(['tokens', 'create', '--scope', 'read', '--name', 'cli', '--api', api, '--data-dir', c.gateway.dataDir]);
      expect(fromDir.code, fromDir.stderr).toBe(0);
      const readToken = fromDir.stdout.trim();
      expect(readToken).toMatch(/^tok_[0-9a-z]+\.[A-Za-z0-9_-]{43}$/);

      const env = { FIELDMESH_TOKEN: readToken };
      const listed = await runCli(['nodes', 'list', '--api', api, '--data-dir', empty], 30_000, env);
      expect(listed.code, listed.stderr).toBe(0);
      expect(listed.stdout).toContain('tok:node');
      const send = await runCli(['task', 'send', 'sys_info', '--api', api, '--data-dir', empty], 30_000, env);
      expect(send.code).toBe(1);
      expect(send.stderr).toMatch(/error FM_ERR_FORBIDDEN: .*"submit"/);

      // --token wins over the environment.
      const flag = await runCli(['nodes', 'list', '--api', api, '--token', c.gateway.token], 30_000, { FIELDMESH_TOKEN: 'tok_x.bad' });
      expect(flag.code, flag.stderr).toBe(0);
      const bad = await runCli(['nodes', 'list', '--api', api, '--token', 'tok_x.bad', '--data-dir', c.gateway.dataDir]);
      expect(bad.code).toBe(1);
      expect(bad.stderr).toContain('FM_ERR_UNAUTHORIZED');

      const list = await runCli(['tokens', 'list', '--api', api, '--data-dir', c.gateway.dataDir]);
      expect(list.code, list.stderr).toBe(0);
      const id = readToken.split('.')[0]!;
      expect(list.stdout).toMatch(new RegExp(`^${id}\\s+cli\\s+read\\s`, 'm'));
      expect(list.stdout).not.toContain(readToken.split('.')[1]);

      const revoke = await runCli(['tokens', 'revoke', id, '--api', api, '--data-dir', c.gateway.dataDir]);
      expect(revoke.code, revoke.stderr).toBe(0);
      expect(revoke.stdout).toContain(`token ${id} revoked`);
      const after = await runCli(['nodes', 'list', '--api', api, '--data-dir', empty], 30_000, env);
      expect(after.code).toBe(1);
      expect(after.stderr).toContain('FM_ERR_UNAUTHORIZED');

      const badScope = await runCli(['tokens', 'create', '--scope', 'root', '--api', api, '--data-dir', c.gateway.dataDir]);
      expect(badScope.code).not.toBe(0);
      expect(badScope.stderr).toContain('read, submit, admin');
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });

  it('tokens - the admin token file is 0600 and survives a restart unchanged; issued and revoked tokens keep their state', async () => {
    const file = join(c.gateway.dataDir, 'admin-token');
    const before = readFileSync(file, 'utf8');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const kept = await c.gateway.client.createToken('read', 'kept');
    const gone = await c.gateway.client.createToken('read', 'gone');
    await c.gateway.client.revokeToken(gone.token_id);

    await c.restartGateway(true);
    expect(readFileSync(file, 'utf8')).toBe(before);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(c.gateway.token).toBe(before.trim());
    expect((await c.gateway.client.listNodes()).length).toBe(1);
    expect((await clientWith(kept.token).listNodes()).length).toBe(1);
    expect((await apiError(clientWith(gone.token).listNodes())).status).toBe(401);
  });
});

describe('api tls', () => {
  const clusters: Cluster[] = [];
  const cluster = () => {
    const c = new Cluster();
    clusters.push(c);
    return c;
  };
  afterAll(() => Promise.all(clusters.map((c) => c.stop())));

  it('api tls - a gateway asked to serve the API on 127.0.0.2 without TLS refuses to start and says what to pass', async () => {
    const c = cluster();
    const err = await c.startGateway([], { api: '127.0.0.2:0' }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err?.message).toContain('FM_ERR_INVALID_OPTION');
    expect(err?.message).toContain('--api-tls');
    expect(err?.message).toContain('--insecure-api');
  });

  it('api tls - with --api-tls the API is https with a certificate from the gateway CA, for that address', async () => {
    const c = cluster();
    const g = await c.startGateway(['--api-tls'], { api: '127.0.0.2:0' });
    expect(g.api).toMatch(/^https:\/\/127\.0\.0\.2:\d+$/);
    // The harness client checks the certificate against the gateway CA and the host 127.0.0.2.
    expect(await g.client.listNodes()).toEqual([]);
    expect((await http(g.api, 'GET', '/v1/nodes', undefined, {}, null)).status).toBe(401);

    const untrusting = new FieldmeshClient({ baseUrl: g.api, token: g.token });
    await expect(untrusting.health()).rejects.toMatchObject({ code: 'FM_ERR_UNAVAILABLE', message: expect.stringContaining('gateway CA') });
    const plain = new FieldmeshClient({ baseUrl: g.api.replace('https:', 'http:'), token: g.token });
    await expect(plain.health()).rejects.toMatchObject({ code: 'FM_ERR_UNAVAILABLE' });

    // The CLI trusts the CA in --data-dir, or the one given with --ca.
    const viaDir = await runCli(['nodes', 'list', '--json', '--api', g.api, '--data-dir', g.dataDir]);
    expect(viaDir.code, viaDir.stderr).toBe(0);
    expect(JSON.parse(viaDir.stdout)).toEqual({ nodes: [] });
    const caFile = join(c.root, 'ca.pem');
    writeFileSync(caFile, g.ca);
    const viaCa = await runCli(['tokens', 'list', '--api', g.api, '--ca', caFile, '--token', g.token]);
    expect(viaCa.code, viaCa.stderr).toBe(0);
    const noCa = await runCli(['tokens', 'list', '--api', g.api, '--token', g.token, '--data-dir', join(c.root, 'elsewhere')]);
    expect(noCa.code).toBe(1);
    expect(noCa.stderr).toContain('FM_ERR_UNAVAILABLE');
  });

  it('api tls - --api-tls also serves https on loopback, and a later start on a new address gets a certificate for it', async () => {
    const c = cluster();
    const g = await c.startGateway(['--api-tls']);
    expect(g.api).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect((await g.client.health()).ok).toBe(true);
    await g.proc.stop();
    // Same data dir and CA; the first certificate did not name 127.0.0.2.
    const moved = await c.startGateway(['--api-tls'], { api: '127.0.0.2:0' });
    expect(moved.ca).toBe(g.ca);
    expect(await moved.client.listNodes()).toEqual([]);
  });

  it('api tls - --insecure-api serves plain HTTP on 127.0.0.2, still behind tokens', async () => {
    const g = await cluster().startGateway(['--insecure-api'], { api: '127.0.0.2:0' });
    expect(g.api).toMatch(/^http:\/\/127\.0\.0\.2:\d+$/);
    expect(await g.client.listNodes()).toEqual([]);
    expect((await http(g.api, 'GET', '/v1/nodes', undefined, {}, null)).status).toBe(401);
  });
});
