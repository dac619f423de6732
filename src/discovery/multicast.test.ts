import { createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { freeUdpPort, GroupProbe, LOOPBACK, TEST_GROUP, waitFor } from '../../test/loopback-multicast.js';
import { VERSION } from '../core/version.js';
import { signDiscoveryMessage } from '../protocol/discovery.js';
import { generateSigningKeys, loadSigningKeys } from '../protocol/signing.js';
import {
  type DiscoveredNode,
  type DiscoveryEvent,
  discoveryView,
  findGateway,
  type IsPaired,
  MulticastAdvertiser,
  type MulticastAdvertiserOptions,
  MulticastDiscovery,
  type MulticastDiscoveryOptions,
} from './multicast.js';

const CA = 'AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89';
const OTHER_CA = CA.replace(/^AB/, '00');

const open: Array<{ close(): Promise<void> }> = [];
afterEach(async () => {
  for (const c of open.splice(0).reverse()) await c.close();
});

function track<T extends { close(): Promise<void> }>(c: T): T {
  open.push(c);
  return c;
}

/** Loopback only, a port of this test's own, quick answers. */
async function net(): Promise<{
  group: string;
  port: number;
  interfaceAddress: string;
  answerJitterMs: number;
  minAnswerIntervalMs: number;
}> {
  return { group: TEST_GROUP, port: await freeUdpPort(), interfaceAddress: LOOPBACK, answerJitterMs: 10, minAnswerIntervalMs: 0 };
}

type Net = Awaited<ReturnType<typeof net>>;

async function startNode(n: Net, over: Partial<MulticastAdvertiserOptions> = {}) {
  const keys = generateSigningKeys();
  const advertiser = track(
    new MulticastAdvertiser({
      ...n,
      privateKey: keys.privateKeyPem,
      node: {
        node_id: 'pi-kitchen',
        capabilities: ['tool:unit_convert', 'hardware:gps'],
        platform: 'linux',
        location: { lat: 48.85, lon: 2.35 },
        listen: '0.0.0.0:9100',
      },
      ...over,
    }),
  );
  await advertiser.start();
  return { advertiser, keys };
}

async function startGateway(n: Net, over: Partial<MulticastDiscoveryOptions> = {}) {
  const keys = generateSigningKeys();
  const discovery = track(
    new MulticastDiscovery({
      ...n,
      privateKey: keys.privateKeyPem,
      gateway: { gateway_id: 'gateway:main', node_listen: '0.0.0.0:8788', ca_fingerprint: CA },
      ...over,
    }),
  );
  await discovery.start();
  return { discovery, keys };
}

describe('multicast discovery', () => {
  it('multicast - an advertised node is discovered with its fields', async () => {
    const n = await net();
    const { discovery } = await startGateway(n);
    const { keys } = await startNode(n);
    const node = await waitFor('pi-kitchen discovered', () => discovery.get('pi-kitchen'));
    const advertised = {
      node_id: 'pi-kitchen',
      address: LOOPBACK,
      listen: `${LOOPBACK}:9100`,
      capabilities: ['tool:unit_convert', 'hardware:gps'],
      platform: 'linux',
      location: { lat: 48.85, lon: 2.35 },
      version: VERSION,
      paired: false,
      trusted: false,
    };
    expect(node).toMatchObject({ ...advertised, public_key: keys.publicKeyPem });
    expect(discoveryView(discovery)).toEqual({ nodes: [{ ...advertised, last_seen: new Date(node.last_seen).toISOString() }] });
  });

  it('multicast - periodic advertisements refresh last_seen and carry current capabilities', async () => {
    const n = await net();
    const { discovery } = await startGateway(n);
    const capabilities = ['tool:echo'];
    await startNode(n, {
      intervalMs: 50,
      node: () => ({ node_id: 'laptop', capabilities, platform: 'macos' }),
    });
    const first = await waitFor('laptop discovered', () => discovery.get('laptop'));
    expect(first.listen).toBeNull();
    expect(first.location).toBeNull();
    capabilities.push('tool:summarize');
    const later = await waitFor('a newer advertisement', () => {
      const now = discovery.get('laptop');
      return now && now.last_seen > first.last_seen && now.capabilities.includes('tool:summarize') ? now : undefined;
    });
    expect(later.first_seen).toBe(first.first_seen);
    expect(discovery.stats().accepted).toBeGreaterThanOrEqual(2);
  });

  it('multicast - a node that stops advertising expires after the TTL', async () => {
    const n = await net();
    const events: Array<[string, DiscoveryEvent]> = [];
    const { discovery } = await startGateway(n, {
      ttlMs: 200,
      onNode: (node: DiscoveredNode, event: DiscoveryEvent) => events.push([node.node_id, event]),
    });
    const { advertiser } = await startNode(n, { intervalMs: 50 });
    await waitFor('pi-kitchen discovered', () => discovery.get('pi-kitchen'));
    await advertiser.close();
    await waitFor('pi-kitchen gone from the view', () => discoveryView(discovery).nodes.length === 0);
    await waitFor('the expired event', () => events.some(([, e]) => e === 'expired'));
    expect(discovery.get('pi-kitchen')).toBeUndefined();
    expect(events[0]).toEqual(['pi-kitchen', 'discovered']);
    expect(events.at(-1)).toEqual(['pi-kitchen', 'expired']);
  });

  it('multicast - a node answers the gateway DISCOVER', async () => {
    const n = await net();
    // The node's start-up advertisement goes out before any gateway listens; only the answer to DISCOVER can be heard.
    const { advertiser } = await startNode(n, { intervalMs: 3_600_000 });
    const { discovery } = await startGateway(n);
    await waitFor('pi-kitchen discovered through DISCOVER', () => discovery.get('pi-kitchen'));
    expect(advertiser.stats().answered).toBeGreaterThanOrEqual(1);
    // A later DISCOVER is answered again.
    const before = advertiser.stats().answered;
    await discovery.discover();
    await waitFor('a second answer', () => advertiser.stats().answered > before);
  });

  it('multicast - the gateway repeats DISCOVER at its interval', async () => {
    const n = await net();
    const probe = track(await GroupProbe.join(n.port));
    await startGateway(n, { discoverIntervalMs: 50 });
    await waitFor('three DISCOVER', () => probe.ofType('DISCOVER').length >= 3);
    expect(probe.ofType('DISCOVER')[0]?.message).toMatchObject({ v: 1, seek: 'nodes', sender_id: 'gateway:main' });
    // The announcement sent at start, before anyone asked.
    expect(probe.ofType('GATEWAY')[0]?.message).toMatchObject({ gateway_id: 'gateway:main', node_listen: '0.0.0.0:8788' });
  });

  it('multicast - a listener without a gateway announcement leaves DISCOVER for gateways unanswered', async () => {
    const n = await net();
    const listener = track(new MulticastDiscovery({ ...n }));
    await listener.start();
    await expect(findGateway({ ...n, timeoutMs: 300, retryIntervalMs: 50 })).rejects.toMatchObject({ code: 'FM_ERR_NO_GATEWAY_FOUND' });
    expect(listener.stats()).toMatchObject({ answered: 0 });
    expect(listener.stats().ignored).toBeGreaterThanOrEqual(1);
  });

  it('multicast - several DISCOVER requests close together get one answer', async () => {
    const n = await net();
    const { advertiser } = await startNode(n, { intervalMs: 3_600_000, answerJitterMs: 0, minAnswerIntervalMs: 60_000 });
    const probe = track(await GroupProbe.join(n.port));
    for (let i = 0; i < 5; i++) await probe.send({ v: 1, type: 'DISCOVER', seek: 'nodes', nonce: `probe-nonce-000000${i}` });
    await waitFor('the five DISCOVER received', () => advertiser.stats().received >= 5);
    await waitFor('an answer', () => probe.ofType('ADVERTISE').length >= 1);
    expect(advertiser.stats().answered).toBe(1);
  });

  it('multicast - a node without a gateway address finds one by DISCOVER', async () => {
    const n = await net();
    const { keys } = await startGateway(n);
    const found = await findGateway({ ...n, timeoutMs: 5000, retryIntervalMs: 100 });
    expect(found).toEqual({
      gateway_id: 'gateway:main',
      node_listen: `${LOOPBACK}:8788`,
      host: LOOPBACK,
      port: 8788,
      ca_fingerprint: CA,
      version: VERSION,
      protocols: [1],
      api: null,
      public_key: keys.publicKeyPem,
      address: LOOPBACK,
    });
    // The same from a running advertiser, filtered by the CA it expects.
    const { advertiser } = await startNode(n);
    const pinned = await advertiser.findGateway({ timeoutMs: 5000, retryIntervalMs: 100, caFingerprint: CA.toLowerCase() });
    expect(pinned.gateway_id).toBe('gateway:main');
  });

  it('multicast - findGateway keeps asking until a gateway comes up', async () => {
    const n = await net();
    const finding = findGateway({ ...n, timeoutMs: 10_000, retryIntervalMs: 50 });
    await new Promise((r) => setTimeout(r, 100));
    await startGateway(n);
    await expect(finding).resolves.toMatchObject({ gateway_id: 'gateway:main', port: 8788 });
  });

  it('multicast - findGateway fails with FM_ERR_NO_GATEWAY_FOUND when none answers or the CA differs', async () => {
    const n = await net();
    await expect(findGateway({ ...n, timeoutMs: 200, retryIntervalMs: 50 })).rejects.toMatchObject({
      code: 'FM_ERR_NO_GATEWAY_FOUND',
      message: expect.stringContaining(`${TEST_GROUP}:${n.port} on ${LOOPBACK} within 200 ms`),
    });
    const { discovery } = await startGateway(n);
    await expect(findGateway({ ...n, timeoutMs: 300, retryIntervalMs: 50, caFingerprint: OTHER_CA })).rejects.toMatchObject({
      code: 'FM_ERR_NO_GATEWAY_FOUND',
    });
    expect(discovery.stats().answered).toBeGreaterThanOrEqual(1);
  });

  it('multicast - findGateway says when announcements were dropped for their clock', async () => {
    const n = await net();
    const probe = track(await GroupProbe.join(n.port));
    const gatewayKeys = generateSigningKeys();
    const finding = findGateway({ ...n, timeoutMs: 500, retryIntervalMs: 50 });
    // A gateway whose clock is an hour behind this one answers.
    await waitFor('a DISCOVER from the finder', () => probe.ofType('DISCOVER').length > 0);
    await probe.send(
      signDiscoveryMessage(
        {
          v: 1,
          type: 'GATEWAY',
          gateway_id: 'gateway:slow-clock',
          node_listen: '0.0.0.0:8788',
          ca_fingerprint: CA,
          version: VERSION,
          protocols: [1],
          public_key: gatewayKeys.publicKeyPem,
          sent_at: new Date(Date.now() - 3_600_000).toISOString(),
          nonce: 'slow-clock-nonce-1',
        },
        createPrivateKey(gatewayKeys.privateKeyPem),
      ),
    );
    await expect(finding).rejects.toMatchObject({
      code: 'FM_ERR_NO_GATEWAY_FOUND',
      message: expect.stringContaining('1 announcement(s) dropped for a sent_at more than 300000 ms from this clock'),
      details: { dropped_stale: 1 },
    });
  });

  it('multicast - forged advertisements are dropped and counted', async () => {
    const n = await net();
    const { discovery } = await startGateway(n);
    const { advertiser } = await startNode(n, { intervalMs: 3_600_000 });
    await waitFor('pi-kitchen discovered', () => discovery.get('pi-kitchen'));
    const probe = track(await GroupProbe.join(n.port));

    // A field changed after signing.
    const tampered = { ...advertiser.buildAdvertisement(), node_id: 'pi-evil', listen: '198.51.100.66:9100' };
    // Signed by another key while claiming the node's public key.
    const mallory = generateSigningKeys();
    const { signature: _s, ...body } = advertiser.buildAdvertisement();
    const wrongKey = signDiscoveryMessage({ ...body, node_id: 'pi-evil' }, createPrivateKey(mallory.privateKeyPem));
    // A signature that is not even base64 of 64 bytes.
    const garbage = { ...advertiser.buildAdvertisement(), node_id: 'pi-evil', signature: 'A'.repeat(88) };
    for (const forged of [tampered, wrongKey, garbage]) await probe.send(forged);

    await waitFor('three signature drops', () => discovery.stats().dropped.signature === 3);
    expect(discovery.get('pi-evil')).toBeUndefined();
    expect(discovery.get('pi-kitchen')?.listen).toBe(`${LOOPBACK}:9100`);
    expect(discovery.stats().accepted).toBe(1);
  });

  it('multicast - malformed, oversized and wrong-schema datagrams are counted, never thrown', async () => {
    const n = await net();
    const { discovery } = await startGateway(n, { maxDatagramBytes: 1024 });
    const probe = track(await GroupProbe.join(n.port));
    await probe.send('not json at all');
    await probe.send('[1,2,3]');
    await probe.send(Buffer.from([0xff, 0xfe, 0x00, 0x01]));
    await probe.send({ v: 1, type: 'HELLO' });
    await probe.send({ v: 1, type: 'ADVERTISE', node_id: 'x' });
    await probe.send({ v: 2, type: 'ADVERTISE', node_id: 'x' });
    await probe.send(JSON.stringify({ v: 1, type: 'ADVERTISE', pad: 'x'.repeat(2000) }));
    await waitFor('seven drops', () => Object.values(discovery.stats().dropped).reduce((a, b) => a + b, 0) === 7);
    expect(discovery.stats().dropped).toMatchObject({ malformed: 3, schema: 2, version: 1, oversized: 1, signature: 0 });
    // Still listening.
    await startNode(n);
    await waitFor('pi-kitchen discovered after the junk', () => discovery.get('pi-kitchen'));
  });

  it('multicast - replayed and stale advertisements are dropped', async () => {
    const n = await net();
    const { discovery } = await startGateway(n);
    const probe = track(await GroupProbe.join(n.port));
    const node = generateSigningKeys();
    const key = createPrivateKey(node.privateKeyPem);
    const advert = (sentAt: Date, nonce: string, platform = 'linux') =>
      signDiscoveryMessage(
        {
          v: 1,
          type: 'ADVERTISE',
          node_id: 'gps-1',
          capabilities: ['hardware:gps'],
          platform,
          version: VERSION,
          public_key: node.publicKeyPem,
          sent_at: sentAt.toISOString(),
          nonce,
        },
        key,
      );
    const now = Date.now();
    const current = advert(new Date(now), 'nonce-current-0001');
    await probe.send(current);
    await waitFor('gps-1 discovered', () => discovery.get('gps-1'));
    await probe.send(current);
    await waitFor('the replay dropped', () => discovery.stats().dropped.replay === 1);
    // Fresh nonce, but older than what was already accepted from this node.
    await probe.send(advert(new Date(now - 10_000), 'nonce-older-00001', 'android'));
    await waitFor('the older one dropped', () => discovery.stats().dropped.replay === 2);
    // Outside the clock-skew window either way.
    await probe.send(advert(new Date(now - 3_600_000), 'nonce-stale-00001', 'android'));
    await probe.send(advert(new Date(now + 3_600_000), 'nonce-future-0001', 'android'));
    await waitFor('two stale drops', () => discovery.stats().dropped.stale === 2);
    expect(discovery.get('gps-1')?.platform).toBe('linux');
    expect(discovery.stats().accepted).toBe(1);
  });

  it('multicast - paired and trusted come from the isPaired hook, as it answers now', async () => {
    const n = await net();
    const pairedKeys = new Map<string, string>();
    const isPaired: IsPaired = (nodeId, publicKey) => {
      const known = pairedKeys.get(nodeId);
      return { paired: known !== undefined, trusted: known === publicKey };
    };
    const { discovery } = await startGateway(n, { isPaired });
    const a = await startNode(n, { node: { node_id: 'node-a', capabilities: [], platform: 'linux' } });
    await startNode(n, { node: { node_id: 'node-b', capabilities: [], platform: 'linux' } });
    await startNode(n, { node: { node_id: 'node-c', capabilities: [], platform: 'linux' } });
    await waitFor('three nodes', () => discovery.list().length === 3);
    expect(discoveryView(discovery).nodes.map((x) => [x.node_id, x.paired, x.trusted])).toEqual([
      ['node-a', false, false],
      ['node-b', false, false],
      ['node-c', false, false],
    ]);
    pairedKeys.set('node-a', a.keys.publicKeyPem);
    pairedKeys.set('node-c', generateSigningKeys().publicKeyPem);
    expect(discoveryView(discovery).nodes.map((x) => [x.node_id, x.paired, x.trusted])).toEqual([
      ['node-a', true, true],
      ['node-b', false, false],
      ['node-c', true, false],
    ]);

    // Someone else claims node-a with a key of their own: the paired entry stays.
    const probe = track(await GroupProbe.join(n.port));
    const mallory = generateSigningKeys();
    const impostor = track(
      new MulticastAdvertiser({
        ...n,
        privateKey: mallory.privateKeyPem,
        node: { node_id: 'node-a', capabilities: ['tool:everything'], platform: 'linux', listen: '198.51.100.66:9000' },
        intervalMs: 3_600_000,
      }),
    );
    await impostor.start();
    await waitFor('the key conflict counted', () => discovery.stats().dropped.key_conflict === 1);
    expect(discovery.get('node-a')).toMatchObject({ public_key: a.keys.publicKeyPem, capabilities: [], trusted: true });
    expect(probe.ofType('ADVERTISE').length).toBeGreaterThanOrEqual(1);
  });

  it('multicast - a hook that throws marks the node untrusted and leaves discovery running', async () => {
    const n = await net();
    const { discovery } = await startGateway(n, {
      isPaired: () => {
        throw new Error('store is down');
      },
    });
    await startNode(n);
    const node = await waitFor('pi-kitchen discovered', () => discovery.get('pi-kitchen'));
    expect([node.paired, node.trusted]).toEqual([false, false]);
  });

  it('multicast - a boolean hook answer sets both flags', async () => {
    const n = await net();
    const { discovery } = await startGateway(n, { isPaired: (id) => id === 'pi-kitchen' });
    await startNode(n);
    expect(await waitFor('pi-kitchen discovered', () => discovery.get('pi-kitchen'))).toMatchObject({ paired: true, trusted: true });
  });

  it('multicast - the cache holds at most maxNodes', async () => {
    const n = await net();
    const { discovery } = await startGateway(n, { maxNodes: 1 });
    await startNode(n, { node: { node_id: 'first', capabilities: [], platform: 'linux' } });
    await waitFor('first discovered', () => discovery.get('first'));
    await startNode(n, { node: { node_id: 'second', capabilities: [], platform: 'linux' } });
    await waitFor('cache_full counted', () => discovery.stats().dropped.cache_full >= 1);
    expect(discovery.list().map((x) => x.node_id)).toEqual(['first']);
  });

  it('multicast - close releases the socket and timers and settles a pending findGateway', async () => {
    const udpHandles = () => process.getActiveResourcesInfo().filter((r) => r === 'UDPWrap').length;
    const n = await net();
    // A socket is released on the loop turn after its close callback; let earlier ones go first.
    await new Promise((r) => setTimeout(r, 50));
    const baseline = udpHandles();
    const { discovery } = await startGateway(n, { discoverIntervalMs: 20 });
    const { advertiser } = await startNode(n, { intervalMs: 20 });
    expect(udpHandles()).toBe(baseline + 2);
    const pending = advertiser.findGateway({ timeoutMs: 60_000, gatewayId: 'gateway:none' });
    await advertiser.close();
    await expect(pending).rejects.toMatchObject({ code: 'FM_ERR_SHUTTING_DOWN' });
    await discovery.close();
    await discovery.close();
    await waitFor('both sockets released', () => udpHandles() === baseline);
    const sent = discovery.stats().sent;
    await new Promise((r) => setTimeout(r, 100));
    expect(discovery.stats().sent).toBe(sent);
    expect(discovery.list()).toEqual([]);
    await expect(advertiser.advertise()).rejects.toMatchObject({ code: 'FM_ERR_SHUTTING_DOWN' });
  });
});

describe('multicast options', () => {
  const keys = generateSigningKeys();
  const node = { node_id: 'n1', capabilities: [], platform: 'linux' };

  it('multicast options - bad values name the option and the value', () => {
    expect(() => new MulticastAdvertiser({ node, privateKey: keys.privateKeyPem, group: '10.0.0.1' })).toThrow(
      /discovery\.group: "10\.0\.0\.1" is not valid \(an IPv4 multicast address/,
    );
    expect(() => new MulticastAdvertiser({ node, privateKey: keys.privateKeyPem, port: 70000 })).toThrow(/discovery\.port: 70000/);
    expect(() => new MulticastAdvertiser({ node, privateKey: keys.privateKeyPem, interfaceAddress: 'eth0' })).toThrow(
      /discovery\.interface: "eth0"/,
    );
    expect(() => new MulticastAdvertiser({ node, privateKey: keys.privateKeyPem, ttl: 0 })).toThrow(/discovery\.ttl: 0/);
    expect(() => new MulticastAdvertiser({ node, privateKey: 'not a key' })).toThrow(/discovery\.private_key/);
    const ecKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    expect(() => new MulticastAdvertiser({ node, privateKey: ecKey })).toThrow(/discovery\.private_key.*Ed25519/);
    expect(() => new MulticastDiscovery({ gateway: { gateway_id: 'g', node_listen: '0.0.0.0:8788', ca_fingerprint: CA } })).toThrow(
      /discovery\.private_key/,
    );
    expect(
      () =>
        new MulticastDiscovery({
          privateKey: keys.privateKeyPem,
          gateway: { gateway_id: 'g', node_listen: '0.0.0.0:8788', ca_fingerprint: 'nope' },
        }),
    ).toThrow(/GATEWAY would be invalid at \/ca_fingerprint/);
  });

  it('multicast options - an invalid or oversized advertisement is refused at start, before joining', async () => {
    const n = await net();
    const bad = track(new MulticastAdvertiser({ ...n, privateKey: keys.privateKeyPem, node: { ...node, node_id: ' spaces not allowed' } }));
    await expect(bad.start()).rejects.toMatchObject({ code: 'FM_ERR_INVALID_OPTION', message: expect.stringContaining('/node_id') });
    const many = Array.from({ length: 400 }, (_, i) => `tool:generated_tool_number_${i}`);
    const big = track(new MulticastAdvertiser({ ...n, privateKey: keys.privateKeyPem, node: { ...node, capabilities: many } }));
    await expect(big.start()).rejects.toMatchObject({
      code: 'FM_ERR_INVALID_OPTION',
      message: expect.stringMatching(/ADVERTISE of \d+ bytes exceeds discovery\.max_datagram_bytes \(8192\)/),
    });
    const roomy = track(
      new MulticastAdvertiser({ ...n, maxDatagramBytes: 32_768, privateKey: keys.privateKeyPem, node: { ...node, capabilities: many } }),
    );
    await expect(roomy.start()).resolves.toBeUndefined();
  });

  it('multicast options - an interface address that is not local fails with FM_ERR_DISCOVERY_UNAVAILABLE', async () => {
    const n = await net();
    // TEST-NET-3: no interface here holds it, so joining fails before anything is sent.
    const d = track(new MulticastDiscovery({ ...n, interfaceAddress: '203.0.113.7' }));
    await expect(d.start()).rejects.toMatchObject({
      code: 'FM_ERR_DISCOVERY_UNAVAILABLE',
      message: expect.stringContaining(`${TEST_GROUP}:${n.port} on 203.0.113.7`),
    });
  });

  it('multicast options - an advertiser signs with the node result key, so the gateway can compare it with REGISTER', () => {
    const { publicKeyPem } = loadSigningKeys(keys.privateKeyPem);
    const advertiser = new MulticastAdvertiser({ node, privateKey: keys.privateKeyPem });
    expect(advertiser.buildAdvertisement().public_key).toBe(publicKeyPem);
  });
});
