// `fieldmesh config check|print` through the built CLI, every file in examples/ checked, and real gateway and
// node processes configured by file, FIELDMESH_* variables and flags together.
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parse } from 'smol-toml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProcess } from '../src/cli/processes.js';
import { Cluster, cliPath, http, runCli, waitFor } from './harness.js';

const examples = resolve(import.meta.dirname, '../examples');

/** Variables of the test runner's own environment that would change what the CLI prints. */
const clean = Object.fromEntries(
  Object.keys(process.env)
    .filter((k) => k.startsWith('FIELDMESH_'))
    .map((k) => [k, '']),
);

describe('config cli', () => {
  const c = new Cluster();
  const write = (name: string, text: string) => {
    const path = join(c.root, name);
    writeFileSync(path, text);
    return path;
  };
  afterAll(() => c.stop());

  it('config cli - config check accepts every file in examples/ and says what each configures', async () => {
    const files = readdirSync(examples).filter((f) => f.endsWith('.toml'));
    expect(files).toEqual(
      expect.arrayContaining(['fieldmesh.controller.toml', 'node-android.toml', 'node-raspberry-pi.toml', 'node-gpu-host.toml']),
    );
    for (const f of files) {
      const r = await runCli(['config', 'check', join(examples, f)], 30_000, clean);
      expect(r.code, `${f}: ${r.stderr}`).toBe(0);
      expect(r.stdout.split('\n')[0]).toBe(`ok: ${join(examples, f)}`);
      expect(r.stdout.split('\n')[1]).toMatch(/^ {2}(gateway|node) /);
    }
    const controller = await runCli(['config', 'check', join(examples, 'fieldmesh.controller.toml')], 30_000, clean);
    expect(controller.stdout).toMatch(/gateway "primary": api 127\.0\.0\.1:8787, node listener 0\.0\.0\.0:8788, discovery 2 static peers/);
    const android = await runCli(['config', 'check', join(examples, 'node-android.toml')], 30_000, clean);
    expect(android.stdout).toMatch(/node "android:device_a": finding its gateway by multicast, 3 allowed tools, max_concurrent_tasks 1/);
    const gpu = await runCli(['config', 'check', join(examples, 'node-gpu-host.toml')], 30_000, clean);
    expect(gpu.stdout).toMatch(/node "gpu-host-01": listening on 0\.0\.0\.0:8788/);
  });

  it('config cli - config check exits 1 with the file, the key, the value and what is allowed', async () => {
    const cases: [string, RegExp][] = [
      [
        '[node.discovery]\nmethod = "bonjour"\n',
        /node\.discovery\.method: "bonjour" is not valid; expected one of "static", "multicast", "mdns"/,
      ],
      ['[gateway]\nmax_attempts = 0\n', /gateway\.max_attempts: 0 is not valid; expected an integer from 1 to 100/],
      ['[node]\nnodeid = "a"\n', /unknown key "node\.nodeid" \(known keys here: mode, node_id,/],
      ['[node\nmode = "node"\n', /line 1, column \d+: /],
      ['[node]\nlocation = "91,0"\n', /node\.location: "91,0" is not a valid location/],
      ['[node]\ntools_modules = ["no-such-tools.mjs"]\n', /node\.tools_modules\[0\]: ".*no-such-tools\.mjs" does not exist/],
      // Checked as the gateway would at start, not only key by key.
      ['[gateway]\napi = "0.0.0.0:8787"\n', /gateway\.api: "0\.0\.0\.0:8787" is not a loopback address .* --api-tls/],
      ['[gateway]\nheartbeat_interval_ms = 5000\noffline_after_ms = 3000\n', /offlineAfterMs: 3000 must be longer than/],
    ];
    for (const [text, message] of cases) {
      const path = write(`bad-${cases.findIndex(([t]) => t === text)}.toml`, text);
      const r = await runCli(['config', 'check', path], 30_000, clean);
      expect(r.code, text).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(new RegExp(`^error FM_ERR_INVALID_OPTION: ${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `));
      expect(r.stderr, text).toMatch(message);
    }
    const missing = await runCli(['config', 'check', join(c.root, 'none.toml')], 30_000, clean);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/none\.toml: cannot read the configuration file/);
  });

  it('config cli - config print shows defaults, file and variables with their sources, secrets masked, as TOML that checks', async () => {
    const file = write(
      'print.toml',
      '[node]\nnode_id = "rpi:b"\ncontroller = "10.0.0.5:8788"\npairing_code = "PAIR-FILE-SECRET"\n[node.policy]\nmax_concurrent_tasks = 2\n',
    );
    const r = await runCli(['config', 'print', '--config', file], 30_000, {
      ...clean,
      FIELDMESH_NODE_POLICY_MAX_CONCURRENT_TASKS: '6',
      FIELDMESH_NODE_DISCOVERY_METHOD: 'mdns',
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^# fieldmesh node: /);
    expect(r.stdout).not.toContain('PAIR-FILE-SECRET');
    expect(r.stdout).toMatch(/^pairing_code = "\*\*\*" +# file$/m);
    expect(r.stdout).toMatch(/^node_id = "rpi:b" +# file$/m);
    expect(r.stdout).toMatch(/^gateway = "10\.0\.0\.5:8788" +# file$/m);
    expect(r.stdout).toMatch(/^max_concurrent_tasks = 6 +# FIELDMESH_NODE_POLICY_MAX_CONCURRENT_TASKS$/m);
    expect(r.stdout).toMatch(/^method = "mdns" +# FIELDMESH_NODE_DISCOVERY_METHOD$/m);
    expect(r.stdout).toMatch(/^worker_memory_mb = 256 +# default$/m);
    const printed = write('printed.toml', r.stdout);
    expect(parse(r.stdout)).toMatchObject({ node: { node_id: 'rpi:b', policy: { max_concurrent_tasks: 6 } } });
    const check = await runCli(['config', 'check', printed], 30_000, clean);
    expect(check.code, check.stderr).toBe(0);
  });

  it('config cli - config print --json masks secrets from variables too and names each source', async () => {
    const r = await runCli(['config', 'print', '--role', 'node', '--json'], 30_000, {
      ...clean,
      FIELDMESH_NODE_PAIRING_CODE: 'PAIR-ENV-SECRET',
      FIELDMESH_NODE_ID: 'rpi:env',
      FIELDMESH_LOG_LEVEL: 'warn',
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).not.toContain('PAIR-ENV-SECRET');
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({
      role: 'node',
      file: null,
      config: { node: { node_id: 'rpi:env', pairing_code: '***', log_level: 'warn', mode: 'node' } },
      sources: {
        'node.node_id': 'FIELDMESH_NODE_ID',
        'node.pairing_code': 'FIELDMESH_NODE_PAIRING_CODE',
        'node.log_level': 'FIELDMESH_LOG_LEVEL',
        'node.mode': 'default',
      },
    });
  });

  it('config cli - config print follows the file role and refuses bad variables and the wrong role', async () => {
    const gateway = await runCli(['config', 'print', '--config', join(examples, 'fieldmesh.controller.toml'), '--json'], 30_000, clean);
    expect(gateway.code, gateway.stderr).toBe(0);
    expect(JSON.parse(gateway.stdout)).toMatchObject({
      role: 'gateway',
      config: {
        gateway: { gateway_id: 'primary', listen: '0.0.0.0:8788', max_frame_bytes: 1_048_576 },
        node: { mode: 'controller', discovery: { method: 'static', peers: ['192.168.1.101:8788', '192.168.1.102:8788'] } },
      },
    });
    const byVariable = await runCli(['config', 'print', '--json'], 30_000, {
      ...clean,
      FIELDMESH_CONFIG: join(examples, 'node-android.toml'),
    });
    expect(JSON.parse(byVariable.stdout)).toMatchObject({
      role: 'node',
      file: join(examples, 'node-android.toml'),
      config: { node: { node_id: 'android:device_a', discovery: { method: 'multicast' } } },
    });
    const nodeByEnv = await runCli(['config', 'print', '--json'], 30_000, { ...clean, FIELDMESH_NODE_MODE: 'node' });
    expect(JSON.parse(nodeByEnv.stdout)).toMatchObject({ role: 'node', sources: { 'node.mode': 'FIELDMESH_NODE_MODE' } });
    const badEnv = await runCli(['config', 'print'], 30_000, { ...clean, FIELDMESH_GATEWAY_MAX_BODY_BYTES: '1k' });
    expect(badEnv.code).toBe(1);
    expect(badEnv.stderr).toBe(
      'error FM_ERR_INVALID_OPTION: FIELDMESH_GATEWAY_MAX_BODY_BYTES: "1k" is not valid; expected an integer from 1024 to 268435456\n',
    );
    const wrongRole = await runCli(
      ['config', 'print', '--role', 'node', '--config', join(examples, 'fieldmesh.controller.toml')],
      30_000,
      clean,
    );
    expect(wrongRole.code).toBe(1);
    expect(wrongRole.stderr).toMatch(/node\.mode: "controller" configures a gateway \(run `fieldmesh gateway`\)/);
    const badRole = await runCli(['config', 'print', '--role', 'controller'], 30_000, clean);
    expect(badRole.code).toBe(1);
    expect(badRole.stderr).toMatch(/Allowed choices are gateway, node/);
  });

  it('config cli - gateway and node refuse a file for the other role, and a bad variable, before starting', async () => {
    const node = await runCli(
      ['gateway', '--config', join(examples, 'node-raspberry-pi.toml'), '--data-dir', join(c.root, 'never')],
      30_000,
      clean,
    );
    expect(node.code).toBe(1);
    expect(node.stderr).toMatch(/node-raspberry-pi\.toml: node\.mode: "node" configures a node \(run `fieldmesh node`\)/);
    const controller = await runCli(['node', '--config', join(examples, 'fieldmesh.controller.toml')], 30_000, clean);
    expect(controller.code).toBe(1);
    expect(controller.stderr).toMatch(/fieldmesh\.controller\.toml: node\.mode: "controller" configures a gateway/);
    const env = await runCli(['node', '--id', 'a', '--gateway', '127.0.0.1:1', '--data-dir', join(c.root, 'never')], 30_000, {
      ...clean,
      FIELDMESH_NODE_WORKER_MEMORY_MB: '8',
    });
    expect(env.code).toBe(1);
    expect(env.stderr).toMatch(/FIELDMESH_NODE_WORKER_MEMORY_MB: "8" is not valid; expected an integer from 16 to 65536/);
    const none = await runCli(['node', '--gateway', '127.0.0.1:1'], 30_000, clean);
    expect(none.code).toBe(1);
    expect(none.stderr).toBe(
      'error FM_ERR_INVALID_OPTION: --id is required (or node_id in [node] of the --config file, or FIELDMESH_NODE_ID)\n',
    );
  });
});

describe('config - processes configured by flags, variables and file', () => {
  const c = new Cluster();

  beforeAll(async () => {
    const gatewayToml = join(c.root, 'fieldmesh.toml');
    // The harness passes --api and --listen on port 0; a privileged port here would fail if the file won.
    writeFileSync(
      gatewayToml,
      '[gateway]\napi = "127.0.0.1:9"\n\n[security.tool_policy.tools]\nsys_info = "deny"\nunit_convert = "deny"\npii_redact = "deny"\n',
    );
    await c.startGateway(
      ['--config', gatewayToml, '--tool-policy', 'pii_redact=allow'],
      {},
      {
        ...clean,
        FIELDMESH_SECURITY_TOOL_POLICY_TOOLS: 'unit_convert=allow,summarize=deny',
      },
    );
  }, 60_000);
  afterAll(() => c.stop());

  it('config - the gateway runs with flag over variable over file, tool by tool', async () => {
    const call = (tool: string, args: object) =>
      http(c.gateway.api, 'POST', '/v1/tool_call', JSON.stringify({ tool_name: tool, tool_args: args }));
    const nodeDir = join(c.root, 'node-files');
    mkdirSync(nodeDir);
    const nodeToml = join(nodeDir, 'node.toml');
    writeFileSync(
      nodeToml,
      '[node]\nmode = "node"\nnode_id = "cfg:file"\ncontroller = "127.0.0.1:9"\ndata_dir = "data"\nname = "From the file"\n[node.policy]\nmax_concurrent_tasks = 3\n',
    );
    const code = (await c.gateway.client.createPairingCode({ node_id: 'cfg:env' })).code;
    // The node's id, gateway address and pairing code come from variables, the rest from its file.
    const { managed } = await startProcess(['node', '--config', nodeToml], 'node ready', {
      cliPath,
      env: { ...clean, FIELDMESH_NODE_ID: 'cfg:env', FIELDMESH_NODE_CONTROLLER: c.gateway.listen, FIELDMESH_NODE_PAIRING_CODE: code },
    });
    c.procs.push(managed);
    const node = await waitFor('cfg:env ONLINE', async () => {
      const n = await c.gateway.client.getNode('cfg:env');
      return n.status === 'ONLINE' ? n : undefined;
    });
    expect(node.name).toBe('From the file');
    expect(node.policy).toMatchObject({ max_concurrent_tasks: 3 });
    expect(readdirSync(join(nodeDir, 'data')).length).toBeGreaterThan(0);

    expect((await call('sys_info', {})).json.error).toMatchObject({ code: 'FM_ERR_TOOL_DENIED' });
    expect((await call('summarize', { text: 'a b c' })).json.error).toMatchObject({ code: 'FM_ERR_TOOL_DENIED' });
    const converted = await call('unit_convert', { value: 1, from_unit: 'km', to_unit: 'm' });
    expect(converted.status, converted.text).toBe(200);
    const redacted = await call('pii_redact', { text: 'mail me at a@example.com' });
    expect(redacted.status, redacted.text).toBe(200);
  });
});
