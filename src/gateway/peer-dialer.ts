/**
 * Static peers and registered nodes: the gateway dials listen-mode nodes
 * (`fieldmesh node --listen HOST:PORT`) instead of waiting for them. The TLS
 * is mutual: the gateway presents its client certificate, and checks that the
 * node's certificate was issued by its own CA, is in date, is not revoked and,
 * for a registered node, names that node. The WebSocket then goes to the node
 * listener, which runs the same protocol (REGISTER, WELCOME, …) as on a
 * connection the node dialed. A peer that is down, or whose connection drops,
 * is redialed with exponential backoff.
 */
import { X509Certificate } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import WebSocket from 'ws';
import type { Logger } from '../core/logger.js';
import { NODE_PROTOCOL_PATH, type PeerEndpoint } from '../protocol/peers.js';
import { normalizeSerial } from '../protocol/pki.js';
import { CLOSE_REPLACED, type NodeListener } from './node-listener.js';
import type { PairingService } from './pairing.js';
import type { GatewayIdentity } from './tls.js';

export interface PeerTarget {
  endpoint: PeerEndpoint;
  /** The node expected at the endpoint (registered nodes); null for a static peer, which may be any paired node. */
  nodeId: string | null;
  source: 'static' | 'registered';
}

/** What `GET /v1/discovery` shows of each peer. */
export interface PeerStatus {
  endpoint: string;
  node_id: string | null;
  source: 'static' | 'registered';
  connected: boolean;
  /** Failed dials since the last connection that held. */
  failures: number;
  last_error: string | null;
  last_connected_at: string | null;
}

export interface PeerDialerOptions {
  maxFrameBytes: number;
  logger: Logger;
  /** First redial delay. @default 250 */
  minBackoffMs?: number;
  /** Largest redial delay. @default 30000 */
  maxBackoffMs?: number;
}

interface Peer {
  target: PeerTarget;
  ws: WebSocket | undefined;
  timer: NodeJS.Timeout | undefined;
  failures: number;
  connected: boolean;
  connectedAt: number;
  lastError: string | null;
  lastConnectedAt: string | null;
  removed: boolean;
}

/** A connection that held this long counts as a success: the next drop is redialed from the smallest delay. */
const STABLE_MS = 5000;

export class PeerDialer {
  readonly #identity: GatewayIdentity;
  readonly #pairing: PairingService;
  readonly #listener: NodeListener;
  readonly #opts: Required<PeerDialerOptions>;
  readonly #peers = new Map<string, Peer>();
  readonly #ca: X509Certificate;
  #stopped = false;

  constructor(identity: GatewayIdentity, pairing: PairingService, listener: NodeListener, opts: PeerDialerOptions) {
    this.#identity = identity;
    this.#pairing = pairing;
    this.#listener = listener;
    this.#opts = { minBackoffMs: 250, maxBackoffMs: 30_000, ...opts };
    this.#ca = new X509Certificate(identity.caCertPem);
  }

  /** Starts dialing a peer; a second target on the same endpoint replaces nothing and is ignored. */
  add(target: PeerTarget): void {
    if (this.#stopped || this.#peers.has(target.endpoint.text)) return;
    const peer: Peer = {
      target,
      ws: undefined,
      timer: undefined,
      failures: 0,
      connected: false,
      connectedAt: 0,
      lastError: null,
      lastConnectedAt: null,
      removed: false,
    };
    this.#peers.set(target.endpoint.text, peer);
    this.#dial(peer);
  }

  /** Stops dialing an endpoint and closes its connection. */
  remove(endpoint: string, code = 1000, reason = 'peer removed'): void {
    const peer = this.#peers.get(endpoint);
    if (!peer) return;
    this.#peers.delete(endpoint);
    peer.removed = true;
    if (peer.timer) clearTimeout(peer.timer);
    peer.ws?.close(code, reason);
  }

  list(): PeerStatus[] {
    return [...this.#peers.values()].map((p) => ({
      endpoint: p.target.endpoint.text,
      node_id: p.target.nodeId,
      source: p.target.source,
      connected: p.connected,
      failures: p.failures,
      last_error: p.lastError,
      last_connected_at: p.lastConnectedAt,
    }));
  }

  stop(): void {
    this.#stopped = true;
    for (const endpoint of [...this.#peers.keys()]) this.remove(endpoint, 1001, 'gateway shutting down');
  }

  #dial(peer: Peer): void {
    peer.timer = undefined;
    if (this.#stopped || peer.removed) return;
    const { endpoint, nodeId } = peer.target;
    // The node's certificate is checked by hand below: it is a client certificate from the gateway CA, served by the node.
    const ws = new WebSocket(`wss://${endpoint.text}${NODE_PROTOCOL_PATH}`, {
      cert: this.#identity.clientCertPem,
      key: this.#identity.clientKeyPem,
      rejectUnauthorized: false,
      handshakeTimeout: 10_000,
      maxPayload: this.#opts.maxFrameBytes * 4,
    });
    peer.ws = ws;
    let socket: TLSSocket | undefined;
    /** Why this dial was ended on purpose; the error ws reports for that end does not replace it. */
    let refused = false;
    ws.on('upgrade', (res) => {
      socket = res.socket as TLSSocket;
      const problem = this.#checkNode(socket, nodeId);
      if (problem) {
        refused = true;
        peer.lastError = problem;
        this.#opts.logger.warn('refused a peer certificate', { endpoint: endpoint.text, error: problem });
        ws.terminate();
      }
    });
    ws.on('open', () => {
      if (!socket || peer.removed) {
        ws.terminate();
        return;
      }
      peer.connected = true;
      peer.connectedAt = Date.now();
      peer.lastConnectedAt = new Date().toISOString();
      peer.lastError = null;
      this.#opts.logger.info('dialed a listen-mode node', { endpoint: endpoint.text, node_id: nodeId ?? undefined });
      this.#listener.serveDialed(ws, socket);
    });
    ws.on('unexpected-response', (_req, res) => {
      refused = true;
      peer.lastError = `the peer answered the upgrade with HTTP ${res.statusCode}`;
      ws.terminate();
    });
    ws.on('error', (err) => {
      if (!refused) peer.lastError = err.message;
    });
    ws.on('close', (code, reason) => {
      if (peer.ws === ws) peer.ws = undefined;
      const wasConnected = peer.connected;
      peer.connected = false;
      if (this.#stopped || peer.removed) return;
      if (wasConnected && Date.now() - peer.connectedAt >= STABLE_MS) peer.failures = 0;
      if (code === CLOSE_REPLACED) {
        // The same node connected through another path (another endpoint of it, or it dialed itself): redialing
        // at once would take the node from that connection, and that one's redial from this one, over and over.
        this.#opts.logger.warn('a listen-mode node is also reached another way; redialing it rarely', {
          endpoint: endpoint.text,
          node_id: nodeId ?? undefined,
        });
        peer.failures = Math.max(peer.failures, 30);
      }
      if (wasConnected) {
        this.#opts.logger.warn('connection to a listen-mode node closed', { endpoint: endpoint.text, code, reason: reason.toString() });
      }
      const ceiling = Math.min(this.#opts.maxBackoffMs, this.#opts.minBackoffMs * 2 ** Math.min(peer.failures, 30));
      const delay = Math.round(ceiling * (0.5 + Math.random() * 0.5));
      peer.failures += 1;
      this.#opts.logger[peer.failures === 1 ? 'info' : 'debug']('redialing a listen-mode node', {
        endpoint: endpoint.text,
        in_ms: delay,
        failures: peer.failures,
        error: peer.lastError ?? undefined,
      });
      peer.timer = setTimeout(() => this.#dial(peer), delay);
      peer.timer.unref();
    });
  }

  /** Why the node's certificate is refused, or undefined when it was issued by this gateway to the expected node. */
  #checkNode(socket: TLSSocket, nodeId: string | null): string | undefined {
    const presented = socket.getPeerCertificate();
    if (!presented?.raw) return 'the peer presented no certificate';
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(presented.raw);
    } catch {
      return 'the peer presented an unreadable certificate';
    }
    if (!cert.checkIssued(this.#ca) || !cert.verify(this.#ca.publicKey)) return 'the peer certificate was not issued by this gateway CA';
    const now = Date.now();
    if (Date.parse(cert.validFrom) > now || Date.parse(cert.validTo) <= now)
      return `the peer certificate is not valid now (until ${cert.validTo})`;
    const serial = normalizeSerial(cert.serialNumber);
    if (this.#pairing.isRevoked(serial)) return `the peer certificate ${serial} has been revoked`;
    const cn = presented.subject?.CN;
    if (nodeId !== null && cn !== nodeId) return `the peer certificate names "${String(cn ?? '')}", not the registered node "${nodeId}"`;
    return undefined;
  }
}
