/**
 * One options object per role from four sources, each over the next: command-line flags, `FIELDMESH_*`
 * environment variables, the configuration file, defaults. The file and the environment merge as
 * documents shaped like `fieldmesh.toml` (src/core/config.ts), which the role then reads: the gateway
 * `[gateway]`, `[security]` and — when `[node] mode = "controller"` — `node_id`, `listen`,
 * `advertise_address` and `[node.discovery]`; the node `[node]` with `[node.discovery]` and `[node.policy]`.
 */
import { availableParallelism } from 'node:os';
import { type Command, InvalidArgumentError } from 'commander';
import {
  type ConfigFile,
  type ConfigLayer,
  type ConfigSource,
  deepOverlay,
  definedOnly,
  envLayer,
  envName,
  fileLayer,
  type LoadedConfig,
  layerOf,
  mergeLayers,
  parseDuration,
  sourceRank,
  valueAt,
} from '../core/config.js';
import { FieldmeshError } from '../core/errors.js';
import type { LogLevel } from '../core/logger.js';
import { DEFAULT_MDNS_SERVICE } from '../discovery/mdns.js';
import { DEFAULT_MULTICAST_GROUP, DEFAULT_MULTICAST_PORT } from '../discovery/options.js';
import type { GatewayFileOptions } from '../gateway/options.js';
import { TOOL_MODES, type ToolMode } from '../gateway/tool-policy.js';
import { defaultPlatform, type NodeFileOptions, parseLocation } from '../node/options.js';
import { defaultDataDir } from './client.js';
import { intOption } from './format.js';

export type Role = 'gateway' | 'node';

/** Everything `fieldmesh gateway` takes from flags, variables and the file. */
export type GatewayConfigOptions = GatewayFileOptions;
/** Everything `fieldmesh node` takes from flags, variables and the file. */
export type NodeConfigOptions = NodeFileOptions;

/** Flags as commander gives them: any value may be absent, nested ones too. */
export type Flags<T> = {
  [K in keyof T]?: T[K] extends readonly unknown[] ? T[K] : T[K] extends object ? Flags<T[K]> : T[K];
};

function gatewayDefaults(controller: boolean): ConfigFile {
  return {
    gateway: {
      data_dir: defaultDataDir(),
      api: '127.0.0.1:8787',
      api_tls: false,
      insecure_api: false,
      listen: '0.0.0.0:8788',
      gateway_id: 'gateway:main',
      heartbeat_interval_ms: 1000,
      degraded_after_missed: 2,
      offline_after_ms: 3000,
      max_frame_bytes: 1024 * 1024,
      max_body_bytes: 1024 * 1024,
      default_timeout_ms: 30_000,
      max_attempts: 3,
      placement_timeout_ms: 15_000,
      env_allow: [],
      egress_tools: ['summarize', 'upload_result'],
      run_retention_ms: 7 * 24 * 3_600_000,
      node_cert_ttl: '90d',
      log_level: 'info',
    },
    security: { tool_policy: { default: 'allow', approval_timeout: '10m', tools: {} } },
    ...(controller
      ? {
          node: {
            mode: 'controller',
            discovery: {
              method: 'static',
              peers: [],
              group: DEFAULT_MULTICAST_GROUP,
              port: DEFAULT_MULTICAST_PORT,
              service_name: DEFAULT_MDNS_SERVICE,
            },
          },
        }
      : {}),
  };
}

function nodeDefaults(): ConfigFile {
  return {
    node: {
      mode: 'node',
      platform: defaultPlatform(),
      capabilities: [],
      tools_modules: [],
      request_pairing: false,
      heartbeat_interval_ms: 1000,
      worker_memory_mb: 256,
      log_level: 'info',
      discovery: { method: 'static', group: DEFAULT_MULTICAST_GROUP, port: DEFAULT_MULTICAST_PORT, service_name: DEFAULT_MDNS_SERVICE },
      policy: { max_concurrent_tasks: Math.min(availableParallelism(), 4096), allow_deploy: false },
    },
  };
}

/** The configuration a role runs with before flags: defaults, file and environment merged, and the source of each key. */
export interface EffectiveConfig extends ConfigLayer {
  role: Role;
  /** Absolute path of the configuration file, if one was read. */
  file?: string;
}

function invalid(source: ConfigSource | undefined, key: string, message: string, value: unknown): FieldmeshError {
  const where = source === undefined || source === 'default' ? '' : `${source}: `;
  return new FieldmeshError('FM_ERR_INVALID_OPTION', `${where}${key}: ${message}`, { details: { key, value, source } });
}

/**
 * Two keys that set the same thing (`[gateway] gateway_id` and a controller's `[node] node_id`): the one from the
 * later layer wins; set differently in the same layer, they are an error naming both.
 */
function oneOf(layer: ConfigLayer, target: string, other: string, what: string): { value: unknown; source?: ConfigSource } {
  const a = { value: valueAt(layer.doc, target), source: layer.sources[target] };
  const b = { value: valueAt(layer.doc, other), source: layer.sources[other] };
  if (b.value === undefined) return a;
  if (a.value === undefined || sourceRank(b.source) > sourceRank(a.source)) return b;
  if (sourceRank(a.source) === sourceRank(b.source) && a.value !== b.value) {
    throw invalid(
      b.source,
      other,
      `${JSON.stringify(b.value)} and ${target} ${JSON.stringify(a.value)} (${a.source}) both set ${what}; ` +
        `allowed: one of them, or both the same`,
      b.value,
    );
  }
  return a;
}

/** The sections of a merged layer `fieldmesh gateway` reads, with a controller's `[node]` keys folded into `[gateway]`. */
function gatewayView(merged: ConfigLayer, controller: boolean): ConfigLayer {
  const read = (k: string) =>
    !k.startsWith('node.') || (controller && (k === 'node.mode' || k === 'node.advertise_address' || k.startsWith('node.discovery.')));
  const doc = structuredClone(merged.doc);
  const sources = Object.fromEntries(Object.entries(merged.sources).filter(([k]) => read(k)));
  delete doc.node;
  if (controller) {
    for (const [key, other, what] of [
      ['gateway.gateway_id', 'node.node_id', 'the gateway id'],
      ['gateway.listen', 'node.listen', 'the node listener address'],
    ] as const) {
      const picked = oneOf(merged, key, other, what);
      doc.gateway = { ...doc.gateway, [key.slice('gateway.'.length)]: picked.value as string };
      if (picked.source !== undefined) sources[key] = picked.source;
    }
    const node = merged.doc.node ?? {};
    doc.node = definedOnly({ mode: 'controller' as const, advertise_address: node.advertise_address, discovery: node.discovery });
  }
  return { doc, sources };
}

/** `[node]` as `fieldmesh node` reads it, `controller` folded into `gateway`. */
function nodeView(merged: ConfigLayer): ConfigLayer {
  const node = structuredClone(merged.doc.node ?? {});
  const sources = Object.fromEntries(Object.entries(merged.sources).filter(([k]) => k.startsWith('node.')));
  const picked = oneOf(merged, 'node.gateway', 'node.controller', 'the gateway address');
  delete node.controller;
  delete sources['node.controller'];
  if (picked.value !== undefined) {
    node.gateway = picked.value as string;
    sources['node.gateway'] = picked.source!;
  }
  if (typeof node.location === 'string') {
    const source = sources['node.location'];
    parseLocation(source === undefined || source === 'default' ? 'node.location' : `${source}: node.location`, node.location);
  }
  return { doc: { node }, sources };
}

/**
 * Defaults, the file and the environment merged for one role. A file or variable that gives `[node] mode`
 * for the other role is FM_ERR_INVALID_OPTION: `fieldmesh gateway` reads `[node]` only with
 * `mode = "controller"` (without a mode it leaves `[node]` to the node), `fieldmesh node` refuses "controller".
 */
export function effectiveConfig(role: Role, env: Record<string, string | undefined>, loaded?: LoadedConfig<ConfigFile>): EffectiveConfig {
  const given = mergeLayers(...(loaded ? [fileLayer(loaded)] : []), envLayer(env));
  const mode = given.doc.node?.mode;
  const modeSource = given.sources['node.mode'];
  if (role === 'gateway' && mode === 'node') {
    throw invalid(
      modeSource,
      'node.mode',
      '"node" configures a node (run `fieldmesh node`); `fieldmesh gateway` needs mode = "controller", or no mode ([node] is then left to the node)',
      mode,
    );
  }
  if (role === 'node' && mode === 'controller') {
    throw invalid(
      modeSource,
      'node.mode',
      '"controller" configures a gateway (run `fieldmesh gateway`); `fieldmesh node` needs mode = "node" (the default)',
      mode,
    );
  }
  const controller = mode === 'controller';
  const defaults = layerOf(role === 'gateway' ? gatewayDefaults(controller) : nodeDefaults(), 'default');
  const merged = mergeLayers(defaults, given);
  const view = role === 'gateway' ? gatewayView(merged, controller) : nodeView(merged);
  return { role, ...(loaded ? { file: loaded.file } : {}), ...view };
}

/** A merged document's gateway sections as gateway options. */
export function gatewayOptionsFromConfig(doc: ConfigFile): GatewayConfigOptions {
  const g = doc.gateway ?? {};
  const policy = doc.security?.tool_policy;
  const out: GatewayConfigOptions = definedOnly({
    dataDir: g.data_dir,
    api: g.api,
    apiTls: g.api_tls,
    insecureApi: g.insecure_api,
    listen: g.listen,
    gatewayId: g.gateway_id,
    heartbeatIntervalMs: g.heartbeat_interval_ms,
    degradedAfterMissed: g.degraded_after_missed,
    offlineAfterMs: g.offline_after_ms,
    maxFrameBytes: g.max_frame_bytes,
    maxBodyBytes: g.max_body_bytes,
    defaultTimeoutMs: g.default_timeout_ms,
    maxAttempts: g.max_attempts,
    placementTimeoutMs: g.placement_timeout_ms,
    envAllow: g.env_allow,
    egressTools: g.egress_tools,
    runRetentionMs: g.run_retention_ms,
    nodeCertTtlMs: g.node_cert_ttl === undefined ? undefined : parseDuration('gateway.node_cert_ttl', g.node_cert_ttl),
    logLevel: g.log_level as LogLevel | undefined,
  });
  if (policy) {
    out.toolPolicy = definedOnly({
      default: policy.default,
      tools: policy.tools,
      approvalTimeoutMs:
        policy.approval_timeout === undefined ? undefined : parseDuration('security.tool_policy.approval_timeout', policy.approval_timeout),
    });
  }
  const node = doc.node;
  if (node?.mode === 'controller') {
    const d = node.discovery ?? {};
    if (node.advertise_address !== undefined) out.advertiseAddress = node.advertise_address;
    if ((d.method ?? 'static') === 'static' && d.peers !== undefined) out.peers = d.peers;
    if (d.method === 'multicast') {
      out.discovery = {
        multicast: definedOnly({
          group: d.group ?? DEFAULT_MULTICAST_GROUP,
          port: d.port ?? DEFAULT_MULTICAST_PORT,
          interface: d.interface,
        }),
      };
    }
    if (d.method === 'mdns') out.discovery = { mdns: { serviceName: d.service_name ?? DEFAULT_MDNS_SERVICE } };
  }
  return out;
}

/** A merged document's `[node]` as node options. */
export function nodeOptionsFromConfig(doc: ConfigFile): NodeConfigOptions {
  const n = doc.node ?? {};
  const p = n.policy ?? {};
  const d = n.discovery ?? {};
  const multicast = definedOnly({ group: d.group, port: d.port, interface: d.interface });
  return definedOnly<NodeConfigOptions>({
    id: n.node_id,
    gateway: n.gateway ?? n.controller,
    dataDir: n.data_dir,
    name: n.name,
    platform: n.platform,
    capabilities: n.capabilities,
    location: n.location,
    toolModules: n.tools_modules,
    gatewayCaFile: n.gateway_ca,
    pairingCode: n.pairing_code,
    requestPairing: n.request_pairing,
    heartbeatIntervalMs: n.heartbeat_interval_ms,
    workerMemoryMb: n.worker_memory_mb,
    logLevel: n.log_level as LogLevel | undefined,
    listen: n.listen,
    advertiseAddress: n.advertise_address,
    discover: d.method === 'multicast' || d.method === 'mdns' ? d.method : undefined,
    multicast: Object.keys(multicast).length > 0 ? multicast : undefined,
    serviceName: d.service_name,
    maxConcurrency: p.max_concurrent_tasks,
    allowedTools: p.allowed_tools,
    maxPayloadBytes: p.max_payload_bytes,
    allowDeploy: p.allow_deploy,
  });
}

/** `fieldmesh gateway`'s options: flags over `FIELDMESH_*` variables over the file over defaults. */
export function resolveGatewayOptions(
  flags: Flags<GatewayConfigOptions>,
  env: Record<string, string | undefined>,
  loaded?: LoadedConfig<ConfigFile>,
): GatewayConfigOptions {
  return deepOverlay(gatewayOptionsFromConfig(effectiveConfig('gateway', env, loaded).doc), flags as Partial<GatewayConfigOptions>);
}

/** `fieldmesh node`'s options: flags over `FIELDMESH_*` variables over the file over defaults. */
export function resolveNodeOptions(
  flags: Flags<NodeConfigOptions>,
  env: Record<string, string | undefined>,
  loaded?: LoadedConfig<ConfigFile>,
): NodeConfigOptions {
  return deepOverlay(nodeOptionsFromConfig(effectiveConfig('node', env, loaded).doc), flags as Partial<NodeConfigOptions>);
}

/** A required value that may come from a flag, a variable or the configuration file; `key` is its path there (`node.node_id`). */
export function required<T>(value: T | undefined, flag: string, key: string): T {
  if (value === undefined) {
    const [table, name] = key.split('.') as [string, string];
    throw new FieldmeshError(
      'FM_ERR_INVALID_OPTION',
      `${flag} is required (or ${name} in [${table}] of the --config file, or ${envName(key)})`,
      { details: { option: flag, key } },
    );
  }
  return value;
}

/** Commander parser for repeatable `--tool-policy TOOL=MODE`. */
export function toolPolicyOption(value: string, previous: Record<string, ToolMode> = {}): Record<string, ToolMode> {
  const m = /^([A-Za-z0-9_.:-]{1,128})=(\w+)$/.exec(value.trim());
  if (!m || !TOOL_MODES.includes(m[2] as ToolMode)) {
    throw new InvalidArgumentError(`"${value}" is not TOOL=MODE with MODE one of ${TOOL_MODES.join(', ')}`);
  }
  return { ...previous, [m[1]!]: m[2] as ToolMode };
}

/** Commander parser for a tool mode. */
export function toolModeOption(value: string): ToolMode {
  if (!TOOL_MODES.includes(value as ToolMode)) throw new InvalidArgumentError(`"${value}" is not one of ${TOOL_MODES.join(', ')}`);
  return value as ToolMode;
}

/** Commander parser for a duration such as 30s, 10m or 1h, in milliseconds. */
export function durationOption(value: string): number {
  try {
    return parseDuration('duration', value);
  } catch {
    throw new InvalidArgumentError(`"${value}" is not a duration such as 30s, 10m or 1h`);
  }
}

const LOG_LEVELS: LogLevel[] = ['debug', 'info', 'warn', 'error', 'silent'];

/** Commander parser for `--log-level`. */
export function logLevelOption(value: string): LogLevel {
  if (!LOG_LEVELS.includes(value as LogLevel)) throw new InvalidArgumentError(`"${value}" is not one of ${LOG_LEVELS.join(', ')}`);
  return value as LogLevel;
}

/** The discovery-tuning flags given (name and value), by the discovery they tune. */
export interface DiscoveryFlagsGiven {
  multicast: [flag: string, value: unknown][];
  mdns: [flag: string, value: unknown][];
  /** `--multicast-interface`, which tunes both. */
  iface: unknown;
}

/**
 * Refuses a flag that tunes multicast or mDNS discovery while that discovery is off (by its flag,
 * the file and the variables): it would do nothing, and silently ignoring it hides the mistake.
 * `how` says how to turn each on. Returns which tuning flags were given.
 */
export function refuseIdleDiscoveryFlags(
  given: DiscoveryFlagsGiven,
  on: { multicast: boolean; mdns: boolean },
  how: { multicast: string; mdns: string },
): { multicast: boolean; mdns: boolean } {
  const first = (flags: [string, unknown][]) => flags.find(([, v]) => v !== undefined)?.[0];
  const refuse = (flag: string, what: string, fix: string) =>
    new FieldmeshError('FM_ERR_INVALID_OPTION', `${flag} tunes ${what} discovery, which is off: ${fix}`, { details: { option: flag } });
  const multicast = first(given.multicast);
  if (multicast && !on.multicast) throw refuse(multicast, 'multicast', how.multicast);
  const mdns = first(given.mdns);
  if (mdns && !on.mdns) throw refuse(mdns, 'mDNS', how.mdns);
  if (given.iface !== undefined && !on.multicast && !on.mdns) throw refuse('--multicast-interface', 'multicast and mDNS', how.multicast);
  const iface = given.iface !== undefined;
  return { multicast: multicast !== undefined || iface, mdns: mdns !== undefined || iface };
}

/** The multicast and mDNS network flags and `--log-level`, which `fieldmesh gateway` and `fieldmesh node` share. */
export function networkAndLogOptions(command: Command): Command {
  return command
    .option('--multicast-group <ip>', 'multicast group (default 239.255.70.77)')
    .option('--multicast-port <n>', 'multicast UDP port (default 37020)', intOption)
    .option('--multicast-interface <ip>', 'IPv4 address of the interface to use for multicast and mDNS (default: the system picks)')
    .option('--service-name <name>', 'mDNS service type (default _fieldmesh._tcp.local.)')
    .option('--mdns-port <n>', 'mDNS UDP port (default 5353; another port makes a private test network)', intOption)
    .option(
      '--log-level <level>',
      'debug | info | warn | error | silent (default FIELDMESH_LOG_LEVEL, then the file, then info)',
      logLevelOption,
    );
}
