// Deployable functions over the mesh: deploy to the nodes of a target, limits, isolated environments, restarts, signatures, undeploy, CLI.
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProcess } from '../src/cli/processes.js';
import type { FunctionDeployBody, ToolCallBody } from '../src/protocol/api.js';
import { bundleHash, type SignedDeployFields, signDeploy, signTask, signUndeploy } from '../src/protocol/signing.js';
import { FakeGateway, type FakeLink } from './fake-gateway.js';
import { Cluster, cliPath, http, type NodeHandle, runCli, testToolsModule, waitFor } from './harness.js';

const ALLOW = ['--allow-deploy'];
/** A node of two task slots, for state and for tools and functions running side by side. */
const DUO = 'fn:duo';

/** A function that says where it runs and what environment it sees. */
const WHOAMI =
  'export default async (args, ctx) => ({ node: ctx.nodeId, echo: args ?? null, env: { ...ctx.env }, proc: { ...process.env } });';

describe('deployable functions', () => {
  const c = new Cluster();
  const nodes = new Map<string, NodeHandle>();
  const stopNode = async (id: string) => {
    await nodes.get(id)!.proc.stop();
    await waitFor(`${id} OFFLINE`, async () => (await c.gateway.client.getNode(id)).status === 'OFFLINE');
  };
  const call = (tool: string, nodeId: string, args: Record<string, unknown> = {}, extra: Partial<ToolCallBody> = {}) =>
    c.gateway.client.toolCall({
      tool_name: tool,
      tool_args: args,
      target: { kind: 'explicit', node_id: nodeId },
      retry: { max_attempts: 1 },
      ...extra,
    });
  const deploy = (body: Partial<FunctionDeployBody> & { name: string }) => c.gateway.client.deployFunction({ bundle: WHOAMI, ...body });
  const hasTool = async (nodeId: string, tool: string) => (await c.gateway.client.getNode(nodeId)).capabilities.includes(`tool:${tool}`);

  beforeAll(async () => {
    // A short default deadline: a function call without timeout_ms gets its own limit instead (see the limits test).
    await c.startGateway(['--default-timeout-ms', '1500']);
    const started = await Promise.all([
      c.startNode({ id: 'fn:north', capabilities: ['site:north'], extraArgs: ALLOW, env: { NODE_SECRET: 'node-only' } }),
      c.startNode({ id: 'fn:south', capabilities: ['site:south'], extraArgs: ALLOW }),
      c.startNode({ id: 'fn:locked', capabilities: ['site:north'] }),
      c.startNode({ id: 'fn:single', extraArgs: [...ALLOW, '--max-concurrency', '1'] }),
      c.startNode({ id: DUO, extraArgs: [...ALLOW, '--max-concurrency', '2'] }),
    ]);
    for (const n of started) nodes.set(n.id, n);
  }, 60_000);
  afterAll(() => c.stop());

  it('functions - deploy reaches the ONLINE nodes in the target that allow deploys, and only those', async () => {
    const r = await deploy({ name: 'whoami', target: { kind: 'capability', required_capabilities: ['site:north'] } });
    expect(r.matched).toBe(2);
    expect(r.deployed).toBe(1);
    expect(r.nodes.sort((a, b) => a.node_id.localeCompare(b.node_id))).toEqual([
      { node_id: 'fn:locked', status: 'skipped', error: expect.objectContaining({ code: 'FM_ERR_DEPLOY_NOT_ALLOWED' }) },
      { node_id: 'fn:north', status: 'deployed' },
    ]);
    expect(r.function).toMatchObject({
      name: 'whoami',
      version: 1,
      memory_mb: 128,
      timeout_seconds: 30,
      bundle_sha256: bundleHash(WHOAMI),
    });
    expect(await hasTool('fn:north', 'whoami')).toBe(true);
    expect(await hasTool('fn:south', 'whoami')).toBe(false);
    expect(await hasTool('fn:locked', 'whoami')).toBe(false);

    // A normal tool call: placed automatically on the one node that has it, signed and verified like any tool.
    const out = await c.gateway.client.toolCall({ tool_name: 'whoami', tool_args: { n: 1 } });
    expect(out).toMatchObject({ ok: true, node_id: 'fn:north', verified: true, output: { node: 'fn:north', echo: { n: 1 } } });
    await expect(call('whoami', 'fn:south')).rejects.toMatchObject({ code: 'FM_ERR_NO_CAPABLE_NODE' });

    const listed = await c.gateway.client.listFunctions('fn:north');
    expect(listed.map((f) => [f.name, f.nodes.map((n) => [n.node_id, n.status])])).toEqual([['whoami', [['fn:north', 'deployed']]]]);
  });

  it('functions - over memory and over time are stopped with their codes, a throw keeps its message as cause, and the node keeps serving', async () => {
    const hog = 'export default () => { const keep = []; for (;;) keep.push({ n: keep.length, s: String(keep.length) }); };';
    const spin = 'export default () => { for (;;) {} };';
    const boom = "export default () => { throw new RangeError('boom: pixel out of range'); };";
    const target = { kind: 'explicit' as const, node_id: 'fn:north' };
    for (const r of await Promise.all([
      deploy({ name: 'hog', bundle: hog, memory_mb: 32, target }),
      deploy({ name: 'spin', bundle: spin, timeout_seconds: 1, target }),
      deploy({ name: 'boom', bundle: boom, target }),
    ]))
      expect(r.deployed).toBe(1);

    const oom = await call('hog', 'fn:north');
    expect(oom).toMatchObject({ ok: false, error: { code: 'FM_ERR_OUT_OF_MEMORY' } });
    expect(oom.error?.message).toContain('32 MB');
    const slow = await call('spin', 'fn:north');
    expect(slow).toMatchObject({ ok: false, error: { code: 'FM_ERR_TOOL_TIMEOUT' } });
    // The function's own limit struck on the node, and the task's deadline was set from it.
    expect(slow.error?.message).toContain('exceeded its 1 s time limit');
    const thrown = await call('boom', 'fn:north');
    expect(thrown).toMatchObject({
      ok: false,
      error: { code: 'FM_ERR_EXECUTION', details: { cause: { name: 'RangeError', message: 'boom: pixel out of range' } } },
    });

    // A call without timeout_ms gets the function's limit (10 s), not the gateway's default (1.5 s here).
    const patient = 'export default async () => { await new Promise((r) => setTimeout(r, 2500)); return { waited: true }; };';
    await deploy({ name: 'patient', bundle: patient, timeout_seconds: 10, target });
    expect(await call('patient', 'fn:north')).toMatchObject({ ok: true, output: { waited: true } });

    // The same node still runs its tools and its other functions.
    expect(await call('slow_echo', 'fn:north', { ms: 0, value: 'still here' })).toMatchObject({
      ok: true,
      output: { value: 'still here' },
    });
    expect(await call('whoami', 'fn:north', { after: 'limits' })).toMatchObject({ ok: true, output: { echo: { after: 'limits' } } });
  });

  it("functions - each function sees only its own environment: not another function's, not the node's", async () => {
    const target = { kind: 'explicit' as const, node_id: 'fn:north' };
    await deploy({ name: 'env-a', env: { ONLY_A: 'a', SHARED: 'from-a' }, target });
    await deploy({ name: 'env-b', env: { ONLY_B: 'b', SHARED: 'from-b' }, target });
    const [a, b] = await Promise.all([call('env-a', 'fn:north'), call('env-b', 'fn:north')]);
    expect(a.output).toMatchObject({ env: { ONLY_A: 'a', SHARED: 'from-a' }, proc: { ONLY_A: 'a', SHARED: 'from-a' } });
    expect(b.output).toMatchObject({ env: { ONLY_B: 'b', SHARED: 'from-b' }, proc: { ONLY_B: 'b', SHARED: 'from-b' } });
    const seen = JSON.stringify([a.output, b.output]);
    // The node process runs with NODE_SECRET and PATH; neither reaches a function.
    expect(seen).not.toContain('node-only');
    expect(seen).not.toContain('"PATH"');
    expect(Object.keys((a.output as { proc: object }).proc).sort()).toEqual(['ONLY_A', 'SHARED']);
  });

  it('functions - a worker is reused between calls to the same version, and a timeout or a redeploy starts a fresh one', async () => {
    const counter = (version: number) =>
      `let calls = 0;\nexport default (args) => {\n  calls++;\n  if (args.spin) for (;;) {}\n  if (args.fail) throw new Error('asked to fail');\n  return { calls, version: ${version} };\n};\n`;
    const target = { kind: 'explicit' as const, node_id: 'fn:south' };
    expect((await deploy({ name: 'counter', bundle: counter(1), timeout_seconds: 1, target })).deployed).toBe(1);
    const count = async (args: Record<string, unknown> = {}) => (await call('counter', 'fn:south', args)).output;

    // Module scope lives on in the worker: the second call sees the first one's count.
    expect(await count()).toEqual({ calls: 1, version: 1 });
    expect(await count()).toEqual({ calls: 2, version: 1 });
    // A throw leaves the worker healthy, so it is kept.
    expect(await call('counter', 'fn:south', { fail: true })).toMatchObject({ ok: false, error: { code: 'FM_ERR_EXECUTION' } });
    expect(await count()).toEqual({ calls: 4, version: 1 });
    // A call over its time limit ends its worker: the next call starts from a fresh module.
    expect(await call('counter', 'fn:south', { spin: true })).toMatchObject({ ok: false, error: { code: 'FM_ERR_TOOL_TIMEOUT' } });
    expect(await count()).toEqual({ calls: 1, version: 1 });
    expect(await count()).toEqual({ calls: 2, version: 1 });

    // A redeploy discards the old version's workers: the next call runs the new code from a fresh module.
    expect((await deploy({ name: 'counter', bundle: counter(2), timeout_seconds: 1, target })).deployed).toBe(1);
    expect(await count()).toEqual({ calls: 1, version: 2 });
    expect(await count()).toEqual({ calls: 2, version: 2 });
  });

  it('functions - deployed functions survive a node restart and are advertised again', async () => {
    await stopNode('fn:north');
    const restarted = await c.startNode({ id: 'fn:north', capabilities: ['site:north'], extraArgs: ALLOW });
    nodes.set('fn:north', restarted);
    expect(existsSync(join(restarted.dataDir, 'functions', 'whoami.mjs'))).toBe(true);
    expect(await hasTool('fn:north', 'whoami')).toBe(true);
    expect(await call('whoami', 'fn:north', { after: 'restart' })).toMatchObject({ ok: true, output: { echo: { after: 'restart' } } });
  });

  it('functions - a node offline during a deploy or undeploy is brought up to date when it reconnects', async () => {
    await deploy({ name: 'south-only', target: { kind: 'explicit', node_id: 'fn:south' } });
    expect(await hasTool('fn:south', 'south-only')).toBe(true);
    await stopNode('fn:south');
    const late = await deploy({ name: 'late', target: { kind: 'capability', required_capabilities: ['site:south'] } });
    expect(late).toMatchObject({ matched: 1, deployed: 0, nodes: [{ node_id: 'fn:south', status: 'offline' }] });
    const gone = await c.gateway.client.undeployFunction('south-only');
    expect(gone.nodes).toEqual([{ node_id: 'fn:south', status: 'offline' }]);

    nodes.set('fn:south', await c.startNode({ id: 'fn:south', capabilities: ['site:south'], extraArgs: ALLOW }));
    await waitFor('fn:south caught up', async () => (await hasTool('fn:south', 'late')) && !(await hasTool('fn:south', 'south-only')));
    expect(await call('late', 'fn:south', { caught: 'up' })).toMatchObject({ ok: true, output: { node: 'fn:south' } });
  });

  it('functions - undeploy from one node, then everywhere; an unknown name is FM_ERR_FUNCTION_NOT_FOUND', async () => {
    await deploy({ name: 'twice', target: { kind: 'failover_chain', nodes: ['fn:north', 'fn:south', 'fn:locked'] } });
    expect((await hasTool('fn:north', 'twice')) && (await hasTool('fn:south', 'twice'))).toBe(true);
    const one = await c.gateway.client.undeployFunction('twice', 'fn:north');
    expect(one).toMatchObject({ undeployed: 1, nodes: [{ node_id: 'fn:north', status: 'undeployed' }] });
    expect(await hasTool('fn:north', 'twice')).toBe(false);
    await expect(call('twice', 'fn:north')).rejects.toMatchObject({ code: 'FM_ERR_NO_CAPABLE_NODE' });
    expect(await call('twice', 'fn:south')).toMatchObject({ ok: true });
    const [listed] = (await c.gateway.client.listFunctions()).filter((f) => f.name === 'twice');
    expect(Object.fromEntries(listed!.nodes.map((n) => [n.node_id, n.status]))).toEqual({
      'fn:north': 'undeployed',
      'fn:south': 'deployed',
    });

    const all = await c.gateway.client.undeployFunction('twice');
    expect(all).toMatchObject({ undeployed: 1, nodes: [{ node_id: 'fn:south', status: 'undeployed' }] });
    expect(await hasTool('fn:south', 'twice')).toBe(false);
    expect((await c.gateway.client.listFunctions()).map((f) => f.name)).not.toContain('twice');
    const missing = await http(c.gateway.api, 'DELETE', '/v1/functions/twice');
    expect(missing.status).toBe(404);
    expect(missing.json.error.code).toBe('FM_ERR_FUNCTION_NOT_FOUND');
  });

  it("functions - calls respect the node's max concurrency: on a node of one, two calls run one after the other", async () => {
    // Each call notes when it started and ended by the node's clock; with one slot the two spans cannot overlap.
    const busy =
      'export default async () => { const start = Date.now(); while (Date.now() - start < 300) {} return { start, end: Date.now() }; };';
    expect((await deploy({ name: 'busy', bundle: busy, target: { kind: 'explicit', node_id: 'fn:single' } })).deployed).toBe(1);
    const [a, b] = (await Promise.all([call('busy', 'fn:single'), call('busy', 'fn:single')])).map(
      (r) => r.output as { start: number; end: number },
    );
    expect(a && b).toBeTruthy();
    expect(a!.end <= b!.start || b!.end <= a!.start).toBe(true);
  });

  it("functions - tools and functions share the node's slots: together they never run more calls at once than its max concurrency", async () => {
    // Each call notes when it started and ended by the node's clock; the node has two slots for all six.
    const nap =
      'export default async (args) => { const start = Date.now(); await new Promise((r) => setTimeout(r, args.ms)); return { start, end: Date.now() }; };';
    expect((await deploy({ name: 'nap', bundle: nap, target: { kind: 'explicit', node_id: DUO } })).deployed).toBe(1);
    const patient = { timeout_ms: 30_000 };
    const results = await Promise.all([
      ...[1, 2, 3].map(() => call('span', DUO, { ms: 300 }, patient)),
      ...[1, 2, 3].map(() => call('nap', DUO, { ms: 300 }, patient)),
    ]);
    expect(results.map((r) => r.ok)).toEqual([true, true, true, true, true, true]);
    const spans = results.map((r) => r.output as { start: number; end: number });
    // The most calls running at one instant; a call ending in the same millisecond another starts does not overlap it.
    const events = spans.flatMap((s) => [[s.start, 1] as const, [s.end, -1] as const]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    let running = 0;
    let most = 0;
    for (const [, step] of events) {
      running += step;
      most = Math.max(most, running);
    }
    expect(most).toBeLessThanOrEqual(2);
  });

  it("functions - a function writes its node's state through ctx.state, and the gateway shows it as reported", async () => {
    const writer =
      "export default async (args, ctx) => { const w = await ctx.state.set('fn-counter', { count: args.count, by: ctx.nodeId }); return { version: w.version, checksum: w.checksum }; };";
    expect((await deploy({ name: 'state-writer', bundle: writer, target: { kind: 'explicit', node_id: DUO } })).deployed).toBe(1);
    expect(await call('state-writer', DUO, { count: 1 })).toMatchObject({ ok: true, output: { version: 1 } });
    const second = await call('state-writer', DUO, { count: 2 });
    expect(second).toMatchObject({ ok: true, output: { version: 2 } });
    const path = `/v1/nodes/${encodeURIComponent(DUO)}/state/fn-counter`;
    const view = await waitFor('fn-counter reported at version 2', async () => {
      const r = await http(c.gateway.api, 'GET', path);
      return r.status === 200 && r.json.reported?.version === 2 ? r.json : undefined;
    });
    expect(view.reported).toMatchObject({
      version: 2,
      data: { count: 2, by: DUO },
      checksum: (second.output as { checksum: string }).checksum,
    });
    expect(view.desired).toBeNull();
    // The node keeps one journal: its tools see what its functions wrote.
    const seen = await call('state_get', DUO, { doc: 'fn-counter' });
    expect(seen.output).toMatchObject({ state: { version: 2, data: { count: 2, by: DUO } } });
  });

  it('functions - a function reads the desired state written at the gateway once its node has adopted it', async () => {
    const put = await c.gateway.client.putState(DUO, 'fn-config', { mode: 'eco', limit: 3 });
    await waitFor('fn-config adopted', async () => (await c.gateway.client.getState(DUO, 'fn-config')).in_sync || undefined);
    const reader =
      "export default async (args, ctx) => ({ doc: await ctx.state.get(args.doc), missing: await ctx.state.get('fn-nothing-here') });";
    expect((await deploy({ name: 'state-reader', bundle: reader, target: { kind: 'explicit', node_id: DUO } })).deployed).toBe(1);
    const r = await call('state-reader', DUO, { doc: 'fn-config' });
    expect(r).toMatchObject({ ok: true });
    expect(r.output).toEqual({
      doc: { version: 1, data: { mode: 'eco', limit: 3 }, checksum: put.desired?.checksum, updated_at: expect.any(String) },
      missing: null,
    });
    // A refused state call the function does not catch fails it with FM_ERR_EXECUTION, the refusal's code kept in its cause.
    const refused = await call('state-reader', DUO, { doc: '../etc' });
    expect(refused).toMatchObject({
      ok: false,
      error: { code: 'FM_ERR_EXECUTION', details: { cause: { name: 'FieldmeshError', code: 'FM_ERR_INVALID_REQUEST' } } },
    });
    expect(refused.error?.message).toContain('must match');
  });

  it('functions - deploy and undeploy need an admin token; listing needs read', async () => {
    const { token: reader } = await c.gateway.client.createToken('read', 'reader');
    const body = JSON.stringify({ name: 'nope', bundle: WHOAMI });
    expect((await http(c.gateway.api, 'POST', '/v1/functions', body, {}, reader)).status).toBe(403);
    expect((await http(c.gateway.api, 'DELETE', '/v1/functions/whoami', undefined, {}, reader)).status).toBe(403);
    expect((await http(c.gateway.api, 'GET', '/v1/functions', undefined, {}, reader)).json.ok).toBe(true);
    const bad = await http(c.gateway.api, 'POST', '/v1/functions', JSON.stringify({ name: '../etc', bundle: WHOAMI }));
    expect(bad.status).toBe(400);
  });

  it('functions - the gateway keeps its functions across a restart, and reconnecting nodes keep theirs', async () => {
    const before = (await c.gateway.client.listFunctions()).map((f) => [f.name, f.version, f.bundle_sha256]);
    await c.restartGateway(true);
    expect((await c.gateway.client.listFunctions()).map((f) => [f.name, f.version, f.bundle_sha256])).toEqual(before);
    // Every node reconnects by itself; the tests after this one use them all.
    for (const id of nodes.keys()) {
      await waitFor(`${id} back ONLINE`, async () => (await c.gateway.client.getNode(id)).status === 'ONLINE');
    }
    expect(await call('whoami', 'fn:north', { after: 'gateway restart' })).toMatchObject({ ok: true, output: { node: 'fn:north' } });
    expect(await hasTool('fn:north', 'whoami')).toBe(true);
  });

  it('functions - CLI deploy bundles a module with its imports, then functions list and undeploy', async () => {
    const dir = join(c.root, 'cli-fn');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'shout.mjs'), "export const shout = (s) => s.toUpperCase() + '!';\n");
    writeFileSync(
      join(dir, 'greet.mjs'),
      "import { shout } from './shout.mjs';\nexport default async (args, ctx) => ({ text: shout(ctx.env.GREETING + ' ' + args.name) });\n",
    );
    const api = ['--api', c.gateway.api, '--data-dir', c.gateway.dataDir];
    const target = JSON.stringify({ kind: 'explicit', node_id: 'fn:south' });
    const deployed = await runCli([
      'deploy',
      join(dir, 'greet.mjs'),
      '--name',
      'greet',
      '--memory',
      '64',
      '--timeout',
      '5',
      '--env',
      'GREETING=hello',
      '--target',
      target,
      ...api,
    ]);
    expect(deployed.stderr).toBe('');
    expect(deployed.code).toBe(0);
    expect(deployed.stdout).toContain('deployed to 1 of 1 node(s)');
    const list = await runCli(['functions', 'list', '--node', 'fn:south', ...api]);
    expect(list.stdout).toMatch(/greet\s+1\s+64 MB\s+5 s\s+GREETING\s+fn:south:deployed/);
    const sent = await runCli(['task', 'send', 'greet', '--args', '{"name":"mesh"}', ...api]);
    expect(sent.code).toBe(0);
    expect(sent.stdout).toContain('"text": "HELLO MESH!"');
    const removed = await runCli(['undeploy', 'greet', '--node', 'fn:south', ...api]);
    expect(removed.code).toBe(0);
    expect(removed.stdout).toContain('greet: removed from 1 node(s)');
    const broken = await runCli(['deploy', join(dir, 'missing.mjs'), '--name', 'broken', ...api]);
    expect(broken.code).toBe(1);
    expect(broken.stderr).toContain('cannot bundle');
  });

  it('functions - CLI deploy refuses what a user gets wrong with one line each, and deploys nothing', async () => {
    const dir = join(c.root, 'cli-fn-bad');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'no-default.mjs'), 'export const handler = async () => 1;\n');
    writeFileSync(join(dir, 'syntax.mjs'), 'export default async (args) => { return args\n');
    writeFileSync(join(dir, 'ok.mjs'), 'export default async () => 1;\n');
    const api = ['--api', c.gateway.api, '--data-dir', c.gateway.dataDir];
    const before = (await c.gateway.client.listFunctions()).map((f) => f.name);
    const cases: [string[], string][] = [
      [[join(dir, 'missing.mjs'), '--name', 'x'], `cannot bundle ${join(dir, 'missing.mjs')}: no such file`],
      [[dir, '--name', 'x'], `cannot bundle ${dir}: not a file`],
      [[join(dir, 'syntax.mjs'), '--name', 'x'], 'syntax.mjs:2'],
      [[join(dir, 'no-default.mjs'), '--name', 'x'], 'no-default.mjs has no default export'],
      [[join(dir, 'ok.mjs'), '--name', 'bad name!'], '/name: "bad name!" is not valid; a function name starts with a letter or digit'],
      [[join(dir, 'ok.mjs'), '--name', 'x', '--target', 'explicit'], '--target: not valid JSON'],
      [[join(dir, 'ok.mjs'), '--name', 'x', '--target', '{"kind":"explicit"}'], '/target/node_id'],
      [[join(dir, 'ok.mjs'), '--name', 'x', '--target', '{"kind":"nearest"}'], '/target/kind: "nearest" is not valid; expected one of'],
    ];
    for (const [args, message] of cases) {
      const r = await runCli(['deploy', ...args, ...api]);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr).toContain(message);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stdout).toBe('');
    }
    expect((await c.gateway.client.listFunctions()).map((f) => f.name)).toEqual(before);
  });
});

describe('deployable functions - a node refuses what the gateway did not sign', () => {
  const c = new Cluster();
  let fake: FakeGateway;
  let open: FakeLink;
  let locked: FakeLink;

  /** Starts a paired node against the fake gateway and welcomes it. */
  const connect = async (id: string, extra: string[]): Promise<FakeLink> => {
    const ready = startProcess(
      ['node', '--gateway', fake.address, '--id', id, '--data-dir', c.nodeDataDir(id), '--tools-module', testToolsModule, ...extra],
      'node ready',
      { cliPath },
    ).then(({ managed }) => c.procs.push(managed));
    const link = await fake.link(id);
    link.welcome(id);
    await ready;
    await link.next('NODE_READY', 'NODE_READY');
    return link;
  };

  const deployFrame = (nodeId: string, name: string, bundle: string, key = fake.signingKey) => {
    const fields: SignedDeployFields = {
      deploy_id: `dep_${name}_${Math.random()}`,
      node_id: nodeId,
      name,
      bundle_sha256: bundleHash(bundle),
      memory_mb: 64,
      timeout_seconds: 5,
      env: {},
      issued_at: new Date().toISOString(),
    };
    return { type: 'DEPLOY', ...fields, bundle, gateway_signature: signDeploy(key, fields) };
  };

  beforeAll(async () => {
    await c.startGateway();
    // Pair both nodes with the real gateway, then point them at the stand-in.
    const nodes = await Promise.all([c.startNode({ id: 'sig:open', extraArgs: ALLOW }), c.startNode({ id: 'sig:locked' })]);
    await Promise.all(nodes.map((n) => n.proc.stop()));
    fake = await FakeGateway.start(c.gateway.dataDir);
    open = await connect('sig:open', ALLOW);
    locked = await connect('sig:locked', []);
  }, 60_000);
  afterAll(async () => {
    fake?.close();
    await c.stop();
  });

  it('functions - forged, tampered and misdirected bundles are refused with FM_ERR_BAD_SIGNATURE; a genuine one is served', async () => {
    const bundle = 'export default async (args) => ({ doubled: args.n * 2 });';
    const forger = generateKeyPairSync('ed25519').privateKey;
    const refused = [
      deployFrame('sig:open', 'double', bundle, forger),
      { ...deployFrame('sig:open', 'double', bundle), bundle: 'export default async () => ({ doubled: "pwned" });' },
      deployFrame('someone:else', 'double', bundle),
      { ...deployFrame('sig:open', 'double', bundle), memory_mb: 4096 },
    ];
    for (const frame of refused) {
      open.send(frame);
      expect(await open.next('DEPLOY_RESULT', 'DEPLOY_RESULT')).toMatchObject({
        deploy_id: frame.deploy_id,
        ok: false,
        error: { code: 'FM_ERR_BAD_SIGNATURE' },
        functions: [],
      });
    }
    const genuine = deployFrame('sig:open', 'double', bundle);
    open.send(genuine);
    const result = await open.next('DEPLOY_RESULT', 'DEPLOY_RESULT');
    expect(result).toMatchObject({
      deploy_id: genuine.deploy_id,
      ok: true,
      functions: [{ name: 'double', bundle_sha256: bundleHash(bundle) }],
    });
    expect(result.capabilities).toContain('tool:double');

    const task = {
      task_id: 'task_double',
      attempt: 1,
      node_id: 'sig:open',
      tool_name: 'double',
      tool_args: { n: 21 },
      timeout_ms: 5000,
      issued_at: new Date().toISOString(),
    };
    open.send({ type: 'TASK', ...task, gateway_signature: signTask(fake.signingKey, task) });
    expect(await open.next('TASK_RESULT', 'TASK_RESULT')).toMatchObject({ task_id: 'task_double', ok: true, output: { doubled: 42 } });
  });

  it('functions - an UNDEPLOY must be signed too, and a call to a function undeployed since is FM_ERR_FUNCTION_NOT_FOUND', async () => {
    const fields = { deploy_id: 'dep_undeploy', node_id: 'sig:open', name: 'double', issued_at: new Date().toISOString() };
    const forger = generateKeyPairSync('ed25519').privateKey;
    open.send({ type: 'UNDEPLOY', ...fields, gateway_signature: signUndeploy(forger, fields) });
    expect(await open.next('DEPLOY_RESULT', 'DEPLOY_RESULT')).toMatchObject({ ok: false, error: { code: 'FM_ERR_BAD_SIGNATURE' } });
    open.send({ type: 'UNDEPLOY', ...fields, gateway_signature: signUndeploy(fake.signingKey, fields) });
    expect(await open.next('DEPLOY_RESULT', 'DEPLOY_RESULT')).toMatchObject({ action: 'undeploy', ok: true, functions: [] });
    const task = {
      task_id: 'task_gone',
      attempt: 1,
      node_id: 'sig:open',
      tool_name: 'double',
      tool_args: { n: 1 },
      timeout_ms: 5000,
      issued_at: new Date().toISOString(),
    };
    open.send({ type: 'TASK', ...task, gateway_signature: signTask(fake.signingKey, task) });
    expect(await open.next('TASK_RESULT', 'TASK_RESULT')).toMatchObject({
      task_id: 'task_gone',
      ok: false,
      error: { code: 'FM_ERR_FUNCTION_NOT_FOUND' },
    });
    expect(existsSync(join(c.nodeDataDir('sig:open'), 'functions', 'double.mjs'))).toBe(false);
  });

  it('functions - a node whose policy refuses deploys refuses even a genuine DEPLOY with FM_ERR_DEPLOY_NOT_ALLOWED', async () => {
    const frame = deployFrame('sig:locked', 'double', 'export default async () => 1;');
    locked.send(frame);
    expect(await locked.next('DEPLOY_RESULT', 'DEPLOY_RESULT')).toMatchObject({
      deploy_id: frame.deploy_id,
      ok: false,
      error: { code: 'FM_ERR_DEPLOY_NOT_ALLOWED' },
      functions: [],
    });
  });
});
