/**
 * The gateway's side of discovery: UDP multicast (DISCOVER sent, signed
 * ADVERTISE cached, DISCOVER from nodes answered with a signed GATEWAY), mDNS
 * advertisement, and the listen-mode nodes it dials (static peers and those
 * registered through the API). Each is off unless its option is set.
 */
import { formatHostPort } from '../core/address.js';
import { FieldmeshError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { advertiseGatewayMdns, type MdnsAdvertisement } from '../discovery/mdns.js';
import { type DiscoveredNode, discoveryView, MulticastDiscovery, type MulticastStats } from '../discovery/multicast.js';
import type { DiscoveryViewNode } from '../protocol/discovery.js';
import { parsePeerEndpoint } from '../protocol/peers.js';
import type { PeerRecord, Store } from '../store/types.js';
import type { NodeListener } from './node-listener.js';
import type { CompiledGatewayOptions } from './options.js';
import type { PairingService } from './pairing.js';
import { PeerDialer, type PeerStatus } from './peer-dialer.js';
import type { GatewayIdentity } from './tls.js';

export interface DiscoveryState {
  nodes: DiscoveryViewNode[];
  /** Advertisements dropped, by reason (a bad signature is `signature`). */
  dropped: MulticastStats['dropped'] | Record<string, never>;
  multicast: { enabled: false } | { enabled: true; group: string; port: number; interface: string | null; stats: MulticastStats };
  mdns: { enabled: false } | { enabled: true; service_name: string; fqdn: string | null };
  peers: PeerStatus[];
}

export interface RegisterPeerInput {
  node_id: string;
  endpoint: string;
  capabilities?: string[];
}

export class GatewayDiscovery {
  readonly #opts: CompiledGatewayOptions;
  readonly #store: Store;
  readonly #pairing: PairingService;
  readonly #logger: Logger;
  #multicast: MulticastDiscovery | undefined;
  #mdns: MdnsAdvertisement | undefined;
  #dialer: PeerDialer | undefined;

  constructor(opts: CompiledGatewayOptions, store: Store, pairing: PairingService) {
    this.#opts = opts;
    this.#store = store;
    this.#pairing = pairing;
    this.#logger = opts.logger;
  }

  /** Starts dialing peers and the discovery methods enabled; `listenAddress` is the bound node listener. */
  async start(identity: GatewayIdentity, listener: NodeListener, listenAddress: { host: string; port: number }): Promise<void> {
    const o = this.#opts;
    this.#dialer = new PeerDialer(identity, this.#pairing, listener, { maxFrameBytes: o.maxFrameBytes, logger: this.#logger });
    for (const endpoint of o.peers) this.#dialer.add({ endpoint, nodeId: null, source: 'static' });
    for (const peer of await this.#store.listPeers()) this.#dialRegistered(peer);
    const nodeListen = o.advertiseAddress ?? formatHostPort(listenAddress);
    if (o.discovery.multicast) {
      const m = o.discovery.multicast;
      const multicast = new MulticastDiscovery({
        group: m.group,
        port: m.port,
        interfaceAddress: m.interfaceAddress,
        discoverIntervalMs: m.intervalMs,
        gateway: { gateway_id: o.gatewayId, node_listen: nodeListen, ca_fingerprint: identity.caFingerprint },
        privateKey: identity.signingKey,
        isPaired: (nodeId, key) => this.#pairing.pairingStatus(nodeId, key),
        onNode: (node, event) => this.#logNode(node, event),
        logger: this.#logger,
      });
      await multicast.start();
      this.#multicast = multicast;
      this.#logger.info('multicast discovery started', { group: m.group, port: m.port, interface: m.interfaceAddress ?? null });
    }
    if (o.discovery.mdns) {
      const d = o.discovery.mdns;
      const port = Number(nodeListen.slice(nodeListen.lastIndexOf(':') + 1));
      this.#mdns = await advertiseGatewayMdns(
        { gateway_id: o.gatewayId, port, ca_fingerprint: identity.caFingerprint },
        { serviceName: d.serviceName, interfaceAddress: d.interfaceAddress, port: d.port, logger: this.#logger },
      );
    }
  }

  #logNode(node: DiscoveredNode, event: string): void {
    if (event === 'updated') return;
    this.#logger.info(`node ${event} by multicast`, {
      node_id: node.node_id,
      address: node.address,
      paired: node.paired,
      trusted: node.trusted,
    });
  }

  #dialRegistered(peer: PeerRecord): void {
    this.#dialer?.add({ endpoint: parsePeerEndpoint('endpoint', peer.endpoint), nodeId: peer.node_id, source: 'registered' });
  }

  async stop(): Promise<void> {
    this.#dialer?.stop();
    await Promise.all([this.#multicast?.close(), this.#mdns?.close()]);
  }

  /** What `GET /v1/discovery` answers. */
  state(): DiscoveryState {
    const mc = this.#multicast;
    const m = this.#opts.discovery.multicast;
    const stats = mc?.stats();
    return {
      nodes: mc ? discoveryView(mc).nodes : [],
      dropped: stats?.dropped ?? {},
      multicast:
        m && stats ? { enabled: true, group: m.group, port: m.port, interface: m.interfaceAddress ?? null, stats } : { enabled: false },
      mdns: this.#opts.discovery.mdns
        ? { enabled: true, service_name: this.#opts.discovery.mdns.serviceName, fqdn: this.#mdns?.fqdn ?? null }
        : { enabled: false },
      peers: this.#dialer?.list() ?? [],
    };
  }

  /** Registers a listen-mode node and starts dialing it; the registration outlives restarts. */
  async register(input: RegisterPeerInput): Promise<PeerRecord> {
    const endpoint = parsePeerEndpoint('endpoint', input.endpoint, 'FM_ERR_INVALID_REQUEST');
    const existing = await this.#store.listPeers();
    const sameId = existing.find((p) => p.node_id === input.node_id);
    if (sameId) {
      throw new FieldmeshError('FM_ERR_DUPLICATE_NODE', `Node "${input.node_id}" is already registered (endpoint ${sameId.endpoint})`, {
        details: { node_id: input.node_id, endpoint: sameId.endpoint },
      });
    }
    const sameEndpoint =
      existing.find((p) => p.endpoint === endpoint.text) ??
      (this.#opts.peers.some((p) => p.text === endpoint.text) ? { node_id: null } : undefined);
    if (sameEndpoint) {
      const who = sameEndpoint.node_id === null ? 'a static peer (--peer)' : `node "${sameEndpoint.node_id}"`;
      throw new FieldmeshError('FM_ERR_DUPLICATE_NODE', `Endpoint ${endpoint.text} is already registered for ${who}`, {
        details: { endpoint: endpoint.text, node_id: sameEndpoint.node_id },
      });
    }
    const record: PeerRecord = {
      node_id: input.node_id,
      endpoint: endpoint.text,
      capabilities: [...new Set(input.capabilities ?? [])],
      created_at: new Date().toISOString(),
    };
    if (!(await this.#store.insertPeer(record))) {
      throw new FieldmeshError('FM_ERR_DUPLICATE_NODE', `Node "${input.node_id}" or endpoint ${endpoint.text} was registered meanwhile`, {
        details: { node_id: input.node_id, endpoint: endpoint.text },
      });
    }
    this.#logger.info('listen-mode node registered', { node_id: record.node_id, endpoint: record.endpoint });
    this.#dialRegistered(record);
    return record;
  }

  /** Removes a registration and closes its connection; throws FM_ERR_NODE_NOT_FOUND for an id never registered. */
  async unregister(nodeId: string): Promise<PeerRecord> {
    const peer = (await this.#store.listPeers()).find((p) => p.node_id === nodeId);
    if (!peer || !(await this.#store.deletePeer(nodeId))) {
      throw new FieldmeshError('FM_ERR_NODE_NOT_FOUND', `Node "${nodeId}" is not registered for dialing`, { details: { node_id: nodeId } });
    }
    this.#dialer?.remove(peer.endpoint);
    this.#logger.info('listen-mode node unregistered', { node_id: nodeId, endpoint: peer.endpoint });
    return peer;
  }
}
