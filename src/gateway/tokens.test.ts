// API tokens against a real SQLite store and a real data dir in a temporary directory.
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { silentLogger } from '../core/logger.js';
import { openSqliteStore, type SqliteStore } from '../store/sqlite/index.js';
import { ADMIN_TOKEN_FILE, ApiTokens } from './tokens.js';

/** The error code `fn` fails with, sync or async. */
async function codeOf(fn: () => unknown): Promise<string | undefined> {
  try {
    await fn();
    return undefined;
  } catch (err) {
    return (err as { code?: string }).code;
  }
}

describe('ApiTokens', () => {
  let dir: string;
  let store: SqliteStore;
  let tokens: ApiTokens;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'fm-tokens-'));
    store = await openSqliteStore(join(dir, 'fieldmesh.db'));
    tokens = new ApiTokens(store, silentLogger);
  });

  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('tokens - the admin token is written 0600 at first start and reused unchanged afterwards', async () => {
    const file = await tokens.ensureAdminToken(dir);
    expect(file).toBe(join(dir, ADMIN_TOKEN_FILE));
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const token = readFileSync(file, 'utf8').trim();
    expect(await tokens.authenticate(`Bearer ${token}`)).toMatchObject({ scope: 'admin' });

    await tokens.ensureAdminToken(dir);
    expect(readFileSync(file, 'utf8').trim()).toBe(token);
    const stored = await store.listApiTokens();
    expect(stored).toHaveLength(1);
    // Only the hash is kept.
    expect(JSON.stringify(stored)).not.toContain(token.split('.')[1]);
  });

  it('tokens - a store that lost the admin token takes it back from the file; a revoked one stays revoked', async () => {
    const file = await tokens.ensureAdminToken(dir);
    const token = readFileSync(file, 'utf8').trim();
    await store.close();
    rmSync(join(dir, 'fieldmesh.db'));
    store = await openSqliteStore(join(dir, 'fieldmesh.db'));
    tokens = new ApiTokens(store, silentLogger);
    await tokens.ensureAdminToken(dir);
    expect(await tokens.authenticate(`Bearer ${token}`)).toMatchObject({ scope: 'admin' });

    const id = token.split('.')[0]!;
    await tokens.revoke(id);
    await tokens.ensureAdminToken(dir);
    expect(await codeOf(() => tokens.authenticate(`Bearer ${token}`))).toBe('FM_ERR_UNAUTHORIZED');
  });

  it('tokens - a loose admin token file is set back to 0600; a damaged one stops the start with a clear error', async () => {
    const file = await tokens.ensureAdminToken(dir);
    chmodSync(file, 0o644);
    await tokens.ensureAdminToken(dir);
    expect(statSync(file).mode & 0o777).toBe(0o600);

    const token = readFileSync(file, 'utf8').trim();
    writeFileSync(file, `${token.slice(0, -1)}${token.endsWith('A') ? 'B' : 'A'}\n`);
    await expect(tokens.ensureAdminToken(dir)).rejects.toThrow(/does not match the stored token/);
    writeFileSync(file, 'not a token\n');
    await expect(tokens.ensureAdminToken(dir)).rejects.toThrow(/does not hold an API token/);
  });

  it('tokens - missing, malformed, unknown, wrong and revoked tokens are FM_ERR_UNAUTHORIZED', async () => {
    const { record, token } = await tokens.create('submit', 'ci');
    expect(token.startsWith(`${record.token_id}.`)).toBe(true);
    expect(await tokens.authenticate(`Bearer ${token}`)).toEqual({ token_id: record.token_id, scope: 'submit', name: 'ci' });
    expect(await tokens.authenticate(`bearer  ${token}`)).toMatchObject({ token_id: record.token_id });

    const secret = token.split('.')[1]!;
    const wrongSecret = `${record.token_id}.${secret.startsWith('A') ? 'B' : 'A'}${secret.slice(1)}`;
    const unknownId = `tok_0000000000000000.${secret}`;
    for (const header of [undefined, '', `Basic ${token}`, 'Bearer', `Bearer ${token} extra`, 'Bearer abc', wrongSecret, unknownId]) {
      const h = header === wrongSecret || header === unknownId ? `Bearer ${header}` : header;
      expect(await codeOf(() => tokens.authenticate(h)), String(h)).toBe('FM_ERR_UNAUTHORIZED');
    }

    await tokens.revoke(record.token_id);
    expect(await codeOf(() => tokens.authenticate(`Bearer ${token}`))).toBe('FM_ERR_UNAUTHORIZED');
    expect(await codeOf(() => tokens.revoke('tok_missing'))).toBe('FM_ERR_TOKEN_NOT_FOUND');
  });

  it('tokens - a token checked once is answered from the cache without reading the store, and its use is recorded', async () => {
    const { record, token } = await tokens.create('read', null);
    await tokens.authenticate(`Bearer ${token}`);
    expect(tokens.authenticate(`Bearer ${token}`)).not.toBeInstanceOf(Promise);
    await vi.waitFor(async () => expect((await store.getApiToken(record.token_id))?.last_used_at).toEqual(expect.any(String)));
  });
});
