/**
 * Configuration files: TOML read with smol-toml and checked against one
 * TypeBox schema per section, so an unknown key or a value of the wrong type
 * is refused with FM_ERR_INVALID_OPTION naming the file and the key path
 * (`security.tool_policy.default`). The sections follow the original design
 * (`[node]`, `[node.policy]`, `[security.tool_policy.tools]`) plus `[gateway]`;
 * each role turns its sections into its options object, and command-line
 * flags override what the file says.
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
const ToolName = Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9_.:-]+$' });
const EnvName = Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_.:-]*$' });

export const LogLevelSchema = Type.Union(['debug', 'info', 'warn', 'error', 'silent'].map((l) => Type.Literal(l)));

export const ToolModeSchema = Type.Union([Type.Literal('allow'), Type.Literal('deny'), Type.Literal('supervised')]);
export type ToolMode = Static<typeof ToolModeSchema>;

/** `[gateway]`: the options of `fieldmesh gateway`, by the names of its flags. */
export const GatewaySection = section({
  data_dir: Text,
  api: Text,
  listen: Text,
  gateway_id: Text,
  heartbeat_interval_ms: Int(10, 600_000),
  degraded_after_missed: Int(1, 1000),
  offline_after_ms: Int(20, 3_600_000),
  max_frame_bytes: Int(1024),
  max_body_bytes: Int(1024),
  default_timeout_ms: Int(1, 3_600_000),
  max_attempts: Int(1, 100),
  placement_timeout_ms: Int(0, 3_600_000),
  env_allow: Type.Array(EnvName),
  egress_tools: Type.Array(ToolName),
  run_retention_ms: Int(1000),
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

/** A gateway's configuration file. */
export const GatewayConfigFile = section({ gateway: GatewaySection, security: SecuritySection });
export type GatewayConfigFile = Static<typeof GatewayConfigFile>;

/** `[node.policy]`: the node's own limits, which no gateway can override. */
export const NodePolicySection = section({
  allowed_tools: Type.Array(ToolName, { maxItems: 1024 }),
  max_concurrent_tasks: Int(1, 4096),
  max_payload_bytes: Int(1),
  allow_deploy: Type.Boolean(),
});
export type NodePolicySection = Static<typeof NodePolicySection>;

/** `[node]`: the options of `fieldmesh node`, by the names of its flags. */
export const NodeSection = section({
  node_id: Text,
  gateway: Text,
  data_dir: Text,
  name: Text,
  platform: Text,
  capabilities: Type.Array(Text, { maxItems: 4096 }),
  location: Type.Union([
    Text,
    Type.Object({ lat: Type.Number({ minimum: -90, maximum: 90 }), lon: Type.Number({ minimum: -180, maximum: 180 }) }, strict),
  ]),
  tools_modules: Type.Array(Text),
  gateway_ca: Text,
  heartbeat_interval_ms: Int(10, 3_600_000),
  worker_memory_mb: Int(16, 65_536),
  log_level: LogLevelSchema,
  policy: NodePolicySection,
});
export type NodeSection = Static<typeof NodeSection>;

/** A node's configuration file. */
export const NodeConfigFile = section({ node: NodeSection });
export type NodeConfigFile = Static<typeof NodeConfigFile>;

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
  if (s.type === 'string' && s.pattern) return `a string matching ${s.pattern}`;
  if (s.type === 'string') return 'a non-empty string';
  if (s.type === 'array') return 'an array';
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
export function loadConfigFile<T extends TSchema>(path: string, schema: T): LoadedConfig<Static<T>> {
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
  const first = Value.Errors(schema, data).First();
  if (first) throw describe(file, schema, first);
  const dir = dirname(file);
  return { file, config: data as Static<T>, path: (value) => (isAbsolute(value) ? value : resolve(dir, value)) };
}

/** Drops keys whose value is undefined, so spreading flags over a file's options keeps what only the file set. */
export function definedOnly<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}

/** Command-line flags over a file's options: every flag given wins, everything else comes from the file. */
export function overlay<T extends object>(fromFile: T, flags: T): T {
  return { ...fromFile, ...definedOnly(flags) };
}
