/**
 * The client side of the API's WebSocket (`/v1/ws`, frames in
 * src/protocol/client-ws.ts): one connection, opened at the first call and
 * again at the first call after it dropped, carries every call in flight;
 * answers are matched to calls by id. A call in flight when the connection
 * drops fails at once (it may or may not have run: it is never sent again).
 * While no call is in flight the connection does not keep the process alive.
 */
import type { ClientRequest, IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';
import { FieldmeshError } from '../core/errors.js';
import { CLIENT_WS_PATH, type ClientAnswerFrame, type ClientOp, MAX_FRAME_HEADER } from '../protocol/client-ws.js';
import { sendBatched } from '../protocol/cork.js';

export interface SocketAnswer {
  status: number;
  body: unknown;
}

export interface ClientSocketOptions {
  /** The API's base URL (`http://…` or `https://…`). */
  baseUrl: string;
  token: string | undefined;
  ca: string | Buffer | undefined;
  timeoutMs: number;
  /** Turns an error reaching the gateway into the client's error for it. */
  unreachable: (err: unknown) => Error;
  /** Turns a refused upgrade (status and parsed body) into the client's error for it. */
  refused: (status: number, body: unknown) => Error;
}

interface Pending {
  resolve: (answer: SocketAnswer) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
  /** Frames the connection had received when this call was sent. */
  received: number;
}

/** One open connection and the calls waiting on it. */
interface Connection {
  ws: WebSocket;
  socket: Socket | undefined;
  pending: Map<number, Pending>;
  received: number;
  maxFrameBytes: number;
}

export class ClientSocket {
  readonly url: string;
  readonly #options: ClientSocketOptions;
  #conn: Connection | undefined;
  #opening: Promise<Connection> | undefined;
  #nextId = 1;

  constructor(options: ClientSocketOptions) {
    this.#options = options;
    this.url = `${options.baseUrl.replace(/^http/, 'ws')}${CLIENT_WS_PATH}`;
  }

  /** Sends one call and resolves with its answer's status and body. */
  call(op: ClientOp, body: unknown): Promise<SocketAnswer> {
    const conn = this.#conn;
    if (conn && conn.ws.readyState === conn.ws.OPEN) return this.#send(conn, op, body);
    this.#opening ??= this.#open().finally(() => {
      this.#opening = undefined;
    });
    return this.#opening.then((c) => this.#send(c, op, body));
  }

  /** Closes the connection; calls in flight fail. A later call opens a new one. */
  close(): void {
    const conn = this.#conn;
    if (!conn) return;
    this.#conn = undefined;
    this.#failAll(conn, new FieldmeshError('FM_ERR_UNAVAILABLE', 'The client was closed before the gateway answered'));
    conn.ws.close(1000);
  }

  #send(conn: Connection, op: ClientOp, body: unknown): Promise<SocketAnswer> {
    const id = this.#nextId++;
    const text = JSON.stringify({ id, op, body });
    // Refused here rather than by the gateway, which would close the connection under the other calls.
    if (text.length * 3 > conn.maxFrameBytes && Buffer.byteLength(text) > conn.maxFrameBytes) {
      return Promise.resolve(tooLarge(Buffer.byteLength(text), conn.maxFrameBytes));
    }
    if (conn.ws.readyState !== conn.ws.OPEN) {
      return Promise.reject(this.#options.unreachable(new Error('the connection closed before the call was sent')));
    }
    return new Promise((resolve, reject) => {
      if (conn.pending.size === 0) conn.socket?.ref();
      const timer = setTimeout(() => this.#timedOut(conn, id), this.#options.timeoutMs);
      conn.pending.set(id, { resolve, reject, timer, received: conn.received });
      sendBatched(conn.ws, text);
    });
  }

  #timedOut(conn: Connection, id: number): void {
    const p = conn.pending.get(id);
    if (!p) return;
    this.#settled(conn, id);
    p.reject(new FieldmeshError('FM_ERR_UNAVAILABLE', `No answer from the gateway at ${this.url} within ${this.#options.timeoutMs} ms`));
    // Nothing at all came back in that time: the connection is likely dead; the next call opens a new one.
    if (conn.received === p.received) conn.ws.terminate();
  }

  #settled(conn: Connection, id: number): void {
    const p = conn.pending.get(id);
    if (!p) return;
    clearTimeout(p.timer);
    conn.pending.delete(id);
    if (conn.pending.size === 0) conn.socket?.unref();
  }

  #onMessage(conn: Connection, data: Buffer): void {
    conn.received += 1;
    let frame: ClientAnswerFrame | null;
    try {
      frame = JSON.parse(data.toString('utf8')) as ClientAnswerFrame | null;
    } catch {
      return;
    }
    if (typeof frame !== 'object' || frame === null || typeof frame.id !== 'number') return;
    const p = conn.pending.get(frame.id);
    if (!p) return;
    this.#settled(conn, frame.id);
    p.resolve({ status: frame.status, body: frame.body });
  }

  #failAll(conn: Connection, err: Error): void {
    for (const [id, p] of [...conn.pending]) {
      this.#settled(conn, id);
      p.reject(err);
    }
  }

  async #open(): Promise<Connection> {
    const { WebSocket } = await import('ws');
    const { token, ca, timeoutMs } = this.#options;
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (fn: () => void) => {
        if (settled) return;
        settled = true;
        fn();
      };
      const ws = new WebSocket(this.url, {
        headers: token ? { authorization: `Bearer ${token}` } : {},
        perMessageDeflate: false,
        handshakeTimeout: timeoutMs,
        ...(ca === undefined ? {} : { ca }),
      });
      const conn: Connection = { ws, socket: undefined, pending: new Map(), received: 0, maxFrameBytes: Number.POSITIVE_INFINITY };
      ws.on('upgrade', (res: IncomingMessage) => {
        const limit = Number(res.headers[MAX_FRAME_HEADER]);
        if (Number.isSafeInteger(limit) && limit > 0) conn.maxFrameBytes = limit;
      });
      ws.on('unexpected-response', (req: ClientRequest, res: IncomingMessage) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          let body: unknown;
          try {
            body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          } catch {
            body = undefined;
          }
          settle(() => reject(this.#options.refused(res.statusCode ?? 0, body)));
          req.destroy();
        });
      });
      ws.on('error', (err) => settle(() => reject(this.#options.unreachable(err))));
      ws.on('open', () => {
        conn.socket = (ws as unknown as { _socket?: Socket })._socket;
        conn.socket?.unref();
        this.#conn = conn;
        settle(() => resolve(conn));
      });
      ws.on('message', (data: Buffer) => this.#onMessage(conn, data));
      ws.on('close', (code: number, reason: Buffer) => {
        if (this.#conn === conn) this.#conn = undefined;
        const why = reason.length > 0 ? `${code}: ${reason.toString('utf8')}` : String(code);
        const err = new FieldmeshError(
          'FM_ERR_UNAVAILABLE',
          `The connection to the gateway at ${this.url} closed (${why}) before the call was answered; it may have run`,
          { details: { close_code: code } },
        );
        this.#failAll(conn, err);
        settle(() => reject(this.#options.unreachable(new Error(`the connection closed (${why}) before it opened`))));
      });
    });
  }
}

/** The answer the gateway gives a frame over its size limit, for a frame the client does not send. */
function tooLarge(bytes: number, limit: number): SocketAnswer {
  return {
    status: 413,
    body: {
      ok: false,
      error: {
        code: 'FM_ERR_PAYLOAD_TOO_LARGE',
        message: `Frame of ${bytes} bytes exceeds the gateway's limit of ${limit} bytes`,
        retryable: false,
        details: { limit },
      },
    },
  };
}
