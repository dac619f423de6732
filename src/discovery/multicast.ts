/**
 * UDP multicast discovery, the mesh transport of the original design: nodes
 * send a signed `ADVERTISE` to group 239.255.70.77:37020 at start, every
 * interval and in answer to a gateway's `DISCOVER`; the gateway caches what it
 * hears and answers a node's `DISCOVER` with a signed `GATEWAY` announcement.
 *
 * Discovered is not trusted: the cache records who is around and which key
 * signed for them; whether that key belongs to a paired node is asked of the
 * caller (`isPaired`) each time the cache is read.
 */
import type { KeyObject } from 'node:crypto';
import type { RemoteInfo } from 'node:dgram';
import { FieldmeshError } from '../core/errors.js';
import { VERSION } from '../core/version.js';
import {
  type AdvertiseMessage,
  DISCOVERY_VERSION,
  type DiscoverMessage,
  type DiscoveryMessage,
  type DiscoveryView,
  type DiscoveryViewNode,
  discoveryPublicKeyPem,
  discoverySchemaError,
  type GatewayMessage,
  signDiscoveryMessage,
} from '../protocol/discovery.js';
import { PROTOCOL_VERSIONS } from '../protocol/frames.js';
import { MulticastEndpoint, newNonce, resolveAdvertised } from './endpoint.js';
import {
  type CompiledMulticastOptions,
  compileMulticastOptions,
  type Ed25519Keys,
  intOption,
  loadEd25519Key,
  type MulticastOptions,
} from './options.js';

export type { MulticastStats } from './endpoint.js';
export { DEFAULT_MULTICAST_GROUP, DEFAULT_MULTICAST_PORT, type MulticastOptions } from './options.js';

type Location = { lat: number; lon: number };

/** A gateway found by `DISCOVER`. */
export interface FoundGateway {
  gateway_id: string;
  /** Where to dial the gateway's node listener, an unspecified host replaced by the announcement's source address. */
  node_listen: string;
  host: string;
  port: number;
  /** SHA-256 fingerprint of the gateway CA (upper case), to pin when pairing. */
  ca_fingerprint: string;
  version: string;
  protocols: number[];
  /** HTTP API address, if the gateway published it. */
  api: string | null;
  /** Key that signed the announcement (SPKI PEM). */
  public_key: string;
  /** Source address of the announcement. */
  address: string;
}

export interface FindGatewayOptions {
  /** Give up after this long. @default 5000 */
  timeoutMs?: number;
  /** DISCOVER is repeated at this interval until a gateway answers, since datagrams get lost. @default 1000 */
  retryIntervalMs?: number;
  /** Accept only a gateway whose CA has this SHA-256 fingerprint. */
  caFingerprint?: string;
  /** Accept only this gateway id. */
  gatewayId?: string;
  /** Sent as `sender_id` in DISCOVER, for the gateway's logs. */
  senderId?: string;
  /** Accept only a gateway this returns true for (e.g. a CA fingerprint prefix from a pairing code, a pinned signing key). */
  accept?: (gateway: FoundGateway) => boolean;
}

interface GatewayWaiter {
  caFingerprint: string | undefined;
  gatewayId: string | undefined;
  accept: ((gateway: FoundGateway) => boolean) | undefined;
  resolve(gateway: FoundGateway): void;
  reject(err: Error): void;
}

/** An endpoint that can ask for gateways and wait for their announcements. */
abstract class GatewaySeekingEndpoint extends MulticastEndpoint {
  private readonly waiters = new Set<GatewayWaiter>();

  protected wantsGateway(message: DiscoveryMessage): boolean {
    return message.type === 'GATEWAY' && this.waiters.size > 0;
  }

  protected handleGateway(message: GatewayMessage, from: RemoteInfo): boolean {
    const listen = resolveAdvertised(message.node_listen, from.address);
    if (!listen) {
      this.drop('schema', `GATEWAY node_listen ${message.node_listen} has no valid port`, from);
      return false;
    }
    const found: FoundGateway = {
      gateway_id: message.gateway_id,
      node_listen: listen.text,
      host: listen.host,
      port: listen.port,
      ca_fingerprint: message.ca_fingerprint.toUpperCase(),
      version: message.version,
      protocols: [...message.protocols],
      api: message.api ? (resolveAdvertised(message.api, from.address)?.text ?? null) : null,
      public_key: discoveryPublicKeyPem(message.public_key) ?? message.public_key,
      address: from.address,
    };
    let used = false;
    for (const waiter of this.waiters) {
      if (waiter.caFingerprint !== undefined && waiter.caFingerprint !== found.ca_fingerprint) continue;
      if (waiter.gatewayId !== undefined && waiter.gatewayId !== found.gateway_id) continue;
      if (waiter.accept !== undefined && !waiter.accept(found)) continue;
      this.waiters.delete(waiter);
      waiter.resolve(found);
      used = true;
    }
    if (!used) this.ignore();
    return used;
  }

  /** Sends DISCOVER (repeated until answered) and resolves with the first matching GATEWAY. */
  protected seekGateway(options: FindGatewayOptions): Promise<FoundGateway> {
    const timeoutMs = intOption('discovery.timeout_ms', options.timeoutMs, 5000, 1, 3_600_000);
    const retryMs = intOption('discovery.retry_interval_ms', options.retryIntervalMs, 1000, 10, 3_600_000);
    const caFingerprint = options.caFingerprint?.toUpperCase();
    const { group, port, interfaceAddress } = this.opts;
    const discover = (): DiscoverMessage => ({
      v: DISCOVERY_VERSION,
      type: 'DISCOVER',
      seek: 'gateways',
      nonce: newNonce(),
      ...(options.senderId ? { sender_id: options.senderId } : {}),
    });
    const droppedBefore = this.stats().dropped;
    return new Promise<FoundGateway>((resolve, reject) => {
      let retry: NodeJS.Timeout | undefined;
      let lastError: string | undefined;
      const ask = () => {
        this.send(discover()).catch((err: Error) => {
          lastError = err.message;
        });
        retry = this.after(retryMs, ask);
      };
      const deadline = this.after(timeoutMs, () => {
        settle();
        const where = `${group}:${port}${interfaceAddress ? ` on ${interfaceAddress}` : ''}`;
        // Answers dropped meanwhile usually mean a wrong clock here (stale) or a bad gateway key (signature).
        const dropped = this.stats().dropped;
        const stale = dropped.stale - droppedBefore.stale;
        const forged = dropped.signature - droppedBefore.signature;
        const hints = [
          lastError ? `last send failed: ${lastError}` : '',
          stale
            ? `${stale} announcement(s) dropped for a sent_at more than ${this.opts.maxClockSkewMs} ms from this clock; check the clock`
            : '',
          forged ? `${forged} announcement(s) dropped for a bad signature` : '',
        ].filter(Boolean);
        reject(
          new FieldmeshError(
            'FM_ERR_NO_GATEWAY_FOUND',
            `No gateway answered DISCOVER on ${where} within ${timeoutMs} ms${hints.length ? ` (${hints.join('; ')})` : ''}`,
            { details: { group, port, timeout_ms: timeoutMs, dropped_stale: stale, dropped_signature: forged } },
          ),
        );
      });
      const settle = () => {
        this.cancel(deadline);
        if (retry) this.cancel(retry);
        this.waiters.delete(waiter);
      };
      const waiter: GatewayWaiter = {
        caFingerprint,
        gatewayId: options.gatewayId,
        accept: options.accept,
        resolve: (gateway) => {
          settle();
          resolve(gateway);
        },
        reject: (err) => {
          settle();
          reject(err);
        },
      };
      this.waiters.add(waiter);
      ask();
    });
  }

  protected override onClose(): void {
    for (const waiter of [...this.waiters]) {
      waiter.reject(new FieldmeshError('FM_ERR_SHUTTING_DOWN', 'Discovery closed while looking for a gateway'));
    }
  }
}

/** What a node advertises. */
export interface NodeAdvertisement {
  node_id: string;
  capabilities: readonly string[];
  platform: string;
  location?: Location | null;
  /** fieldmesh release. @default VERSION */
  version?: string;
  /** `host:port` where the node accepts a gateway's dial; `0.0.0.0:PORT` means "my source address". */
  listen?: string;
}

export interface MulticastAdvertiserOptions extends MulticastOptions {
  /** What to advertise; a function is called before each advertisement, so capabilities stay current. */
  node: NodeAdvertisement | (() => NodeAdvertisement);
  /** The node's Ed25519 key (PKCS#8 PEM or KeyObject); its public half is advertised. */
  privateKey: KeyObject | string;
  /** Interval between unsolicited advertisements. @default 30000 */
  intervalMs?: number;
}

/** Node side: advertises the node and answers the gateway's DISCOVER; finds a gateway for a node started without one. */
export class MulticastAdvertiser extends GatewaySeekingEndpoint {
  private readonly node: NodeAdvertisement | (() => NodeAdvertisement);
  private readonly keys: Ed25519Keys;
  private readonly intervalMs: number;

  constructor(options: MulticastAdvertiserOptions) {
    super(compileMulticastOptions(options));
    this.node = options.node;
    this.keys = loadEd25519Key('discovery.private_key', options.privateKey);
    this.intervalMs = intOption('discovery.advertise_interval_ms', options.intervalMs, 30_000, 10, 86_400_000);
  }

  /** Joins the group and sends the first advertisement; rejects (and closes) when either fails. */
  async start(): Promise<void> {
    this.buildAdvertisement();
    await this.open();
    try {
      await this.advertise();
    } catch (err) {
      await this.close();
      throw err;
    }
    this.every(this.intervalMs, () => this.sendQuietly(() => this.buildAdvertisement()));
  }

  /** Sends an advertisement now. */
  advertise(): Promise<void> {
    return this.send(this.buildAdvertisement());
  }

  /** Asks the segment for a gateway; rejects with FM_ERR_NO_GATEWAY_FOUND after `timeoutMs`. */
  findGateway(options: FindGatewayOptions = {}): Promise<FoundGateway> {
    return this.seekGateway({ senderId: this.currentNode().node_id, ...options });
  }

  /** The advertisement as it would be sent now (signed, fresh nonce); throws FM_ERR_INVALID_OPTION when it is invalid or too large. */
  buildAdvertisement(): AdvertiseMessage {
    const node = this.currentNode();
    const body = {
      v: DISCOVERY_VERSION,
      type: 'ADVERTISE' as const,
      node_id: node.node_id,
      capabilities: [...node.capabilities],
      platform: node.platform,
      ...(node.location !== undefined ? { location: node.location } : {}),
      version: node.version ?? VERSION,
      ...(node.listen !== undefined ? { listen: node.listen } : {}),
      public_key: this.keys.publicKeyPem,
      sent_at: new Date().toISOString(),
      nonce: newNonce(),
    };
    return checkOutgoing(signDiscoveryMessage(body, this.keys.privateKey), this.opts);
  }

  private currentNode(): NodeAdvertisement {
    return typeof this.node === 'function' ? this.node() : this.node;
  }

  protected wants(message: DiscoveryMessage): boolean {
    return (message.type === 'DISCOVER' && message.seek === 'nodes') || this.wantsGateway(message);
  }

  protected handle(message: DiscoveryMessage, from: RemoteInfo): boolean {
    if (message.type === 'GATEWAY') return this.handleGateway(message, from);
    this.scheduleAnswer(() => this.buildAdvertisement());
    return true;
  }
}

/** Checks a message this endpoint is about to send against its schema and the datagram limit. */
function checkOutgoing<T extends AdvertiseMessage | GatewayMessage>(message: T, opts: CompiledMulticastOptions): T {
  const problem = discoverySchemaError(message);
  if (problem) {
    throw new FieldmeshError('FM_ERR_INVALID_OPTION', `${message.type} would be invalid at ${problem}`, {
      details: { type: message.type, problem },
    });
  }
  const size = Buffer.byteLength(JSON.stringify(message));
  if (size > opts.maxDatagramBytes) {
    throw new FieldmeshError(
      'FM_ERR_INVALID_OPTION',
      `${message.type} of ${size} bytes exceeds discovery.max_datagram_bytes (${opts.maxDatagramBytes}); advertise fewer capabilities or raise the limit`,
      { details: { option: 'discovery.max_datagram_bytes', size, limit: opts.maxDatagramBytes } },
    );
  }
  return message;
}

/** Looks for a gateway without running an advertiser: joins the group, sends DISCOVER until answered, leaves. */
export async function findGateway(options: MulticastOptions & FindGatewayOptions = {}): Promise<FoundGateway> {
  const finder = new GatewayFinder(compileMulticastOptions(options));
  await finder.start();
  try {
    return await finder.find(options);
  } finally {
    await finder.close();
  }
}

class GatewayFinder extends GatewaySeekingEndpoint {
  constructor(opts: CompiledMulticastOptions) {
    super(opts);
  }
  start(): Promise<void> {
    return this.open();
  }
  find(options: FindGatewayOptions): Promise<FoundGateway> {
    return this.seekGateway(options);
  }
  protected wants(message: DiscoveryMessage): boolean {
    return this.wantsGateway(message);
  }
  protected handle(message: DiscoveryMessage, from: RemoteInfo): boolean {
    return message.type === 'GATEWAY' && this.handleGateway(message, from);
  }
}

/** What the gateway tells nodes looking for it. */
export interface GatewayAnnouncement {
  gateway_id: string;
  /** Where nodes dial the node listener; `0.0.0.0:PORT` means "my source address". */
  node_listen: string;
  /** SHA-256 fingerprint of the gateway CA (`AA:BB:…`). */
  ca_fingerprint: string;
  /** @default VERSION */
  version?: string;
  /** @default PROTOCOL_VERSIONS */
  protocols?: number[];
  /** HTTP API address to publish, if any. */
  api?: string;
}

/** Whether a discovered node is paired, and whether the key that signed its advertisement is the paired one. */
export interface PairingStatus {
  paired: boolean;
  trusted: boolean;
}

/** Answers for a node id and the key that signed its advertisement; `true` means paired with that very key. */
export type IsPaired = (nodeId: string, publicKeyPem: string) => boolean | PairingStatus;

/** A node the gateway has heard from. */
export interface DiscoveredNode {
  node_id: string;
  /** Source address of the last valid advertisement. */
  address: string;
  source_port: number;
  /** Where the node accepts a dial (resolved `host:port`), or null. */
  listen: string | null;
  capabilities: string[];
  platform: string;
  location: Location | null;
  version: string;
  /** The key that signed the advertisement, SPKI PEM. */
  public_key: string;
  /** `sent_at` of the last advertisement, as the node's clock had it. */
  sent_at: string;
  /** ms since the epoch, by this gateway's clock. */
  first_seen: number;
  last_seen: number;
  paired: boolean;
  trusted: boolean;
}

export type DiscoveryEvent = 'discovered' | 'updated' | 'expired';

export interface MulticastDiscoveryOptions extends MulticastOptions {
  /** The gateway's announcement; without it DISCOVER from nodes goes unanswered. */
  gateway?: GatewayAnnouncement;
  /** The gateway's Ed25519 key, to sign GATEWAY (needed with `gateway`). */
  privateKey?: KeyObject | string;
  /** Interval between DISCOVER requests. @default 30000 */
  discoverIntervalMs?: number;
  /** A node not heard from for this long leaves the cache. @default 90000 */
  ttlMs?: number;
  /** Nodes cached at most; advertisements from new nodes past it are dropped. @default 10000 */
  maxNodes?: number;
  /** Marks entries paired/trusted; asked whenever the cache is read. Without it every node is untrusted. */
  isPaired?: IsPaired;
  /** Called when a node appears, re-advertises or expires. */
  onNode?: (node: DiscoveredNode, event: DiscoveryEvent) => void;
}

interface CacheEntry {
  node: Omit<DiscoveredNode, 'paired' | 'trusted'>;
  sentAtMs: number;
}

/** Gateway side: asks who is around, caches signed advertisements, answers nodes looking for a gateway. */
export class MulticastDiscovery extends MulticastEndpoint {
  private readonly gateway: (GatewayAnnouncement & { keys: Ed25519Keys }) | undefined;
  private readonly discoverIntervalMs: number;
  private readonly ttlMs: number;
  private readonly maxNodes: number;
  private readonly isPaired: IsPaired | undefined;
  private readonly onNode: ((node: DiscoveredNode, event: DiscoveryEvent) => void) | undefined;
  private readonly nodes = new Map<string, CacheEntry>();

  constructor(options: MulticastDiscoveryOptions) {
    super(compileMulticastOptions(options));
    this.discoverIntervalMs = intOption('discovery.discover_interval_ms', options.discoverIntervalMs, 30_000, 10, 86_400_000);
    this.ttlMs = intOption('discovery.ttl_ms', options.ttlMs, 90_000, 10, 7 * 86_400_000);
    this.maxNodes = intOption('discovery.max_nodes', options.maxNodes, 10_000, 1, 10_000_000);
    this.isPaired = options.isPaired;
    this.onNode = options.onNode;
    if (options.gateway) {
      this.gateway = { ...options.gateway, keys: loadEd25519Key('discovery.private_key', options.privateKey) };
      this.buildAnnouncement();
    }
  }

  /** Joins the group, announces the gateway (if any) and sends the first DISCOVER; rejects (and closes) when that fails. */
  async start(): Promise<void> {
    await this.open();
    try {
      if (this.gateway) await this.send(this.buildAnnouncement());
      await this.discover();
    } catch (err) {
      await this.close();
      throw err;
    }
    this.every(this.discoverIntervalMs, () => this.sendQuietly(() => this.discoverMessage()));
    this.every(Math.max(10, Math.min(Math.floor(this.ttlMs / 4), 5000)), () => this.sweep());
  }

  /** Sends DISCOVER now. */
  discover(): Promise<void> {
    return this.send(this.discoverMessage());
  }

  /** The GATEWAY announcement as it would be sent now; throws when the gateway was not configured or it is invalid. */
  buildAnnouncement(): GatewayMessage {
    const gateway = this.gateway;
    if (!gateway) throw new FieldmeshError('FM_ERR_INVALID_OPTION', 'discovery.gateway is not set: this listener announces no gateway');
    const body = {
      v: DISCOVERY_VERSION,
      type: 'GATEWAY' as const,
      gateway_id: gateway.gateway_id,
      node_listen: gateway.node_listen,
      ca_fingerprint: gateway.ca_fingerprint,
      version: gateway.version ?? VERSION,
      protocols: gateway.protocols ?? [...PROTOCOL_VERSIONS],
      ...(gateway.api !== undefined ? { api: gateway.api } : {}),
      public_key: gateway.keys.publicKeyPem,
      sent_at: new Date().toISOString(),
      nonce: newNonce(),
    };
    return checkOutgoing(signDiscoveryMessage(body, gateway.keys.privateKey), this.opts);
  }

  /** Nodes heard from within the TTL, with their pairing flags as the hook answers now, by node id. */
  list(): DiscoveredNode[] {
    const cutoff = Date.now() - this.ttlMs;
    const out: DiscoveredNode[] = [];
    for (const entry of this.nodes.values()) if (entry.node.last_seen >= cutoff) out.push(this.withFlags(entry));
    return out.sort((a, b) => (a.node_id < b.node_id ? -1 : a.node_id > b.node_id ? 1 : 0));
  }

  get(nodeId: string): DiscoveredNode | undefined {
    const entry = this.nodes.get(nodeId);
    return entry && entry.node.last_seen >= Date.now() - this.ttlMs ? this.withFlags(entry) : undefined;
  }

  protected wants(message: DiscoveryMessage): boolean {
    return message.type === 'ADVERTISE' || (message.type === 'DISCOVER' && message.seek === 'gateways' && this.gateway !== undefined);
  }

  protected handle(message: DiscoveryMessage, from: RemoteInfo): boolean {
    if (message.type === 'DISCOVER') {
      this.scheduleAnswer(() => this.buildAnnouncement());
      return true;
    }
    return message.type === 'ADVERTISE' && this.remember(message, from);
  }

  private remember(message: AdvertiseMessage, from: RemoteInfo): boolean {
    let listen: string | null = null;
    if (message.listen !== undefined) {
      const resolved = resolveAdvertised(message.listen, from.address);
      if (!resolved) {
        this.drop('schema', `ADVERTISE listen ${message.listen} has no valid port`, from);
        return false;
      }
      listen = resolved.text;
    }
    const publicKey = discoveryPublicKeyPem(message.public_key) ?? message.public_key;
    const sentAtMs = Date.parse(message.sent_at);
    const now = Date.now();
    let existing = this.nodes.get(message.node_id);
    if (existing && existing.node.last_seen < now - this.ttlMs) {
      this.expire(message.node_id, existing);
      existing = undefined;
    }
    if (existing) {
      if (existing.node.public_key !== publicKey) {
        // Anyone can claim a node id with a key of their own; a claim signed by the paired key is not displaced by one that is not.
        if (this.status(message.node_id, existing.node.public_key).trusted && !this.status(message.node_id, publicKey).trusted) {
          this.drop('key_conflict', `${message.node_id} advertised with a key other than its paired one`, from);
          return false;
        }
        this.opts.logger.warn('discovered node changed its key', { node_id: message.node_id, address: from.address });
      } else if (sentAtMs < existing.sentAtMs) {
        this.drop('replay', `${message.node_id} advertisement older than the last one`, from);
        return false;
      }
    } else if (this.nodes.size >= this.maxNodes) {
      this.sweep();
      if (this.nodes.size >= this.maxNodes) {
        this.drop('cache_full', `discovery cache holds ${this.maxNodes} nodes`, from);
        return false;
      }
    }
    const entry: CacheEntry = {
      node: {
        node_id: message.node_id,
        address: from.address,
        source_port: from.port,
        listen,
        capabilities: [...message.capabilities],
        platform: message.platform,
        location: message.location ?? null,
        version: message.version,
        public_key: publicKey,
        sent_at: message.sent_at,
        first_seen: existing?.node.first_seen ?? now,
        last_seen: now,
      },
      sentAtMs,
    };
    this.nodes.set(message.node_id, entry);
    this.notify(entry, existing ? 'updated' : 'discovered');
    return true;
  }

  private sweep(): void {
    const cutoff = Date.now() - this.ttlMs;
    for (const [nodeId, entry] of this.nodes) if (entry.node.last_seen < cutoff) this.expire(nodeId, entry);
  }

  private expire(nodeId: string, entry: CacheEntry): void {
    this.nodes.delete(nodeId);
    this.notify(entry, 'expired');
  }

  private notify(entry: CacheEntry, event: DiscoveryEvent): void {
    if (!this.onNode) return;
    try {
      this.onNode(this.withFlags(entry), event);
    } catch (err) {
      this.opts.logger.error('discovery onNode callback failed', { event, err: (err as Error).message });
    }
  }

  private withFlags(entry: CacheEntry): DiscoveredNode {
    const { paired, trusted } = this.status(entry.node.node_id, entry.node.public_key);
    return { ...entry.node, capabilities: [...entry.node.capabilities], paired, trusted };
  }

  private status(nodeId: string, publicKey: string): PairingStatus {
    if (!this.isPaired) return { paired: false, trusted: false };
    try {
      const answer = this.isPaired(nodeId, publicKey);
      if (typeof answer === 'boolean') return { paired: answer, trusted: answer };
      return { paired: answer.paired === true, trusted: answer.paired === true && answer.trusted === true };
    } catch (err) {
      this.opts.logger.error('discovery isPaired hook failed', { node_id: nodeId, err: (err as Error).message });
      return { paired: false, trusted: false };
    }
  }

  private discoverMessage(): DiscoverMessage {
    return {
      v: DISCOVERY_VERSION,
      type: 'DISCOVER',
      seek: 'nodes',
      nonce: newNonce(),
      ...(this.gateway ? { sender_id: this.gateway.gateway_id } : {}),
    };
  }

  protected override onClose(): void {
    this.nodes.clear();
  }
}

/** The body of `GET /v1/discovery`: every node heard from within the TTL, by node id. */
export function discoveryView(source: { list(): DiscoveredNode[] }): DiscoveryView {
  return {
    nodes: source.list().map(
      (n): DiscoveryViewNode => ({
        node_id: n.node_id,
        address: n.address,
        listen: n.listen,
        capabilities: n.capabilities,
        platform: n.platform,
        location: n.location,
        version: n.version,
        last_seen: new Date(n.last_seen).toISOString(),
        paired: n.paired,
        trusted: n.trusted,
      }),
    ),
  };
}
