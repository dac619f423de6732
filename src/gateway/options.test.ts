import { describe, expect, it } from 'vitest';
import { compileGatewayOptions } from './options.js';

describe('gateway options', () => {
  it('gateway options - the API binds 127.0.0.1 by default, over plain HTTP', () => {
    const o = compileGatewayOptions({ dataDir: '/tmp/x' });
    expect(o.api).toEqual({ host: '127.0.0.1', port: 8787 });
    expect(o.apiTls).toBe(false);
  });

  it('gateway options - loopback API addresses need no TLS', () => {
    for (const api of ['127.0.0.1:0', '[::1]:8787', 'localhost:8787', 'LOCALHOST:1']) {
      expect(compileGatewayOptions({ dataDir: '/tmp/x', api }).apiTls, api).toBe(false);
    }
  });

  it('gateway options - any other API address needs apiTls or insecureApi, and the refusal names both', () => {
    for (const api of ['0.0.0.0:8787', '127.0.0.2:0', '192.168.1.10:8787', '[::]:8787', 'gateway.lan:8787']) {
      expect(() => compileGatewayOptions({ dataDir: '/tmp/x', api }), api).toThrow(/--api-tls.*--insecure-api/);
      expect(compileGatewayOptions({ dataDir: '/tmp/x', api, apiTls: true }).apiTls).toBe(true);
      expect(compileGatewayOptions({ dataDir: '/tmp/x', api, insecureApi: true }).apiTls).toBe(false);
    }
    expect(compileGatewayOptions({ dataDir: '/tmp/x', api: '127.0.0.1:0', apiTls: true }).apiTls).toBe(true);
  });
});
