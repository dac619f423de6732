// Listen mode through real processes on loopback: the gateway dials nodes started with --listen (static --peer and
// nodes registered with POST /v1/nodes/register), mutual TLS both ways, redial after the node restarts, and the
// registration API with its errors and its persistence across a gateway restart.
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { type Managed, startProcess } from '../src/cli/processes.js';
import { Cluster, cliPath, http, runCli, testToolsModule, waitFor } from './harness.js';

/** A TCP port nobody holds right now, for a node to listen on across restarts. */
async function freeTcpPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

// biome-ignore lint/suspicious/noExplicitAny: API bodies are read field by field
type Json = Record<string, any>;

describe('listen mode', () => {
  const c = new Cluster();
  let staticPort: number;
  let regPort: number;
  const listening = new Map<string, Managed>();

  /** Starts a paired node in listen mode and waits for its "node listening" line. */
  async function listen(id: string, port: number): Promise<Managed> {
    const args = ['node', '--id', id, '--data-dir', c.nodeDataDir(id), '--listen', `127.0.0.1:${port}`, '--tools-module', testToolsModule];
    const { managed, ready } = await startProcess(args, 'node listening', { cliPath });
    expect(ready.listen).toBe(`127.0.0.1:${port}`);
    c.procs.push(managed);
    listening.set(id, managed);
    return managed;
  }

  const status = async (id: string) => (await http(c.gateway.api, 'GET', `/v1/nodes/${id}`)).json.node?.status;
  const peers = async (): Promise<Json[]> => (await http(c.gateway.api, 'GET', '/v1/discovery')).json.peers;
  const convert = (id: string) =>
    c.gateway.client.toolCall({
      tool_name: 'unit_convert',
      tool_args: { value: 1, from_unit: 'km', to_unit: 'm' },
      target: { kind: 'explicit', node_id: id },
    });

  async function restartGateway(): Promise<void> {
    const { api, listen: at, proc } = c.gateway;
    await proc.stop();
    await c.startGateway(['--peer', `127.0.0.1:${staticPort}`], { api: api.replace(/^https?:\/\//, ''), listen: at });
  }

  beforeAll(async () => {
    [staticPort, regPort] = await Promise.all([freeTcpPort(), freeTcpPort()]);
    await c.startGateway();
    // Pairing is done by dialing the gateway once; afterwards the nodes only listen.
    for (const id of ['edge:static', 'edge:reg', 'edge:other']) await (await c.startNode({ id })).proc.stop();
    await restartGateway();
  });
  afterAll(() => c.stop());

  it('listen - a node that has never paired cannot listen, and says how to pair', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fm-unpaired-'));
    const res = await runCli(['node', '--id', 'edge:new', '--data-dir', dir, '--listen', '127.0.0.1:0', '--log-level', 'silent']);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain('FM_ERR_NOT_PAIRED');
    expect(res.stderr).toContain('--pair CODE');
  });

  it('listen - the gateway dials a --peer node, which then runs tool calls as a node that dialed', async () => {
    await listen('edge:static', staticPort);
    await waitFor('edge:static ONLINE', async () => (await status('edge:static')) === 'ONLINE');
    expect(await convert('edge:static')).toMatchObject({
      ok: true,
      node_id: 'edge:static',
      output: { value: 1000, unit: 'm' },
      verified: true,
    });
    expect(await peers()).toEqual([
      expect.objectContaining({ endpoint: `127.0.0.1:${staticPort}`, node_id: null, source: 'static', connected: true }),
    ]);
  });

  it('listen - the gateway redials a peer that went down, once it is back', async () => {
    const proc = listening.get('edge:static')!;
    proc.proc.kill('SIGKILL');
    await proc.exited;
    await waitFor('edge:static OFFLINE', async () => (await status('edge:static')) === 'OFFLINE');
    await waitFor('peer seen down', async () => (await peers()).some((p) => !p.connected && p.failures >= 1));
    await listen('edge:static', staticPort);
    await waitFor('edge:static ONLINE again', async () => (await status('edge:static')) === 'ONLINE');
    expect(await convert('edge:static')).toMatchObject({ ok: true, node_id: 'edge:static' });
  });

  it('listen - an address already in use is refused with the option and the address', async () => {
    const res = await runCli([
      'node',
      '--id',
      'edge:other',
      '--data-dir',
      c.nodeDataDir('edge:other'),
      '--listen',
      `127.0.0.1:${staticPort}`,
      '--log-level',
      'silent',
    ]);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain(`error FM_ERR_INVALID_OPTION: node.listen: cannot listen on 127.0.0.1:${staticPort}: listen EADDRINUSE`);
  });

  it('listen - only the gateway may dial a listening node: another node certificate, or none, is refused', async () => {
    const tls = join(c.nodeDataDir('edge:other'), 'tls');
    const dial = (options: WebSocket.ClientOptions) =>
      new Promise<string>((resolve) => {
        const ws = new WebSocket(`wss://127.0.0.1:${staticPort}/v1/connect`, { rejectUnauthorized: false, ...options });
        ws.on('open', () => {
          ws.terminate();
          resolve('open');
        });
        ws.on('unexpected-response', (_req, res) => {
          ws.terminate();
          resolve(`http ${res.statusCode}`);
        });
        ws.on('error', () => resolve('error'));
      });
    // A certificate from the same CA, but a node's, not the gateway's client certificate.
    const asNode = await dial({ cert: readFileSync(join(tls, 'node.crt')), key: readFileSync(join(tls, 'node.key')) });
    expect(asNode).toBe('http 401');
    expect(await dial({})).toBe('error');
    expect(await status('edge:static')).toBe('ONLINE');
  });

  it('register - POST /v1/nodes/register makes the gateway dial a listen-mode node', async () => {
    await listen('edge:reg', regPort);
    const res = await http(
      c.gateway.api,
      'POST',
      '/v1/nodes/register',
      JSON.stringify({ node_id: 'edge:reg', endpoint: `https://127.0.0.1:${regPort}`, capabilities: ['tool:unit_convert'] }),
    );
    expect(res.status).toBe(201);
    expect(res.json).toMatchObject({
      ok: true,
      node_id: 'edge:reg',
      endpoint: `127.0.0.1:${regPort}`,
      capabilities: ['tool:unit_convert'],
      created_at: expect.any(String),
    });
    await waitFor('edge:reg ONLINE', async () => (await status('edge:reg')) === 'ONLINE');
    expect(await convert('edge:reg')).toMatchObject({ ok: true, node_id: 'edge:reg' });
    expect(await peers()).toContainEqual(
      expect.objectContaining({ endpoint: `127.0.0.1:${regPort}`, node_id: 'edge:reg', source: 'registered', connected: true }),
    );
  });

  it('register - bad endpoints, bad bodies and duplicates get clear errors', async () => {
    const post = (body: unknown, token?: string | null) =>
      http(c.gateway.api, 'POST', '/v1/nodes/register', JSON.stringify(body), {}, token === undefined ? c.gateway.token : token);
    for (const endpoint of [
      'nonsense',
      '127.0.0.1',
      '127.0.0.1:0',
      '127.0.0.1:70000',
      'ftp://127.0.0.1:21',
      '127.0.0.1:80/path',
      '0.0.0.0:9000',
    ]) {
      const res = await post({ node_id: 'edge:bad', endpoint });
      expect(res.status, endpoint).toBe(400);
      expect(res.json.error.code).toBe('FM_ERR_INVALID_REQUEST');
      expect(res.json.error.message).toContain(`"${endpoint}" is not a valid endpoint`);
    }
    const portOut = await post({ node_id: 'edge:bad', endpoint: '10.0.0.1:70000' });
    expect(portOut.json.error.message).toContain('out of range (1-65535)');
    const noId = await post({ endpoint: '127.0.0.1:9000' });
    expect(noId.status).toBe(400);
    expect(noId.json.error.message).toContain('node_id');

    const sameId = await post({ node_id: 'edge:reg', endpoint: '127.0.0.1:9001' });
    expect(sameId.status).toBe(409);
    expect(sameId.json.error).toMatchObject({ code: 'FM_ERR_DUPLICATE_NODE' });
    expect(sameId.json.error.message).toBe(`Node "edge:reg" is already registered (endpoint 127.0.0.1:${regPort})`);
    const sameEndpoint = await post({ node_id: 'edge:twin', endpoint: `127.0.0.1:${regPort}` });
    expect(sameEndpoint.status).toBe(409);
    expect(sameEndpoint.json.error.message).toContain('is already registered for node "edge:reg"');
    const staticEndpoint = await post({ node_id: 'edge:twin', endpoint: `127.0.0.1:${staticPort}` });
    expect(staticEndpoint.status).toBe(409);

    expect((await post({ node_id: 'edge:x', endpoint: '127.0.0.1:9002' }, null)).status).toBe(401);
    const read = await c.gateway.client.createToken('read');
    expect((await post({ node_id: 'edge:x', endpoint: '127.0.0.1:9002' }, read.token)).status).toBe(403);
    const ids = (await peers()).map((p) => p.node_id);
    expect(ids).toHaveLength(2);
    expect(ids).toEqual(expect.arrayContaining([null, 'edge:reg']));
  });

  it('register - registrations survive a gateway restart, and the node is dialed again', async () => {
    await restartGateway();
    expect(await peers()).toContainEqual(expect.objectContaining({ node_id: 'edge:reg', endpoint: `127.0.0.1:${regPort}` }));
    await waitFor('edge:reg ONLINE after the restart', async () => (await status('edge:reg')) === 'ONLINE');
    await waitFor('edge:static ONLINE after the restart', async () => (await status('edge:static')) === 'ONLINE');
  });

  it('register - fieldmesh nodes register, discovered and unregister', async () => {
    const api = ['--api', c.gateway.api, '--data-dir', c.gateway.dataDir];
    const reg = await runCli(['nodes', 'register', 'edge:cli', '127.0.0.1:1', '--capability', 'hardware:gps', ...api]);
    expect(reg.stderr).toBe('');
    expect(reg.stdout).toBe('registered edge:cli at 127.0.0.1:1; the gateway dials it now\n');
    const shown = await runCli(['nodes', 'discovered', ...api]);
    expect(shown.stdout).toContain('discovery: none\nno nodes heard\n');
    expect(shown.stdout).toMatch(/127\.0\.0\.1:1\s+edge:cli\s+registered\s+false/);
    expect(JSON.parse((await runCli(['nodes', 'discovered', '--json', ...api])).stdout).peers).toContainEqual(
      expect.objectContaining({ endpoint: '127.0.0.1:1', node_id: 'edge:cli', source: 'registered' }),
    );
    const bad = await runCli(['nodes', 'register', 'edge:cli2', '127.0.0.1:99999', ...api]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('error FM_ERR_INVALID_REQUEST: endpoint: "127.0.0.1:99999" is not a valid endpoint');
    expect((await runCli(['nodes', 'unregister', 'edge:cli', ...api])).stdout).toBe('unregistered edge:cli (127.0.0.1:1)\n');
    const again = await runCli(['nodes', 'unregister', 'edge:cli', ...api]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('FM_ERR_NODE_NOT_FOUND');
  });

  it('register - a node answering at a registered endpoint under another id is refused', async () => {
    const del = await http(c.gateway.api, 'DELETE', '/v1/nodes/register/edge:reg');
    expect(del.status).toBe(200);
    expect(del.json).toMatchObject({ ok: true, node_id: 'edge:reg', endpoint: `127.0.0.1:${regPort}` });
    await waitFor('edge:reg OFFLINE once unregistered', async () => (await status('edge:reg')) === 'OFFLINE');
    expect((await http(c.gateway.api, 'DELETE', '/v1/nodes/register/edge:reg')).json.error.code).toBe('FM_ERR_NODE_NOT_FOUND');

    const wrong = await http(
      c.gateway.api,
      'POST',
      '/v1/nodes/register',
      JSON.stringify({ node_id: 'edge:someone', endpoint: `127.0.0.1:${regPort}` }),
    );
    expect(wrong.status).toBe(201);
    const peer = await waitFor('a refused dial', async () => (await peers()).find((p) => p.node_id === 'edge:someone' && p.last_error));
    expect(peer).toMatchObject({ connected: false });
    expect(peer.last_error).toContain('names "edge:reg", not the registered node "edge:someone"');
    expect(await status('edge:reg')).toBe('OFFLINE');
    expect((await http(c.gateway.api, 'GET', '/v1/nodes/edge:someone')).status).toBe(404);
  });

  it('register - a node reached by two endpoints is not fought over: one of them backs off', async () => {
    expect(await status('edge:static')).toBe('ONLINE');
    // The static peer's node again, under another spelling of its address.
    const twin = await http(
      c.gateway.api,
      'POST',
      '/v1/nodes/register',
      JSON.stringify({ node_id: 'edge:static', endpoint: `[::ffff:127.0.0.1]:${staticPort}` }),
    );
    expect(twin.status).toBe(201);
    await waitFor('one endpoint backing off', async () => (await peers()).some((p) => p.failures >= 30));
    await waitFor('edge:static ONLINE', async () => (await status('edge:static')) === 'ONLINE');
    expect(await convert('edge:static')).toMatchObject({ ok: true, node_id: 'edge:static' });
  });

  it('example - the GPU host of examples/node-gpu-host.toml pairs, listens and serves image_analysis from its tools module', async () => {
    const api = ['--api', c.gateway.api, '--data-dir', c.gateway.dataDir];
    const example = resolve(import.meta.dirname, '../examples/node-gpu-host.toml');
    const port = await freeTcpPort();
    const code = (await c.gateway.client.createPairingCode({ node_id: 'gpu-host-01' })).code;
    // A missing tools module is named before pairing, so the code is still good afterwards.
    const missing = await runCli([
      'node',
      ...['--config', example, '--gateway', c.gateway.listen, '--pair', code, '--listen', `127.0.0.1:${port}`],
      ...['--data-dir', c.nodeDataDir('gpu-host-01'), '--tools-module', join(c.root, 'no-such-tools.mjs')],
    ]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^error FM_ERR_INVALID_OPTION: node\.tools_modules\[0\]: ".*no-such-tools\.mjs" does not exist/);
    const { managed } = await startProcess(
      [
        'node',
        ...['--config', example, '--gateway', c.gateway.listen, '--pair', code, '--listen', `127.0.0.1:${port}`],
        ...['--data-dir', c.nodeDataDir('gpu-host-01')],
      ],
      'node listening',
      { cliPath },
    );
    c.procs.push(managed);
    expect((await runCli(['nodes', 'register', 'gpu-host-01', `127.0.0.1:${port}`, ...api])).code).toBe(0);
    await waitFor('gpu-host-01 ONLINE', async () => (await status('gpu-host-01')) === 'ONLINE');
    const r = await c.gateway.client.toolCall({
      tool_name: 'image_analysis',
      tool_args: { width: 2, height: 1, pixels: [255, 255, 255, 0, 0, 0] },
      target: { kind: 'capability', required_capabilities: ['cuda'] },
    });
    expect(r).toMatchObject({ ok: true, node_id: 'gpu-host-01', verified: true, output: { mean_luma: 127.5, min_luma: 0, max_luma: 255 } });
  });
});
