// Pairing: nodes get their certificate with a one-time code or an operator's approval, and nothing else gets one.
import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProcess } from '../src/cli/processes.js';
import { isFieldmeshError } from '../src/core/errors.js';
import { inspectCertificate } from '../src/protocol/pki.js';
import { Cluster, cliPath, http, runCli, waitFor } from './harness.js';
import { pairWithCode } from './raw-node.js';

const mode = (file: string) => statSync(file).mode & 0o777;
/** What a node logs once its request waits for an operator. */
const PENDING = 'pairing requested; waiting for an operator to approve';

async function refusalOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (isFieldmeshError(err)) return err.code;
    throw err;
  }
  return 'paired';
}

describe('pairing', () => {
  const c = new Cluster();
  const nodeArgs = (id: string, dataDir = c.nodeDataDir(id)) => ['node', '--gateway', c.gateway.listen, '--id', id, '--data-dir', dataDir];

  beforeAll(async () => {
    await c.startGateway();
  }, 60_000);
  afterAll(() => c.stop());

  it('pairing - the gateway keeps its CA, server and signing keys 0600 in its data dir', () => {
    const tls = join(c.gateway.dataDir, 'tls');
    for (const key of ['ca.key', 'gateway.key', 'gateway-signing.key', 'gateway-client.key']) expect(mode(join(tls, key))).toBe(0o600);
    expect(inspectCertificate(readFileSync(join(tls, 'ca.crt'))).commonName).toMatch(/^fieldmesh gateway CA/);
  });

  it('pairing - a node started with a code gets a certificate for its id, kept 0600, and later starts need no code', async () => {
    const node = await c.startNode({ id: 'pair:code' });
    const tls = join(node.dataDir, 'tls');
    for (const f of ['node.key', 'node.crt', 'ca.crt', 'gateway-signing.pub']) expect(mode(join(tls, f))).toBe(0o600);
    const cert = inspectCertificate(readFileSync(join(tls, 'node.crt')));
    expect(cert.commonName).toBe('pair:code');
    expect(cert.dnsNames).toEqual(['pair:code']);
    // The default life is 90 days.
    expect(cert.notAfter.getTime() - Date.now()).toBeGreaterThan(89 * 86_400_000);
    expect(readFileSync(join(tls, 'ca.crt'), 'utf8')).toBe(readFileSync(join(c.gateway.dataDir, 'tls', 'ca.crt'), 'utf8'));
    expect(node.proc.output()).toContain('"msg":"paired"');
    await node.proc.stop();
    const again = await startProcess(nodeArgs('pair:code'), 'node ready', { cliPath });
    c.procs.push(again.managed);
    expect(again.managed.output()).not.toContain('pairing with a code');
    await waitFor('pair:code ONLINE', async () => (await c.gateway.client.getNode('pair:code')).status === 'ONLINE');
    const r = await c.gateway.client.toolCall({ tool_name: 'unit_convert', tool_args: { value: 1, from_unit: 'km', to_unit: 'm' } });
    expect(r).toMatchObject({ ok: true, node_id: 'pair:code', verified: true });
  });

  it('pairing - a node without a certificate and without a code is refused at start with FM_ERR_NOT_PAIRED', async () => {
    const r = await runCli(nodeArgs('pair:nothing'));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('FM_ERR_NOT_PAIRED');
    expect(r.stderr).toContain('--pair');
  });

  it('pairing - `fieldmesh pair` prints a code that pairs the node it names, and only that node', async () => {
    const out = await runCli(['pair', '--api', c.gateway.api, '--data-dir', c.gateway.dataDir, '--node-id', 'pair:cli', '--ttl', '5m']);
    expect(out.code).toBe(0);
    const code = out.stdout.split('\n')[0]!;
    expect(out.stdout).toContain('pair:cli');
    const other = await runCli([...nodeArgs('pair:other'), '--pair', code]);
    expect(other.code).toBe(1);
    expect(other.stderr).toContain('FM_ERR_PAIRING_CODE_INVALID');
    expect(existsSync(join(c.nodeDataDir('pair:other'), 'tls', 'node.crt'))).toBe(false);
    const paired = await pairWithCode(c.gateway.listen, 'pair:cli', code);
    expect(inspectCertificate(paired.tls.certPem).commonName).toBe('pair:cli');
  });

  it('pairing - wrong, reused and expired codes are refused with their own codes', async () => {
    const { code } = await c.gateway.client.createPairingCode();
    const wrong = code.replace(/^(.)/, (ch) => (ch === 'A' ? 'B' : 'A'));
    expect(await refusalOf(pairWithCode(c.gateway.listen, 'pair:wrong', wrong))).toBe('FM_ERR_PAIRING_CODE_INVALID');
    await pairWithCode(c.gateway.listen, 'pair:first', code);
    const reused = await runCli([...nodeArgs('pair:second'), '--pair', code]);
    expect(reused.code).toBe(1);
    expect(reused.stderr).toContain('FM_ERR_PAIRING_CODE_USED');
    const short = await runCli(['pair', '--api', c.gateway.api, '--data-dir', c.gateway.dataDir, '--ttl', '1s', '--json']);
    const shortCode = (JSON.parse(short.stdout) as { code: string }).code;
    await new Promise((r) => setTimeout(r, 1500));
    expect(await refusalOf(pairWithCode(c.gateway.listen, 'pair:late', shortCode))).toBe('FM_ERR_PAIRING_CODE_EXPIRED');
    for (const id of ['pair:wrong', 'pair:second', 'pair:late']) {
      expect((await http(c.gateway.api, 'GET', `/v1/nodes/${id}`)).status).toBe(404);
    }
  });

  it('pairing - a code naming another CA is refused by the node before it proves anything, so the code stays good', async () => {
    const { code } = await c.gateway.client.createPairingCode();
    const otherCa = code.replace(/[0-9A-F]{20}$/, (fp) => (fp.startsWith('0') ? `1${fp.slice(1)}` : `0${fp.slice(1)}`));
    const r = await runCli([...nodeArgs('pair:mitm'), '--pair', otherCa]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('FM_ERR_GATEWAY_IDENTITY');
    expect(inspectCertificate((await pairWithCode(c.gateway.listen, 'pair:mitm', code)).tls.certPem).commonName).toBe('pair:mitm');
  });

  it('pairing - a node asking without a code waits as pending until approved, then comes online', async () => {
    const waiting = await startProcess([...nodeArgs('pair:asks'), '--request-pairing'], PENDING, { cliPath });
    c.procs.push(waiting.managed);
    const pending = await c.gateway.client.listPendingNodes();
    const entry = pending.find((n) => n.node_id === 'pair:asks');
    expect(entry).toMatchObject({ status: 'PENDING', trusted: false, remote_address: expect.stringContaining('127.0.0.1') });
    // What the operator sees is what the node logged.
    expect(entry?.fingerprint).toBe(waiting.ready.fingerprint);
    expect((await http(c.gateway.api, 'GET', '/v1/nodes/pair:asks')).status).toBe(404);
    const list = await runCli(['nodes', 'list', '--status', 'pending', '--api', c.gateway.api, '--data-dir', c.gateway.dataDir]);
    expect(list.stdout).toContain(String(waiting.ready.fingerprint));
    const approved = await runCli(['nodes', 'approve', 'pair:asks', '--api', c.gateway.api, '--data-dir', c.gateway.dataDir]);
    expect(approved.code).toBe(0);
    await waitFor('pair:asks ONLINE', async () => (await c.gateway.client.getNode('pair:asks')).status === 'ONLINE');
    expect(await c.gateway.client.listPendingNodes()).toEqual([]);
    const r = await c.gateway.client.toolCall({
      tool_name: 'unit_convert',
      tool_args: { value: 2, from_unit: 'km', to_unit: 'm' },
      target: { kind: 'explicit', node_id: 'pair:asks' },
    });
    expect(r).toMatchObject({ ok: true, verified: true, output: { value: 2000 } });
  });

  it('pairing - a denied node is told and stops; deciding on a node that is not pending is 404', async () => {
    const waiting = await startProcess([...nodeArgs('pair:denied'), '--request-pairing'], PENDING, { cliPath });
    c.procs.push(waiting.managed);
    const denied = await runCli(['nodes', 'deny', 'pair:denied', '--api', c.gateway.api, '--data-dir', c.gateway.dataDir]);
    expect(denied.code).toBe(0);
    expect(await waiting.managed.exited).toBe(1);
    expect(waiting.managed.output()).toContain('FM_ERR_PAIRING_DENIED');
    expect(existsSync(join(c.nodeDataDir('pair:denied'), 'tls', 'node.crt'))).toBe(false);
    for (const action of ['approve', 'deny']) {
      const res = await http(c.gateway.api, 'POST', `/v1/nodes/pair:nobody/${action}`);
      expect(res.status).toBe(404);
      expect(res.json.error.code).toBe('FM_ERR_PAIRING_NOT_PENDING');
    }
  });

  it('pairing - bad pairing-code bodies are 400 FM_ERR_INVALID_REQUEST', async () => {
    for (const body of [{ ttl_seconds: 0 }, { ttl_seconds: 10 * 86_400 }, { node_id: 'no spaces allowed' }, { colour: 'red' }]) {
      const res = await http(c.gateway.api, 'POST', '/v1/pairing-codes', JSON.stringify(body));
      expect(res.status).toBe(400);
      expect(res.json.error.code).toBe('FM_ERR_INVALID_REQUEST');
    }
    const ok = await http(c.gateway.api, 'POST', '/v1/pairing-codes', '{}');
    expect(ok.status).toBe(201);
    expect(ok.json).toMatchObject({ ok: true, node_id: null, code: expect.stringMatching(/^[A-Z0-9-]+$/) });
    expect(Date.parse(ok.json.expires_at) - Date.now()).toBeGreaterThan(9 * 60_000);
  });
});

describe('pairing - lockout', () => {
  const c = new Cluster();
  beforeAll(async () => {
    await c.startGateway();
  }, 60_000);
  afterAll(() => c.stop());

  it('pairing - five failed attempts from one address lock it out for 300 s, even with a good code', async () => {
    const { code } = await c.gateway.client.createPairingCode();
    const wrong = code.replace(/^(.)/, (ch) => (ch === 'A' ? 'B' : 'A'));
    for (let i = 0; i < 5; i++) {
      expect(await refusalOf(pairWithCode(c.gateway.listen, 'locked:a', wrong))).toBe('FM_ERR_PAIRING_CODE_INVALID');
    }
    expect(await refusalOf(pairWithCode(c.gateway.listen, 'locked:a', code))).toBe('FM_ERR_PAIRING_LOCKED');
    const dataDir = join(mkdtempSync(join(c.root, 'locked-')), 'node');
    const r = await runCli(['node', '--gateway', c.gateway.listen, '--id', 'locked:a', '--data-dir', dataDir, '--pair', code]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('FM_ERR_PAIRING_LOCKED');
    expect(r.stderr).toMatch(/try again in \d+ s/);
    expect((await http(c.gateway.api, 'GET', '/v1/nodes/locked:a')).status).toBe(404);
  });
});
