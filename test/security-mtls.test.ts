// Mutual TLS on the node listener: every refusal at the handshake or the first frame, revocation at once, renewal live.
import { createPublicKey } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProcess } from '../src/cli/processes.js';
import { loadOrCreateGatewayIdentity, signNodeCertificate } from '../src/gateway/tls.js';
import { generateTlsKeyPem, inspectCertificate } from '../src/protocol/pki.js';
import { generateSigningKeys } from '../src/protocol/signing.js';
import { Cluster, cliPath, http, runCli, waitFor } from './harness.js';
import { pairRawNode, RawPeer, registerFrame, registerRaw, type TlsCredentials } from './raw-node.js';

const DAY = 86_400_000;

/** A client certificate for `nodeId` signed by `ca`, with the validity a test asks for. */
async function certificateFrom(
  ca: { caCertPem: string; caKeyPem: string },
  serverCaPem: string,
  nodeId: string,
  notBefore: Date,
  notAfter: Date,
): Promise<TlsCredentials> {
  const keyPem = generateTlsKeyPem();
  const publicKey = createPublicKey(keyPem).export({ type: 'spki', format: 'der' });
  const certPem = await signNodeCertificate({ ...ca, nodeId, publicKey, notBefore, notAfter });
  return { keyPem, certPem, caPem: serverCaPem };
}

describe('mutual TLS', () => {
  const c = new Cluster();
  let gatewayCa: { caCertPem: string; caKeyPem: string };
  const peers: RawPeer[] = [];
  const track = (p: RawPeer) => {
    peers.push(p);
    return p;
  };

  beforeAll(async () => {
    await c.startGateway();
    const tls = join(c.gateway.dataDir, 'tls');
    gatewayCa = { caCertPem: readFileSync(join(tls, 'ca.crt'), 'utf8'), caKeyPem: readFileSync(join(tls, 'ca.key'), 'utf8') };
  }, 60_000);
  afterAll(async () => {
    for (const p of peers) p.close();
    await c.stop();
  });

  it('mutual TLS - a peer without a client certificate fails the handshake', async () => {
    const r = await RawPeer.attempt(c.gateway.listen);
    expect(r.outcome).toBe('failed');
    // The plain HTTPS port refuses it the same way: nothing is served without a certificate.
    await expect(fetch(`https://${c.gateway.listen}/v1/connect`)).rejects.toThrow();
  });

  it('mutual TLS - a certificate from another CA fails the handshake', async () => {
    const other = await loadOrCreateGatewayIdentity(mkdtempSync(join(c.root, 'other-ca-')));
    const creds = await certificateFrom(other, gatewayCa.caCertPem, 'intruder:a', new Date(Date.now() - DAY), new Date(Date.now() + DAY));
    const r = await RawPeer.attempt(c.gateway.listen, creds);
    expect(r.outcome).toBe('failed');
    expect((await http(c.gateway.api, 'GET', '/v1/nodes/intruder:a')).status).toBe(404);
  });

  it('mutual TLS - an expired certificate from the gateway CA fails the handshake', async () => {
    const creds = await certificateFrom(
      gatewayCa,
      gatewayCa.caCertPem,
      'expired:a',
      new Date(Date.now() - 3 * DAY),
      new Date(Date.now() - DAY),
    );
    const r = await RawPeer.attempt(c.gateway.listen, creds);
    expect(r.outcome).toBe('failed');
  });

  it('mutual TLS - a certificate the gateway CA signed but pairing never issued is refused at REGISTER', async () => {
    const creds = await certificateFrom(
      gatewayCa,
      gatewayCa.caCertPem,
      'unissued:a',
      new Date(Date.now() - DAY),
      new Date(Date.now() + DAY),
    );
    const p = track(await RawPeer.open(c.gateway.listen, creds));
    const key = generateSigningKeys().publicKeyPem;
    p.send(registerFrame('unissued:a', key));
    expect(await p.next()).toMatchObject({ type: 'ERROR', code: 'FM_ERR_CERT_UNKNOWN' });
    expect((await p.closed).code).toBe(4003);
    expect((await http(c.gateway.api, 'GET', '/v1/nodes/unissued:a')).status).toBe(404);
  });

  it('mutual TLS - a REGISTER naming another node id, or another signing key, is refused before any work', async () => {
    const id = await pairRawNode(c.gateway, 'mtls:honest');
    const asOther = track(await RawPeer.open(c.gateway.listen, id.tls));
    asOther.send({ ...id.register, node_id: 'mtls:victim' });
    const error = await asOther.next();
    expect(error).toMatchObject({ type: 'ERROR', code: 'FM_ERR_NODE_ID_MISMATCH' });
    expect(error.message).toContain('mtls:victim');
    expect((await asOther.closed).code).toBe(4003);
    expect((await http(c.gateway.api, 'GET', '/v1/nodes/mtls:victim')).status).toBe(404);

    const otherKey = track(await RawPeer.open(c.gateway.listen, id.tls));
    otherKey.send({ ...id.register, public_key: generateSigningKeys().publicKeyPem });
    expect(await otherKey.next()).toMatchObject({ type: 'ERROR', code: 'FM_ERR_SIGNING_KEY_MISMATCH' });
    expect((await otherKey.closed).code).toBe(4003);
    expect((await http(c.gateway.api, 'GET', '/v1/nodes/mtls:honest')).status).toBe(404);
    // With its own id and key the same certificate registers.
    const p = track(await registerRaw(c.gateway.listen, c.gateway.client, id));
    expect(p.open).toBe(true);
    expect((await c.gateway.client.getNode('mtls:honest')).trusted).toBe(true);
  });

  it('mutual TLS - revoking a node closes its live connection with 4003, and its certificate is refused from then on', async () => {
    const id = await pairRawNode(c.gateway, 'mtls:revoked');
    const p = track(await registerRaw(c.gateway.listen, c.gateway.client, id));
    const res = await http(c.gateway.api, 'POST', '/v1/nodes/mtls:revoked/revoke');
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ ok: true, node_id: 'mtls:revoked', revoked_serials: [id.serial] });
    expect(await p.closed).toEqual({ code: 4003, reason: 'FM_ERR_CERT_REVOKED' });
    expect(p.frames.at(-1)).toMatchObject({ type: 'ERROR', code: 'FM_ERR_CERT_REVOKED' });
    const again = await RawPeer.attempt(c.gateway.listen, id.tls);
    expect(again).toMatchObject({ outcome: 'refused', status: 403, body: { ok: false, error: { code: 'FM_ERR_CERT_REVOKED' } } });
    await waitFor('mtls:revoked untrusted', async () => {
      const n = await c.gateway.client.getNode('mtls:revoked');
      return n.status === 'OFFLINE' && n.trusted === false;
    });
    expect((await http(c.gateway.api, 'POST', '/v1/nodes/nobody:here/revoke')).json.error.code).toBe('FM_ERR_NODE_NOT_FOUND');
  });

  it('mutual TLS - `fieldmesh nodes revoke` stops a running node at once, its task moves on, and it can never reconnect', async () => {
    const victim = await c.startNode({ id: 'mtls:node-victim' });
    await c.startNode({ id: 'mtls:node-spare' });
    const taskId = await c.gateway.client.submitTask({
      tool_name: 'slow_echo',
      tool_args: { ms: 2000, value: 'moved' },
      target: { kind: 'failover_chain', nodes: ['mtls:node-victim', 'mtls:node-spare'] },
    });
    await waitFor('task running on the victim', async () => (await c.gateway.client.getTask(taskId)).attempts[0]?.node_id === victim.id);
    const revoked = await runCli(['nodes', 'revoke', victim.id, '--api', c.gateway.api, '--data-dir', c.gateway.dataDir]);
    expect(revoked.code).toBe(0);
    expect(revoked.stdout).toContain('revoked mtls:node-victim');
    expect(await victim.proc.exited).toBe(1);
    expect(victim.proc.output()).toContain('FM_ERR_CERT_REVOKED');
    const task = await c.gateway.client.getTask(taskId, 30_000);
    expect(task.result).toMatchObject({ ok: true, node_id: 'mtls:node-spare', output: { value: 'moved' }, verified: true });
    expect(task.attempts[0]).toMatchObject({ node_id: victim.id, outcome: 'failed', error: { code: 'FM_ERR_CONNECTION_LOST' } });
    // Started again with its data dir, it is refused and says why.
    const again = await runCli(['node', '--gateway', c.gateway.listen, '--id', victim.id, '--data-dir', victim.dataDir]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('FM_ERR_CERT_REVOKED');
    expect((await c.gateway.client.getNode(victim.id)).status).toBe('OFFLINE');
  });
});

describe('mutual TLS - renewal', () => {
  const c = new Cluster();
  beforeAll(async () => {
    // A short life, so the node renews within the test: at two thirds of it.
    await c.startGateway(['--node-cert-ttl', '12s']);
  }, 60_000);
  afterAll(() => c.stop());

  it('mutual TLS - a node renews its certificate over its live connection and uses the new one when it reconnects', async () => {
    const node = await c.startNode({ id: 'renew:a' });
    const certFile = join(node.dataDir, 'tls', 'node.crt');
    const first = inspectCertificate(readFileSync(certFile));
    expect(first.notAfter.getTime() - first.notBefore.getTime()).toBeLessThan(20_000);
    await waitFor('a renewed certificate', () => node.proc.output().includes('"msg":"node certificate renewed"'), 30_000);
    const renewed = inspectCertificate(readFileSync(certFile));
    expect(renewed.serial).not.toBe(first.serial);
    expect(renewed.commonName).toBe('renew:a');
    expect(renewed.notAfter.getTime()).toBeGreaterThan(first.notAfter.getTime());
    // The connection it renewed over never dropped.
    expect(node.proc.output()).not.toContain('disconnected from gateway');
    await node.proc.stop();
    const again = await startProcess(['node', '--gateway', c.gateway.listen, '--id', 'renew:a', '--data-dir', node.dataDir], 'node ready', {
      cliPath,
    });
    c.procs.push(again.managed);
    await waitFor('renew:a ONLINE', async () => (await c.gateway.client.getNode('renew:a')).status === 'ONLINE');
    const r = await c.gateway.client.toolCall({ tool_name: 'unit_convert', tool_args: { value: 3, from_unit: 'km', to_unit: 'm' } });
    expect(r).toMatchObject({ ok: true, node_id: 'renew:a', verified: true });
  });
});
