/**
 * The small HTTP layer under the API: a router over `node:http`, JSON bodies
 * read under a size limit and checked against their TypeBox schema, and every
 * error answered as `{ ok: false, error: { code, message } }` with its status.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TSchema } from '@sinclair/typebox';
import { type TypeCheck, TypeCompiler } from '@sinclair/typebox/compiler';
import { type ErrorBody, FieldmeshError, statusOf, toErrorBody } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import { describeSchemaError } from '../../protocol/codec.js';

/** Who made a request: the API token it carried (null on public routes). */
export interface Caller {
  token_id: string;
  scope: Exclude<Scope, 'public'>;
  name: string | null;
}

/** Turns an `Authorization` header into its caller, or throws FM_ERR_UNAUTHORIZED. */
export interface Authenticator {
  authenticate(authorization: string | undefined): Caller | Promise<Caller>;
}

export interface RouteContext {
  /** The HTTP request; for a call over the client WebSocket, the connection's upgrade request (whose body is not the call's). */
  req: IncomingMessage;
  caller: Caller | null;
  params: Record<string, string>;
  query: URLSearchParams;
  /** Reads, parses and checks the JSON body. */
  body<T>(check: TypeCheck<TSchema>): Promise<T>;
  /** As `body`, for routes whose body may be left out: undefined when the request has none. */
  optionalBody<T>(check: TypeCheck<TSchema>): Promise<T | undefined>;
}

export interface Reply {
  status: number;
  body: unknown;
  /** Set for a body that is already text (Prometheus metrics), sent as is. */
  contentType?: string;
}

export type Handler = (ctx: RouteContext) => Promise<Reply | unknown> | Reply | unknown;

/**
 * Who may call a route: `public` needs no token; otherwise the caller's API
 * token must hold this scope or a wider one (read < submit < admin).
 */
export type Scope = 'public' | 'read' | 'submit' | 'admin';

const scopeRank: Record<Scope, number> = { public: 0, read: 1, submit: 2, admin: 3 };

/** Whether a token of scope `held` may call a route that needs `needed`. */
export function scopeAllows(held: Scope, needed: Scope): boolean {
  return scopeRank[held] >= scopeRank[needed];
}

export interface RouteSpec {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  scope: Scope;
  path: string;
  summary: string;
  body?: TSchema;
  response?: TSchema;
  /** Status of a successful answer, for the OpenAPI document. @default 200 */
  successStatus?: number;
  query?: Record<string, { type: string; description: string }>;
  handler: Handler;
}

interface CompiledRoute extends RouteSpec {
  pattern: RegExp;
  names: string[];
}

export function reply(status: number, body: unknown): Reply {
  return { status, body, [replyMark]: true } as Reply;
}
/** A reply whose body is text in its own format rather than JSON. */
export function textReply(status: number, text: string, contentType: string): Reply {
  return { status, body: text, contentType, [replyMark]: true } as Reply;
}
const replyMark = Symbol('reply');
const isReply = (v: unknown): v is Reply => typeof v === 'object' && v !== null && replyMark in v;

const compiledChecks = new WeakMap<TSchema, TypeCheck<TSchema>>();
export function checker(schema: TSchema): TypeCheck<TSchema> {
  let c = compiledChecks.get(schema);
  if (!c) {
    c = TypeCompiler.Compile(schema);
    compiledChecks.set(schema, c);
  }
  return c;
}

export class Router {
  readonly routes: CompiledRoute[] = [];
  readonly #maxBodyBytes: number;
  readonly #logger: Logger;
  readonly #auth: Authenticator;
  /** Paths of the routes without parameters, and the routes each (or it with a trailing slash) matches. */
  readonly #fixedPaths = new Set<string>();
  readonly #matched = new Map<string, CompiledRoute[]>();

  constructor(maxBodyBytes: number, logger: Logger, auth: Authenticator) {
    this.#maxBodyBytes = maxBodyBytes;
    this.#logger = logger;
    this.#auth = auth;
  }

  /** The routes whose path matches, whatever their method; remembered for the paths of routes without parameters. */
  #match(pathname: string): CompiledRoute[] {
    const known = this.#matched.get(pathname);
    if (known) return known;
    const found = this.routes.filter((r) => r.pattern.test(pathname));
    const trimmed = pathname.length > 1 && pathname.endsWith('/') ? pathname.slice(0, -1) : pathname;
    if (this.#fixedPaths.has(trimmed)) this.#matched.set(pathname, found);
    return found;
  }

  add(spec: RouteSpec): void {
    const names: string[] = [];
    const pattern = new RegExp(
      `^${spec.path.replace(/\{([a-z_]+)\}/g, (_m, name: string) => {
        names.push(name);
        return '([^/]+)';
      })}/?$`,
    );
    this.routes.push({ ...spec, pattern, names });
    if (names.length === 0) this.#fixedPaths.add(spec.path);
    this.#matched.clear();
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = requestUrl(req.url);
    let outcome: Outcome;
    try {
      const matches = this.#match(url.pathname);
      if (matches.length === 0) throw new FieldmeshError('FM_ERR_ROUTE_NOT_FOUND', `No route for ${req.method} ${url.pathname}`);
      const route = matches.find((r) => r.method === req.method);
      if (!route) {
        res.setHeader('allow', matches.map((r) => r.method).join(', '));
        throw new FieldmeshError('FM_ERR_METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${url.pathname}`);
      }
      const caller = route.scope === 'public' ? null : await this.#authorize(req, res, route);
      const m = route.pattern.exec(url.pathname)!;
      const params: Record<string, string> = {};
      route.names.forEach((n, i) => {
        const raw = m[i + 1] ?? '';
        try {
          params[n] = decodeURIComponent(raw);
        } catch {
          throw new FieldmeshError('FM_ERR_INVALID_REQUEST', `Path segment "${raw}" is not valid percent-encoding`);
        }
      });
      const ctx: RouteContext = {
        req,
        caller,
        params,
        query: url.searchParams,
        body: (check) => this.#readBody(req, check),
        optionalBody: (check) => this.#readBody(req, check, true),
      };
      outcome = outcomeOf(await route.handler(ctx));
    } catch (err) {
      outcome = this.failure(err, req.method, url.pathname);
      const code = (outcome.body as { error: ErrorBody }).error.code;
      // The rest of an oversized body is never read, so the connection cannot carry another request.
      if (code === 'FM_ERR_PAYLOAD_TOO_LARGE') res.setHeader('connection', 'close');
      // Nor is the body of a refused caller: closing spares reading what it still sends.
      if ((code === 'FM_ERR_UNAUTHORIZED' || code === 'FM_ERR_FORBIDDEN') && !req.complete) res.setHeader('connection', 'close');
    }
    const text = outcome.contentType ? String(outcome.body) : JSON.stringify(outcome.body);
    res.writeHead(outcome.status, {
      'content-type': outcome.contentType ?? 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(text),
    });
    res.end(text);
  }

  /** The route registered for exactly this method and path template, for callers that do not come by HTTP. */
  route(method: RouteSpec['method'], path: string): RouteSpec | undefined {
    return this.routes.find((r) => r.method === method && r.path === path);
  }

  /**
   * Runs a route for a caller that did not come by HTTP (a WebSocket frame): the
   * same scope check, handler and answer as over HTTP, with `body` already parsed.
   * `authorize` gives the caller (its token checked again per call, so a revoked
   * token stops working on a live connection too).
   */
  async invoke(route: RouteSpec, req: IncomingMessage, authorize: () => Caller | Promise<Caller>, body: unknown): Promise<Outcome> {
    try {
      let caller: Caller | null = null;
      if (route.scope !== 'public') {
        const c = authorize();
        caller = c instanceof Promise ? await c : c;
        checkScope(caller, route);
      }
      const ctx: RouteContext = {
        req,
        caller,
        params: {},
        query: new URLSearchParams(),
        body: (check) => Promise.resolve(checkBody(body, check, false)),
        optionalBody: (check) => Promise.resolve(checkBody(body, check, true)),
      };
      return outcomeOf(await route.handler(ctx));
    } catch (err) {
      return this.failure(err, route.method, route.path);
    }
  }

  /** The answer to an error a route threw: its code's status and `{ ok: false, error }`; internal errors are logged. */
  failure(err: unknown, method: string | undefined, path: string): Outcome {
    const e = toErrorBody(err);
    if (e.code === 'FM_ERR_INTERNAL') this.#logger.error('request failed', { method, path, error: String(err) });
    return { status: statusOf(e.code), body: { ok: false, error: e } };
  }

  /** Checks the bearer token before the handler runs (and before the body is read). */
  async #authorize(req: IncomingMessage, res: ServerResponse, route: CompiledRoute): Promise<Caller> {
    const header = req.headers.authorization;
    let caller: Caller;
    try {
      const c = this.#auth.authenticate(header);
      caller = c instanceof Promise ? await c : c;
    } catch (err) {
      res.setHeader('www-authenticate', header ? 'Bearer realm="fieldmesh", error="invalid_token"' : 'Bearer realm="fieldmesh"');
      throw err;
    }
    try {
      checkScope(caller, route);
    } catch (err) {
      res.setHeader('www-authenticate', `Bearer realm="fieldmesh", error="insufficient_scope", scope="${route.scope}"`);
      throw err;
    }
    return caller;
  }

  async #readBody<T>(req: IncomingMessage, check: TypeCheck<TSchema>, optional?: false): Promise<T>;
  async #readBody<T>(req: IncomingMessage, check: TypeCheck<TSchema>, optional: true): Promise<T | undefined>;
  async #readBody<T>(req: IncomingMessage, check: TypeCheck<TSchema>, optional = false): Promise<T | undefined> {
    const limit = this.#maxBodyBytes;
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > limit) {
      req.resume();
      throw new FieldmeshError('FM_ERR_PAYLOAD_TOO_LARGE', `Body of ${declared} bytes exceeds the limit of ${limit} bytes`, {
        details: { limit },
      });
    }
    const text = (await readLimited(req, limit)).toString('utf8');
    let value: unknown;
    try {
      value = text.trim() === '' ? undefined : JSON.parse(text);
    } catch (err) {
      throw new FieldmeshError('FM_ERR_INVALID_JSON', `Body is not valid JSON: ${(err as Error).message}`);
    }
    return checkBody<T>(value, check, optional);
  }
}

/** What a route answered (or the error it threw, as its answer). */
export interface Outcome {
  status: number;
  body: unknown;
  contentType?: string;
}

function outcomeOf(out: unknown): Outcome {
  if (!isReply(out)) return { status: 200, body: out };
  return out.contentType === undefined
    ? { status: out.status, body: out.body }
    : { status: out.status, body: out.body, contentType: out.contentType };
}

/** Throws FM_ERR_FORBIDDEN, naming the scope needed, when the caller's token is narrower than the route's scope. */
function checkScope(caller: Caller, route: RouteSpec): void {
  if (scopeAllows(caller.scope, route.scope)) return;
  throw new FieldmeshError(
    'FM_ERR_FORBIDDEN',
    `${route.method} ${route.path} needs a token with scope "${route.scope}"; token ${caller.token_id} has "${caller.scope}"`,
    { details: { needed_scope: route.scope, token_scope: caller.scope } },
  );
}

/** A parsed body checked against its schema (undefined: no body, refused unless `optional`). */
function checkBody<T>(value: unknown, check: TypeCheck<TSchema>, optional: false): T;
function checkBody<T>(value: unknown, check: TypeCheck<TSchema>, optional: boolean): T | undefined;
function checkBody<T>(value: unknown, check: TypeCheck<TSchema>, optional: boolean): T | undefined {
  if (value === undefined) {
    if (optional) return undefined;
    throw new FieldmeshError('FM_ERR_INVALID_REQUEST', 'A JSON body is required');
  }
  if (!check.Check(value)) {
    throw new FieldmeshError('FM_ERR_INVALID_REQUEST', `Invalid body at ${describeSchemaError(check, value)}`);
  }
  return value as T;
}

/** A path of characters WHATWG URL parsing keeps as they are (no dot segments, no escapes), then any query. */
const PLAIN_TARGET = /^\/(?!\/)[A-Za-z0-9_\-/:~@!$&'()*+,;=]*(\?[^#\s]*)?$/;

/**
 * Path and query of a request target. The plain form (`/v1/tasks?limit=5`) is split as it is; anything WHATWG URL
 * parsing could change (dot segments, percent-encoding, backslashes, a full URL) goes through it.
 */
export function requestUrl(target: string | undefined): { pathname: string; searchParams: URLSearchParams } {
  const raw = target ?? '/';
  if (PLAIN_TARGET.test(raw)) {
    const q = raw.indexOf('?');
    return q < 0
      ? { pathname: raw, searchParams: new URLSearchParams() }
      : { pathname: raw.slice(0, q), searchParams: new URLSearchParams(raw.slice(q + 1)) };
  }
  const url = new URL(raw, 'http://gateway');
  return { pathname: url.pathname, searchParams: url.searchParams };
}

/** A request body, refused with FM_ERR_PAYLOAD_TOO_LARGE (and the rest left unread) once it passes `limit` bytes. */
function readLimited(req: IncomingMessage, limit: number): Promise<Buffer> {
  // Read already (a second read of one body), or closed by the client before the handler asked for it.
  if (req.readableEnded) return Promise.resolve(Buffer.alloc(0));
  if (req.destroyed) return Promise.reject(new FieldmeshError('FM_ERR_INVALID_REQUEST', 'The request was closed before its body ended'));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        cleanup();
        req.resume();
        reject(new FieldmeshError('FM_ERR_PAYLOAD_TOO_LARGE', `Body exceeds the limit of ${limit} bytes`, { details: { limit } }));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const onClose = () => {
      if (req.complete) return;
      cleanup();
      reject(new FieldmeshError('FM_ERR_INVALID_REQUEST', 'The request was closed before its body ended'));
    };
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}
