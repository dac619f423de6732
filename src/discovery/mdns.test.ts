import type { EventEmitter } from 'node:events';
import { Bonjour } from 'bonjour-service';
import { afterEach, describe, expect, it } from 'vitest';
import { freeUdpPort, LOOPBACK } from '../../test/loopback-multicast.js';
import { createLogger } from '../core/logger.js';
import { VERSION } from '../core/version.js';
import {
  type AdvertiseMdnsOptions,
  advertiseGatewayMdns,
  browseGateways,
  findGatewayMdns,
  type MdnsAdvertisement,
  type MdnsGatewayInfo,
  parseServiceName,
} from './mdns.js';

const CA = 'AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89';
const OTHER_CA = CA.replace(/^AB/, '00');

const open: MdnsAdvertisement[] = [];
afterEach(async () => {
  for (const a of open.splice(0)) await a.close();
});

/** Loopback only, on a port of this test's own instead of 5353. */
async function lo() {
  return { interfaceAddress: LOOPBACK, port: await freeUdpPort() };
}

async function advertise(
  net: { interfaceAddress: string; port: number },
  info: Partial<MdnsGatewayInfo> = {},
  options: AdvertiseMdnsOptions = {},
): Promise<MdnsAdvertisement> {
  const ad = await advertiseGatewayMdns({ gateway_id: 'gateway:main', port: 8788, ca_fingerprint: CA, ...info }, { ...net, ...options });
  open.push(ad);
  return ad;
}

/** A plain bonjour-service instance on the test network, standing for another program. */
function rawBonjour(net: { port: number }): Bonjour {
  // bonjour-service hands these options to multicast-dns; its types do not list interface and bind.
  const options: Record<string, unknown> = { interface: LOOPBACK, port: net.port, bind: '224.0.0.251' };
  return new Bonjour(options);
}

describe('mdns discovery', () => {
  it('mdns - a published gateway is found with its port and TXT records', async () => {
    const net = await lo();
    const ad = await advertise(net);
    expect(ad.fqdn).toBe('gateway:main._fieldmesh._tcp.local');
    const found = await browseGateways({ ...net, timeoutMs: 5000, limit: 1 });
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({
      name: 'gateway:main',
      host: LOOPBACK,
      port: 8788,
      node_listen: `${LOOPBACK}:8788`,
      ca_fingerprint: CA,
      gateway_id: 'gateway:main',
      protocol_version: 1,
      version: VERSION,
    });
    await expect(findGatewayMdns({ ...net, timeoutMs: 5000, caFingerprint: CA.toLowerCase() })).resolves.toMatchObject({ port: 8788 });
  });

  it('mdns - the service type follows service_name, and other types are not answered', async () => {
    const net = await lo();
    await advertise(net, {}, { serviceName: '_prx._tcp.local.' });
    const prx = await browseGateways({ ...net, serviceName: '_prx._tcp.local.', timeoutMs: 5000, limit: 1 });
    expect(prx.map((g) => g.gateway_id)).toEqual(['gateway:main']);
    expect(await browseGateways({ ...net, timeoutMs: 400 })).toEqual([]);
  });

  it('mdns - a gateway with another CA fingerprint is passed over', async () => {
    const net = await lo();
    await advertise(net);
    expect(await browseGateways({ ...net, timeoutMs: 400, caFingerprint: OTHER_CA })).toEqual([]);
    await expect(findGatewayMdns({ ...net, timeoutMs: 300, caFingerprint: OTHER_CA })).rejects.toMatchObject({
      code: 'FM_ERR_NO_GATEWAY_FOUND',
      message: expect.stringContaining(`_fieldmesh._tcp.local on 224.0.0.251:${net.port} via ${LOOPBACK} within 300 ms`),
    });
  });

  it('mdns - several gateways are all found, and services without ca/id are skipped', async () => {
    const net = await lo();
    await advertise(net);
    await advertise(net, { gateway_id: 'gateway:backup', port: 9788 });
    // Another program's service of the same type, without the TXT records a gateway publishes.
    const stranger = rawBonjour(net);
    const published = await new Promise<void>((resolve) => {
      stranger.publish({ name: 'printer', type: 'fieldmesh', port: 631, probe: false, txt: { model: 'x' } }).once('up', () => resolve());
    });
    try {
      expect(published).toBeUndefined();
      const lines: string[] = [];
      const logger = createLogger('debug', {}, (line) => lines.push(line));
      const found = await browseGateways({ ...net, timeoutMs: 1500, logger });
      expect(lines.some((l) => l.includes('without a valid ca/id') && l.includes('"name":"printer"'))).toBe(true);
      expect(found.map((g) => [g.gateway_id, g.port]).sort()).toEqual([
        ['gateway:backup', 9788],
        ['gateway:main', 8788],
      ]);
    } finally {
      await new Promise<void>((resolve) => stranger.destroy(() => resolve()));
    }
  });

  it('mdns - a second gateway with the same instance name is refused and sends no goodbye for the first', async () => {
    const net = await lo();
    await advertise(net);
    // Every mDNS response on the test network; a goodbye is a record with TTL 0.
    const listener = rawBonjour(net);
    const goodbyes: string[] = [];
    const mdns = (listener as unknown as { server: { mdns: EventEmitter } }).server.mdns;
    mdns.on('response', (packet: { answers: Array<{ name: string; ttl: number }> }) => {
      for (const rr of packet.answers) if (rr.ttl === 0) goodbyes.push(rr.name);
    });
    try {
      await expect(
        advertiseGatewayMdns({ gateway_id: 'gateway:main', port: 9999, ca_fingerprint: OTHER_CA }, { ...net, startTimeoutMs: 10_000 }),
      ).rejects.toMatchObject({ code: 'FM_ERR_DISCOVERY_UNAVAILABLE', message: expect.stringContaining('already in use') });
      // A goodbye would follow the refusal at once; give it the time a datagram on loopback needs, and more.
      await new Promise((r) => setTimeout(r, 300));
      expect(goodbyes).toEqual([]);
      const found = await browseGateways({ ...net, timeoutMs: 5000, limit: 1 });
      expect(found.map((g) => [g.port, g.ca_fingerprint])).toEqual([[8788, CA]]);
    } finally {
      await new Promise<void>((resolve) => listener.destroy(() => resolve()));
    }
  });

  it('mdns - a closed advertisement is no longer found', async () => {
    const net = await lo();
    const ad = await advertise(net);
    expect(await browseGateways({ ...net, timeoutMs: 5000, limit: 1 })).toHaveLength(1);
    await ad.close();
    await ad.close();
    expect(await browseGateways({ ...net, timeoutMs: 400 })).toEqual([]);
  });

  it('mdns - bad options name the option and the value', async () => {
    expect(parseServiceName('_fieldmesh._tcp.local.')).toEqual({ name: 'fieldmesh', protocol: 'tcp' });
    expect(parseServiceName('_prx._udp')).toEqual({ name: 'prx', protocol: 'udp' });
    expect(() => parseServiceName('fieldmesh.local')).toThrow(/discovery\.service_name: "fieldmesh\.local" is not valid/);
    expect(() => parseServiceName('_a-name-far-too-long._tcp.local.')).toThrow(/discovery\.service_name/);
    await expect(advertiseGatewayMdns({ gateway_id: 'g', port: 8788, ca_fingerprint: 'nope' }, await lo())).rejects.toMatchObject({
      code: 'FM_ERR_INVALID_OPTION',
      message: expect.stringContaining('ca_fingerprint: "nope"'),
    });
    await expect(browseGateways({ interfaceAddress: 'eth0' })).rejects.toMatchObject({
      code: 'FM_ERR_INVALID_OPTION',
      message: expect.stringContaining('discovery.interface: "eth0"'),
    });
  });
});
