/**
 * Node listener: WebSocket over TLS. It asks every peer for a client
 * certificate (so pairing can require one), checks each frame against its
 * schema, negotiates the protocol version in REGISTER/WELCOME and hands frames
 * to the registry and dispatcher. A bad frame gets an ERROR frame, never a crash.
 */
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { type WebSocket, WebSocketServer } from 'ws';
import type { Logger } from '../core/logger.js';
import { decodeFrame, encodeFrame, negotiateVersion } from '../protocol/codec.js';
import { type Frame, PROTOCOL_VERSIONS } from '../protocol/frames.js';
import type { Dispatcher } from './dispatcher.js';
import type { NodeConnection, NodeEntry, Registry } from './registry.js';
import type { StateSync } from './state-sync.js';
import type { GatewayIdentity } from './tls.js';

export interface NodeListenerOptions {
  host: string;
  port: number;
  maxFrameBytes: number;
  heartbeatIntervalMs: number;
  gatewayId: string;
  logger: Logger;
}

/** Counters a user can read to see what the listener refused. */
export interface ListenerStats {
  frames_rejected: number;
  connections: number;
}

export class NodeListener {
  readonly #server: Server;
  readonly #wss: WebSocketServer;
  readonly #registry: Registry;
  readonly #dispatcher: Dispatcher;
  readonly #state: StateSync;
  readonly #opts: NodeListenerOptions;
  readonly stats: ListenerStats = { frames_rejected: 0, connections: 0 };

  constructor(identity: GatewayIdentity, registry: Registry, dispatcher: Dispatcher, state: StateSync, opts: NodeListenerOptions) {
    this.#registry = registry;
    this.#dispatcher = dispatcher;
    this.#state = state;
    this.#opts = opts;
    this.#server = createServer({
      key: identity.keyPem,
      cert: identity.certChainPem,
      ca: identity.caCertPem,
      requestCert: true,
      // Pairing (mutual TLS) decides which client certificates are required; until then one is asked for, not demanded.
      rejectUnauthorized: false,
      minVersion: 'TLSv1.2',
    });
    this.#server.on('request', (_req, res) => {
      res.writeHead(426, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          ok: false,
          error: { code: 'FM_ERR_INVALID_REQUEST', message: 'This port speaks the node protocol over WebSocket' },
        }),
      );
    });
    this.#server.on('tlsClientError', (err) => opts.logger.debug('tls client error', { error: err.message }));
    // Frames past the limit but under this hard cap get an ERROR frame and the connection lives on; beyond it ws closes with 1009.
    this.#wss = new WebSocketServer({ server: this.#server, maxPayload: opts.maxFrameBytes * 4 });
    this.#wss.on('connection', (ws, req) => this.#accept(ws, req.socket.remoteAddress ?? 'unknown'));
    // Only the live connection's loss fails its attempts (the registry ignores a replaced one); the tasks then migrate.
    registry.on('disconnected', (entry) => {
      const nodeId = entry.record.node_id;
      dispatcher.failNode(nodeId, { code: 'FM_ERR_CONNECTION_LOST', message: `Connection to node "${nodeId}" was lost`, retryable: true });
    });
  }

  async listen(): Promise<AddressInfo> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(this.#opts.port, this.#opts.host, () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
    return this.#server.address() as AddressInfo;
  }

  async close(): Promise<void> {
    for (const ws of this.#wss.clients) ws.close(1001, 'gateway shutting down');
    await new Promise<void>((resolve) => this.#wss.close(() => resolve()));
    await new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      setTimeout(() => {
        for (const ws of this.#wss.clients) ws.terminate();
        this.#server.closeAllConnections?.();
      }, 500).unref();
    });
  }

  #accept(ws: WebSocket, remoteAddress: string): void {
    this.stats.connections += 1;
    let entry: NodeEntry | undefined;
    let registering = false;
    const conn: NodeConnection = {
      remoteAddress,
      send: (text) => ws.send(text),
      close: (code, reason) => ws.close(code, reason),
      terminate: () => ws.terminate(),
    };
    const reject = (code: string, message: string, taskId?: string) => {
      this.stats.frames_rejected += 1;
      this.#opts.logger.warn('rejected frame', { code, message, remote: remoteAddress, node_id: entry?.record.node_id });
      const body: Record<string, unknown> = { code, message };
      if (taskId !== undefined) body.task_id = taskId;
      if (ws.readyState === ws.OPEN) ws.send(encodeFrame('ERROR', body));
    };

    ws.on('message', (data, isBinary) => {
      const raw = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
      if (isBinary) {
        reject('FM_ERR_MALFORMED_FRAME', 'Frames must be JSON text, not binary');
        return;
      }
      const decoded = decodeFrame(raw, this.#opts.maxFrameBytes);
      if (!decoded.ok) {
        reject(decoded.error.code, decoded.error.message, decoded.task_id);
        // A REGISTER over the frame limit can never succeed: tell the peer why and let it go rather than leave it hanging.
        if (!entry && !registering && decoded.error.code === 'FM_ERR_FRAME_TOO_LARGE') ws.close(1008, decoded.error.code);
        return;
      }
      const frame = decoded.frame;
      if (!entry) {
        if (frame.type !== 'REGISTER' || registering) {
          reject('FM_ERR_NOT_REGISTERED', registering ? 'Registration is in progress' : `Expected REGISTER first, got ${frame.type}`);
          if (!registering) ws.close(1008, 'FM_ERR_NOT_REGISTERED');
          return;
        }
        registering = true;
        void this.#register(ws, conn, frame).then(
          (e) => {
            entry = e;
            registering = false;
          },
          (err: unknown) => {
            registering = false;
            this.#opts.logger.error('registration failed', { error: String(err) });
            ws.close(1011, 'registration failed');
          },
        );
        return;
      }
      this.#handle(entry, conn, frame, reject);
    });

    ws.on('error', (err) => this.#opts.logger.debug('node socket error', { error: err.message, node_id: entry?.record.node_id }));
    ws.on('close', (code, reason) => {
      this.#state.connectionClosed(conn);
      if (!entry) return;
      this.#opts.logger.info('node disconnected', { node_id: entry.record.node_id, code, reason: reason.toString() });
      void this.#registry.disconnected(entry.record.node_id, conn);
    });
  }

  async #register(ws: WebSocket, conn: NodeConnection, frame: Extract<Frame, { type: 'REGISTER' }>): Promise<NodeEntry | undefined> {
    const version = negotiateVersion(frame.versions, PROTOCOL_VERSIONS);
    if (version === undefined) {
      this.stats.frames_rejected += 1;
      ws.send(
        encodeFrame('ERROR', {
          code: 'FM_ERR_PROTOCOL_VERSION',
          message: `No common protocol version: node speaks ${frame.versions.join(', ')}, gateway speaks ${PROTOCOL_VERSIONS.join(', ')}`,
        }),
      );
      ws.close(1008, 'FM_ERR_PROTOCOL_VERSION');
      return undefined;
    }
    const previous = this.#registry.get(frame.node_id);
    const previousConn = previous?.conn ?? null;
    const entry = await this.#registry.register(frame, version, conn);
    if (previousConn && previousConn !== conn) {
      // The same node dialled again (a network blip leaves the old socket half-open): the new connection wins.
      previousConn.close(4009, 'replaced by a newer connection');
      this.#dispatcher.failNode(frame.node_id, {
        code: 'FM_ERR_CONNECTION_LOST',
        message: `Node "${frame.node_id}" reconnected; its earlier connection was dropped`,
        retryable: true,
      });
    }
    this.#opts.logger.info('node registered', { node_id: frame.node_id, version, remote: conn.remoteAddress });
    ws.send(
      encodeFrame('WELCOME', {
        version,
        gateway_id: this.#opts.gatewayId,
        node_id: frame.node_id,
        leader_id: this.#opts.gatewayId,
        peers: [],
        heartbeat_interval_ms: this.#opts.heartbeatIntervalMs,
        max_frame_bytes: this.#opts.maxFrameBytes,
      }),
    );
    return entry;
  }

  #handle(entry: NodeEntry, conn: NodeConnection, frame: Frame, reject: (code: string, message: string, taskId?: string) => void): void {
    if ('node_id' in frame && frame.node_id !== entry.record.node_id) {
      reject('FM_ERR_MALFORMED_FRAME', `Frame names node "${frame.node_id}" but this connection registered as "${entry.record.node_id}"`);
      return;
    }
    switch (frame.type) {
      case 'NODE_READY':
        // SYNCING until its state documents are caught up; a connection replaced meanwhile changes nothing.
        void this.#state.catchUp(entry, conn).then(() => (entry.conn === conn ? this.#registry.ready(entry) : undefined));
        return;
      case 'SYNC_REQUEST':
        void this.#state.onSyncRequest(entry, conn, frame);
        return;
      case 'STATE_ACK':
        void this.#state.onAck(entry, conn, frame);
        return;
      case 'HEARTBEAT':
        this.#registry.heartbeat(entry, frame.load);
        return;
      case 'TASK_ACK':
        this.#dispatcher.onAck(entry, frame);
        return;
      case 'TASK_RESULT':
        this.#dispatcher.onResult(entry, frame);
        return;
      case 'ERROR':
        this.#opts.logger.warn('node reported an error', { node_id: entry.record.node_id, code: frame.code, message: frame.message });
        this.#dispatcher.onNodeError(entry, frame);
        return;
      default:
        reject('FM_ERR_MALFORMED_FRAME', `A node may not send ${frame.type} frames`);
    }
  }
}
