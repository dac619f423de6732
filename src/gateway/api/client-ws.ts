/**
 * The client WebSocket on the API port (`GET /v1/ws`, upgraded; the frames are
 * in src/protocol/client-ws.ts): many API calls in flight on one connection,
 * each run by the HTTP route of its op (same scope check, body check, handler
 * and answer), answered as it finishes. The token is checked at the upgrade
 * and again for each call, so a revoked token stops working on a live
 * connection too. A frame that cannot be taken (not JSON, no op, an unknown
 * op, a body of the wrong shape, too large) is answered with an error for its
 * id and leaves the connection's other calls alone. Answers sent in one turn
 * of the event loop leave in one write.
 */
import { type IncomingMessage, STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { type WebSocket, WebSocketServer } from 'ws';
import { FieldmeshError, statusOf, toErrorBody } from '../../core/errors.js';
import type { Logger } from '../../core/logger.js';
import { CLIENT_WS_PATH, type ClientAnswerFrame, ClientOps, ClientRequestFrame, MAX_FRAME_HEADER } from '../../protocol/client-ws.js';
import { describeSchemaError } from '../../protocol/codec.js';
import { sendBatched } from '../../protocol/cork.js';
import { type Authenticator, checker, type Router, type RouteSpec, requestUrl } from './http.js';

type FrameId = ClientAnswerFrame['id'];

export interface ClientSocketLimits {
  /** Calls one connection may have in flight; beyond, a call is refused (429 FM_ERR_TOO_MANY_CALLS) until some finish. @default 10000 */
  maxCallsInFlight?: number;
  /** How often each client is pinged; one that has not answered the previous ping by the next is cut. @default 30000 */
  pingIntervalMs?: number;
}

const frameCheck = checker(ClientRequestFrame);
const opNames = Object.keys(ClientOps).join(', ');

/** A frame's id when it has a usable one, so that even a refused frame is answered under its id. */
function idOf(value: unknown): FrameId {
  if (typeof value !== 'object' || value === null) return null;
  const id = (value as { id?: unknown }).id;
  if (typeof id === 'string' && id.length > 0 && id.length <= 128) return id;
  if (typeof id === 'number' && Number.isSafeInteger(id) && id >= 0) return id;
  return null;
}

/** Registers `GET /v1/ws` with the router, so that the OpenAPI document lists it and a plain GET learns how to use it. */
export function registerClientSocketRoute(router: Router): void {
  router.add({
    method: 'GET',
    scope: 'read',
    path: CLIENT_WS_PATH,
    summary:
      'WebSocket (upgrade) for many API calls on one connection: frames { id, op, body } → { id, status, body }, ' +
      `answered as they finish; ops: ${Object.entries(ClientOps)
        .map(([op, r]) => `${op} (${r.method} ${r.path}, same body, answer and scope)`)
        .join(', ')}`,
    handler: () => {
      throw new FieldmeshError('FM_ERR_INVALID_REQUEST', `GET ${CLIENT_WS_PATH} is a WebSocket: send it with "Upgrade: websocket"`);
    },
  });
}

export class ClientSockets {
  readonly #router: Router;
  readonly #auth: Authenticator;
  readonly #logger: Logger;
  readonly #maxFrameBytes: number;
  readonly #wss: WebSocketServer;
  readonly #routes = new Map<string, RouteSpec>();
  /** Connections that answered the last ping (or opened since). */
  readonly #alive = new WeakSet<WebSocket>();
  readonly #pinger: NodeJS.Timeout;
  readonly #maxCallsInFlight: number;

  /** Frames up to `maxFrameBytes` are taken; larger ones up to twice that are refused by id; beyond, the connection closes (1009). */
  constructor(router: Router, auth: Authenticator, logger: Logger, maxFrameBytes: number, limits: ClientSocketLimits = {}) {
    this.#maxCallsInFlight = limits.maxCallsInFlight ?? 10_000;
    this.#router = router;
    this.#auth = auth;
    this.#logger = logger;
    this.#maxFrameBytes = maxFrameBytes;
    this.#wss = new WebSocketServer({ noServer: true, maxPayload: 2 * maxFrameBytes, perMessageDeflate: false });
    // The client refuses a larger frame itself instead of sending it.
    this.#wss.on('headers', (headers) => headers.push(`${MAX_FRAME_HEADER}: ${maxFrameBytes}`));
    // A client gone without a close (a cut cable, a sleeping laptop) is found by the ping it does not answer.
    this.#pinger = setInterval(() => {
      for (const ws of this.#wss.clients) {
        if (!this.#alive.has(ws)) {
          this.#logger.info('client websocket did not answer a ping; closing it');
          ws.terminate();
          continue;
        }
        this.#alive.delete(ws);
        ws.ping();
      }
    }, limits.pingIntervalMs ?? 30_000);
    this.#pinger.unref();
    for (const [op, r] of Object.entries(ClientOps)) {
      const route = router.route(r.method, r.path);
      if (!route) throw new Error(`client WebSocket op ${op}: no route ${r.method} ${r.path}`);
      this.#routes.set(op, route);
    }
  }

  /** Connections open now. */
  get connections(): number {
    return this.#wss.clients.size;
  }

  /** Takes an HTTP upgrade request on the API port: `GET /v1/ws` with a valid API token becomes a client WebSocket. */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', (err) => this.#logger.debug('client websocket socket error', { error: String(err) }));
    const path = requestUrl(req.url).pathname;
    if (path !== CLIENT_WS_PATH && path !== `${CLIENT_WS_PATH}/`) {
      refuse(socket, new FieldmeshError('FM_ERR_ROUTE_NOT_FOUND', `No WebSocket at ${path}; the client WebSocket is ${CLIENT_WS_PATH}`));
      return;
    }
    const authorization = req.headers.authorization;
    let authenticated: Promise<unknown>;
    try {
      authenticated = Promise.resolve(this.#auth.authenticate(authorization));
    } catch (err) {
      authenticated = Promise.reject(err);
    }
    authenticated.then(
      () => {
        if (socket.destroyed) return;
        this.#wss.handleUpgrade(req, socket, head, (ws) => this.#serve(ws, req));
      },
      (err: unknown) =>
        refuse(socket, err, {
          'www-authenticate': authorization ? 'Bearer realm="fieldmesh", error="invalid_token"' : 'Bearer realm="fieldmesh"',
        }),
    );
  }

  /** Closes every client connection (1001), waiting up to a second for each to close before cutting it. */
  async close(): Promise<void> {
    clearInterval(this.#pinger);
    const open = [...this.#wss.clients];
    await Promise.all(
      open.map(
        (ws) =>
          new Promise<void>((resolve) => {
            ws.once('close', () => resolve());
            const cut = setTimeout(() => ws.terminate(), 1000);
            cut.unref();
            ws.close(1001, 'the gateway is shutting down');
          }),
      ),
    );
    await new Promise<void>((resolve) => this.#wss.close(() => resolve()));
  }

  #serve(ws: WebSocket, req: IncomingMessage): void {
    const authorization = req.headers.authorization;
    const authorize = () => this.#auth.authenticate(authorization);
    const inFlight = new Set<string | number>();
    const remote = req.socket.remoteAddress;
    this.#logger.debug('client websocket opened', { remote });
    this.#alive.add(ws);
    ws.on('pong', () => this.#alive.add(ws));
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      try {
        this.#onFrame(ws, req, authorize, inFlight, data, isBinary);
      } catch (err) {
        this.#logger.error('client websocket frame failed', { remote, error: String(err) });
        this.#refuse(ws, null, new FieldmeshError('FM_ERR_INTERNAL'));
      }
    });
    // ws closes the connection itself (1009 for a frame past maxPayload, 1002 for a protocol error) and reports why here.
    ws.on('error', (err) => this.#logger.debug('client websocket error', { remote, error: String(err) }));
    ws.on('close', (code) => this.#logger.debug('client websocket closed', { remote, code, in_flight: inFlight.size }));
  }

  #onFrame(
    ws: WebSocket,
    req: IncomingMessage,
    authorize: () => ReturnType<Authenticator['authenticate']>,
    inFlight: Set<string | number>,
    data: Buffer,
    isBinary: boolean,
  ): void {
    if (isBinary) {
      this.#refuse(ws, null, new FieldmeshError('FM_ERR_MALFORMED_FRAME', 'Frames are JSON text; this one is binary'));
      return;
    }
    const oversized = data.length > this.#maxFrameBytes;
    const tooLarge = () =>
      new FieldmeshError('FM_ERR_PAYLOAD_TOO_LARGE', `Frame of ${data.length} bytes exceeds the limit of ${this.#maxFrameBytes} bytes`, {
        details: { limit: this.#maxFrameBytes },
      });
    let value: unknown;
    try {
      value = JSON.parse(data.toString('utf8'));
    } catch (err) {
      this.#refuse(
        ws,
        null,
        oversized ? tooLarge() : new FieldmeshError('FM_ERR_INVALID_JSON', `Frame is not valid JSON: ${(err as Error).message}`),
      );
      return;
    }
    const id = idOf(value);
    if (oversized) {
      this.#refuse(ws, id, tooLarge());
      return;
    }
    if (!frameCheck.Check(value)) {
      this.#refuse(
        ws,
        id,
        new FieldmeshError(
          'FM_ERR_MALFORMED_FRAME',
          `Invalid frame at ${describeSchemaError(frameCheck, value)}: frames are { id, op, body }`,
        ),
      );
      return;
    }
    const frame = value as ClientRequestFrame;
    const route = this.#routes.get(frame.op);
    if (!route) {
      this.#refuse(
        ws,
        frame.id,
        new FieldmeshError('FM_ERR_ROUTE_NOT_FOUND', `Unknown op "${frame.op}"; the ops are ${opNames}`, {
          details: { op: frame.op, ops: Object.keys(ClientOps) },
        }),
      );
      return;
    }
    if (inFlight.has(frame.id)) {
      this.#refuse(
        ws,
        frame.id,
        new FieldmeshError('FM_ERR_MALFORMED_FRAME', `Frame id ${JSON.stringify(frame.id)} is already in flight on this connection`),
      );
      return;
    }
    if (inFlight.size >= this.#maxCallsInFlight) {
      this.#refuse(
        ws,
        frame.id,
        new FieldmeshError('FM_ERR_TOO_MANY_CALLS', `${inFlight.size} calls are in flight on this connection, the most it may have`, {
          details: { limit: this.#maxCallsInFlight },
        }),
      );
      return;
    }
    inFlight.add(frame.id);
    void this.#router
      .invoke(route, req, authorize, frame.body)
      .then((outcome) => {
        inFlight.delete(frame.id);
        this.#send(ws, { id: frame.id, status: outcome.status, body: outcome.body });
      })
      .catch((err: unknown) => {
        this.#logger.error('client websocket answer failed', { op: frame.op, error: String(err) });
        this.#refuse(ws, frame.id, new FieldmeshError('FM_ERR_INTERNAL'));
      });
  }

  #refuse(ws: WebSocket, id: FrameId, err: FieldmeshError): void {
    const { status, body } = this.#router.failure(err, 'WS', CLIENT_WS_PATH);
    this.#send(ws, { id, status, body });
  }

  #send(ws: WebSocket, frame: ClientAnswerFrame): void {
    if (ws.readyState === ws.OPEN) sendBatched(ws, JSON.stringify(frame));
  }
}

/** Answers a refused upgrade the way the API answers a refused request, and closes the socket. */
function refuse(socket: Duplex, err: unknown, headers: Record<string, string> = {}): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const e = toErrorBody(err);
  const status = statusOf(e.code);
  const text = JSON.stringify({ ok: false, error: e });
  const lines = [
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}`,
    'content-type: application/json; charset=utf-8',
    `content-length: ${Buffer.byteLength(text)}`,
    'connection: close',
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
  ];
  socket.end(`${lines.join('\r\n')}\r\n\r\n${text}`);
}
