// Tests for the configuration layer: TOML checked against one schema, FIELDMESH_* variables read by the
// same schema, layers merged key by key, secrets masked, documents written back as TOML.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'smol-toml';
import { afterAll, describe, expect, it } from 'vitest';
import {
  ENV_VARIABLES,
  envLayer,
  envName,
  fileLayer,
  formatToml,
  inSchemaOrder,
  layerOf,
  loadConfigFile,
  maskSecrets,
  mergeLayers,
  parseDuration,
} from './config.js';
import { FieldmeshError } from './errors.js';

const dir = mkdtempSync(join(tmpdir(), 'fm-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
function file(text: string): string {
  const path = join(dir, `config-${++n}.toml`);
  writeFileSync(path, text);
  return path;
}

function caught(fn: () => unknown): FieldmeshError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(FieldmeshError);
    expect((err as FieldmeshError).code).toBe('FM_ERR_INVALID_OPTION');
    return err as FieldmeshError;
  }
  throw new Error('expected an FM_ERR_INVALID_OPTION error');
}

function loadError(text: string): FieldmeshError {
  const path = file(text);
  const e = caught(() => loadConfigFile(path));
  expect(e.message.startsWith(`${path}: `)).toBe(true);
  return e;
}

const envError = (env: Record<string, string>) => caught(() => envLayer(env));

const FULL_TOML = `
[gateway]
data_dir = "state/gateway"
api = "127.0.0.1:9000"
max_attempts = 5
env_allow = ["SITE_NAME"]

[security.tool_policy]
default = "supervised"
approval_timeout = "1h30m"

[security.tool_policy.tools]
shell_exec = "deny"

[node]
mode = "node"
node_id = "rpi:pump-house"
controller = "10.0.0.5:8788"
data_dir = "state/node"
tools_modules = ["tools/pumps.mjs"]
location = { lat = 48.85, lon = 2.35 }

[node.discovery]
method = "multicast"
group = "239.255.70.77"
port = 37020
interface = "192.168.1.20"

[node.policy]
allowed_tools = ["sys_info"]
max_concurrent_tasks = 2
`;

describe('config - durations', () => {
  it('config - parses single and compound durations', () => {
    expect(parseDuration('x', '500ms')).toBe(500);
    expect(parseDuration('x', '30s')).toBe(30_000);
    expect(parseDuration('x', '10m')).toBe(600_000);
    expect(parseDuration('x', '1h30m')).toBe(5_400_000);
    expect(parseDuration('x', '2d')).toBe(172_800_000);
  });

  it('config - refuses what is not a duration, naming the option', () => {
    for (const bad of ['10', '10 m', 'm', '1.5h', '-1s', '']) {
      expect(() => parseDuration('security.tool_policy.approval_timeout', bad)).toThrow(
        /security\.tool_policy\.approval_timeout: .* is not a duration/,
      );
    }
  });
});

describe('config - file', () => {
  it('config - one file holds every section; paths in it are relative to the file', () => {
    const path = file(FULL_TOML);
    const loaded = loadConfigFile(path);
    expect(loaded.config.node?.discovery).toEqual({ method: 'multicast', group: '239.255.70.77', port: 37020, interface: '192.168.1.20' });
    const layer = fileLayer(loaded);
    expect(layer.doc.gateway?.data_dir).toBe(join(dir, 'state/gateway'));
    expect(layer.doc.node?.data_dir).toBe(join(dir, 'state/node'));
    expect(layer.doc.node?.tools_modules).toEqual([join(dir, 'tools/pumps.mjs')]);
    expect(layer.sources['node.discovery.group']).toBe(path);
    expect(layer.sources['security.tool_policy.tools.shell_exec']).toBe(path);
  });

  it('config - an unknown key is refused with its path and the keys allowed there', () => {
    expect(loadError('[security.tool_policy]\ndefualt = "deny"\n').message).toMatch(
      /unknown key "security\.tool_policy\.defualt" \(known keys here: default, approval_timeout, tools\)/,
    );
    expect(loadError('[gatway]\napi = "127.0.0.1:1"\n').message).toMatch(
      /unknown key "gatway" \(known keys here: gateway, security, node\)/,
    );
    const e = loadError('[node.discovery]\nmethod = "static"\npeer = ["a:1"]\n');
    expect(e.message).toMatch(
      /unknown key "node\.discovery\.peer" \(known keys here: method, peers, service_name, group, port, interface\)/,
    );
    expect(e.details).toMatchObject({ key: 'node.discovery.peer' });
  });

  it('config - a value of the wrong type is refused naming the key, the value and what is allowed', () => {
    const e = loadError('[gateway]\nmax_attempts = "3"\n');
    expect(e.message).toMatch(/gateway\.max_attempts: "3" is not valid; expected an integer from 1 to 100/);
    expect(e.details).toMatchObject({ key: 'gateway.max_attempts', value: '3' });
    expect(loadError('[node.policy]\nallow_deploy = "yes"\n').message).toMatch(
      /node\.policy\.allow_deploy: "yes" is not valid; expected true or false/,
    );
    expect(loadError('[node]\ncapabilities = "gpu"\n').message).toMatch(/node\.capabilities: "gpu" is not valid; expected an array/);
    expect(loadError('[gateway]\nenv_allow = ["OK", 3]\n').message).toMatch(/gateway\.env_allow\[1\]: 3 is not valid/);
    expect(loadError('[security.tool_policy]\napproval_timeout = "ten minutes"\n').message).toMatch(
      /security\.tool_policy\.approval_timeout: "ten minutes" is not valid; expected a duration such as 30s, 10m or 1h/,
    );
  });

  it('config - a value out of range is refused naming the key, the value and the range', () => {
    expect(loadError('[node.discovery]\nport = 70000\n').message).toMatch(
      /node\.discovery\.port: 70000 is not valid; expected an integer from 1 to 65535/,
    );
    expect(loadError('[node.policy]\nmax_concurrent_tasks = 0\n').message).toMatch(
      /node\.policy\.max_concurrent_tasks: 0 is not valid; expected an integer from 1 to 4096/,
    );
    expect(loadError('[gateway]\nheartbeat_interval_ms = 5\n').message).toMatch(/from 10 to 600000/);
    expect(loadError('[node]\nlocation = { lat = 91, lon = 0 }\n').message).toMatch(
      /node\.location: \{"lat":91,"lon":0\} is not valid; expected "LAT,LON" such as "37\.7749,-122\.4194" or \{ lat, lon \} with lat from -90 to 90/,
    );
    expect(loadError('[node.discovery]\ngroup = "192.168.1.1"\n').message).toMatch(
      /node\.discovery\.group: "192\.168\.1\.1" is not valid; expected an IPv4 multicast address from 224\.0\.0\.0 to 239\.255\.255\.255/,
    );
    expect(loadError('[node]\ncontroller = "10.0.0.5:99999"\n').message).toMatch(
      /node\.controller: "10\.0\.0\.5:99999" is not valid; expected HOST:PORT such as 192\.168\.1\.100:8788 \(port 1 to 65535\)/,
    );
    expect(loadError('[node]\nadvertise_address = "10.0.0.5:0"\n').message).toMatch(
      /node\.advertise_address: "10\.0\.0\.5:0" is not valid; expected HOST:PORT/,
    );
    expect(loadError('[gateway]\nlisten = "0.0.0.0:65536"\n').message).toMatch(
      /gateway\.listen: "0\.0\.0\.0:65536" is not valid; expected HOST:PORT such as 0\.0\.0\.0:8788 \(port 0 to 65535\)/,
    );
    expect(loadConfigFile(file('[gateway]\nlisten = ":0"\napi = "[::1]:8787"\n')).config.gateway).toEqual({
      listen: ':0',
      api: '[::1]:8787',
    });
    expect(loadError('[node.discovery]\npeers = ["10.0.0.7"]\n').message).toMatch(
      /node\.discovery\.peers\[0\]: "10\.0\.0\.7" is not valid; expected HOST:PORT/,
    );
  });

  it('config - a value outside an enum is refused with the values allowed', () => {
    expect(loadError('[node]\nmode = "server"\n').message).toMatch(
      /node\.mode: "server" is not valid; expected one of "controller", "node"/,
    );
    expect(loadError('[node.discovery]\nmethod = "bonjour"\n').message).toMatch(
      /node\.discovery\.method: "bonjour" is not valid; expected one of "static", "multicast", "mdns"/,
    );
    expect(loadError('[security.tool_policy.tools]\nshell_exec = "ask"\n').message).toMatch(
      /security\.tool_policy\.tools\.shell_exec: "ask" is not valid; expected one of "allow", "deny", "supervised"/,
    );
    expect(loadError('[node.discovery]\nservice_name = "fieldmesh"\n').message).toMatch(
      /expected a DNS-SD service type such as _fieldmesh\._tcp\.local\./,
    );
  });

  it('config - broken TOML and a missing file are refused with where and why', () => {
    const e = loadError('[gateway\napi = 1\n');
    expect(e.message).toMatch(/line 1, column \d+: /);
    expect(e.details).toMatchObject({ line: 1 });
    expect(loadError('[node]\nnode_id = "a"\nnode_id = "b"\n').message).toMatch(/line 3, column \d+: /);
    const missing = join(dir, 'nope.toml');
    expect(() => loadConfigFile(missing)).toThrow(`${missing}: cannot read the configuration file`);
  });
});

describe('config - environment', () => {
  it('config - every key has one variable named after its path, without repeated table names', () => {
    expect(envName('gateway.api')).toBe('FIELDMESH_GATEWAY_API');
    expect(envName('node.node_id')).toBe('FIELDMESH_NODE_ID');
    expect(envName('gateway.gateway_id')).toBe('FIELDMESH_GATEWAY_ID');
    expect(envName('node.discovery.peers')).toBe('FIELDMESH_NODE_DISCOVERY_PEERS');
    expect(envName('security.tool_policy.tools')).toBe('FIELDMESH_SECURITY_TOOL_POLICY_TOOLS');
    const names = ENV_VARIABLES.map((v) => v.name);
    expect(new Set(names).size).toBe(names.length);
    expect(names).toEqual(
      expect.arrayContaining(['FIELDMESH_NODE_MODE', 'FIELDMESH_NODE_DISCOVERY_METHOD', 'FIELDMESH_NODE_POLICY_MAX_CONCURRENT_TASKS']),
    );
  });

  it('config - the README lists every variable', () => {
    const readme = readFileSync(join(import.meta.dirname, '../../README.md'), 'utf8');
    expect(ENV_VARIABLES.map((v) => v.name).filter((name) => !readme.includes(`\`${name}\``))).toEqual([]);
  });

  it('config - values are parsed by the key type: integers, booleans, comma lists, TOOL=MODE lists', () => {
    const layer = envLayer({
      FIELDMESH_GATEWAY_MAX_ATTEMPTS: '7',
      FIELDMESH_GATEWAY_API_TLS: 'true',
      FIELDMESH_NODE_POLICY_ALLOW_DEPLOY: '0',
      FIELDMESH_NODE_DISCOVERY_PEERS: '10.0.0.7:8788, 10.0.0.8:8788,',
      FIELDMESH_SECURITY_TOOL_POLICY_TOOLS: 'shell_exec=deny, nodes=supervised',
      FIELDMESH_NODE_LOCATION: '48.85,2.35',
      FIELDMESH_NODE_ID: 'rpi:b',
      FIELDMESH_NODE_DATA_DIR: '',
      HOME: '/home/x',
    });
    expect(layer.doc).toEqual({
      gateway: { max_attempts: 7, api_tls: true },
      node: {
        node_id: 'rpi:b',
        location: '48.85,2.35',
        discovery: { peers: ['10.0.0.7:8788', '10.0.0.8:8788'] },
        policy: { allow_deploy: false },
      },
      security: { tool_policy: { tools: { shell_exec: 'deny', nodes: 'supervised' } } },
    });
    expect(layer.sources['node.discovery.peers']).toBe('FIELDMESH_NODE_DISCOVERY_PEERS');
    expect(layer.sources['gateway.max_attempts']).toBe('FIELDMESH_GATEWAY_MAX_ATTEMPTS');
  });

  it('config - FIELDMESH_LOG_LEVEL sets both roles unless the role has its own variable', () => {
    expect(envLayer({ FIELDMESH_LOG_LEVEL: 'warn' }).doc).toEqual({ gateway: { log_level: 'warn' }, node: { log_level: 'warn' } });
    const layer = envLayer({ FIELDMESH_LOG_LEVEL: 'warn', FIELDMESH_NODE_LOG_LEVEL: 'debug' });
    expect(layer.doc.node?.log_level).toBe('debug');
    expect(layer.sources).toEqual({ 'node.log_level': 'FIELDMESH_NODE_LOG_LEVEL', 'gateway.log_level': 'FIELDMESH_LOG_LEVEL' });
  });

  it('config - a bad variable is refused naming the variable, the value and what is allowed', () => {
    const e = envError({ FIELDMESH_GATEWAY_MAX_ATTEMPTS: 'three' });
    expect(e.message).toBe('FIELDMESH_GATEWAY_MAX_ATTEMPTS: "three" is not valid; expected an integer from 1 to 100');
    expect(e.details).toMatchObject({ variable: 'FIELDMESH_GATEWAY_MAX_ATTEMPTS', key: 'gateway.max_attempts', value: 'three' });
    expect(envError({ FIELDMESH_NODE_DISCOVERY_PORT: '0' }).message).toBe(
      'FIELDMESH_NODE_DISCOVERY_PORT: "0" is not valid; expected an integer from 1 to 65535',
    );
    expect(envError({ FIELDMESH_GATEWAY_API_TLS: 'maybe' }).message).toBe(
      'FIELDMESH_GATEWAY_API_TLS: "maybe" is not valid; expected true or false',
    );
    expect(envError({ FIELDMESH_NODE_DISCOVERY_METHOD: 'bonjour' }).message).toBe(
      'FIELDMESH_NODE_DISCOVERY_METHOD: "bonjour" is not valid; expected one of "static", "multicast", "mdns"',
    );
    expect(envError({ FIELDMESH_NODE_DISCOVERY_PEERS: '10.0.0.7:8788,10.0.0.8' }).message).toMatch(
      /^FIELDMESH_NODE_DISCOVERY_PEERS: "10\.0\.0\.7:8788,10\.0\.0\.8" is not valid: item 2 "10\.0\.0\.8" is not; expected HOST:PORT/,
    );
    expect(envError({ FIELDMESH_SECURITY_TOOL_POLICY_TOOLS: 'shell_exec=ask' }).message).toMatch(
      /^FIELDMESH_SECURITY_TOOL_POLICY_TOOLS: "shell_exec=ask" is not valid: "shell_exec" "ask" is not; expected one of "allow", "deny", "supervised"/,
    );
    expect(envError({ FIELDMESH_SECURITY_TOOL_POLICY_TOOLS: 'shell_exec' }).message).toMatch(/"shell_exec" is not TOOL=MODE/);
    expect(envError({ FIELDMESH_LOG_LEVEL: 'loud' }).message).toMatch(/^FIELDMESH_LOG_LEVEL: "loud" is not valid; expected one of "debug"/);
  });

  it('config - an unknown variable under a configuration prefix is refused, others are left alone', () => {
    expect(envError({ FIELDMESH_GATEWAY_APII: '127.0.0.1:1' }).message).toMatch(
      /^FIELDMESH_GATEWAY_APII: not a configuration variable; known ones here: FIELDMESH_GATEWAY_DATA_DIR, FIELDMESH_GATEWAY_API,/,
    );
    expect(envLayer({ FIELDMESH_TOKEN: 'tok_x', FIELDMESH_API: 'http://127.0.0.1:1', FIELDMESH_CONFIG: 'f.toml' }).doc).toEqual({});
  });
});

describe('config - layers', () => {
  it('config - a key set in a table that was empty takes the place of the table among the sources', () => {
    const merged = mergeLayers(
      layerOf({ security: { tool_policy: { tools: {} } } }, 'default'),
      layerOf({ security: { tool_policy: { tools: { a: 'deny' } } } }, 'FIELDMESH_X'),
    );
    expect(merged.sources).toEqual({ 'security.tool_policy.tools.a': 'FIELDMESH_X' });
    expect(mergeLayers(layerOf({ security: { tool_policy: { tools: {} } } }, 'default')).sources).toEqual({
      'security.tool_policy.tools': 'default',
    });
  });

  it('config - a later layer wins key by key; tables merge, arrays and values replace', () => {
    const merged = mergeLayers(
      layerOf(
        { gateway: { api: '127.0.0.1:1', max_attempts: 3 }, security: { tool_policy: { tools: { a: 'deny', b: 'allow' } } } },
        'default',
      ),
      layerOf({ gateway: { max_attempts: 5, env_allow: ['A', 'B'] }, node: { location: { lat: 1, lon: 2 } } }, '/etc/f.toml'),
      layerOf(
        { gateway: { env_allow: ['C'] }, security: { tool_policy: { tools: { b: 'deny' } } }, node: { location: '3,4' } },
        'FIELDMESH_X',
      ),
    );
    expect(merged.doc).toEqual({
      gateway: { api: '127.0.0.1:1', max_attempts: 5, env_allow: ['C'] },
      security: { tool_policy: { tools: { a: 'deny', b: 'deny' } } },
      node: { location: '3,4' },
    });
    expect(merged.sources).toEqual({
      'gateway.api': 'default',
      'gateway.max_attempts': '/etc/f.toml',
      'gateway.env_allow': 'FIELDMESH_X',
      'security.tool_policy.tools.a': 'default',
      'security.tool_policy.tools.b': 'FIELDMESH_X',
      'node.location': 'FIELDMESH_X',
    });
  });
});

describe('config - showing', () => {
  it('config - secrets are masked by key name: tokens, keys, secrets, passwords, pairing codes', () => {
    const masked = maskSecrets({
      node: { node_id: 'a', pairing_code: 'PAIR-123', request_pairing: true, capabilities: ['x'] },
      other: { api_token: 'tok_1', secret: 's', private_key: 'k', password: 'p', nested: { admin_token: 't' } },
    });
    expect(masked).toEqual({
      node: { node_id: 'a', pairing_code: '***', request_pairing: true, capabilities: ['x'] },
      other: { api_token: '***', secret: '***', private_key: '***', password: '***', nested: { admin_token: '***' } },
    });
  });

  it('config - documents are shown in the order of the schema, whatever order the layers set keys in', () => {
    const doc = {
      node: { policy: { allow_deploy: true }, location: '1,2', node_id: 'a', mode: 'node' },
      gateway: { log_level: 'warn', api: ':1' },
    };
    const ordered = inSchemaOrder(doc);
    expect(ordered).toEqual(doc);
    expect(Object.keys(ordered)).toEqual(['gateway', 'node']);
    expect(Object.keys(ordered.gateway)).toEqual(['api', 'log_level']);
    expect(Object.keys(ordered.node)).toEqual(['mode', 'node_id', 'location', 'policy']);
  });

  it('config - a document written as TOML reads back the same, each key followed by its source', () => {
    const doc = {
      gateway: { api: '127.0.0.1:8787', env_allow: [], max_attempts: 3, api_tls: false },
      security: { tool_policy: { default: 'allow', tools: { 'a.b': 'deny', shell_exec: 'deny' } } },
      node: { mode: 'controller', location: { lat: 1.5, lon: -2 }, name: 'Pi "B"', discovery: { peers: ['h:1', 'h:2'] } },
    };
    const text = formatToml(doc, { 'gateway.api': 'FIELDMESH_GATEWAY_API', 'node.mode': 'file' });
    expect(parse(text)).toEqual(doc);
    expect(text).toMatch(/^api = "127\.0\.0\.1:8787" +# FIELDMESH_GATEWAY_API$/m);
    expect(text).toMatch(/^\[security\.tool_policy\.tools\]$/m);
    expect(text).toMatch(/^location = \{ lat = 1\.5, lon = -2 \}$/m);
  });
});
