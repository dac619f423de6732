/**
 * Configuration: TOML read with smol-toml and checked against one TypeBox
 * schema, so an unknown key or a value of the wrong type is refused with
 * FM_ERR_INVALID_OPTION naming the file, the key path
 * (`security.tool_policy.default`), the value and what is allowed. One file
 * (`fieldmesh.toml`) may hold every section of the original design:
 * `[gateway]`, `[security.tool_policy]`, `[node]` (with
 * `mode = "controller" | "node"`), `[node.discovery]` and `[node.policy]`;
 * each role reads the sections it uses and ignores the others.
 *
 * The same schema reads the `FIELDMESH_*` environment variables: every key
 * has one variable named after its path (`gateway.api` → FIELDMESH_GATEWAY_API,
 * `node.node_id` → FIELDMESH_NODE_ID), whose text is parsed by the key's type
 * (integers, booleans, comma lists, TOOL=MODE lists) and checked like the file.
 * Layers merge key by key, a later layer over an earlier one — defaults, file,
 * environment — and each key remembers which layer set it.
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { type Static, type TProperties, type TSchema, Type } from '@sinclair/typebox';
import { Value, type ValueError, ValueErrorType } from '@sinclair/typebox/value';
import { parse, TomlError } from 'smol-toml';
import { FieldmeshError } from './errors.js';

const DURATION = /^(?:\d+(?:ms|s|m|h|d))+$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** A duration such as `500ms`, `30s`, `10m`, `1h`, `1d` or `1h30m`. */
export const Duration = Type.String({ pattern: DURATION.source, description: 'a duration such as 30s, 10m or 1h' });

/** Milliseconds in a duration string; throws FM_ERR_INVALID_OPTION naming `option` when it is not one. */
export function parseDuration(option: string, text: string): number {
  if (typeof text !== 'string' || !DURATION.test(text)) {
    throw new FieldmeshError('FM_ERR_INVALID_OPTION', `${option}: ${JSON.stringify(text)} is not a duration such as 30s, 10m or 1h`, {
      details: { option, value: text },
    });
  }
  let ms = 0;
  for (const m of text.matchAll(/(\d+)(ms|s|m|h|d)/g)) ms += Number(m[1]) * UNIT_MS[m[2]!]!;
  return ms;
}

const strict = { additionalProperties: false } as const;
/** A table whose keys are all optional and which refuses keys it does not name. */
const section = <T extends TProperties>(properties: T) => Type.Partial(Type.Object(properties), strict);
const Int = (minimum: number, maximum = Number.MAX_SAFE_INTEGER) => Type.Integer({ minimum, maximum });
const Text = Type.String({ minLength: 1, maxLength: 4096 });
const ToolName = Type.String({
  minLength: 1,
  maxLength: 128,
  pattern: '^[A-Za-z0-9_.:-]+$',
  description: 'a tool name of at most 128 letters, digits and _ . : -',
});
const EnvName = Type.String({
  pattern: '^[A-Za-z_][A-Za-z0-9_.:-]*$',
  description: 'a variable name of letters, digits and _ . : - not starting with a digit',
});

const OCTET = '(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)';
const PORT = '(?:6553[0-5]|655[0-2]\\d|65[0-4]\\d{2}|6[0-4]\\d{3}|[1-5]\\d{4}|[1-9]\\d{0,3})';
const HOST = '(?:\\[[0-9A-Fa-f:.]+\\]|[A-Za-z0-9._-]*)';
/** An address to listen on: `host:port`, `[v6]:port` or `:port` (any host); port 0 picks a free one. */
const HostPort = Type.String({
  pattern: `^${HOST}:(?:${PORT}|0)$`,
  description: 'HOST:PORT such as 0.0.0.0:8788 (port 0 to 65535)',
});
/** An address to dial or be dialled at: a host and a port from 1 to 65535. */
const Endpoint = Type.String({
  pattern: `^${HOST}:${PORT}$`,
  description: 'HOST:PORT such as 192.168.1.100:8788 (port 1 to 65535)',
});
const Id = Type.String({
  minLength: 1,
  maxLength: 128,
  pattern: '^[A-Za-z0-9][A-Za-z0-9:._@/-]*$',
  description: 'an id of at most 128 letters, digits and : . _ @ / - starting with a letter or digit, such as rpi:device_b',
});
const MulticastGroup = Type.String({
  pattern: `^(?:22[4-9]|23\\d)\\.(?:${OCTET}\\.){2}${OCTET}$`,
  description: 'an IPv4 multicast address from 224.0.0.0 to 239.255.255.255, such as 239.255.70.77',
});
const Ipv4 = Type.String({
  pattern: `^(?:${OCTET}\\.){3}${OCTET}$`,
  description: 'the IPv4 address of a local interface, such as 192.168.1.10',
});
const ServiceName = Type.String({
  pattern: '^_[A-Za-z0-9][A-Za-z0-9-]{0,62}\\._(?:tcp|udp)\\.local\\.?$',
  description: 'a DNS-SD service type such as _fieldmesh._tcp.local.',
});
const LocationText = Type.String({
  pattern: '^\\s*[-+]?\\d+(?:\\.\\d+)?\\s*,\\s*[-+]?\\d+(?:\\.\\d+)?\\s*$',
  description: '"LAT,LON" such as "37.7749,-122.4194"',
});

export const LogLevelSchema = Type.Union(['debug', 'info', 'warn', 'error', 'silent'].map((l) => Type.Literal(l)));

export const ToolModeSchema = Type.Union([Type.Literal('allow'), Type.Literal('deny'), Type.Literal('supervised')]);
export type ToolMode = Static<typeof ToolModeSchema>;

/** `[gateway]`: the options of `fieldmesh gateway`, by the names of its flags. */
export const GatewaySection = section({
  data_dir: Text,
  api: HostPort,
  api_tls: Type.Boolean(),
  insecure_api: Type.Boolean(),
  listen: HostPort,
  gateway_id: Id,
  heartbeat_interval_ms: Int(10, 600_000),
  degraded_after_missed: Int(1, 1000),
  offline_after_ms: Int(20, 3_600_000),
  max_frame_bytes: Int(1024, 256 * 1024 * 1024),
  max_body_bytes: Int(1024, 256 * 1024 * 1024),
  default_timeout_ms: Int(1, 3_600_000),
  max_attempts: Int(1, 100),
  placement_timeout_ms: Int(0, 3_600_000),
  env_allow: Type.Array(EnvName),
  egress_tools: Type.Array(ToolName),
  run_retention_ms: Int(1000, 10 * 365 * 24 * 3_600_000),
  node_cert_ttl: Duration,
  log_level: LogLevelSchema,
});
export type GatewaySection = Static<typeof GatewaySection>;

/** `[security.tool_policy]`: what the gateway does with a call to each tool. */
export const ToolPolicySection = section({
  default: ToolModeSchema,
  approval_timeout: Duration,
  tools: Type.Record(ToolName, ToolModeSchema, strict),
});
export type ToolPolicySection = Static<typeof ToolPolicySection>;

export const SecuritySection = section({ tool_policy: ToolPolicySection });

/** `[node.policy]`: the node's own limits, which no gateway can override. */
export const NodePolicySection = section({
  allowed_tools: Type.Array(ToolName, { maxItems: 1024 }),
  max_concurrent_tasks: Int(1, 4096),
  max_payload_bytes: Int(1),
  allow_deploy: Type.Boolean(),
});
export type NodePolicySection = Static<typeof NodePolicySection>;

export const DiscoveryMethodSchema = Type.Union([Type.Literal('static'), Type.Literal('multicast'), Type.Literal('mdns')]);
export type DiscoveryMethod = Static<typeof DiscoveryMethodSchema>;

/** `[node.discovery]`: how a controller finds its nodes and a node its controller. */
export const DiscoverySection = section({
  method: DiscoveryMethodSchema,
  peers: Type.Array(Endpoint, { maxItems: 4096 }),
  service_name: ServiceName,
  group: MulticastGroup,
  port: Int(1, 65_535),
  interface: Ipv4,
});
export type DiscoverySection = Static<typeof DiscoverySection>;

export const NodeModeSchema = Type.Union([Type.Literal('controller'), Type.Literal('node')]);
export type NodeMode = Static<typeof NodeModeSchema>;

/**
 * `[node]`: with `mode = "node"` (the default) the options of `fieldmesh node`, by the names of its flags;
 * with `mode = "controller"` what `fieldmesh gateway` takes from it (`node_id`, `advertise_address`,
 * `listen`, `[node.discovery]`).
 */
export const NodeSection = section({
  mode: NodeModeSchema,
  node_id: Id,
  gateway: Endpoint,
  controller: Endpoint,
  listen: HostPort,
  advertise_address: Endpoint,
  data_dir: Text,
  name: Type.String({ minLength: 1, maxLength: 256 }),
  platform: Type.String({ minLength: 1, maxLength: 64 }),
  capabilities: Type.Array(Type.String({ minLength: 1, maxLength: 256 }), { maxItems: 4096 }),
  location: Type.Union([
    LocationText,
    Type.Object(
      { lat: Type.Number({ minimum: -90, maximum: 90 }), lon: Type.Number({ minimum: -180, maximum: 180 }) },
      { ...strict, description: '{ lat, lon } with lat from -90 to 90 and lon from -180 to 180' },
    ),
  ]),
  tools_modules: Type.Array(Text),
  gateway_ca: Text,
  pairing_code: Text,
  request_pairing: Type.Boolean(),
  heartbeat_interval_ms: Int(10, 3_600_000),
  worker_memory_mb: Int(16, 65_536),
  log_level: LogLevelSchema,
  discovery: DiscoverySection,
  policy: NodePolicySection,
});
export type NodeSection = Static<typeof NodeSection>;

/** A configuration file (`fieldmesh.toml`): every section of both roles. */
export const ConfigFile = section({ gateway: GatewaySection, security: SecuritySection, node: NodeSection });
export type ConfigFile = Static<typeof ConfigFile>;

/** The gateway reads the shared file: `[gateway]`, `[security]`, and `[node]` when its mode is "controller". */
export const GatewayConfigFile = ConfigFile;
export type GatewayConfigFile = ConfigFile;
/** The node reads the shared file: `[node]` with its `[node.discovery]` and `[node.policy]`. */
export const NodeConfigFile = ConfigFile;
export type NodeConfigFile = ConfigFile;

/** Keys that hold paths: relative ones in a file are relative to the file's directory. */
const PATH_KEYS = new Set(['gateway.data_dir', 'node.data_dir', 'node.tools_modules', 'node.gateway_ca']);

/** A checked configuration file and where it was read from. */
export interface LoadedConfig<T> {
  /** Absolute path of the file. */
  file: string;
  config: T;
  /** A path written in the file, made absolute against the file's own directory. */
  path(value: string): string;
}

function invalidFile(file: string, message: string, details: Record<string, unknown> = {}): FieldmeshError {
  return new FieldmeshError('FM_ERR_INVALID_OPTION', `${file}: ${message}`, { details: { file, ...details } });
}

/** `/security/tool_policy/tools/x` → `security.tool_policy.tools.x`, `/node/capabilities/2` → `node.capabilities[2]`. */
function keyPath(pointer: string): string {
  let out = '';
  for (const raw of pointer.split('/').slice(1)) {
    const part = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (/^\d+$/.test(part)) out += `[${part}]`;
    else out += out === '' ? part : `.${/^[A-Za-z0-9_-]+$/.test(part) ? part : JSON.stringify(part)}`;
  }
  return out;
}

function shown(value: unknown): string {
  if (value instanceof Date) return `a date (${value.toISOString()})`;
  return JSON.stringify(value) ?? String(value);
}

/** What a schema accepts, in words. */
function expected(schema: TSchema): string {
  const s = schema as TSchema & { anyOf?: TSchema[]; const?: unknown; type?: string; pattern?: string; description?: string };
  if (s.anyOf?.every((x) => 'const' in x))
    return `one of ${s.anyOf.map((x) => JSON.stringify((x as unknown as { const: unknown }).const)).join(', ')}`;
  if (s.anyOf) return s.anyOf.map(expected).join(' or ');
  if (s.description) return s.description;
  if (s.type === 'integer') {
    const min = (s as { minimum?: number }).minimum;
    const max = (s as { maximum?: number }).maximum;
    return max !== undefined && max < Number.MAX_SAFE_INTEGER ? `an integer from ${min} to ${max}` : `an integer of at least ${min}`;
  }
  if (s.type === 'number') return `a number from ${(s as { minimum?: number }).minimum} to ${(s as { maximum?: number }).maximum}`;
  if (s.type === 'string' && s.pattern) return `a string matching ${s.pattern}`;
  if (s.type === 'string') return `a non-empty string of at most ${(s as { maxLength?: number }).maxLength} characters`;
  if (s.type === 'array') {
    const max = (s as { maxItems?: number }).maxItems;
    return `an array${max === undefined ? '' : ` of at most ${max} items`}`;
  }
  if (s.type === 'object') return 'a table';
  return s.type === 'boolean' ? 'true or false' : `a ${s.type ?? 'value'}`;
}

function describe(file: string, root: TSchema, error: ValueError): FieldmeshError {
  const key = keyPath(error.path);
  if (error.type === ValueErrorType.ObjectAdditionalProperties) {
    const parent = schemaAt(root, error.path.split('/').slice(1, -1));
    const pattern = Object.keys(parent?.patternProperties ?? {})[0];
    if (pattern) return invalidFile(file, `${key}: the key is not a valid name (expected ${pattern})`, { key });
    const known = parent?.properties ? ` (known keys here: ${Object.keys(parent.properties).join(', ')})` : '';
    return invalidFile(file, `unknown key "${key}"${known}`, { key });
  }
  return invalidFile(file, `${key}: ${shown(error.value)} is not valid; expected ${expected(error.schema)}`, { key, value: error.value });
}

interface TableSchema {
  properties?: Record<string, TSchema>;
  patternProperties?: Record<string, TSchema>;
}

/** The schema of the table at a path of keys, when the schema fixes one there. */
function schemaAt(schema: TSchema, keys: string[]): TableSchema | undefined {
  let s: TableSchema | undefined = schema as TableSchema;
  for (const k of keys) s = s?.properties?.[k] as TableSchema | undefined;
  return s;
}

/** Reads a TOML file and checks it against `schema`; every problem is FM_ERR_INVALID_OPTION naming the file and key. */
export function loadConfigFile<T extends TSchema = typeof ConfigFile>(path: string, schema?: T): LoadedConfig<Static<T>> {
  const root: TSchema = schema ?? ConfigFile;
  const file = resolve(path);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw invalidFile(file, `cannot read the configuration file: ${(err as Error).message}`);
  }
  let data: unknown;
  try {
    data = parse(text);
  } catch (err) {
    if (err instanceof TomlError) {
      throw invalidFile(file, `line ${err.line}, column ${err.column}: ${err.message.split('\n')[0]}`, {
        line: err.line,
        column: err.column,
      });
    }
    throw invalidFile(file, `not valid TOML: ${(err as Error).message}`);
  }
  const first = Value.Errors(root, data).First();
  if (first) throw describe(file, root, first);
  const dir = dirname(file);
  return { file, config: data as Static<T>, path: (value) => (isAbsolute(value) ? value : resolve(dir, value)) };
}

/** Drops keys whose value is undefined, so spreading flags over a file's options keeps what only the file set. */
export function definedOnly<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}

function isTable(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date);
}

/**
 * `over` on top of `base`, table by table: a value `over` sets replaces the one in `base` (arrays whole),
 * tables merge key by key, and undefined leaves `base` as it was.
 */
export function deepOverlay<T extends object>(base: T, over: Partial<T>): T {
  const out: Record<string, unknown> = { ...(base as Record<string, unknown>) };
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) continue;
    const prev = out[k];
    out[k] = isTable(prev) && isTable(v) ? deepOverlay(prev, v) : v;
  }
  return out as T;
}

// ---------------------------------------------------------------------------------------------
// Layers: defaults, file, environment, each a document shaped like the file plus where each key came from.

/** Where a key's value came from: "default", the absolute path of a file, or an environment variable. */
export type ConfigSource = string;

/** A configuration document shaped like the file, and the source of each key set in it (`gateway.api` → source). */
export interface ConfigLayer {
  doc: ConfigFile;
  sources: Record<string, ConfigSource>;
}

/** Ranks sources for keys that say the same thing twice (`[gateway] listen` and a controller's `[node] listen`). */
export function sourceRank(source: ConfigSource | undefined): number {
  if (source === undefined || source === 'default') return 0;
  return source.startsWith('FIELDMESH_') ? 2 : 1;
}

function leaves(value: unknown, prefix: string, out: string[] = []): string[] {
  if (isTable(value) && Object.keys(value).length > 0) {
    for (const [k, v] of Object.entries(value)) leaves(v, prefix === '' ? k : `${prefix}.${k}`, out);
  } else if (prefix !== '') out.push(prefix);
  return out;
}

/** A layer whose every key has the same source. */
export function layerOf(doc: ConfigFile, source: ConfigSource): ConfigLayer {
  return { doc, sources: Object.fromEntries(leaves(doc, '').map((k) => [k, source])) };
}

/** A checked file as a layer, its relative paths made absolute against the file's directory. */
export function fileLayer(loaded: LoadedConfig<ConfigFile>): ConfigLayer {
  const doc = structuredClone(loaded.config) as Record<string, Record<string, unknown> | undefined>;
  for (const key of PATH_KEYS) {
    const [table, name] = key.split('.') as [string, string];
    const value = doc[table]?.[name];
    if (typeof value === 'string') doc[table]![name] = loaded.path(value);
    else if (Array.isArray(value)) doc[table]![name] = value.map((v) => loaded.path(v as string));
  }
  return layerOf(doc as ConfigFile, loaded.file);
}

/** Layers merged key by key, each over the ones before it. */
export function mergeLayers(...layers: ConfigLayer[]): ConfigLayer {
  let doc: ConfigFile = {};
  let sources: Record<string, ConfigSource> = {};
  for (const layer of layers) {
    doc = deepOverlay(doc, layer.doc);
    for (const [key, source] of Object.entries(layer.sources)) {
      // A value that replaces a whole table (a location string over { lat, lon }) takes the table's keys with it,
      // and a key set in what was an empty table (`tools = {}` by default) replaces the table's entry.
      sources = Object.fromEntries(Object.entries(sources).filter(([k]) => !k.startsWith(`${key}.`) && !key.startsWith(`${k}.`)));
      sources[key] = source;
    }
  }
  return { doc, sources };
}

/** The value at a dotted key path of a document. */
export function valueAt(doc: unknown, key: string): unknown {
  let v: unknown = doc;
  for (const part of key.split('.')) v = isTable(v) ? v[part] : undefined;
  return v;
}

// ---------------------------------------------------------------------------------------------
// Environment variables.

/** One `FIELDMESH_*` variable: its name, the key it sets and that key's schema. */
export interface EnvVariable {
  name: string;
  key: string;
  schema: TSchema;
}

/**
 * The variable of a key: `FIELDMESH_` and the key path in capitals, `.` → `_`, where a key that
 * repeats its table's name drops the repetition (`node.node_id` → FIELDMESH_NODE_ID,
 * `gateway.gateway_id` → FIELDMESH_GATEWAY_ID).
 */
export function envName(key: string): string {
  const parts = key.split('.');
  const words: string[] = [];
  for (const [i, part] of parts.entries()) {
    const prev = parts[i - 1];
    words.push(prev !== undefined && part.startsWith(`${prev}_`) ? part.slice(prev.length + 1) : part);
  }
  return `FIELDMESH_${words.join('_').toUpperCase()}`;
}

function envVariables(schema: TSchema, prefix = ''): EnvVariable[] {
  const out: EnvVariable[] = [];
  for (const [name, child] of Object.entries((schema as TableSchema).properties ?? {})) {
    const key = prefix === '' ? name : `${prefix}.${name}`;
    if ((child as TableSchema).properties) out.push(...envVariables(child, key));
    else out.push({ name: envName(key), key, schema: child });
  }
  return out;
}

/** Every configuration variable, one per key of the file. */
export const ENV_VARIABLES: readonly EnvVariable[] = envVariables(ConfigFile);

/** Read for both roles' `log_level` when the role's own variable is not set. */
export const LOG_LEVEL_ENV = 'FIELDMESH_LOG_LEVEL';
/** A configuration file to read when `--config` is not given. */
export const CONFIG_FILE_ENV = 'FIELDMESH_CONFIG';

/** Prefixes of the configuration variables; another variable under them is a typo and refused. */
const ENV_PREFIXES = ['FIELDMESH_GATEWAY_', 'FIELDMESH_SECURITY_', 'FIELDMESH_NODE_'];

function invalidEnv(name: string, message: string, details: Record<string, unknown> = {}): FieldmeshError {
  return new FieldmeshError('FM_ERR_INVALID_OPTION', `${name}: ${message}`, { details: { variable: name, ...details } });
}

function kind(schema: TSchema): string | undefined {
  return (schema as { type?: string }).type;
}

/** The text of a variable as the key's type: integers, booleans, comma lists and TOOL=MODE lists are parsed. */
function envValue(v: EnvVariable, text: string): unknown {
  const s = v.schema as TSchema & { items?: TSchema; patternProperties?: Record<string, TSchema> };
  switch (kind(s)) {
    case 'integer':
    case 'number':
      return /^\s*[-+]?\d+(?:\.\d+)?\s*$/.test(text) ? Number(text) : text;
    case 'boolean': {
      const t = text.trim().toLowerCase();
      if (t === 'true' || t === '1' || t === 'yes') return true;
      if (t === 'false' || t === '0' || t === 'no') return false;
      return text;
    }
    case 'array':
      return text
        .split(',')
        .map((x) => x.trim())
        .filter((x) => x !== '')
        .map((x) => (s.items && kind(s.items) === 'integer' && /^\d+$/.test(x) ? Number(x) : x));
    case 'object': {
      if (!s.patternProperties) return text;
      const out: Record<string, string> = {};
      for (const entry of text.split(',').map((x) => x.trim())) {
        if (entry === '') continue;
        const m = /^([^=\s]+)\s*=\s*(\S+)$/.exec(entry);
        if (!m) {
          throw invalidEnv(
            v.name,
            `${shown(text)} is not valid: "${entry}" is not TOOL=MODE; expected TOOL=MODE pairs separated by commas`,
            {
              key: v.key,
              value: text,
            },
          );
        }
        out[m[1]!] = m[2]!;
      }
      return out;
    }
    default:
      return text;
  }
}

function checkEnv(v: EnvVariable, text: string, value: unknown): void {
  const error = Value.Errors(v.schema, value).First();
  if (!error) return;
  const details = { key: v.key, value: text };
  if (error.path === '') {
    const what = kind(v.schema) === 'array' ? `a comma-separated list (${expected(v.schema)})` : expected(v.schema);
    throw invalidEnv(v.name, `${shown(text)} is not valid; expected ${what}`, details);
  }
  const item = error.path.split('/')[1]!;
  const where = /^\d+$/.test(item) ? `item ${Number(item) + 1}` : `"${item}"`;
  throw invalidEnv(
    v.name,
    `${shown(text)} is not valid: ${where} ${shown(error.value)} is not; expected ${expected(error.schema)}`,
    details,
  );
}

/**
 * The `FIELDMESH_*` variables of `env` as a layer. An empty variable counts as unset; an unknown
 * variable under FIELDMESH_GATEWAY_, FIELDMESH_SECURITY_ or FIELDMESH_NODE_ and a value the key's
 * schema refuses are FM_ERR_INVALID_OPTION naming the variable, the value and what is allowed.
 */
export function envLayer(env: Record<string, string | undefined>): ConfigLayer {
  const known = new Map(ENV_VARIABLES.map((v) => [v.name, v]));
  const doc: Record<string, unknown> = {};
  const sources: Record<string, ConfigSource> = {};
  const set = (key: string, value: unknown, source: string) => {
    const parts = key.split('.');
    let table = doc;
    for (const part of parts.slice(0, -1)) {
      table[part] ??= {};
      table = table[part] as Record<string, unknown>;
    }
    table[parts.at(-1)!] = value;
    sources[key] = source;
  };
  for (const [name, text] of Object.entries(env).sort(([a], [b]) => a.localeCompare(b))) {
    if (text === undefined || text === '') continue;
    const v = known.get(name);
    if (!v) {
      const prefix = ENV_PREFIXES.find((p) => name.startsWith(p));
      if (prefix) {
        const near = ENV_VARIABLES.filter((x) => x.name.startsWith(prefix)).map((x) => x.name);
        throw invalidEnv(name, `not a configuration variable; known ones here: ${near.join(', ')}`, { value: text });
      }
      continue;
    }
    const value = envValue(v, text);
    checkEnv(v, text, value);
    set(v.key, value, name);
  }
  const logLevel = env[LOG_LEVEL_ENV];
  if (logLevel !== undefined && logLevel !== '') {
    checkEnv({ name: LOG_LEVEL_ENV, key: 'log_level', schema: LogLevelSchema }, logLevel, logLevel);
    for (const key of ['gateway.log_level', 'node.log_level']) if (!(key in sources)) set(key, logLevel, LOG_LEVEL_ENV);
  }
  return { doc: doc as ConfigFile, sources };
}

// ---------------------------------------------------------------------------------------------
// Showing a configuration: secrets masked, TOML with the source of each key.

const SECRET_KEY = /key|secret|token|password|passphrase|(?:^|_)code$/i;

/**
 * A copy of a document where every value of a key named like a secret (token, key, secret, password,
 * pairing code …) is "***"; flags (booleans) stay as they are.
 */
export function maskSecrets<T>(value: T): T {
  if (Array.isArray(value)) return value.map(maskSecrets) as T;
  if (!isTable(value)) return value;
  const masked = (k: string, v: unknown) =>
    SECRET_KEY.test(k) && v !== undefined && v !== null && typeof v !== 'boolean' && !isTable(v) ? '***' : maskSecrets(v);
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, masked(k, v)])) as T;
}

/** A document with its keys in the order the schema lists them (tables too), keys the schema does not fix last. */
export function inSchemaOrder<T>(value: T, schema: TSchema = ConfigFile): T {
  if (!isTable(value)) return value;
  const properties = (schema as TableSchema).properties ?? {};
  const names = [...Object.keys(properties).filter((k) => k in value), ...Object.keys(value).filter((k) => !(k in properties))];
  return Object.fromEntries(names.map((k) => [k, properties[k] ? inSchemaOrder(value[k], properties[k]) : value[k]])) as T;
}

function tomlKey(key: string): string {
  return /^[A-Za-z0-9_-]+$/.test(key) ? key : JSON.stringify(key);
}

function tomlValue(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(tomlValue).join(', ')}]`;
  if (isTable(value)) {
    const entries = Object.entries(value).map(([k, v]) => `${tomlKey(k)} = ${tomlValue(v)}`);
    return entries.length === 0 ? '{}' : `{ ${entries.join(', ')} }`;
  }
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

/** Tables written inline rather than as `[section]`: values that are tables in the schema's eyes only. */
const INLINE_KEYS = new Set(['node.location']);

/**
 * A document as TOML: a `[table]` per section, keys in document order, and after each key a comment
 * naming its source when `sources` is given ("default", the file, or the variable).
 */
export function formatToml(doc: object, sources: Record<string, ConfigSource> = {}): string {
  const out: string[] = [];
  const walk = (table: Record<string, unknown>, path: string) => {
    const full = (k: string) => (path === '' ? k : `${path}.${k}`);
    const scalars = Object.entries(table).filter(([k, v]) => !isTable(v) || INLINE_KEYS.has(full(k)));
    const tables = Object.entries(table).filter(([k, v]) => isTable(v) && !INLINE_KEYS.has(full(k)));
    if (path !== '' && (scalars.length > 0 || tables.length === 0)) {
      if (out.length > 0) out.push('');
      out.push(`[${path}]`);
    }
    const lines = scalars.map(([k, v]) => {
      const source = sources[full(k)] ?? Object.entries(sources).find(([s]) => s.startsWith(`${full(k)}.`))?.[1];
      return { line: `${tomlKey(k)} = ${tomlValue(v)}`, source };
    });
    const width = Math.max(0, ...lines.map((l) => l.line.length));
    for (const { line, source } of lines) out.push(source === undefined ? line : `${line.padEnd(width)}  # ${source}`);
    for (const [k, v] of tables) walk(v as Record<string, unknown>, full(tomlKey(k)));
  };
  walk(doc as Record<string, unknown>, '');
  return `${out.join('\n')}\n`;
}
