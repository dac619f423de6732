// Discovery through real gateway and node processes, on the loopback interface only: multicast ADVERTISE/DISCOVER/GATEWAY,
// GET /v1/discovery with paired/trusted and dropped forgeries, a node with no --gateway finding one, and mDNS.
import { createPublicKey, generateKeyPairSync, type KeyObject, randomBytes, X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProcess } from '../src/cli/processes.js';
import { VERSION } from '../src/core/version.js';
import { type GatewayMessage, signDiscoveryMessage, verifyDiscoverySignature } from '../src/protocol/discovery.js';
import { Cluster, cliPath, http, runCli, waitFor } from './harness.js';
import { freeUdpPort, GroupProbe, LOOPBACK } from './loopback-multicast.js';

/** A signed ADVERTISE as a node would send it, with a key of the test's own. */
function advertisement(nodeId: string, privateKey: KeyObject, publicKeyPem: string, extra: Record<string, unknown> = {}) {
  return signDiscoveryMessage(
    {
      v: 1,
      type: 'ADVERTISE',
      node_id: nodeId,
      capabilities: ['tool:echo'],
      platform: 'linux',
      version: VERSION,
      public_key: publicKeyPem,
      sent_at: new Date().toISOString(),
      nonce: randomBytes(16).toString('base64url'),
      ...extra,
    },
    privateKey,
  );
}

function ed25519() {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { privateKey, publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString() };
}

// biome-ignore lint/suspicious/noExplicitAny: the discovery view is read field by field
type Json = Record<string, any>;

describe('multicast discovery', () => {
  const c = new Cluster();
  let port: number;
  let probe: GroupProbe;
  let mc: string[];
  const discovery = async (): Promise<Json> => {
    const res = await http(c.gateway.api, 'GET', '/v1/discovery');
    expect(res.status).toBe(200);
    return res.json;
  };
  const seen = async (nodeId: string): Promise<Json | undefined> => (await discovery()).nodes.find((n: Json) => n.node_id === nodeId);

  beforeAll(async () => {
    port = await freeUdpPort();
    mc = ['--multicast-interface', LOOPBACK, '--multicast-port', String(port)];
    probe = await GroupProbe.join(port);
    await c.startGateway(['--multicast', ...mc, '--multicast-interval-ms', '300']);
  });
  afterAll(async () => {
    await probe.close();
    await c.stop();
  });

  it('discovery - the gateway sends DISCOVER and shows what multicast it runs', async () => {
    await waitFor('a DISCOVER from the gateway', () => probe.ofType('DISCOVER').some((h) => h.message.seek === 'nodes'));
    const view = await discovery();
    expect(view.multicast).toMatchObject({ enabled: true, group: '239.255.70.77', port, interface: LOOPBACK });
    expect(view.mdns).toEqual({ enabled: false });
    expect(view.peers).toEqual([]);
  });

  it('discovery - the gateway answers DISCOVER with a signed GATEWAY naming its node listener and CA fingerprint', async () => {
    await probe.send({ v: 1, type: 'DISCOVER', seek: 'gateways', nonce: randomBytes(16).toString('base64url') });
    const answer = await waitFor('a GATEWAY answer', () => probe.ofType('GATEWAY')[0]);
    expect(answer.message).toMatchObject({
      gateway_id: 'gateway:main',
      node_listen: c.gateway.listen,
      ca_fingerprint: new X509Certificate(c.gateway.ca).fingerprint256,
    });
    expect(verifyDiscoverySignature(answer.message as GatewayMessage)).toBe(true);
    const signingKey = readFileSync(join(c.gateway.dataDir, 'tls', 'gateway-signing.key'), 'utf8');
    expect(answer.message.public_key).toBe(createPublicKey(signingKey).export({ type: 'spki', format: 'pem' }).toString());
  });

  it('discovery - a paired node that advertises is listed paired and trusted; a stranger is listed untrusted', async () => {
    await c.startNode({ id: 'edge:adv', capabilities: ['hardware:gps'], extraArgs: ['--discover', 'multicast', ...mc] });
    const node = await waitFor('edge:adv in /v1/discovery', () => seen('edge:adv'));
    expect(node).toMatchObject({ node_id: 'edge:adv', address: LOOPBACK, platform: expect.any(String), paired: true, trusted: true });
    expect(node.capabilities).toEqual(expect.arrayContaining(['hardware:gps', 'tool:unit_convert', 'platform:linux']));
    expect(Date.parse(node.last_seen)).not.toBeNaN();

    const stranger = ed25519();
    await probe.send(advertisement('stranger:1', stranger.privateKey, stranger.publicKeyPem));
    expect(await waitFor('stranger:1 listed', () => seen('stranger:1'))).toMatchObject({ paired: false, trusted: false });
    // Discovered is not trusted: the stranger holds no certificate, so it is not a node work can go to.
    expect((await http(c.gateway.api, 'GET', '/v1/nodes/stranger:1')).status).toBe(404);
  });

  it('discovery - a forged advertisement is dropped, counted and not listed', async () => {
    const before = (await discovery()).dropped.signature as number;
    const key = ed25519();
    const signed = advertisement('forged:1', key.privateKey, key.publicKeyPem);
    // Signed for one node id, sent for another: the signature no longer covers what the datagram says.
    await probe.send({ ...signed, node_id: 'forged:2' });
    // A paired node's id with a signature by a key that is not the one in the datagram.
    const other = ed25519();
    const mine = advertisement('edge:adv', other.privateKey, other.publicKeyPem);
    await probe.send({ ...mine, public_key: key.publicKeyPem });
    await waitFor('two signature drops', async () => (await discovery()).dropped.signature >= before + 2);
    const view = await discovery();
    expect(view.nodes.map((n: Json) => n.node_id)).not.toContain('forged:1');
    expect(view.nodes.map((n: Json) => n.node_id)).not.toContain('forged:2');
    expect(view.nodes.find((n: Json) => n.node_id === 'edge:adv')).toMatchObject({ trusted: true });
  });

  it("discovery - another key claiming a paired node's id is shown paired but not trusted, or dropped", async () => {
    const impostor = ed25519();
    const before = (await discovery()).dropped.key_conflict as number;
    await probe.send(advertisement('edge:adv', impostor.privateKey, impostor.publicKeyPem));
    // The paired node's own advertisement is not displaced by a validly signed one from another key.
    await waitFor('a key conflict drop', async () => (await discovery()).dropped.key_conflict > before);
    expect(await seen('edge:adv')).toMatchObject({ paired: true, trusted: true });
  });

  it('discovery - a node started with no --gateway finds the gateway by multicast, pairs and comes online', async () => {
    const id = 'edge:finder';
    const dataDir = c.nodeDataDir(id);
    const code = (await c.gateway.client.createPairingCode({ node_id: id })).code;
    const args = ['node', '--id', id, '--data-dir', dataDir, '--discover', 'multicast', ...mc];
    const first = await startProcess([...args, '--pair', code], 'node ready', { cliPath });
    c.procs.push(first.managed);
    await waitFor(`${id} ONLINE`, async () => (await c.gateway.client.getNode(id)).status === 'ONLINE');
    await waitFor(`${id} trusted in discovery`, async () => (await seen(id))?.trusted === true);
    await first.managed.stop();
    // Paired now: it finds the gateway again, this time checked against the CA and signing key it paired with.
    const again = await startProcess(args, 'node ready', { cliPath });
    c.procs.push(again.managed);
    await waitFor(`${id} ONLINE again`, async () => (await c.gateway.client.getNode(id)).status === 'ONLINE');
  });

  it('discovery - a listen-mode node pairs through the discovered gateway, advertises where it listens, and is dialed once registered', async () => {
    const id = 'edge:listener';
    const code = (await c.gateway.client.createPairingCode({ node_id: id })).code;
    const args = ['node', '--id', id, '--data-dir', c.nodeDataDir(id), '--discover', 'multicast', ...mc, '--listen', '127.0.0.1:0'];
    const { managed, ready } = await startProcess([...args, '--pair', code], 'node listening', { cliPath });
    c.procs.push(managed);
    const listen = String(ready.listen);
    const heard = await waitFor(`${id} advertising ${listen}`, async () => {
      const n = await seen(id);
      return n?.listen === listen ? n : undefined;
    });
    expect(heard).toMatchObject({ paired: true, trusted: true });
    // It listens and does not dial: the gateway dials it once it is registered.
    expect((await http(c.gateway.api, 'GET', `/v1/nodes/${id}`)).status).toBe(404);
    const reg = await http(c.gateway.api, 'POST', '/v1/nodes/register', JSON.stringify({ node_id: id, endpoint: listen }));
    expect(reg.status).toBe(201);
    await waitFor(`${id} ONLINE`, async () => (await c.gateway.client.getNode(id)).status === 'ONLINE');
  });

  it('discovery - a node whose pairing code names another CA does not take this gateway', async () => {
    const other = new Cluster();
    try {
      await other.startGateway();
      const code = (await other.gateway.client.createPairingCode({ node_id: 'edge:elsewhere' })).code;
      const res = await runCli(
        [
          'node',
          '--id',
          'edge:elsewhere',
          '--data-dir',
          join(c.root, 'elsewhere'),
          '--discover',
          'multicast',
          ...mc,
          '--pair',
          code,
          '--log-level',
          'warn',
        ],
        // It keeps looking for its own gateway; the test ends it after a round or two.
        14_000,
      ).catch((err: Error) => ({ code: null, stdout: err.message, stderr: '' }));
      expect(res.stdout).toContain('no gateway found yet');
      expect((await http(c.gateway.api, 'GET', '/v1/nodes/edge:elsewhere')).status).toBe(404);
    } finally {
      await other.stop();
    }
  });

  it('discovery - a node that found the gateway by multicast finds it again when it moves to another port', async () => {
    const id = 'edge:finder';
    expect((await c.gateway.client.getNode(id)).status).toBe('ONLINE');
    const before = c.gateway.listen;
    await c.gateway.proc.stop();
    await c.startGateway(['--multicast', ...mc, '--multicast-interval-ms', '300'], {
      api: c.gateway.api.replace(/^https?:\/\//, ''),
      listen: '127.0.0.1:0',
    });
    expect(c.gateway.listen).not.toBe(before);
    await waitFor(`${id} ONLINE at the moved gateway`, async () => (await c.gateway.client.getNode(id)).status === 'ONLINE', 30_000);
  }, 45_000);
});

describe('mdns discovery', () => {
  const c = new Cluster();
  let mdns: string[];

  beforeAll(async () => {
    mdns = ['--multicast-interface', LOOPBACK, '--mdns-port', String(await freeUdpPort())];
    await c.startGateway(['--mdns', ...mdns, '--gateway-id', 'gateway:lab']);
  });
  afterAll(() => c.stop());

  it('mdns - the gateway advertises and a node with --discover mdns finds it, pairs and comes online', async () => {
    const view = (await http(c.gateway.api, 'GET', '/v1/discovery')).json;
    expect(view.mdns).toEqual({ enabled: true, service_name: '_fieldmesh._tcp.local.', fqdn: 'gateway:lab._fieldmesh._tcp.local' });
    expect(view.multicast).toEqual({ enabled: false });
    expect(view.nodes).toEqual([]);
    const id = 'edge:mdns';
    const code = (await c.gateway.client.createPairingCode({ node_id: id })).code;
    const { managed } = await startProcess(
      ['node', '--id', id, '--data-dir', c.nodeDataDir(id), '--discover', 'mdns', ...mdns, '--pair', code],
      'node ready',
      { cliPath },
    );
    c.procs.push(managed);
    await waitFor(`${id} ONLINE`, async () => (await c.gateway.client.getNode(id)).status === 'ONLINE');
    await managed.stop();
    await waitFor(`${id} OFFLINE`, async () => (await c.gateway.client.getNode(id)).status === 'OFFLINE');
    // Paired now: only a gateway with the CA it paired with is taken.
    const again = await startProcess(['node', '--id', id, '--data-dir', c.nodeDataDir(id), '--discover', 'mdns', ...mdns], 'node ready', {
      cliPath,
    });
    c.procs.push(again.managed);
    await waitFor(`${id} ONLINE again`, async () => (await c.gateway.client.getNode(id)).status === 'ONLINE');
  });
});

describe('discovery flags', () => {
  const c = new Cluster();
  afterAll(() => c.stop());

  const expectRefused = async (args: string[], message: string) => {
    const r = await runCli(args);
    expect(r.code, args.join(' ')).toBe(1);
    expect(r.stderr.startsWith(`error FM_ERR_INVALID_OPTION: ${message}`), r.stderr).toBe(true);
  };

  it('discovery flags - a flag tuning a discovery that is off is refused, not ignored', async () => {
    const base = ['gateway', '--data-dir', join(c.root, 'never'), '--api', '127.0.0.1:0', '--listen', '127.0.0.1:0'];
    const cases: [string[], string][] = [
      [['--multicast-port', '40000'], '--multicast-port tunes multicast discovery, which is off: add --multicast'],
      [['--multicast-group', '239.255.70.78'], '--multicast-group tunes multicast discovery, which is off: add --multicast'],
      [['--mdns', '--multicast-interval-ms', '300'], '--multicast-interval-ms tunes multicast discovery, which is off: add --multicast'],
      [['--multicast', '--mdns-port', '40000'], '--mdns-port tunes mDNS discovery, which is off: add --mdns'],
      [['--multicast-interface', LOOPBACK], '--multicast-interface tunes multicast and mDNS discovery, which is off'],
    ];
    for (const [flags, message] of cases) {
      await expectRefused([...base, ...flags], message);
    }
    const node = ['node', '--id', 'edge:flags', '--data-dir', join(c.root, 'never-node'), '--gateway', '127.0.0.1:1'];
    const nodeCases: [string[], string][] = [
      [['--multicast-port', '40000'], '--multicast-port tunes multicast discovery, which is off: add --discover multicast'],
      [['--advertise-interval-ms', '300'], '--advertise-interval-ms tunes multicast discovery, which is off: add --discover multicast'],
      [['--discover', 'mdns', '--multicast-group', '239.255.70.78'], '--multicast-group tunes multicast discovery, which is off'],
      [['--discover', 'multicast', '--mdns-port', '40000'], '--mdns-port tunes mDNS discovery, which is off: add --discover mdns'],
      [['--multicast-interface', LOOPBACK], '--multicast-interface tunes multicast and mDNS discovery, which is off'],
    ];
    for (const [flags, message] of nodeCases) {
      await expectRefused([...node, ...flags], message);
    }
  });

  it('discovery flags - --multicast-port applies to the multicast a controller file turns on', async () => {
    const port = await freeUdpPort();
    const file = join(c.root, 'controller.toml');
    writeFileSync(file, `[node]\nmode = "controller"\n\n[node.discovery]\nmethod = "multicast"\ninterface = "${LOOPBACK}"\n`);
    await c.startGateway(['--config', file, '--multicast-port', String(port)]);
    const view = (await http(c.gateway.api, 'GET', '/v1/discovery')).json;
    expect(view.multicast).toMatchObject({ enabled: true, port, interface: LOOPBACK });
  });
});
