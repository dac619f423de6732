/**
 * The gateway's side of the pairing exchange (see protocol/pairing.ts): one
 * WebSocket per attempt on the listener's pairing TLS server. It sends a fresh
 * nonce, takes exactly one PAIR_REQUEST, and answers with a certificate, an
 * error, or PAIR_PENDING followed by the operator's decision.
 */
import type { WebSocket } from 'ws';
import { toErrorBody } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { decodePairingFrame, encodeFrame } from '../protocol/codec.js';
import type { PairRequestFrame } from '../protocol/pairing.js';
import { PairingService } from './pairing.js';

/** A pairing request is small: a CSR and a public key. */
export const PAIRING_MAX_FRAME_BYTES = 32 * 1024;
/** How long a pairing connection may take to send its request. */
const REQUEST_TIMEOUT_MS = 30_000;
/** Keeps a connection that waits for an operator alive through idle-timeout middleboxes. */
const PING_INTERVAL_MS = 20_000;

export class PairingEndpoint {
  readonly #pairing: PairingService;
  readonly #gatewayId: string;
  readonly #logger: Logger;
  /** Connections waiting for an operator, by node id. */
  readonly #waiting = new Map<string, Set<() => void>>();

  constructor(pairing: PairingService, gatewayId: string, logger: Logger) {
    this.#pairing = pairing;
    this.#gatewayId = gatewayId;
    this.#logger = logger;
    pairing.on('decided', (nodeId) => {
      for (const wake of this.#waiting.get(nodeId) ?? []) wake();
    });
  }

  accept(ws: WebSocket, remoteAddress: string): void {
    const nonce = PairingService.nonce();
    let requested = false;
    const refuse = (code: string, message: string) => {
      if (ws.readyState === ws.OPEN) ws.send(encodeFrame('ERROR', { code, message }));
      ws.close(1008, code);
    };
    const timer = setTimeout(() => refuse('FM_ERR_PAIRING_REFUSED', 'No PAIR_REQUEST in time'), REQUEST_TIMEOUT_MS);
    timer.unref();
    ws.on('error', (err) => this.#logger.debug('pairing socket error', { error: err.message, remote: remoteAddress }));
    ws.on('close', () => clearTimeout(timer));
    ws.on('message', (data, isBinary) => {
      if (requested) return refuse('FM_ERR_PAIRING_REFUSED', 'Only one PAIR_REQUEST per connection');
      const raw = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
      const decoded = isBinary ? undefined : decodePairingFrame(raw, PAIRING_MAX_FRAME_BYTES);
      if (!decoded?.ok)
        return refuse(decoded?.error.code ?? 'FM_ERR_MALFORMED_FRAME', decoded?.error.message ?? 'Frames must be JSON text');
      if (decoded.frame.type !== 'PAIR_REQUEST') {
        return refuse('FM_ERR_MALFORMED_FRAME', `Expected PAIR_REQUEST, got ${decoded.frame.type}`);
      }
      requested = true;
      clearTimeout(timer);
      this.#decide(ws, decoded.frame, nonce, remoteAddress, refuse);
    });
    ws.send(encodeFrame('PAIR_CHALLENGE', { nonce, gateway_id: this.#gatewayId }));
  }

  #decide(ws: WebSocket, req: PairRequestFrame, nonce: string, remote: string, refuse: (code: string, message: string) => void): void {
    const attempt = () =>
      this.#pairing.pair(req, nonce, remote).then(
        (outcome) => {
          if (ws.readyState !== ws.OPEN) return;
          if ('issued' in outcome) {
            stopWaiting();
            ws.send(encodeFrame('PAIR_ISSUED', outcome.issued));
            ws.close(1000, 'paired');
            this.#logger.info('node paired', { node_id: req.node_id, mode: req.mode, remote, serial: outcome.issued.serial });
            return;
          }
          if (!waiting) {
            waiting = true;
            this.#waitersOf(req.node_id).add(wake);
            ping = setInterval(() => ws.ping(), PING_INTERVAL_MS);
            ping.unref();
            ws.send(encodeFrame('PAIR_PENDING', { node_id: req.node_id }));
          }
        },
        (err: unknown) => {
          stopWaiting();
          const e = toErrorBody(err);
          this.#logger.warn('pairing refused', { node_id: req.node_id, mode: req.mode, remote, code: e.code, error: e.message });
          refuse(e.code, e.message);
        },
      );
    let waiting = false;
    let ping: NodeJS.Timeout | undefined;
    const wake = () => void attempt();
    const stopWaiting = () => {
      if (ping) clearInterval(ping);
      const set = this.#waiting.get(req.node_id);
      set?.delete(wake);
      if (set?.size === 0) this.#waiting.delete(req.node_id);
    };
    ws.on('close', stopWaiting);
    void attempt();
  }

  #waitersOf(nodeId: string): Set<() => void> {
    let set = this.#waiting.get(nodeId);
    if (!set) {
      set = new Set();
      this.#waiting.set(nodeId, set);
    }
    return set;
  }
}
