import { describe, expect, it } from 'vitest';
import { compileNodeOptions } from '../node/options.js';
import { parsePeerEndpoint } from '../protocol/peers.js';
import { compileGatewayOptions } from './options.js';

describe('discovery options', () => {
  it('discovery options - multicast and mDNS are off unless asked for, with the original defaults when on', () => {
    expect(compileGatewayOptions({ dataDir: '/tmp/x' }).discovery).toEqual({ multicast: null, mdns: null });
    const on = compileGatewayOptions({ dataDir: '/tmp/x', discovery: { multicast: {}, mdns: {} } }).discovery;
    expect(on.multicast).toEqual({ group: '239.255.70.77', port: 37020, interfaceAddress: undefined, intervalMs: 30_000 });
    expect(on.mdns).toEqual({ serviceName: '_fieldmesh._tcp.local.', interfaceAddress: undefined, port: 5353 });
  });

  it('discovery options - a bad group, port, interface or service name names the option and the value', () => {
    const bad: [object, RegExp][] = [
      [{ multicast: { group: '10.0.0.1' } }, /discovery\.group: "10\.0\.0\.1" is not valid \(an IPv4 multicast address/],
      [{ multicast: { port: 70000 } }, /discovery\.port: 70000 is not valid/],
      [{ multicast: { interface: 'eth0' } }, /discovery\.interface: "eth0" is not valid/],
      [{ mdns: { serviceName: 'fieldmesh' } }, /discovery\.service_name: "fieldmesh" is not valid/],
    ];
    for (const [discovery, message] of bad) {
      expect(() => compileGatewayOptions({ dataDir: '/tmp/x', discovery })).toThrow(message);
    }
  });

  it('discovery options - peers are host:port endpoints, deduplicated; bad ones name their index', () => {
    const o = compileGatewayOptions({
      dataDir: '/tmp/x',
      peers: ['127.0.0.1:3121', 'https://127.0.0.1:3121', '[::1]:3121', 'gpu.lan:3121'],
    });
    expect(o.peers.map((p) => p.text)).toEqual(['127.0.0.1:3121', '[::1]:3121', 'gpu.lan:3121']);
    expect(() => compileGatewayOptions({ dataDir: '/tmp/x', peers: ['127.0.0.1:3121', 'gpu.lan'] })).toThrow(
      /gateway\.peers\[1\]: "gpu\.lan" is not a valid endpoint \(expected HOST:PORT\)/,
    );
  });

  it('discovery options - endpoints: port range, schemes, paths and unspecified hosts', () => {
    expect(parsePeerEndpoint('e', 'wss://10.0.0.5:443')).toEqual({ host: '10.0.0.5', port: 443, text: '10.0.0.5:443' });
    const refused: [string, string][] = [
      ['10.0.0.5:0', 'out of range'],
      ['10.0.0.5:65536', 'out of range'],
      ['http://10.0.0.5:80', 'only https:// or wss://'],
      ['10.0.0.5:80/x', 'a path is not allowed'],
      ['0.0.0.0:80', 'cannot be dialed'],
      ['[zz]:80', 'expected HOST:PORT'],
      ['bad_host!:80', 'not a host name or IP address'],
    ];
    for (const [value, why] of refused) expect(() => parsePeerEndpoint('e', value), value).toThrow(why);
  });

  it('discovery options - a node needs --gateway unless it discovers the gateway or listens', () => {
    const base = { id: 'n1', dataDir: '/tmp/n1' };
    expect(() => compileNodeOptions(base)).toThrow(/node\.gateway: "HOST:PORT" is required unless/);
    expect(compileNodeOptions({ ...base, discover: 'multicast' }).gateway).toBeUndefined();
    expect(compileNodeOptions({ ...base, listen: ':3121' }).listen).toEqual({ host: '0.0.0.0', port: 3121 });
    expect(() => compileNodeOptions({ ...base, discover: 'carrier-pigeon' as 'mdns' })).toThrow(/node\.discover/);
    expect(() => compileNodeOptions({ ...base, discover: 'mdns', serviceName: '_x' })).toThrow(/service_name/);
  });
});
