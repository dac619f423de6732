/**
 * Node listener: WebSocket over mutual TLS. One port serves two TLS servers
 * (tls-router.ts): connections offering ALPN `fieldmesh-pair` reach the pairing
 * exchange and nothing else; every other connection must present a client
 * certificate signed by the gateway CA and unexpired, or the handshake fails.
 * A revoked certificate is refused at the WebSocket upgrade, and a REGISTER
 * whose node id or signing key differs from the certificate's is refused at
 * the first frame, before any work. Each frame is checked against its schema,
 * the protocol version is negotiated in REGISTER/WELCOME, and frames go to the
 * registry and dispatcher. A bad frame gets an ERROR frame, never a crash.
 */
import { constants, createPublicKey } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { type WebSocket, WebSocketServer } from 'ws';
import { FieldmeshError, statusOf, toErrorBody } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { decodeFrame, encodeFrame, negotiateVersion } from '../protocol/codec.js';
import { sendBatched } from '../protocol/cork.js';
import { type CertRenewFrame, type Frame, NodeFeature, PROTOCOL_VERSIONS } from '../protocol/frames.js';
import { PAIRING_ALPN, PAIRING_PATH } from '../protocol/pairing.js';
import { normalizeSerial } from '../protocol/pki.js';
import type { CertificateRecord } from '../store/types.js';
import type { Dispatcher } from './dispatcher.js';
import type { FunctionService } from './functions.js';
import type { PairingService } from './pairing.js';
import { PAIRING_MAX_FRAME_BYTES, PairingEndpoint } from './pairing-endpoint.js';
import type { NodeConnection, NodeEntry, Registry } from './registry.js';
import type { StateSync } from './state-sync.js';
import type { GatewayIdentity } from './tls.js';
import { TlsRouter } from './tls-router.js';

/** The optional features of a node's REGISTER this gateway speaks; WELCOME lists those the node advertised. */
const GATEWAY_FEATURES: readonly string[] = [NodeFeature.TaskBatch, NodeFeature.ResultBatch];

/** WebSocket close code for a peer whose identity is refused (revoked, or not the node its certificate names). */
export const CLOSE_IDENTITY_REFUSED = 4003;
/** WebSocket close code of a node connection replaced by a newer one of the same node. */
export const CLOSE_REPLACED = 4009;

/** What one mTLS connection proved at the handshake. */
interface PeerIdentity {
  serial: string;
  /** CN of the client certificate. */
  nodeId: string | undefined;
  /** The issued certificate, once REGISTER checked it. */
  cert?: CertificateRecord;
}

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

function notWebSocket(_req: IncomingMessage, res: ServerResponse): void {
  res.writeHead(426, { 'content-type': 'application/json' });
  res.end(
    JSON.stringify({
      ok: false,
      error: { code: 'FM_ERR_INVALID_REQUEST', message: 'This port speaks the node protocol over WebSocket' },
    }),
  );
}

/** Answers an upgrade request with an HTTP error and its FM_ERR_* body, then drops the socket. */
function refuseUpgrade(socket: Socket, err: FieldmeshError): void {
  const body = JSON.stringify({ ok: false, error: err.toJSON() });
  const status = statusOf(err.code);
  socket.end(
    `HTTP/1.1 ${status} Refused\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
  setTimeout(() => socket.destroy(), 1000).unref();
}

export class NodeListener {
  readonly #router: TlsRouter;
  /** Mutual TLS: the node protocol. */
  readonly #server: Server;
  /** No client certificate: only the pairing exchange. */
  readonly #pairServer: Server;
  readonly #wss: WebSocketServer;
  readonly #pairWss: WebSocketServer;
  readonly #registry: Registry;
  readonly #dispatcher: Dispatcher;
  readonly #pairing: PairingService;
  readonly #state: StateSync;
  readonly #functions: FunctionService;
  readonly #opts: NodeListenerOptions;
  /** The certificate serial each live node-protocol socket presented. */
  readonly #peers = new Map<WebSocket, PeerIdentity>();
  /** Connections the gateway dialed to listen-mode nodes. */
  readonly #dialed = new Set<WebSocket>();
  readonly stats: ListenerStats = { frames_rejected: 0, connections: 0 };

  constructor(
    identity: GatewayIdentity,
    registry: Registry,
    dispatcher: Dispatcher,
    pairing: PairingService,
    state: StateSync,
    functions: FunctionService,
    opts: NodeListenerOptions,
  ) {
    this.#registry = registry;
    this.#dispatcher = dispatcher;
    this.#pairing = pairing;
    this.#state = state;
    this.#functions = functions;
    this.#opts = opts;
    this.#server = createServer({
      key: identity.keyPem,
      cert: identity.certChainPem,
      ca: [identity.caCertPem],
      // A peer without a certificate from the gateway CA, or with an expired one, fails the handshake.
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.2',
      // Nodes never resume a session, and the TLS 1.3 tickets sent after each handshake held on to about
      // 17 KB per connection (with the peer's chain), a third of the gateway's memory per idle node.
      secureOptions: constants.SSL_OP_NO_TICKET,
    });
    this.#pairServer = createServer({
      key: identity.keyPem,
      cert: identity.certChainPem,
      ALPNProtocols: [PAIRING_ALPN],
      minVersion: 'TLSv1.2',
    });
    for (const server of [this.#server, this.#pairServer]) {
      server.on('request', notWebSocket);
      server.on('tlsClientError', (err, socket) =>
        opts.logger.debug('tls client error', { error: err.message, remote: socket.remoteAddress }),
      );
    }
    this.#router = new TlsRouter({ routes: { [PAIRING_ALPN]: this.#pairServer }, fallback: this.#server, logger: opts.logger });
    // Frames past the limit but under this hard cap get an ERROR frame and the connection lives on; beyond it ws closes with 1009.
    this.#wss = new WebSocketServer({ noServer: true, maxPayload: opts.maxFrameBytes * 4 });
    this.#server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => this.#upgrade(req, socket, head));
    this.#wss.on('connection', (ws, req) => this.#accept(ws, req));
    const endpoint = new PairingEndpoint(pairing, opts.gatewayId, opts.logger);
    this.#pairWss = new WebSocketServer({ server: this.#pairServer, path: PAIRING_PATH, maxPayload: PAIRING_MAX_FRAME_BYTES });
    this.#pairWss.on('connection', (ws, req) => endpoint.accept(ws, req.socket.remoteAddress ?? 'unknown'));
    // Only the live connection's loss fails its attempts (the registry ignores a replaced one); the tasks then migrate.
    registry.on('disconnected', (entry) => {
      const nodeId = entry.record.node_id;
      dispatcher.failNode(nodeId, { code: 'FM_ERR_CONNECTION_LOST', message: `Connection to node "${nodeId}" was lost`, retryable: true });
    });
    pairing.on('revoked', (nodeId, serials) => this.#closeRevoked(nodeId, new Set(serials)));
  }

  async listen(): Promise<AddressInfo> {
    const server = this.#router.server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.#opts.port, this.#opts.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return server.address() as AddressInfo;
  }

  async close(): Promise<void> {
    for (const ws of [...this.#wss.clients, ...this.#pairWss.clients, ...this.#dialed]) ws.close(1001, 'gateway shutting down');
    await Promise.all([this.#wss, this.#pairWss].map((wss) => new Promise<void>((resolve) => wss.close(() => resolve()))));
    this.#router.destroyPending();
    await new Promise<void>((resolve) => {
      this.#router.server.close(() => resolve());
      setTimeout(() => {
        for (const ws of [...this.#wss.clients, ...this.#pairWss.clients, ...this.#dialed]) ws.terminate();
        this.#server.closeAllConnections?.();
        this.#pairServer.closeAllConnections?.();
      }, 500).unref();
    });
  }

  /** Refuses a revoked certificate before any WebSocket exists, with a body that tells the node why. */
  #upgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const peer = peerCertificate(socket as TLSSocket);
    const serial = peer?.serial;
    if (!serial) {
      refuseUpgrade(socket, new FieldmeshError('FM_ERR_CERT_UNKNOWN', 'No client certificate'));
      return;
    }
    // A resumed TLS session does not check the certificate's dates again; this does.
    if (!(Date.parse(peer.validTo) > Date.now())) {
      refuseUpgrade(
        socket,
        new FieldmeshError('FM_ERR_CERT_EXPIRED', `Certificate ${serial} expired at ${peer.validTo}`, { details: { serial } }),
      );
      return;
    }
    if (this.#pairing.isRevoked(serial)) {
      this.#opts.logger.warn('refused a revoked certificate', { serial, node_id: peer.nodeId, remote: socket.remoteAddress });
      refuseUpgrade(socket, new FieldmeshError('FM_ERR_CERT_REVOKED', `Certificate ${serial} has been revoked`, { details: { serial } }));
      return;
    }
    this.#wss.handleUpgrade(req, socket, head, (ws) => this.#wss.emit('connection', ws, req));
  }

  /** Ends, with 4003, every live connection that presented one of the revoked certificates or is the revoked node. */
  #closeRevoked(nodeId: string, serials: Set<string>): void {
    for (const [ws, peer] of this.#peers) {
      if (!serials.has(peer.serial) && peer.nodeId !== nodeId) continue;
      if (ws.readyState === ws.OPEN) {
        ws.send(encodeFrame('ERROR', { code: 'FM_ERR_CERT_REVOKED', message: `The certificate of node "${nodeId}" has been revoked` }));
      }
      ws.close(CLOSE_IDENTITY_REFUSED, 'FM_ERR_CERT_REVOKED');
      // A peer that does not answer the close is not given the time to send anything more.
      setTimeout(() => ws.terminate(), 1000).unref();
    }
    void this.#registry.distrust(nodeId);
  }

  #accept(ws: WebSocket, req: IncomingMessage): void {
    this.#serve(ws, req.socket as TLSSocket);
  }

  /**
   * Runs the node protocol on a connection the gateway dialed to a listen-mode
   * node (see peer-dialer.ts), once its certificate was checked against the
   * gateway CA: from here on it is served exactly as one the node dialed.
   */
  serveDialed(ws: WebSocket, socket: TLSSocket): void {
    this.#dialed.add(ws);
    ws.once('close', () => this.#dialed.delete(ws));
    this.#serve(ws, socket);
  }

  #serve(ws: WebSocket, socket: TLSSocket): void {
    const remoteAddress = socket.remoteAddress ?? 'unknown';
    const presented = peerCertificate(socket);
    const peer: PeerIdentity = { serial: presented?.serial ?? '', nodeId: presented?.nodeId };
    this.#peers.set(ws, peer);
    this.stats.connections += 1;
    let entry: NodeEntry | undefined;
    let registering = false;
    let renewing = false;
    const conn: NodeConnection = {
      remoteAddress,
      send: (text) => sendBatched(ws, text),
      close: (code, reason) => ws.close(code, reason),
      terminate: () => ws.terminate(),
      features: new Set(),
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
        void this.#register(ws, conn, frame, peer).then(
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
      if (frame.type === 'CERT_RENEW') {
        if (renewing) reject('FM_ERR_INVALID_REQUEST', 'A certificate renewal is already in progress');
        else {
          renewing = true;
          void this.#renew(ws, peer, frame, reject).finally(() => {
            renewing = false;
          });
        }
        return;
      }
      this.#handle(entry, conn, frame, reject);
    });

    ws.on('error', (err) => this.#opts.logger.debug('node socket error', { error: err.message, node_id: entry?.record.node_id }));
    ws.on('close', (code, reason) => {
      this.#peers.delete(ws);
      this.#state.connectionClosed(conn);
      if (!entry) return;
      this.#opts.logger.info('node disconnected', { node_id: entry.record.node_id, code, reason: reason.toString() });
      void this.#registry.disconnected(entry.record.node_id, conn);
    });
  }

  async #register(
    ws: WebSocket,
    conn: NodeConnection,
    frame: Extract<Frame, { type: 'REGISTER' }>,
    peer: PeerIdentity,
  ): Promise<NodeEntry | undefined> {
    try {
      peer.cert = await this.#pairing.checkPresented(peer.serial, frame.node_id, peer.nodeId);
      if (!sameKey(frame.public_key, peer.cert.signing_public_key)) {
        throw new FieldmeshError(
          'FM_ERR_SIGNING_KEY_MISMATCH',
          `REGISTER names a signing key other than the one node "${frame.node_id}" paired with`,
        );
      }
    } catch (err) {
      const e = toErrorBody(err);
      this.stats.frames_rejected += 1;
      this.#opts.logger.warn('refused a node identity', {
        code: e.code,
        message: e.message,
        serial: peer.serial,
        remote: conn.remoteAddress,
      });
      if (ws.readyState === ws.OPEN) ws.send(encodeFrame('ERROR', { code: e.code, message: e.message }));
      ws.close(CLOSE_IDENTITY_REFUSED, e.code);
      return undefined;
    }
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
    conn.features = new Set(frame.features ?? []);
    const entry = await this.#registry.register(frame, version, conn);
    if (previousConn && previousConn !== conn) {
      // The same node dialled again (a network blip leaves the old socket half-open): the new connection wins.
      previousConn.close(CLOSE_REPLACED, 'replaced by a newer connection');
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
        features: GATEWAY_FEATURES.filter((f) => conn.features?.has(f)),
      }),
    );
    return entry;
  }

  /** A new certificate over the live connection, for the node named by the one it connected with. */
  async #renew(
    ws: WebSocket,
    peer: PeerIdentity,
    frame: CertRenewFrame,
    reject: (code: string, message: string, taskId?: string) => void,
  ): Promise<void> {
    if (!peer.cert) return;
    try {
      const issued = await this.#pairing.renew(peer.cert, frame.csr);
      if (ws.readyState === ws.OPEN) {
        ws.send(
          encodeFrame('CERT_ISSUED', {
            node_id: issued.node_id,
            certificate: issued.certificate,
            serial: issued.serial,
            not_after: issued.not_after,
          }),
        );
      }
      this.#opts.logger.info('node certificate renewed', { node_id: issued.node_id, serial: issued.serial, not_after: issued.not_after });
    } catch (err) {
      const e = toErrorBody(err);
      reject(e.code, e.message);
    }
  }

  #handle(entry: NodeEntry, conn: NodeConnection, frame: Frame, reject: (code: string, message: string, taskId?: string) => void): void {
    if ('node_id' in frame && frame.node_id !== entry.record.node_id) {
      reject('FM_ERR_MALFORMED_FRAME', `Frame names node "${frame.node_id}" but this connection registered as "${entry.record.node_id}"`);
      return;
    }
    switch (frame.type) {
      case 'NODE_READY':
        // SYNCING until its state documents are caught up; a connection replaced meanwhile changes nothing.
        void this.#state
          .catchUp(entry, conn)
          .then(() => (entry.conn === conn ? this.#registry.ready(entry) : undefined))
          // Functions it missed while away follow once it takes work; calls for them wait for nothing.
          .then(() => (entry.conn === conn ? this.#functions.reconcile(entry) : undefined))
          .catch((err: unknown) =>
            this.#opts.logger.error('could not bring a node up to date', { node_id: entry.record.node_id, error: String(err) }),
          );
        return;
      case 'DEPLOY_RESULT':
        void this.#functions
          .onResult(entry, frame)
          .catch((err: unknown) =>
            this.#opts.logger.error('could not record a deploy result', { node_id: entry.record.node_id, error: String(err) }),
          );
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
      case 'TASK_RESULT': {
        const refused = this.#dispatcher.onResult(entry, frame);
        if (refused) reject(refused.code, refused.message, frame.task_id);
        return;
      }
      case 'RESULT_BATCH': {
        const refused = this.#dispatcher.onResultBatch(entry, frame);
        if (refused) reject(refused.code, refused.message);
        return;
      }
      case 'ERROR':
        this.#opts.logger.warn('node reported an error', { node_id: entry.record.node_id, code: frame.code, message: frame.message });
        this.#dispatcher.onNodeError(entry, frame);
        return;
      default:
        reject('FM_ERR_MALFORMED_FRAME', `A node may not send ${frame.type} frames`);
    }
  }
}

/**
 * What the gateway reads of a peer's certificate: its serial, the CN (undefined unless exactly one) and its
 * expiry. Read from the X509Certificate view rather than `getPeerCertificate()`, whose object (public key,
 * fingerprints, raw DER) also leaves OpenSSL a converted copy of the peer's key for the life of the
 * connection: 1–2 KB per idle node (see BENCHMARKS.md, "scale").
 */
function peerCertificate(socket: TLSSocket): { serial: string; nodeId: string | undefined; validTo: string } | undefined {
  const cert = socket.getPeerX509Certificate?.();
  if (!cert) return undefined;
  // One `KEY=value` a line, values escaped as RFC 2253 says (no node id has a character that needs it).
  const cns = cert.subject
    .split('\n')
    .filter((line) => line.startsWith('CN='))
    .map((line) => line.slice(3));
  return { serial: normalizeSerial(cert.serialNumber), nodeId: cns.length === 1 ? cns[0] : undefined, validTo: cert.validTo };
}

/** Two public keys in PEM are the same key (whatever their line breaks). */
function sameKey(a: string, b: string): boolean {
  try {
    return createPublicKey(a)
      .export({ type: 'spki', format: 'der' })
      .equals(createPublicKey(b).export({ type: 'spki', format: 'der' }));
  } catch {
    return false;
  }
}
