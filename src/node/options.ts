// Node agent options: the documented defaults and the checks that turn user input into CompiledNodeOptions.
import { statSync } from 'node:fs';
import { availableParallelism, platform as osPlatform } from 'node:os';
import { resolve } from 'node:path';
import { formatHostPort, type HostPort, parseHostPort } from '../core/address.js';
import { FieldmeshError } from '../core/errors.js';
import { createLogger, type Logger, type LogLevel } from '../core/logger.js';
import { DEFAULT_MDNS_SERVICE, parseServiceName } from '../discovery/mdns.js';
import { compileMulticastOptions } from '../discovery/options.js';

export interface GeoLocation {
  lat: number;
  lon: number;
}

export interface NodeOptions {
  /**
   * Gateway node listener as `HOST:PORT` (a bare `:PORT` means 127.0.0.1). Optional with `discover`
   * (the gateway is found on the network) or `listen` (the gateway dials the node; needed only to pair).
   */
  gateway?: string;
  /**
   * Listen mode: accept the gateway's dial on this `HOST:PORT` (TLS with the node's certificate, the
   * gateway's client certificate required) instead of dialing it. The node must be paired (once, with
   * `gateway` or `discover` and `pairingCode`).
   * @default undefined (the node dials the gateway)
   */
  listen?: string;
  /** Address put in ADVERTISE as where the node accepts a dial. @default the `listen` address */
  advertiseAddress?: string;
  /**
   * How to find the gateway when `gateway` is not given: `multicast` (DISCOVER, answered by a signed GATEWAY)
   * or `mdns`; `static` means use `gateway`. With `multicast` the node also sends ADVERTISE at start and periodically.
   * @default "static"
   */
  discover?: 'static' | 'multicast' | 'mdns';
  /** UDP multicast group, port and interface for `discover: "multicast"` (the interface also serves mDNS). */
  multicast?: { group?: string; port?: number; interface?: string };
  /** Interval between ADVERTISE messages. @default 30000 */
  advertiseIntervalMs?: number;
  /** mDNS service type for `discover: "mdns"`. @default "_fieldmesh._tcp.local." */
  serviceName?: string;
  /** mDNS UDP port; another port than 5353 makes a private test network. @default 5353 */
  mdnsPort?: number;
  /** Stable node id, unique in the mesh: `^[A-Za-z0-9][A-Za-z0-9:._@/-]*$`, at most 128 characters. */
  id: string;
  /** Directory for the signing key and the gateway pin; created with mode 0700. */
  dataDir: string;
  /**
   * Human-readable name shown by the gateway.
   * @default the node id
   */
  name?: string;
  /**
   * Platform label sent in REGISTER and added as capability `platform:<platform>`.
   * @default derived from os.platform(): macos, windows, linux, android, otherwise the raw value
   */
  platform?: string;
  /**
   * Extra capabilities; `tool:<name>`, `platform:<platform>` and detected ones (gpu:available, cuda) are added.
   * @default []
   */
  capabilities?: string[];
  /**
   * Where the node is, as `{ lat, lon }` or the string `"LAT,LON"`.
   * @default null (unknown)
   */
  location?: string | GeoLocation | null;
  /**
   * Tool calls run at once (the node policy's `max_concurrent_tasks`); also the number of worker threads.
   * Calls beyond it wait on the node for a free worker.
   * @default os.availableParallelism()
   */
  maxConcurrency?: number;
  /**
   * Node policy: the only tools this node runs, whatever the gateway sends; others fail with FM_ERR_NODE_POLICY_DENIED.
   * @default undefined (every tool the node offers)
   */
  allowedTools?: string[];
  /**
   * Node policy: largest `tool_args` (bytes of JSON) this node accepts; larger ones fail with FM_ERR_NODE_POLICY_DENIED.
   * @default undefined (only the frame limit)
   */
  maxPayloadBytes?: number;
  /**
   * Node policy: whether the gateway may deploy functions to this node.
   * @default false
   */
  allowDeploy?: boolean;
  /**
   * Heartbeat period until the gateway's WELCOME says otherwise.
   * @default 1000
   */
  heartbeatIntervalMs?: number;
  /**
   * Paths of ESM modules exporting `tools: ToolDefinition[]` (or a default array) — custom tools.
   * @default []
   */
  toolModules?: string[];
  /**
   * PEM file of the gateway CA. When set the gateway certificate is verified against it, also while
   * pairing; otherwise the CA comes from pairing (checked against the fingerprint a pairing code carries).
   * @default undefined (the CA pairing returned)
   */
  gatewayCaFile?: string;
  /**
   * One-time code from `fieldmesh pair` (`POST /v1/pairing-codes`), used when the node holds no certificate yet.
   * @default undefined
   */
  pairingCode?: string;
  /**
   * Without a certificate or a code, ask the gateway to pair and wait until an operator approves
   * (`fieldmesh nodes approve ID`).
   * @default false
   */
  requestPairing?: boolean;
  /**
   * Smallest reconnect backoff ceiling.
   * @default 250
   */
  reconnectMinMs?: number;
  /**
   * Largest reconnect backoff ceiling.
   * @default 30000
   */
  reconnectMaxMs?: number;
  /**
   * Frame size limit until the gateway's WELCOME says otherwise.
   * @default 1048576 (1 MiB)
   */
  maxFrameBytes?: number;
  /**
   * V8 old-generation heap limit of each tool worker.
   * @default 256
   */
  workerMemoryMb?: number;
  /**
   * Where logs go.
   * @default JSON lines on stdout at FIELDMESH_LOG_LEVEL (info)
   */
  logger?: Logger;
}

export interface CompiledNodeOptions {
  /** Undefined when the gateway is to be discovered, or the node listens and is paired. */
  gateway: HostPort | undefined;
  /** The `gateway` option as given, for logs. */
  gatewayAddress: string | undefined;
  listen: HostPort | undefined;
  advertiseAddress: string | undefined;
  discover: 'static' | 'multicast' | 'mdns';
  multicast: { group: string; port: number; interfaceAddress: string | undefined };
  advertiseIntervalMs: number;
  serviceName: string;
  mdnsPort: number;
  id: string;
  name: string;
  platform: string;
  capabilities: string[];
  location: GeoLocation | null;
  /** Absolute path. */
  dataDir: string;
  maxConcurrency: number;
  /** null: every tool the node offers. */
  allowedTools: string[] | null;
  /** null: no limit beyond the frame size. */
  maxPayloadBytes: number | null;
  allowDeploy: boolean;
  heartbeatIntervalMs: number;
  /** Absolute paths. */
  toolModules: string[];
  /** Absolute path, or undefined to use the CA pairing returned. */
  gatewayCaFile: string | undefined;
  pairingCode: string | undefined;
  requestPairing: boolean;
  reconnectMinMs: number;
  reconnectMaxMs: number;
  maxFrameBytes: number;
  workerMemoryMb: number;
  logger: Logger;
}

export const NODE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9:._@/-]*$/;
const NODE_ID_MAX = 128;

function invalid(option: string, value: unknown, why: string): FieldmeshError {
  const shown = typeof value === 'string' ? `"${value}"` : (JSON.stringify(value) ?? String(value));
  return new FieldmeshError('FM_ERR_INVALID_OPTION', `${option}: ${shown} ${why}`, { details: { option, value } });
}

function text(option: string, value: unknown, max: number): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > max) {
    throw invalid(option, value, `must be a non-empty string of at most ${max} characters`);
  }
  return value;
}

function integer(option: string, value: unknown, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalid(option, value, `must be an integer from ${min} to ${max}`);
  }
  return value;
}

/**
 * Each tools module is a file that exists: checked before a node starts (and pairs) and by
 * `fieldmesh config check`, so a wrong path is named at once rather than after pairing.
 */
export function checkToolModuleFiles(paths: readonly string[] | undefined): void {
  (paths ?? []).forEach((p, i) => {
    const stat = statSync(resolve(p), { throwIfNoEntry: false });
    if (!stat) throw invalid(`node.tools_modules[${i}]`, resolve(p), 'does not exist (--tools-module, tools_modules)');
    if (!stat.isFile()) throw invalid(`node.tools_modules[${i}]`, resolve(p), 'is not a file (--tools-module, tools_modules)');
  });
}

/** Maps Node's platform names to the ones the mesh uses in capabilities. */
export function defaultPlatform(raw: string = osPlatform()): string {
  switch (raw) {
    case 'darwin':
      return 'macos';
    case 'win32':
      return 'windows';
    default:
      return raw;
  }
}

const LOCATION_RANGE = 'expected "LAT,LON" with lat from -90 to 90 and lon from -180 to 180';

export function parseLocation(option: string, value: string | GeoLocation): GeoLocation {
  let lat: unknown;
  let lon: unknown;
  if (typeof value === 'string') {
    const m = /^\s*([-+]?\d+(?:\.\d+)?)\s*,\s*([-+]?\d+(?:\.\d+)?)\s*$/.exec(value);
    if (!m) throw invalid(option, value, `is not a valid location (${LOCATION_RANGE})`);
    lat = Number(m[1]);
    lon = Number(m[2]);
  } else if (typeof value === 'object' && value !== null) {
    lat = value.lat;
    lon = value.lon;
  }
  if (
    typeof lat !== 'number' ||
    typeof lon !== 'number' ||
    !Number.isFinite(lat) ||
    !Number.isFinite(lon) ||
    Math.abs(lat) > 90 ||
    Math.abs(lon) > 180
  ) {
    throw invalid(option, value, `is not a valid location (${LOCATION_RANGE})`);
  }
  return { lat, lon };
}

export function compileNodeOptions(opts: NodeOptions): CompiledNodeOptions {
  if (typeof opts !== 'object' || opts === null) throw invalid('node', opts, 'must be an options object');
  const discover = opts.discover ?? 'static';
  if (!['static', 'multicast', 'mdns'].includes(discover))
    throw invalid('node.discover', discover, 'must be one of static, multicast, mdns');
  let gateway: HostPort | undefined;
  if (opts.gateway !== undefined) {
    if (typeof opts.gateway !== 'string') throw invalid('node.gateway', opts.gateway, 'must be a string "HOST:PORT"');
    gateway = parseHostPort('node.gateway', opts.gateway);
    if (gateway.port === 0) throw invalid('node.gateway', opts.gateway, 'is not a valid port (a gateway cannot listen on port 0)');
  }
  let listen: HostPort | undefined;
  if (opts.listen !== undefined) {
    if (typeof opts.listen !== 'string') throw invalid('node.listen', opts.listen, 'must be a string "HOST:PORT"');
    listen = parseHostPort('node.listen', opts.listen, '0.0.0.0');
  }
  if (gateway === undefined && listen === undefined && discover === 'static') {
    throw new FieldmeshError(
      'FM_ERR_INVALID_OPTION',
      'node.gateway: "HOST:PORT" is required unless the gateway is discovered (discover: multicast | mdns) or dials the node (listen)',
      { details: { option: 'node.gateway' } },
    );
  }
  const advertiseAddress =
    opts.advertiseAddress === undefined
      ? undefined
      : formatHostPort(parseHostPort('node.advertiseAddress', opts.advertiseAddress, '0.0.0.0'));
  const mc = compileMulticastOptions(
    { group: opts.multicast?.group, port: opts.multicast?.port, interfaceAddress: opts.multicast?.interface },
    'node.discovery',
  );
  const serviceName = opts.serviceName ?? DEFAULT_MDNS_SERVICE;
  parseServiceName(serviceName);

  const id = text('node.id', opts.id, NODE_ID_MAX);
  if (!NODE_ID_PATTERN.test(id)) {
    throw invalid('node.id', id, 'must start with a letter or digit and use only letters, digits and : . _ @ / -');
  }
  const name = opts.name === undefined ? id : text('node.name', opts.name, 256);
  const platform = opts.platform === undefined ? defaultPlatform() : text('node.platform', opts.platform, 64);

  const capabilities = opts.capabilities ?? [];
  if (!Array.isArray(capabilities)) throw invalid('node.capabilities', capabilities, 'must be an array of strings');
  capabilities.forEach((c, i) => {
    text(`node.capabilities[${i}]`, c, 256);
  });

  const location = opts.location === undefined || opts.location === null ? null : parseLocation('node.location', opts.location);

  if (typeof opts.dataDir !== 'string' || opts.dataDir.trim() === '')
    throw invalid('node.dataDir', opts.dataDir, 'must be a directory path');

  const toolModules = opts.toolModules ?? [];
  if (!Array.isArray(toolModules)) throw invalid('node.toolModules', toolModules, 'must be an array of module paths');
  toolModules.forEach((p, i) => {
    if (typeof p !== 'string' || p.trim() === '') throw invalid(`node.toolModules[${i}]`, p, 'must be a module path');
  });

  if (opts.gatewayCaFile !== undefined && (typeof opts.gatewayCaFile !== 'string' || opts.gatewayCaFile.trim() === '')) {
    throw invalid('node.gatewayCaFile', opts.gatewayCaFile, 'must be a file path');
  }

  if (opts.pairingCode !== undefined && (typeof opts.pairingCode !== 'string' || opts.pairingCode.trim() === '')) {
    throw invalid('node.pairingCode', opts.pairingCode, 'must be a pairing code from `fieldmesh pair`');
  }
  if (opts.requestPairing !== undefined && typeof opts.requestPairing !== 'boolean') {
    throw invalid('node.requestPairing', opts.requestPairing, 'must be true or false');
  }
  if (opts.allowedTools !== undefined && !Array.isArray(opts.allowedTools)) {
    throw invalid('node.allowedTools', opts.allowedTools, 'must be an array of tool names');
  }
  opts.allowedTools?.forEach((t, i) => {
    if (typeof t !== 'string' || !/^[A-Za-z0-9_.:-]{1,128}$/.test(t)) throw invalid(`node.allowedTools[${i}]`, t, 'is not a tool name');
  });
  if (opts.allowDeploy !== undefined && typeof opts.allowDeploy !== 'boolean') {
    throw invalid('node.allowDeploy', opts.allowDeploy, 'must be true or false');
  }

  const reconnectMinMs = integer('node.reconnectMinMs', opts.reconnectMinMs, 250, 1, 3_600_000);
  const reconnectMaxMs = integer('node.reconnectMaxMs', opts.reconnectMaxMs, Math.max(30_000, reconnectMinMs), 1, 3_600_000);
  if (reconnectMaxMs < reconnectMinMs) {
    throw invalid('node.reconnectMaxMs', reconnectMaxMs, `must not be below node.reconnectMinMs (${reconnectMinMs})`);
  }

  return {
    gateway,
    gatewayAddress: opts.gateway,
    listen,
    advertiseAddress,
    discover,
    multicast: { group: mc.group, port: mc.port, interfaceAddress: mc.interfaceAddress },
    advertiseIntervalMs: integer('node.advertiseIntervalMs', opts.advertiseIntervalMs, 30_000, 10, 86_400_000),
    serviceName,
    mdnsPort: integer('node.mdnsPort', opts.mdnsPort, 5353, 1, 65535),
    id,
    name,
    platform,
    capabilities: [...capabilities],
    location,
    dataDir: resolve(opts.dataDir),
    // The REGISTER schema caps max_concurrency at 4096.
    maxConcurrency: integer('node.maxConcurrency', opts.maxConcurrency, Math.min(availableParallelism(), 4096), 1, 4096),
    allowedTools: opts.allowedTools === undefined ? null : [...new Set(opts.allowedTools)],
    maxPayloadBytes:
      opts.maxPayloadBytes === undefined ? null : integer('node.maxPayloadBytes', opts.maxPayloadBytes, 0, 1, Number.MAX_SAFE_INTEGER),
    allowDeploy: opts.allowDeploy ?? false,
    heartbeatIntervalMs: integer('node.heartbeatIntervalMs', opts.heartbeatIntervalMs, 1000, 10, 3_600_000),
    toolModules: toolModules.map((p) => resolve(p)),
    gatewayCaFile: opts.gatewayCaFile === undefined ? undefined : resolve(opts.gatewayCaFile),
    pairingCode: opts.pairingCode?.trim(),
    requestPairing: opts.requestPairing ?? false,
    reconnectMinMs,
    reconnectMaxMs,
    maxFrameBytes: integer('node.maxFrameBytes', opts.maxFrameBytes, 1024 * 1024, 1024, 256 * 1024 * 1024),
    workerMemoryMb: integer('node.workerMemoryMb', opts.workerMemoryMb, 256, 16, 65_536),
    logger: opts.logger ?? createLogger().child({ component: 'node', node_id: id }),
  };
}

/** What a node configuration file sets: options, and the log level the logger is made with. */
export interface NodeFileOptions extends Partial<NodeOptions> {
  logLevel?: LogLevel;
}
