/**
 * One member of the discovery multicast group: the UDP socket (joined on one
 * interface, TTL-limited, `reuseAddr` so a gateway and nodes on one host share
 * the port), the checks every datagram passes before a handler sees it, and
 * the counters of what was dropped and why.
 */
import { randomBytes } from 'node:crypto';
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { FieldmeshError } from '../core/errors.js';
import {
  type DiscoveryMessage,
  type DiscoveryMessageType,
  DropReason,
  decodeDiscoveryDatagram,
  verifyDiscoverySignature,
} from '../protocol/discovery.js';
import type { CompiledMulticastOptions } from './options.js';
import { ReplayGuard } from './replay.js';

export interface MulticastStats {
  /** Datagrams received. */
  received: number;
  /** Messages that passed every check and were used. */
  accepted: number;
  /** Valid messages meant for another role (e.g. another node's ADVERTISE seen by a node). */
  ignored: number;
  /** Dropped datagrams by reason. */
  dropped: Record<DropReason, number>;
  /** Datagrams sent. */
  sent: number;
  /** Sends that failed (network down, interface gone). */
  send_errors: number;
  /** DISCOVER requests answered (several close together get one answer). */
  answered: number;
}

function emptyDrops(): Record<DropReason, number> {
  return Object.fromEntries(Object.values(DropReason).map((r) => [r, 0])) as Record<DropReason, number>;
}

export function newNonce(): string {
  return randomBytes(16).toString('base64url');
}

export abstract class MulticastEndpoint {
  protected readonly opts: CompiledMulticastOptions;
  private socket: Socket | undefined;
  private closed = false;
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly replay: ReplayGuard;
  private answerTimer: NodeJS.Timeout | undefined;
  private lastAnswerAt = Number.NEGATIVE_INFINITY;
  private readonly counters = { received: 0, accepted: 0, ignored: 0, sent: 0, send_errors: 0, answered: 0 };
  private readonly drops = emptyDrops();

  protected constructor(opts: CompiledMulticastOptions) {
    this.opts = opts;
    this.replay = new ReplayGuard({ windowMs: opts.maxClockSkewMs });
  }

  /** The message types this endpoint reads; every other valid message is counted as ignored. */
  protected abstract wants(message: DiscoveryMessage): boolean;
  /** Handles a message that passed every check. Returns false when it was dropped after all (the reason is counted). */
  protected abstract handle(message: DiscoveryMessage, from: RemoteInfo): boolean;

  /** Opens the socket and joins the group. Rejects with FM_ERR_DISCOVERY_UNAVAILABLE when the interface cannot be used. */
  protected async open(): Promise<void> {
    if (this.closed) throw new FieldmeshError('FM_ERR_SHUTTING_DOWN', 'Discovery endpoint is closed');
    if (this.socket) return;
    const { group, port, interfaceAddress, ttl } = this.opts;
    const socket = createSocket({ type: 'udp4', reuseAddr: true });
    // Binding to the group address keeps unicast traffic to the port out; Windows only binds to local addresses.
    const bindAddress = process.platform === 'win32' ? '0.0.0.0' : group;
    const where = `${group}:${port}${interfaceAddress ? ` on ${interfaceAddress}` : ''}`;
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('error', reject);
        socket.bind({ port, address: bindAddress, exclusive: false }, () => {
          socket.removeListener('error', reject);
          resolve();
        });
      });
      socket.addMembership(group, interfaceAddress);
      if (interfaceAddress) socket.setMulticastInterface(interfaceAddress);
      socket.setMulticastTTL(ttl);
      socket.setMulticastLoopback(true);
    } catch (err) {
      socket.close();
      throw new FieldmeshError('FM_ERR_DISCOVERY_UNAVAILABLE', `Cannot join multicast group ${where}: ${(err as Error).message}`, {
        cause: err,
        details: { group, port, interface: interfaceAddress ?? null },
      });
    }
    socket.on('error', (err) => this.opts.logger.warn('discovery socket error', { err: err.message }));
    socket.on('message', (msg, rinfo) => this.receive(msg, rinfo));
    this.socket = socket;
  }

  /** Counts and checks one datagram; never throws. */
  private receive(raw: Buffer, from: RemoteInfo): void {
    if (this.closed) return;
    this.counters.received++;
    const decoded = decodeDiscoveryDatagram(raw, this.opts.maxDatagramBytes);
    if (!decoded.ok) {
      this.drop(decoded.reason, decoded.detail, from);
      return;
    }
    const message = decoded.message;
    if (!this.wants(message)) {
      this.counters.ignored++;
      return;
    }
    if (message.type !== 'DISCOVER') {
      if (!verifyDiscoverySignature(message)) {
        this.drop('signature', `${message.type} signature does not verify`, from);
        return;
      }
      const verdict = this.replay.check(Date.parse(message.sent_at), message.nonce);
      if (verdict !== 'ok') {
        this.drop(verdict, `${message.type} sent_at ${message.sent_at}`, from);
        return;
      }
    }
    try {
      if (this.handle(message, from)) this.counters.accepted++;
    } catch (err) {
      this.opts.logger.error('discovery handler failed', { type: message.type, err: (err as Error).message });
    }
  }

  /** Counts a valid message that this endpoint has no use for. */
  protected ignore(): void {
    this.counters.ignored++;
  }

  protected drop(reason: DropReason, detail: string, from: RemoteInfo): void {
    this.drops[reason]++;
    this.opts.logger.debug('discovery datagram dropped', { reason, detail, from: `${from.address}:${from.port}` });
  }

  /** Sends one message to the group. Rejects when it is larger than `maxDatagramBytes` or the send fails. */
  protected async send(message: Record<string, unknown> & { type: DiscoveryMessageType }): Promise<void> {
    const socket = this.socket;
    if (!socket || this.closed) throw new FieldmeshError('FM_ERR_SHUTTING_DOWN', 'Discovery endpoint is not open');
    const data = Buffer.from(JSON.stringify(message), 'utf8');
    if (data.length > this.opts.maxDatagramBytes) {
      throw new FieldmeshError(
        'FM_ERR_INVALID_OPTION',
        `${message.type} of ${data.length} bytes exceeds discovery.max_datagram_bytes (${this.opts.maxDatagramBytes})`,
        { details: { option: 'discovery.max_datagram_bytes', size: data.length } },
      );
    }
    try {
      await new Promise<void>((resolve, reject) => {
        socket.send(data, this.opts.port, this.opts.group, (err) => (err ? reject(err) : resolve()));
      });
      this.counters.sent++;
    } catch (err) {
      this.counters.send_errors++;
      throw new FieldmeshError('FM_ERR_DISCOVERY_UNAVAILABLE', `Cannot send ${message.type}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Sends from a timer or an answer: failures are logged, not thrown. */
  protected sendQuietly(make: () => Record<string, unknown> & { type: DiscoveryMessageType }): void {
    if (this.closed) return;
    let message: Record<string, unknown> & { type: DiscoveryMessageType };
    try {
      message = make();
    } catch (err) {
      this.opts.logger.error('discovery message could not be built', { err: (err as Error).message });
      return;
    }
    this.send(message).catch((err: Error) => {
      if (!this.closed) this.opts.logger.warn('discovery send failed', { type: message.type, err: err.message });
    });
  }

  /** Answers a DISCOVER after a random delay; requests that arrive while an answer is pending share it. */
  protected scheduleAnswer(make: () => Record<string, unknown> & { type: DiscoveryMessageType }): void {
    if (this.closed || this.answerTimer) return;
    const earliest = this.lastAnswerAt + this.opts.minAnswerIntervalMs - Date.now();
    const delay = Math.max(earliest, 0) + Math.floor(Math.random() * (this.opts.answerJitterMs + 1));
    this.answerTimer = setTimeout(() => {
      this.answerTimer = undefined;
      this.lastAnswerAt = Date.now();
      this.counters.answered++;
      this.sendQuietly(make);
    }, delay);
    this.answerTimer.unref();
  }

  /** Runs `fn` every `ms` until close. */
  protected every(ms: number, fn: () => void): void {
    const timer = setInterval(() => {
      if (!this.closed) fn();
    }, ms);
    timer.unref();
    this.timers.add(timer);
  }

  /** A one-shot timer cleared by close. */
  protected after(ms: number, fn: () => void): NodeJS.Timeout {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      if (!this.closed) fn();
    }, ms);
    this.timers.add(timer);
    return timer;
  }

  protected cancel(timer: NodeJS.Timeout): void {
    clearTimeout(timer);
    this.timers.delete(timer);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** What was received, accepted, ignored, dropped (by reason) and sent. */
  stats(): MulticastStats {
    return { ...this.counters, dropped: { ...this.drops } };
  }

  /** Stops every timer, leaves the group and closes the socket. Safe to call twice. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    if (this.answerTimer) clearTimeout(this.answerTimer);
    this.answerTimer = undefined;
    this.onClose();
    const socket = this.socket;
    this.socket = undefined;
    if (socket) await new Promise<void>((resolve) => socket.close(() => resolve()));
  }

  /** Lets a subclass settle its own pending work when the endpoint closes. */
  protected onClose(): void {}
}

/**
 * Resolves an advertised `host:port` whose host is unspecified (`0.0.0.0`, `::`)
 * to the address the datagram came from; undefined for a port outside 1-65535.
 */
export function resolveAdvertised(hostPort: string, sourceAddress: string): { host: string; port: number; text: string } | undefined {
  const i = hostPort.lastIndexOf(':');
  let host = hostPort.slice(0, i);
  const port = Number(hostPort.slice(i + 1));
  if (!Number.isInteger(port) || port < 1 || port > 65535) return undefined;
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  if (host === '0.0.0.0' || host === '::' || host === '') host = sourceAddress;
  return { host, port, text: host.includes(':') ? `[${host}]:${port}` : `${host}:${port}` };
}
