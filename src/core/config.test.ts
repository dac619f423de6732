// Tests for configuration files: TOML checked per section, errors naming file and key, flags over the file.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compileGatewayOptions, gatewayOptionsFromConfig, mergeGatewayOptions } from '../gateway/options.js';
import { compileNodeOptions, nodeOptionsFromConfig } from '../node/options.js';
import { GatewayConfigFile, loadConfigFile, NodeConfigFile, overlay, parseDuration } from './config.js';
import { FieldmeshError } from './errors.js';
import { silentLogger } from './logger.js';

const dir = mkdtempSync(join(tmpdir(), 'fm-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
function file(text: string): string {
  const path = join(dir, `config-${++n}.toml`);
  writeFileSync(path, text);
  return path;
}

function loadError(text: string, schema: typeof GatewayConfigFile | typeof NodeConfigFile = GatewayConfigFile): FieldmeshError {
  const path = file(text);
  try {
    loadConfigFile(path, schema);
  } catch (err) {
    expect(err).toBeInstanceOf(FieldmeshError);
    const e = err as FieldmeshError;
    expect(e.code).toBe('FM_ERR_INVALID_OPTION');
    expect(e.message.startsWith(`${path}: `)).toBe(true);
    return e;
  }
  throw new Error('expected loadConfigFile to throw');
}

const GATEWAY_TOML = `
[gateway]
data_dir = "state/gateway"
api = "127.0.0.1:9000"
listen = "0.0.0.0:9001"
max_attempts = 5
env_allow = ["SITE_NAME"]
log_level = "warn"

[security.tool_policy]
default = "supervised"
approval_timeout = "1h30m"

[security.tool_policy.tools]
shell_exec = "deny"
sys_info = "allow"
`;

const NODE_TOML = `
[node]
node_id = "rpi:pump-house"
gateway = "10.0.0.5:8788"
data_dir = "state/node"
capabilities = ["hardware:gps", "sensor:flow"]
location = { lat = 48.85, lon = 2.35 }
tools_modules = ["tools/pumps.mjs"]

[node.policy]
allowed_tools = ["sys_info", "unit_convert"]
max_concurrent_tasks = 2
max_payload_bytes = 65536
allow_deploy = true
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

describe('config - gateway file', () => {
  it('config - a valid gateway file becomes gateway options, paths relative to the file', () => {
    const path = file(GATEWAY_TOML);
    const options = gatewayOptionsFromConfig(loadConfigFile(path, GatewayConfigFile));
    expect(options).toEqual({
      dataDir: join(dir, 'state/gateway'),
      api: '127.0.0.1:9000',
      listen: '0.0.0.0:9001',
      maxAttempts: 5,
      envAllow: ['SITE_NAME'],
      logLevel: 'warn',
      toolPolicy: { default: 'supervised', approvalTimeoutMs: 5_400_000, tools: { shell_exec: 'deny', sys_info: 'allow' } },
    });
    const compiled = compileGatewayOptions({ ...options, dataDir: options.dataDir!, logger: silentLogger });
    expect(compiled.toolPolicy).toEqual({
      default: 'supervised',
      approvalTimeoutMs: 5_400_000,
      tools: { shell_exec: 'deny', sys_info: 'allow' },
    });
    expect(compiled.api).toEqual({ host: '127.0.0.1', port: 9000 });
  });

  it('config - an empty file is valid and leaves every default', () => {
    const options = gatewayOptionsFromConfig(loadConfigFile(file(''), GatewayConfigFile));
    expect(options).toEqual({});
    const compiled = compileGatewayOptions({ dataDir: dir, ...options, logger: silentLogger });
    expect(compiled.toolPolicy).toEqual({ default: 'allow', approvalTimeoutMs: 600_000, tools: {} });
  });

  it('config - an unknown key is refused with its path and the keys allowed there', () => {
    expect(loadError('[security.tool_policy]\ndefualt = "deny"\n').message).toMatch(
      /unknown key "security\.tool_policy\.defualt" \(known keys here: default, approval_timeout, tools\)/,
    );
    expect(loadError('[gatway]\napi = "127.0.0.1:1"\n').message).toMatch(/unknown key "gatway"/);
    expect(loadError('[node]\nnode_id = "a"\n').details).toMatchObject({ key: 'node' });
  });

  it('config - a value of the wrong type is refused naming the key, the value and what is allowed', () => {
    const e = loadError('[gateway]\nmax_attempts = "3"\n');
    expect(e.message).toMatch(/gateway\.max_attempts: "3" is not valid; expected an integer from 1 to 100/);
    expect(e.details).toMatchObject({ key: 'gateway.max_attempts', value: '3' });
    expect(loadError('[security.tool_policy]\ndefault = "maybe"\n').message).toMatch(
      /security\.tool_policy\.default: "maybe" is not valid; expected one of "allow", "deny", "supervised"/,
    );
    expect(loadError('[security.tool_policy.tools]\nshell_exec = "ask"\n').message).toMatch(
      /security\.tool_policy\.tools\.shell_exec: "ask"/,
    );
    expect(loadError('[security.tool_policy]\napproval_timeout = "ten minutes"\n').message).toMatch(
      /security\.tool_policy\.approval_timeout: "ten minutes" is not valid; expected a duration such as 30s, 10m or 1h/,
    );
    expect(loadError('[gateway]\nenv_allow = ["OK", 3]\n').message).toMatch(/gateway\.env_allow\[1\]: 3 is not valid/);
  });

  it('config - broken TOML and a missing file are refused with where and why', () => {
    expect(loadError('[gateway\napi = 1\n').message).toMatch(/line 1, column \d+: /);
    const missing = join(dir, 'nope.toml');
    expect(() => loadConfigFile(missing, GatewayConfigFile)).toThrow(`${missing}: cannot read the configuration file`);
  });

  it('config - flags override the file; tool modes merge tool by tool', () => {
    const fromFile = gatewayOptionsFromConfig(loadConfigFile(file(GATEWAY_TOML), GatewayConfigFile));
    const merged = mergeGatewayOptions(fromFile, {
      api: '127.0.0.1:0',
      maxAttempts: undefined,
      toolPolicy: { default: undefined, approvalTimeoutMs: 30_000, tools: { shell_exec: 'supervised', web_fetch: 'deny' } },
    });
    expect(merged.api).toBe('127.0.0.1:0');
    expect(merged.listen).toBe('0.0.0.0:9001');
    expect(merged.maxAttempts).toBe(5);
    expect(merged.toolPolicy).toEqual({
      default: 'supervised',
      approvalTimeoutMs: 30_000,
      tools: { shell_exec: 'supervised', sys_info: 'allow', web_fetch: 'deny' },
    });
  });
});

describe('config - node file', () => {
  it('config - a valid node file becomes node options with its policy', () => {
    const options = nodeOptionsFromConfig(loadConfigFile(file(NODE_TOML), NodeConfigFile));
    expect(options).toEqual({
      id: 'rpi:pump-house',
      gateway: '10.0.0.5:8788',
      dataDir: join(dir, 'state/node'),
      capabilities: ['hardware:gps', 'sensor:flow'],
      location: { lat: 48.85, lon: 2.35 },
      toolModules: [join(dir, 'tools/pumps.mjs')],
      maxConcurrency: 2,
      allowedTools: ['sys_info', 'unit_convert'],
      maxPayloadBytes: 65_536,
      allowDeploy: true,
    });
    const compiled = compileNodeOptions({ ...(options as Parameters<typeof compileNodeOptions>[0]), logger: silentLogger });
    expect(compiled).toMatchObject({
      maxConcurrency: 2,
      allowedTools: ['sys_info', 'unit_convert'],
      maxPayloadBytes: 65_536,
      allowDeploy: true,
    });
  });

  it('config - a node without a policy runs every tool, refuses deploys and has no payload limit', () => {
    const options = nodeOptionsFromConfig(loadConfigFile(file('[node]\nnode_id = "a"\ngateway = "h:1"\ndata_dir = "d"\n'), NodeConfigFile));
    const compiled = compileNodeOptions({ ...(options as Parameters<typeof compileNodeOptions>[0]), logger: silentLogger });
    expect(compiled).toMatchObject({ allowedTools: null, maxPayloadBytes: null, allowDeploy: false });
  });

  it('config - node policy keys are checked like any other', () => {
    expect(loadError('[node.policy]\nallow_deploy = "yes"\n', NodeConfigFile).message).toMatch(
      /node\.policy\.allow_deploy: "yes" is not valid; expected true or false/,
    );
    expect(loadError('[node.policy]\nmax_payload_bytes = 0\n', NodeConfigFile).message).toMatch(
      /node\.policy\.max_payload_bytes: 0 is not valid/,
    );
    expect(loadError('[node.policy]\nallowed_tools = "sys_info"\n', NodeConfigFile).message).toMatch(
      /node\.policy\.allowed_tools: "sys_info"/,
    );
    expect(loadError('[node.policy]\nmax_tasks = 3\n', NodeConfigFile).message).toMatch(
      /unknown key "node\.policy\.max_tasks" \(known keys here: allowed_tools, max_concurrent_tasks, max_payload_bytes, allow_deploy\)/,
    );
    expect(loadError('[security.tool_policy]\ndefault = "deny"\n', NodeConfigFile).message).toMatch(/unknown key "security"/);
  });

  it('config - node flags override the file, and an absent flag keeps the file value', () => {
    const fromFile = nodeOptionsFromConfig(loadConfigFile(file(NODE_TOML), NodeConfigFile));
    const merged = overlay(fromFile, { id: undefined, maxConcurrency: 8, allowedTools: ['sys_info'], allowDeploy: false });
    expect(merged).toMatchObject({
      id: 'rpi:pump-house',
      maxConcurrency: 8,
      allowedTools: ['sys_info'],
      allowDeploy: false,
      maxPayloadBytes: 65_536,
    });
  });
});

describe('config - examples', () => {
  const examples = join(import.meta.dirname, '../../examples');

  it('config - examples/gateway.toml and examples/node.toml are valid', () => {
    const gateway = gatewayOptionsFromConfig(loadConfigFile(join(examples, 'gateway.toml'), GatewayConfigFile));
    expect(gateway.toolPolicy).toMatchObject({
      default: 'allow',
      approvalTimeoutMs: 600_000,
      tools: { shell_exec: 'deny', nodes: 'supervised' },
    });
    const node = nodeOptionsFromConfig(loadConfigFile(join(examples, 'node.toml'), NodeConfigFile));
    expect(node).toMatchObject({ id: 'rpi:device_b', maxConcurrency: 2, maxPayloadBytes: 65_536, allowDeploy: false });
  });
});
