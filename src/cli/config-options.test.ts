// Tests for the options of each role: flags > FIELDMESH_* variables > file > defaults, the controller and node
// modes of [node], and the errors of a file or variable meant for the other role.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfigFile } from '../core/config.js';
import { FieldmeshError } from '../core/errors.js';
import { silentLogger } from '../core/logger.js';
import { compileGatewayOptions } from '../gateway/options.js';
import { compileNodeOptions } from '../node/options.js';
import { defaultDataDir } from './client.js';
import { effectiveConfig, resolveGatewayOptions, resolveNodeOptions } from './config-options.js';

const dir = mkdtempSync(join(tmpdir(), 'fm-config-options-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
function load(text: string) {
  const path = join(dir, `fieldmesh-${++n}.toml`);
  writeFileSync(path, text);
  return loadConfigFile(path);
}

/** The FM_ERR_INVALID_OPTION error `fn` throws. */
function caught(fn: () => unknown): FieldmeshError {
  let error: unknown;
  try {
    fn();
  } catch (err) {
    error = err;
  }
  expect(error).toBeInstanceOf(FieldmeshError);
  expect(error).toMatchObject({ code: 'FM_ERR_INVALID_OPTION' });
  return error as FieldmeshError;
}

describe('config options - gateway precedence', () => {
  const file = () => load('[gateway]\nmax_attempts = 5\napi = "127.0.0.1:9000"\nlog_level = "warn"\n');

  it('config options - gateway: flag beats env beats file beats default', () => {
    expect(resolveGatewayOptions({}, {}).maxAttempts).toBe(3);
    expect(resolveGatewayOptions({}, {}, file()).maxAttempts).toBe(5);
    expect(resolveGatewayOptions({}, { FIELDMESH_GATEWAY_MAX_ATTEMPTS: '7' }, file()).maxAttempts).toBe(7);
    expect(resolveGatewayOptions({ maxAttempts: 9 }, { FIELDMESH_GATEWAY_MAX_ATTEMPTS: '7' }, file()).maxAttempts).toBe(9);
    // An absent flag leaves the layers below it.
    const options = resolveGatewayOptions({ maxAttempts: undefined, apiTls: undefined }, { FIELDMESH_GATEWAY_API_TLS: 'true' }, file());
    expect(options).toMatchObject({
      maxAttempts: 5,
      api: '127.0.0.1:9000',
      apiTls: true,
      listen: '0.0.0.0:8788',
      dataDir: defaultDataDir(),
    });
  });

  it('config options - gateway log level: flag, role variable, FIELDMESH_LOG_LEVEL, file, info', () => {
    expect(resolveGatewayOptions({}, {}).logLevel).toBe('info');
    expect(resolveGatewayOptions({}, {}, file()).logLevel).toBe('warn');
    expect(resolveGatewayOptions({}, { FIELDMESH_LOG_LEVEL: 'error' }, file()).logLevel).toBe('error');
    expect(resolveGatewayOptions({}, { FIELDMESH_LOG_LEVEL: 'error', FIELDMESH_GATEWAY_LOG_LEVEL: 'debug' }, file()).logLevel).toBe(
      'debug',
    );
    expect(resolveGatewayOptions({ logLevel: 'silent' }, { FIELDMESH_GATEWAY_LOG_LEVEL: 'debug' }, file()).logLevel).toBe('silent');
  });

  it('config options - gateway tool policy merges tool by tool across file, env and flags', () => {
    const loaded = load('[security.tool_policy]\ndefault = "deny"\n[security.tool_policy.tools]\na = "allow"\nb = "allow"\nc = "allow"\n');
    const options = resolveGatewayOptions(
      { toolPolicy: { tools: { c: 'supervised' }, default: undefined } },
      { FIELDMESH_SECURITY_TOOL_POLICY_TOOLS: 'b=deny,c=deny', FIELDMESH_SECURITY_TOOL_POLICY_APPROVAL_TIMEOUT: '30s' },
      loaded,
    );
    expect(options.toolPolicy).toEqual({ default: 'deny', approvalTimeoutMs: 30_000, tools: { a: 'allow', b: 'deny', c: 'supervised' } });
  });

  it('config options - gateway defaults are the ones the gateway compiles to', () => {
    const { logLevel: _, ...options } = resolveGatewayOptions({}, {});
    const fromConfig = compileGatewayOptions({ ...options, dataDir: options.dataDir!, logger: silentLogger });
    const bare = compileGatewayOptions({ dataDir: defaultDataDir(), logger: silentLogger });
    expect(fromConfig).toEqual(bare);
  });
});

describe('config options - controller mode', () => {
  const CONTROLLER = `
[node]
mode = "controller"
node_id = "primary"
listen = "0.0.0.0:3121"
advertise_address = "192.168.1.100:3121"

[node.discovery]
method = "static"
peers = ["192.168.1.101:3121", "192.168.1.102:3121"]

[gateway]
data_dir = "data"
`;

  it('config options - a controller file gives the gateway its id, listener, advertised address and peers', () => {
    const options = resolveGatewayOptions({}, {}, load(CONTROLLER));
    expect(options).toMatchObject({
      gatewayId: 'primary',
      listen: '0.0.0.0:3121',
      advertiseAddress: '192.168.1.100:3121',
      peers: ['192.168.1.101:3121', '192.168.1.102:3121'],
      dataDir: join(dir, 'data'),
    });
    expect(options.discovery).toBeUndefined();
  });

  it('config options - discovery method multicast or mdns turns that discovery on with its settings', () => {
    const multicast = resolveGatewayOptions(
      {},
      {},
      load('[node]\nmode = "controller"\n[node.discovery]\nmethod = "multicast"\nport = 47020\ninterface = "127.0.0.1"\n'),
    );
    expect(multicast.discovery).toEqual({ multicast: { group: '239.255.70.77', port: 47020, interface: '127.0.0.1' } });
    expect(multicast.peers).toBeUndefined();
    const mdns = resolveGatewayOptions({}, {}, load('[node]\nmode = "controller"\n[node.discovery]\nmethod = "mdns"\n'));
    expect(mdns.discovery).toEqual({ mdns: { serviceName: '_fieldmesh._tcp.local.' } });
    // The method from the environment replaces the file's, and the file's peers go with it.
    const fromEnv = resolveGatewayOptions(
      {},
      { FIELDMESH_NODE_DISCOVERY_METHOD: 'mdns', FIELDMESH_NODE_DISCOVERY_SERVICE_NAME: '_x._tcp.local.' },
      load(CONTROLLER),
    );
    expect(fromEnv.discovery).toEqual({ mdns: { serviceName: '_x._tcp.local.' } });
    expect(fromEnv.peers).toBeUndefined();
    // Flags beat both.
    expect(
      resolveGatewayOptions({ peers: ['10.0.0.9:1'] }, { FIELDMESH_NODE_DISCOVERY_PEERS: '10.0.0.8:1' }, load(CONTROLLER)).peers,
    ).toEqual(['10.0.0.9:1']);
  });

  it('config options - the same setting in [node] and [gateway]: the later layer wins, the same layer must agree', () => {
    expect(resolveGatewayOptions({}, { FIELDMESH_GATEWAY_ID: 'from-env' }, load(CONTROLLER)).gatewayId).toBe('from-env');
    expect(
      resolveGatewayOptions({}, { FIELDMESH_NODE_ID: 'from-env' }, load('[node]\nmode = "controller"\n[gateway]\ngateway_id = "g"\n'))
        .gatewayId,
    ).toBe('from-env');
    expect(resolveGatewayOptions({}, {}, load(`${CONTROLLER}gateway_id = "primary"\n`)).gatewayId).toBe('primary');
    const loaded = load(`${CONTROLLER}listen = "0.0.0.0:8788"\n`);
    const e = caught(() => resolveGatewayOptions({}, {}, loaded));
    expect(e.message).toBe(
      `${loaded.file}: node.listen: "0.0.0.0:3121" and gateway.listen "0.0.0.0:8788" (${loaded.file}) both set the node listener address; ` +
        'allowed: one of them, or both the same',
    );
  });

  it('config options - without mode = "controller" the gateway ignores [node]; a node ignores [gateway] and [security]', () => {
    const shared = load(
      '[gateway]\nmax_attempts = 4\n[security.tool_policy]\ndefault = "deny"\n[node]\nnode_id = "rpi:b"\ngateway = "10.0.0.5:8788"\n',
    );
    expect(resolveGatewayOptions({}, {}, shared)).toMatchObject({ maxAttempts: 4, gatewayId: 'gateway:main' });
    expect(resolveGatewayOptions({}, {}, shared).peers).toBeUndefined();
    const node = resolveNodeOptions({}, {}, shared);
    expect(node).toMatchObject({ id: 'rpi:b', gateway: '10.0.0.5:8788' });
    expect(node).not.toHaveProperty('maxAttempts');
    expect(effectiveConfig('node', {}, shared).doc).not.toHaveProperty('gateway');
  });

  it('config options - a file or variable meant for the other role is refused with the mode and what is allowed', () => {
    const nodeFile = load('[node]\nmode = "node"\nnode_id = "a"\n');
    expect(caught(() => resolveGatewayOptions({}, {}, nodeFile)).message).toBe(
      `${nodeFile.file}: node.mode: "node" configures a node (run \`fieldmesh node\`); \`fieldmesh gateway\` needs mode = "controller", ` +
        'or no mode ([node] is then left to the node)',
    );
    const controllerFile = load(CONTROLLER);
    const e = caught(() => resolveNodeOptions({}, {}, controllerFile));
    expect(e.message).toBe(
      `${controllerFile.file}: node.mode: "controller" configures a gateway (run \`fieldmesh gateway\`); \`fieldmesh node\` needs mode = "node" (the default)`,
    );
    expect(e.details).toMatchObject({ key: 'node.mode', value: 'controller', source: controllerFile.file });
    expect(caught(() => resolveNodeOptions({}, { FIELDMESH_NODE_MODE: 'controller' })).message).toMatch(
      /^FIELDMESH_NODE_MODE: node\.mode: "controller"/,
    );
    // The environment can turn a file for one role into one for the other; the result is checked the same.
    expect(resolveGatewayOptions({}, { FIELDMESH_NODE_MODE: 'controller' }, nodeFile).gatewayId).toBe('a');
  });
});

describe('config options - node precedence', () => {
  const NODE = `
[node]
node_id = "rpi:device_b"
controller = "192.168.1.100:8788"
data_dir = "rpi-data"
location = "37.7749,-122.4194"

[node.policy]
max_concurrent_tasks = 2
allowed_tools = ["sys_info"]
`;

  it('config options - node: flag beats env beats file beats default', () => {
    expect(resolveNodeOptions({}, {}).maxConcurrency).toBe(Math.min(availableParallelism(), 4096));
    expect(resolveNodeOptions({}, {}, load(NODE)).maxConcurrency).toBe(2);
    expect(resolveNodeOptions({}, { FIELDMESH_NODE_POLICY_MAX_CONCURRENT_TASKS: '3' }, load(NODE)).maxConcurrency).toBe(3);
    expect(resolveNodeOptions({ maxConcurrency: 4 }, { FIELDMESH_NODE_POLICY_MAX_CONCURRENT_TASKS: '3' }, load(NODE)).maxConcurrency).toBe(
      4,
    );

    expect(resolveNodeOptions({}, {}).id).toBeUndefined();
    expect(resolveNodeOptions({}, {}, load(NODE)).id).toBe('rpi:device_b');
    expect(resolveNodeOptions({}, { FIELDMESH_NODE_ID: 'rpi:env' }, load(NODE)).id).toBe('rpi:env');
    expect(resolveNodeOptions({ id: 'rpi:flag' }, { FIELDMESH_NODE_ID: 'rpi:env' }, load(NODE)).id).toBe('rpi:flag');
  });

  it('config options - node: controller is the gateway address; env paths stay as given, file paths follow the file', () => {
    const options = resolveNodeOptions({}, {}, load(NODE));
    expect(options).toMatchObject({
      gateway: '192.168.1.100:8788',
      dataDir: join(dir, 'rpi-data'),
      allowedTools: ['sys_info'],
      allowDeploy: false,
    });
    expect(resolveNodeOptions({}, { FIELDMESH_NODE_GATEWAY: '10.0.0.1:1' }, load(NODE)).gateway).toBe('10.0.0.1:1');
    expect(resolveNodeOptions({}, { FIELDMESH_NODE_DATA_DIR: 'here' }, load(NODE)).dataDir).toBe('here');
    expect(resolveNodeOptions({ gateway: '10.0.0.2:2' }, { FIELDMESH_NODE_CONTROLLER: '10.0.0.1:1' }, load(NODE)).gateway).toBe(
      '10.0.0.2:2',
    );
    const both = load(`${NODE.replace('[node.policy]', 'gateway = "192.168.1.200:8788"\n[node.policy]')}`);
    expect(caught(() => resolveNodeOptions({}, {}, both)).message).toMatch(
      /node\.controller: "192\.168\.1\.100:8788" and node\.gateway "192\.168\.1\.200:8788"/,
    );
  });

  it('config options - node discovery: method multicast or mdns is --discover, with group, port, interface and service name', () => {
    const options = resolveNodeOptions(
      {},
      { FIELDMESH_NODE_DISCOVERY_PORT: '47020' },
      load(
        '[node]\nlisten = "0.0.0.0:8788"\nadvertise_address = "10.0.0.7:8788"\n[node.discovery]\nmethod = "multicast"\ninterface = "127.0.0.1"\n',
      ),
    );
    expect(options).toMatchObject({
      listen: '0.0.0.0:8788',
      advertiseAddress: '10.0.0.7:8788',
      discover: 'multicast',
      multicast: { group: '239.255.70.77', port: 47020, interface: '127.0.0.1' },
      serviceName: '_fieldmesh._tcp.local.',
    });
    expect(resolveNodeOptions({}, { FIELDMESH_NODE_DISCOVERY_METHOD: 'mdns' }).discover).toBe('mdns');
    expect(resolveNodeOptions({}, {}).discover).toBeUndefined();
    expect(resolveNodeOptions({ discover: 'mdns' }, { FIELDMESH_NODE_DISCOVERY_METHOD: 'multicast' }).discover).toBe('mdns');
  });

  it('config options - a node from file and variables compiles to what the node runs with', () => {
    const { logLevel: _, ...options } = resolveNodeOptions({}, { FIELDMESH_NODE_POLICY_ALLOW_DEPLOY: 'true' }, load(NODE));
    const compiled = compileNodeOptions({
      ...options,
      id: options.id!,
      gateway: options.gateway!,
      dataDir: options.dataDir!,
      logger: silentLogger,
    });
    expect(compiled).toMatchObject({
      id: 'rpi:device_b',
      gateway: { host: '192.168.1.100', port: 8788 },
      location: { lat: 37.7749, lon: -122.4194 },
      maxConcurrency: 2,
      allowedTools: ['sys_info'],
      allowDeploy: true,
      heartbeatIntervalMs: 1000,
      workerMemoryMb: 256,
    });
  });

  it('config options - a location out of range is refused naming where it came from', () => {
    const loaded = load('[node]\nlocation = "95,10"\n');
    expect(caught(() => resolveNodeOptions({}, {}, loaded)).message).toMatch(
      new RegExp(
        `^${loaded.file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: node\\.location: "95,10" is not a valid location \\(expected "LAT,LON" with lat from -90 to 90`,
      ),
    );
    expect(caught(() => resolveNodeOptions({}, { FIELDMESH_NODE_LOCATION: '0,181' })).message).toMatch(
      /^FIELDMESH_NODE_LOCATION: node\.location: "0,181"/,
    );
  });
});
