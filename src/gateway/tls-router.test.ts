// Tests for reading the ALPN offer of a real TLS ClientHello, whole, in pieces, or not TLS at all.
import { createServer, type Server } from 'node:net';
import { connect } from 'node:tls';
import { afterAll, describe, expect, it } from 'vitest';
import { readClientHello } from './tls-router.js';

const servers: Server[] = [];

/** The first bytes a real TLS client sends, captured by a plain TCP server. */
async function captureHello(alpn: string[] | undefined): Promise<Buffer> {
  let resolveHello: (b: Buffer) => void = () => undefined;
  const got = new Promise<Buffer>((r) => {
    resolveHello = r;
  });
  const server = createServer((s) => {
    let buf = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const hello = readClientHello(buf);
      if ('complete' in hello && hello.complete) {
        resolveHello(buf);
        s.destroy();
      }
    });
    s.on('error', () => undefined);
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  const client = connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...(alpn ? { ALPNProtocols: alpn } : {}) });
  client.on('error', () => undefined);
  return got;
}

afterAll(() => {
  for (const s of servers) s.close();
});

describe('tls router - readClientHello', () => {
  it('tls router - reads the ALPN protocols a client offers, and none when it offers none', async () => {
    expect(readClientHello(await captureHello(['fieldmesh-pair', 'http/1.1']))).toEqual({
      complete: true,
      alpn: ['fieldmesh-pair', 'http/1.1'],
    });
    expect(readClientHello(await captureHello(undefined))).toEqual({ complete: true, alpn: [] });
  });

  it('tls router - waits for the rest of a ClientHello that arrives in pieces', async () => {
    const hello = await captureHello(['fieldmesh-pair']);
    for (const cut of [0, 3, 5, 9, hello.length - 1]) expect(readClientHello(hello.subarray(0, cut))).toEqual({ complete: false });
    expect(readClientHello(hello)).toEqual({ complete: true, alpn: ['fieldmesh-pair'] });
  });

  it('tls router - a ClientHello split over two TLS records still reads', async () => {
    const hello = await captureHello(['fieldmesh-pair']);
    const body = hello.subarray(5);
    const record = (b: Buffer) => Buffer.concat([Buffer.from([0x16, 0x03, 0x01, b.length >> 8, b.length & 0xff]), b]);
    const split = Buffer.concat([record(body.subarray(0, 40)), record(body.subarray(40))]);
    expect(readClientHello(split)).toEqual({ complete: true, alpn: ['fieldmesh-pair'] });
  });

  it('tls router - plain HTTP, an alert record or a corrupt hello is not a ClientHello', () => {
    expect(readClientHello(Buffer.from('GET / HTTP/1.1\r\n\r\n'))).toHaveProperty('invalid');
    expect(readClientHello(Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]))).toHaveProperty('invalid');
    const corrupt = Buffer.from([0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x00, 0x04, 0x03, 0x03, 0xff, 0xff]);
    expect(readClientHello(corrupt)).toHaveProperty('invalid');
  });
});
