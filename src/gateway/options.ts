/** Gateway options: what a user may set, compiled into one object with every value checked and defaulted. */
import { formatHostPort, type HostPort, parseHostPort } from '../core/address.js';
import { FieldmeshError } from '../core/errors.js';
import { createLogger, type Logger, type LogLevel } from '../core/logger.js';
import { DEFAULT_MDNS_SERVICE, parseServiceName } from '../discovery/mdns.js';
import { compileMulticastOptions, intOption } from '../discovery/options.js';
import { type PeerEndpoint, parsePeerEndpoint } from '../protocol/peers.js';
import { type CompiledToolPolicy, compileToolPolicy, type ToolPolicyOptions } from './tool-policy.js';

export interface GatewayOptions {
  /** Directory for the SQLite store and TLS material. */
  dataDir: string;
  /** HTTP API address. @default "127.0.0.1:8787" */
  api?: string;
  /** Serve the API over HTTPS with a certificate from the gateway CA. Required for a non-loopback `api` unless `insecureApi`. @default false */
  apiTls?: boolean;
  /** Allow plain HTTP on an `api` address other than 127.0.0.1, ::1 or localhost. @default false */
  insecureApi?: boolean;
  /** Node listener address (TLS). @default "0.0.0.0:8788" */
  listen?: string;
  /** Interval nodes are told to heartbeat at. @default 1000 */
  heartbeatIntervalMs?: number;
  /** Missed heartbeats before a node is DEGRADED. @default 2 */
  degradedAfterMissed?: number;
  /** Silence after which a node is OFFLINE and its connection dropped. @default 3000 */
  offlineAfterMs?: number;
  /** Largest WebSocket frame accepted from a node. @default 1048576 */
  maxFrameBytes?: number;
  /** Largest HTTP request body accepted. @default 1048576 */
  maxBodyBytes?: number;
  /** Time limit of a tool call that names none. @default 30000 */
  defaultTimeoutMs?: number;
  /** Attempts a `local` or `capability` task makes across nodes before it fails. @default 3 */
  maxAttempts?: number;
  /** Extra time the gateway waits past a task's deadline for the node's own timeout result. @default 1000 */
  resultGraceMs?: number;
  /** How long a task waits for an eligible node to come (back) online before it fails. @default 15000 */
  placementTimeoutMs?: number;
  /** Environment variables workflows may read as `{{env.NAME}}`. @default [] */
  envAllow?: string[];
  /** Tools that send data off the mesh, for the privacy_strict policy. @default ["summarize", "upload_result"] */
  egressTools?: string[];
  /** Finished workflow runs older than this are pruned with their tasks. @default 604800000 (7 days) */
  runRetentionMs?: number;
  /** Identifier in WELCOME frames and logs. @default "gateway:main" */
  gatewayId?: string;
  /** Life of the node certificates pairing issues; nodes renew at two thirds of it. @default 7776000000 (90 days) */
  nodeCertTtlMs?: number;
  /** Per-tool allow | deny | supervised, and the approval timeout. @default every tool allowed */
  toolPolicy?: ToolPolicyOptions;
  /** Listen-mode nodes (`host:port`) the gateway dials, redialing with backoff while they are down. @default [] */
  peers?: string[];
  /** Discovery on the local network; each method is off unless its object is given. */
  discovery?: GatewayDiscoveryOptions;
  /** Node-listener address told to nodes in GATEWAY announcements (and mDNS); `0.0.0.0:PORT` means "the address the announcement came from". @default the listen address */
  advertiseAddress?: string;
  logger?: Logger;
}

export interface GatewayDiscoveryOptions {
  /** UDP multicast: send DISCOVER, cache signed ADVERTISE, answer DISCOVER with GATEWAY. */
  multicast?: {
    /** @default "239.255.70.77" */
    group?: string;
    /** @default 37020 */
    port?: number;
    /** IPv4 address of the interface to join on; unset lets the system pick. */
    interface?: string;
    /** Interval between DISCOVER requests. @default 30000 */
    intervalMs?: number;
  };
  /** mDNS: advertise the service with the node port and CA fingerprint in TXT. */
  mdns?: {
    /** @default "_fieldmesh._tcp.local." */
    serviceName?: string;
    /** IPv4 address of the one interface to answer on; unset uses every interface. */
    interface?: string;
    /** UDP port; 5353 is mDNS, another port makes a private network (tests). @default 5353 */
    port?: number;
  };
}

export interface CompiledGatewayDiscovery {
  multicast: { group: string; port: number; interfaceAddress: string | undefined; intervalMs: number } | null;
  mdns: { serviceName: string; interfaceAddress: string | undefined; port: number } | null;
}

export interface CompiledGatewayOptions {
  dataDir: string;
  api: HostPort;
  apiTls: boolean;
  listen: HostPort;
  heartbeatIntervalMs: number;
  degradedAfterMissed: number;
  offlineAfterMs: number;
  maxFrameBytes: number;
  maxBodyBytes: number;
  defaultTimeoutMs: number;
  maxAttempts: number;
  resultGraceMs: number;
  placementTimeoutMs: number;
  envAllow: string[];
  egressTools: string[];
  runRetentionMs: number;
  gatewayId: string;
  nodeCertTtlMs: number;
  toolPolicy: CompiledToolPolicy;
  peers: PeerEndpoint[];
  discovery: CompiledGatewayDiscovery;
  advertiseAddress: string | undefined;
  logger: Logger;
}

function positiveInt(name: string, value: number | undefined, fallback: number, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new FieldmeshError('FM_ERR_INVALID_OPTION', `gateway.${name}: ${JSON.stringify(value)} is not an integer in ${min}..${max}`, {
      details: { option: `gateway.${name}`, value },
    });
  }
  return value;
}

function names(name: string, values: string[]): string[] {
  for (const v of values) {
    if (typeof v !== 'string' || !/^[A-Za-z_][A-Za-z0-9_.:-]*$/.test(v)) {
      throw new FieldmeshError('FM_ERR_INVALID_OPTION', `gateway.${name}: ${JSON.stringify(v)} is not a valid name`, {
        details: { option: `gateway.${name}`, value: v },
      });
    }
  }
  return [...new Set(values)];
}

/** The only API addresses served over plain HTTP without `insecureApi`. */
const LOOPBACK_HOSTS = new Set(['127.0.0.1', '::1', 'localhost']);

export function compileGatewayOptions(options: GatewayOptions): CompiledGatewayOptions {
  if (typeof options.dataDir !== 'string' || options.dataDir.trim() === '') {
    throw new FieldmeshError('FM_ERR_INVALID_OPTION', 'gateway.dataDir: a data directory is required', {
      details: { option: 'gateway.dataDir' },
    });
  }
  const heartbeatIntervalMs = positiveInt('heartbeatIntervalMs', options.heartbeatIntervalMs, 1000, 10, 600_000);
  const degradedAfterMissed = positiveInt('degradedAfterMissed', options.degradedAfterMissed, 2, 1, 1000);
  const offlineAfterMs = positiveInt('offlineAfterMs', options.offlineAfterMs, 3000, 20, 3_600_000);
  if (offlineAfterMs <= heartbeatIntervalMs) {
    throw new FieldmeshError(
      'FM_ERR_INVALID_OPTION',
      `gateway.offlineAfterMs: ${offlineAfterMs} must be longer than gateway.heartbeatIntervalMs (${heartbeatIntervalMs})`,
      { details: { option: 'gateway.offlineAfterMs', value: offlineAfterMs } },
    );
  }
  const api = parseHostPort('gateway.api', options.api ?? '127.0.0.1:8787');
  const apiTls = options.apiTls === true;
  if (!apiTls && options.insecureApi !== true && !LOOPBACK_HOSTS.has(api.host.toLowerCase())) {
    throw new FieldmeshError(
      'FM_ERR_INVALID_OPTION',
      `gateway.api: "${options.api}" is not a loopback address (127.0.0.1, ::1, localhost), so the API needs TLS: ` +
        'pass --api-tls (HTTPS with a certificate from the gateway CA), or --insecure-api to serve plain HTTP anyway',
      { details: { option: 'gateway.api', value: options.api } },
    );
  }
  return {
    dataDir: options.dataDir,
    api,
    apiTls,
    listen: parseHostPort('gateway.listen', options.listen ?? '0.0.0.0:8788', '0.0.0.0'),
    heartbeatIntervalMs,
    degradedAfterMissed,
    offlineAfterMs,
    maxFrameBytes: positiveInt('maxFrameBytes', options.maxFrameBytes, 1024 * 1024, 1024, 256 * 1024 * 1024),
    maxBodyBytes: positiveInt('maxBodyBytes', options.maxBodyBytes, 1024 * 1024, 1024, 256 * 1024 * 1024),
    defaultTimeoutMs: positiveInt('defaultTimeoutMs', options.defaultTimeoutMs, 30_000, 1, 3_600_000),
    maxAttempts: positiveInt('maxAttempts', options.maxAttempts, 3, 1, 100),
    resultGraceMs: positiveInt('resultGraceMs', options.resultGraceMs, 1000, 0, 600_000),
    placementTimeoutMs: positiveInt('placementTimeoutMs', options.placementTimeoutMs, 15_000, 0, 3_600_000),
    envAllow: names('envAllow', options.envAllow ?? []),
    egressTools: names('egressTools', options.egressTools ?? ['summarize', 'upload_result']),
    runRetentionMs: positiveInt('runRetentionMs', options.runRetentionMs, 7 * 24 * 3600_000, 1000, 10 * 365 * 24 * 3600_000),
    gatewayId: options.gatewayId ?? 'gateway:main',
    // Certificates carry whole seconds, so a life below ten seconds would renew before it could be used.
    nodeCertTtlMs: positiveInt('nodeCertTtlMs', options.nodeCertTtlMs, 90 * 24 * 3600_000, 10_000, 10 * 365 * 24 * 3600_000),
    toolPolicy: compileToolPolicy(options.toolPolicy),
    peers: compilePeers(options.peers),
    discovery: compileDiscovery(options.discovery ?? {}),
    advertiseAddress:
      options.advertiseAddress === undefined
        ? undefined
        : formatHostPort(parseHostPort('gateway.advertiseAddress', options.advertiseAddress, '0.0.0.0')),
    logger: options.logger ?? createLogger(),
  };
}

function compilePeers(peers: string[] | undefined): PeerEndpoint[] {
  if (peers === undefined) return [];
  if (!Array.isArray(peers)) {
    throw new FieldmeshError('FM_ERR_INVALID_OPTION', 'gateway.peers: expected a list of "HOST:PORT"', {
      details: { option: 'gateway.peers' },
    });
  }
  const seen = new Map<string, PeerEndpoint>();
  peers.forEach((p, i) => {
    const endpoint = parsePeerEndpoint(`gateway.peers[${i}]`, p);
    seen.set(endpoint.text, endpoint);
  });
  return [...seen.values()];
}

function compileDiscovery(d: GatewayDiscoveryOptions): CompiledGatewayDiscovery {
  let multicast: CompiledGatewayDiscovery['multicast'] = null;
  if (d.multicast) {
    const m = compileMulticastOptions({ group: d.multicast.group, port: d.multicast.port, interfaceAddress: d.multicast.interface });
    multicast = {
      group: m.group,
      port: m.port,
      interfaceAddress: m.interfaceAddress,
      intervalMs: intOption('discovery.interval_ms', d.multicast.intervalMs, 30_000, 10, 86_400_000),
    };
  }
  let mdns: CompiledGatewayDiscovery['mdns'] = null;
  if (d.mdns) {
    const serviceName = d.mdns.serviceName ?? DEFAULT_MDNS_SERVICE;
    parseServiceName(serviceName);
    const iface = d.mdns.interface;
    if (iface !== undefined) compileMulticastOptions({ interfaceAddress: iface });
    mdns = { serviceName, interfaceAddress: iface, port: intOption('discovery.mdns_port', d.mdns.port, 5353, 1, 65535) };
  }
  return { multicast, mdns };
}

/** What a gateway configuration file sets: options, and the log level the logger is made with. */
export interface GatewayFileOptions extends Partial<GatewayOptions> {
  logLevel?: LogLevel;
}
