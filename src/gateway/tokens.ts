/**
 * API tokens. A token is `<token_id>.<secret>` (the secret is 32 random bytes,
 * base64url); the store keeps only the SHA-256 of the whole token, compared in
 * constant time. The admin token is created at first start and written to
 * `<data-dir>/admin-token` (0600) for the CLI on the same machine. Verified
 * tokens are cached for a few seconds so the hot path does not read the store
 * per request; a revocation made through this gateway takes effect at once,
 * one made elsewhere (another gateway on the same store) within the cache time.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FieldmeshError } from '../core/errors.js';
import { newId } from '../core/ids.js';
import type { Logger } from '../core/logger.js';
import type { ApiTokenRecord, Store, TokenScope } from '../store/types.js';
import type { Caller } from './api/http.js';

/** The admin token's file name inside the gateway data dir. */
export const ADMIN_TOKEN_FILE = 'admin-token';

const TOKEN_PATTERN = /^(tok_[0-9a-z]{1,64})\.([A-Za-z0-9_-]{43})$/;
/** How long a verified token is trusted without reading the store again. */
const CACHE_MS = 5_000;
/** `last_used_at` is written at most this often per token, to keep writes off the hot path. */
const TOUCH_MS = 60_000;

interface Cached {
  record: ApiTokenRecord;
  hash: Buffer;
  until: number;
}

const sha256 = (token: string): Buffer => createHash('sha256').update(token).digest();

const unauthorized = (message: string, reason: 'missing' | 'invalid') =>
  new FieldmeshError('FM_ERR_UNAUTHORIZED', message, { details: { reason } });

export class ApiTokens {
  readonly #store: Store;
  readonly #logger: Logger;
  readonly #cache = new Map<string, Cached>();
  readonly #touched = new Map<string, number>();

  constructor(store: Store, logger: Logger) {
    this.#store = store;
    this.#logger = logger;
  }

  /** Issues a new token; its secret is returned here and never again. */
  async create(scope: TokenScope, name: string | null): Promise<{ record: ApiTokenRecord; token: string }> {
    const token_id = newId('tok');
    const token = `${token_id}.${randomBytes(32).toString('base64url')}`;
    const record: ApiTokenRecord = {
      token_id,
      name,
      scope,
      hash: sha256(token).toString('hex'),
      created_at: new Date().toISOString(),
      last_used_at: null,
      revoked_at: null,
    };
    await this.#store.insertApiToken(record);
    return { record, token };
  }

  list(): Promise<ApiTokenRecord[]> {
    return this.#store.listApiTokens();
  }

  async revoke(tokenId: string): Promise<ApiTokenRecord> {
    const record = await this.#store.revokeApiToken(tokenId, new Date().toISOString());
    this.#cache.delete(tokenId);
    return record;
  }

  /**
   * Makes sure `<dataDir>/admin-token` holds a working admin token: creates one
   * at first start, and re-registers the file's token if the store lost it.
   * A revoked admin token stays revoked; delete the file and restart for a new one.
   */
  async ensureAdminToken(dataDir: string): Promise<string> {
    const file = join(dataDir, ADMIN_TOKEN_FILE);
    if (!existsSync(file)) {
      const { token } = await this.create('admin', 'admin (data dir)');
      writeFileSync(file, `${token}\n`, { mode: 0o600, flag: 'wx' });
      this.#logger.info('admin token written', { file });
      return file;
    }
    if ((statSync(file).mode & 0o077) !== 0) {
      chmodSync(file, 0o600);
      this.#logger.warn('admin token file was readable by others; set it to 0600', { file });
    }
    const token = readFileSync(file, 'utf8').trim();
    const m = TOKEN_PATTERN.exec(token);
    if (!m) {
      throw new FieldmeshError('FM_ERR_INVALID_OPTION', `${file} does not hold an API token; delete it and restart to create a new one`, {
        details: { option: 'gateway.dataDir', value: dataDir },
      });
    }
    const existing = await this.#store.getApiToken(m[1]!);
    if (!existing) {
      await this.#store.insertApiToken({
        token_id: m[1]!,
        name: 'admin (data dir)',
        scope: 'admin',
        hash: sha256(token).toString('hex'),
        created_at: new Date().toISOString(),
        last_used_at: null,
        revoked_at: null,
      });
    } else if (!timingSafeEqual(sha256(token), Buffer.from(existing.hash, 'hex'))) {
      throw new FieldmeshError(
        'FM_ERR_INVALID_OPTION',
        `${file} does not match the stored token ${existing.token_id}; delete it and restart to create a new one`,
        { details: { option: 'gateway.dataDir', value: dataDir } },
      );
    }
    return file;
  }

  /**
   * The caller behind an `Authorization` header, or FM_ERR_UNAUTHORIZED. Answers
   * synchronously when the token is cached, so the hot path awaits nothing.
   */
  authenticate(authorization: string | undefined): Caller | Promise<Caller> {
    if (authorization === undefined || authorization.trim() === '') {
      throw unauthorized('This call needs an API token: send "Authorization: Bearer <token>"', 'missing');
    }
    const bearer = /^Bearer +(\S+)\s*$/i.exec(authorization);
    if (!bearer) throw unauthorized('The Authorization header is not "Bearer <token>"', 'invalid');
    const token = bearer[1]!;
    const m = TOKEN_PATTERN.exec(token);
    if (!m) throw unauthorized('The API token is not valid', 'invalid');
    const id = m[1]!;
    const cached = this.#cache.get(id);
    if (cached && cached.until > Date.now()) return this.#check(cached, token);
    return this.#store.getApiToken(id).then((record) => {
      if (!record) throw unauthorized('The API token is not valid', 'invalid');
      const entry: Cached = { record, hash: Buffer.from(record.hash, 'hex'), until: Date.now() + CACHE_MS };
      this.#cache.set(id, entry);
      return this.#check(entry, token);
    });
  }

  #check(entry: Cached, token: string): Caller {
    const given = sha256(token);
    if (given.length !== entry.hash.length || !timingSafeEqual(given, entry.hash)) {
      throw unauthorized('The API token is not valid', 'invalid');
    }
    const r = entry.record;
    if (r.revoked_at !== null) throw unauthorized(`API token ${r.token_id} was revoked at ${r.revoked_at}`, 'invalid');
    const now = Date.now();
    if (now - (this.#touched.get(r.token_id) ?? 0) >= TOUCH_MS) {
      this.#touched.set(r.token_id, now);
      this.#store.touchApiToken(r.token_id, new Date(now).toISOString()).catch((err: unknown) => {
        this.#logger.warn('could not record API token use', { token_id: r.token_id, error: String(err) });
      });
    }
    return { token_id: r.token_id, scope: r.scope, name: r.name };
  }
}
