/**
 * Node registry and health monitor (the original NodeRegistry and
 * NodeHealthMonitor): every known node with its live connection, a
 * capability → nodes index for the scheduler, and heartbeat sweeps that move
 * nodes ONLINE → DEGRADED → OFFLINE.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from '../core/logger.js';
import type { DeployResultFrame, NodePolicy, RegisterFrame } from '../protocol/frames.js';
import { type NodeLoad, type NodeRecord, NodeStatus, type Store } from '../store/types.js';
import { IndexedSet } from './indexed-set.js';

/** What the registry needs from a live node connection. */
export interface NodeConnection {
  send(text: string): void;
  close(code: number, reason: string): void;
  /** Drops the socket at once, for a peer that no longer answers a close. */
  terminate(): void;
  readonly remoteAddress: string;
  /** The optional protocol features the node advertised in its REGISTER (see NodeFeature); empty until then. */
  features?: ReadonlySet<string>;
}

export interface NodeEntry {
  record: NodeRecord;
  conn: NodeConnection | null;
  /** Attempts the gateway has sent and not yet seen finish. */
  inFlight: number;
  lastSeenMs: number;
  /** Monotonic counter value when the scheduler last picked this node; spreads ties. */
  lastPicked: number;
  /** tool name → descriptor, as advertised. */
  tools: Map<string, RegisterFrame['tools'][number]>;
  /** The node's own policy from its last REGISTER; null until it registers, or for nodes that advertise none. */
  policy: NodePolicy | null;
  /** Deployed function name → bundle hash, as the node last advertised (REGISTER, DEPLOY_RESULT). */
  functions: Map<string, string>;
}

export interface RegistryOptions {
  heartbeatIntervalMs: number;
  degradedAfterMissed: number;
  offlineAfterMs: number;
  logger: Logger;
}

export interface RegistryEvents {
  status: [entry: NodeEntry, previous: NodeStatus];
  disconnected: [entry: NodeEntry];
}

const emptyLoad: NodeLoad = { cpu: 0, memory: 0, in_flight: 0 };

export class Registry extends EventEmitter<RegistryEvents> {
  readonly #nodes = new Map<string, NodeEntry>();
  readonly #byCapability = new Map<string, IndexedSet>();
  readonly #store: Store;
  readonly #opts: RegistryOptions;
  #sweep: NodeJS.Timeout | undefined;
  #pickCounter = 0;

  constructor(store: Store, opts: RegistryOptions) {
    super();
    this.#store = store;
    this.#opts = opts;
  }

  /** Loads known nodes from the store; none is connected yet, so all start OFFLINE. */
  async load(): Promise<void> {
    for (const record of await this.#store.listNodes()) {
      const descriptors = shared(record.tools as RegisterFrame['tools']);
      const entry: NodeEntry = {
        record: {
          ...record,
          tools: descriptors as NodeRecord['tools'],
          status: NodeStatus.Offline,
          load: { ...record.load, in_flight: 0 },
        },
        conn: null,
        inFlight: 0,
        lastSeenMs: Date.parse(record.last_seen) || 0,
        lastPicked: 0,
        tools: toolMap(descriptors),
        policy: null,
        functions: new Map(),
      };
      this.#nodes.set(record.node_id, entry);
      this.#index(entry);
      if (record.status !== NodeStatus.Offline) await this.#store.updateNodeStatus(record.node_id, NodeStatus.Offline, record.last_seen);
    }
  }

  startSweeps(): void {
    const every = Math.max(10, Math.min(250, Math.floor(this.#opts.heartbeatIntervalMs / 4)));
    this.#sweep = setInterval(() => this.sweep(Date.now()), every);
    this.#sweep.unref();
  }

  stopSweeps(): void {
    if (this.#sweep) clearInterval(this.#sweep);
    this.#sweep = undefined;
  }

  get(nodeId: string): NodeEntry | undefined {
    return this.#nodes.get(nodeId);
  }

  all(): IterableIterator<NodeEntry> {
    return this.#nodes.values();
  }

  get size(): number {
    return this.#nodes.size;
  }

  /** Node ids that advertise a capability, from the index. */
  withCapability(capability: string): IndexedSet | undefined {
    return this.#byCapability.get(capability);
  }

  nextPick(): number {
    this.#pickCounter += 1;
    return this.#pickCounter;
  }

  /**
   * Records a node from its REGISTER frame. The record is in the store before
   * this resolves, so the WELCOME that follows never acknowledges a node the
   * gateway could forget.
   */
  async register(frame: RegisterFrame, version: number, conn: NodeConnection): Promise<NodeEntry> {
    const now = new Date();
    const previous = this.#nodes.get(frame.node_id);
    const descriptors = shared(frame.tools);
    const record: NodeRecord = {
      node_id: frame.node_id,
      name: frame.name,
      platform: frame.platform,
      status: NodeStatus.Syncing,
      capabilities: [...new Set(frame.capabilities)],
      tools: descriptors as NodeRecord['tools'],
      location: frame.location ?? null,
      load: { ...emptyLoad },
      public_key: frame.public_key,
      // Only a peer that presented a certificate from the gateway CA, issued to this node id, gets this far.
      trusted: true,
      protocol_version: version,
      agent_version: frame.agent_version,
      max_concurrency: frame.max_concurrency,
      registered_at: previous?.record.registered_at ?? now.toISOString(),
      last_seen: now.toISOString(),
    };
    await this.#store.upsertNode(record);
    const tools = toolMap(descriptors);
    const functions = new Map((frame.functions ?? []).map((f) => [f.name, f.bundle_sha256]));
    let entry: NodeEntry;
    if (previous) {
      // The same object lives on, so attempts still settling against it keep its in-flight count right.
      this.#unindex(previous);
      entry = previous;
      entry.record = { ...record, status: previous.record.status };
      entry.conn = conn;
      entry.lastSeenMs = now.getTime();
      entry.tools = tools;
      entry.policy = frame.policy ?? null;
      entry.functions = functions;
    } else {
      entry = { record, conn, inFlight: 0, lastSeenMs: now.getTime(), lastPicked: 0, tools, policy: frame.policy ?? null, functions };
      this.#nodes.set(record.node_id, entry);
    }
    this.#index(entry);
    await this.#setStatus(entry, NodeStatus.Syncing);
    return entry;
  }

  /**
   * A node's offer changed on a live connection (a function deployed or
   * undeployed): tools, capabilities and functions are replaced, re-indexed
   * and persisted.
   */
  async updateOffer(entry: NodeEntry, offer: Pick<DeployResultFrame, 'tools' | 'capabilities' | 'functions'>): Promise<void> {
    this.#unindex(entry);
    const descriptors = shared(offer.tools);
    entry.record = { ...entry.record, capabilities: [...new Set(offer.capabilities)], tools: descriptors as NodeRecord['tools'] };
    entry.tools = toolMap(descriptors);
    entry.functions = new Map(offer.functions.map((f) => [f.name, f.bundle_sha256]));
    this.#index(entry);
    try {
      await this.#store.upsertNode(entry.record);
    } catch (err) {
      this.#opts.logger.error('could not persist node tools', { node_id: entry.record.node_id, error: String(err) });
    }
  }

  /** The node's certificates were revoked: it stays known, no longer trusted. */
  async distrust(nodeId: string): Promise<void> {
    const entry = this.#nodes.get(nodeId);
    if (!entry?.record.trusted) return;
    entry.record.trusted = false;
    try {
      await this.#store.upsertNode(entry.record);
    } catch (err) {
      this.#opts.logger.error('could not persist node trust', { node_id: nodeId, error: String(err) });
    }
  }

  /** The node finished its start-up after WELCOME and takes work. */
  async ready(entry: NodeEntry): Promise<void> {
    entry.lastSeenMs = Date.now();
    await this.#setStatus(entry, NodeStatus.Online);
  }

  heartbeat(entry: NodeEntry, load: NodeLoad): void {
    entry.lastSeenMs = Date.now();
    entry.record.last_seen = new Date(entry.lastSeenMs).toISOString();
    entry.record.load = load;
    if (entry.record.status === NodeStatus.Degraded) void this.#setStatus(entry, NodeStatus.Online);
  }

  /**
   * The connection closed: the node is OFFLINE at once, not after a timeout.
   * The close of an older connection that a reconnect already replaced changes nothing.
   */
  async disconnected(nodeId: string, conn: NodeConnection): Promise<void> {
    const entry = this.#nodes.get(nodeId);
    if (!entry || entry.conn !== conn) return;
    entry.conn = null;
    this.emit('disconnected', entry);
    await this.#setStatus(entry, NodeStatus.Offline);
  }

  /** One health pass: silence past the thresholds degrades, then drops a node. */
  sweep(nowMs: number): void {
    const { heartbeatIntervalMs, degradedAfterMissed, offlineAfterMs } = this.#opts;
    // A heartbeat may come up to 10% late by design (jitter), so a miss is counted past that.
    const degradedAfter = heartbeatIntervalMs * (degradedAfterMissed + 0.1);
    for (const entry of this.#nodes.values()) {
      if (!entry.conn) continue;
      const silentFor = nowMs - entry.lastSeenMs;
      const status = entry.record.status;
      if (silentFor > offlineAfterMs) {
        this.#opts.logger.warn('node timed out', { node_id: entry.record.node_id, silent_ms: silentFor });
        const conn = entry.conn;
        // A frozen peer never answers a close handshake, so the socket is dropped outright.
        conn.terminate();
        void this.disconnected(entry.record.node_id, conn);
      } else if (silentFor > degradedAfter && status === NodeStatus.Online) {
        void this.#setStatus(entry, NodeStatus.Degraded);
      }
    }
  }

  async #setStatus(entry: NodeEntry, status: NodeStatus): Promise<void> {
    const previous = entry.record.status;
    if (previous === status) return;
    entry.record.status = status;
    this.#opts.logger.info('node status', { node_id: entry.record.node_id, status, previous });
    this.emit('status', entry, previous);
    try {
      await this.#store.updateNodeStatus(entry.record.node_id, status, entry.record.last_seen);
    } catch (err) {
      this.#opts.logger.error('could not persist node status', { node_id: entry.record.node_id, error: String(err) });
    }
  }

  #index(entry: NodeEntry): void {
    for (const cap of entry.record.capabilities) {
      let set = this.#byCapability.get(cap);
      if (!set) {
        set = new IndexedSet();
        this.#byCapability.set(cap, set);
      }
      set.add(entry.record.node_id);
    }
  }

  #unindex(entry: NodeEntry): void {
    for (const cap of entry.record.capabilities) {
      const set = this.#byCapability.get(cap);
      set?.delete(entry.record.node_id);
      if (set?.size === 0) this.#byCapability.delete(cap);
    }
  }
}

type ToolDescriptor = RegisterFrame['tools'][number];

/**
 * Tool descriptors by their JSON text. A fleet runs a handful of agent builds,
 * so thousands of nodes advertise the same few descriptors, schemas and all:
 * each node keeps its own list and map, and they point at one shared copy of
 * each descriptor. Bounded like the other caches; entries dropped from it stay
 * alive in the nodes that hold them.
 */
const sharedDescriptors = new Map<string, ToolDescriptor>();
const SHARED_DESCRIPTORS = 10_000;

function shared(tools: RegisterFrame['tools'] | undefined): ToolDescriptor[] {
  return (tools ?? []).map((t) => {
    const text = JSON.stringify(t);
    const known = sharedDescriptors.get(text);
    if (known) return known;
    if (sharedDescriptors.size >= SHARED_DESCRIPTORS) sharedDescriptors.clear();
    sharedDescriptors.set(text, t);
    return t;
  });
}

function toolMap(tools: ToolDescriptor[]): Map<string, ToolDescriptor> {
  return new Map(tools.map((t) => [t.name, t]));
}
