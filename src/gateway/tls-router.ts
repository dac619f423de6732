/**
 * One TCP port, two TLS servers: reads the TLS ClientHello (RFC 8446 §4.1.2)
 * without consuming it, and hands the socket to the server for the ALPN
 * protocol it offers (RFC 7301), or to the default server. This is how the
 * node listener serves the pairing exchange without client certificates while
 * every other connection must present one at the handshake: whether a client
 * certificate is demanded is a property of the server, not of a certificate
 * chosen per connection.
 */
import { createServer, type Server, type Socket } from 'node:net';
import type { Server as TlsServer } from 'node:tls';
import type { Logger } from '../core/logger.js';

/** A ClientHello larger than this (a real one is a few KiB) is not worth waiting for. */
const MAX_HELLO_BYTES = 64 * 1024;
const HELLO_TIMEOUT_MS = 10_000;

export type HelloResult = { complete: false } | { complete: true; alpn: string[] } | { invalid: string };

/**
 * Reads the ALPN protocol names from the start of a TLS stream: `complete:
 * false` until the whole ClientHello has arrived (it may span records).
 */
export function readClientHello(buf: Buffer): HelloResult {
  // Gather the handshake bytes from as many handshake records as have arrived.
  const chunks: Buffer[] = [];
  let off = 0;
  let have = 0;
  let need = -1;
  while (off + 5 <= buf.length) {
    if (buf[off] !== 0x16) return { invalid: 'not a TLS handshake' };
    const len = buf.readUInt16BE(off + 3);
    if (off + 5 + len > buf.length) break;
    chunks.push(buf.subarray(off + 5, off + 5 + len));
    have += len;
    off += 5 + len;
    if (need < 0 && have >= 4) {
      const hs = Buffer.concat(chunks);
      if (hs[0] !== 0x01) return { invalid: 'first handshake message is not a ClientHello' };
      need = 4 + hs.readUIntBE(1, 3);
    }
    if (need >= 0 && have >= need) break;
  }
  if (buf.length > 0 && buf[0] !== 0x16) return { invalid: 'not a TLS handshake' };
  if (need < 0 || have < need) return { complete: false };
  const hello = Buffer.concat(chunks).subarray(4, need);
  try {
    return { complete: true, alpn: alpnOf(hello) };
  } catch {
    return { invalid: 'malformed ClientHello' };
  }
}

function alpnOf(hello: Buffer): string[] {
  let p = 2 + 32; // legacy_version, random
  p += 1 + hello.readUInt8(p); // legacy_session_id
  p += 2 + hello.readUInt16BE(p); // cipher_suites
  p += 1 + hello.readUInt8(p); // legacy_compression_methods
  if (p >= hello.length) return [];
  const end = p + 2 + hello.readUInt16BE(p);
  p += 2;
  if (end > hello.length) throw new Error('extensions overrun');
  while (p + 4 <= end) {
    const type = hello.readUInt16BE(p);
    const len = hello.readUInt16BE(p + 2);
    const body = hello.subarray(p + 4, p + 4 + len);
    p += 4 + len;
    if (type !== 0x0010) continue; // application_layer_protocol_negotiation
    const names: string[] = [];
    let q = 2;
    const listEnd = Math.min(body.length, 2 + body.readUInt16BE(0));
    while (q < listEnd) {
      const n = body.readUInt8(q);
      names.push(body.subarray(q + 1, q + 1 + n).toString('latin1'));
      q += 1 + n;
    }
    return names;
  }
  return [];
}

export interface TlsRouterOptions {
  /** ALPN protocol name → the server that takes connections offering it. */
  routes: Record<string, TlsServer>;
  /** Takes every other connection. */
  fallback: TlsServer;
  logger: Logger;
}

/** A TCP server that routes each connection by the ALPN of its ClientHello. */
export class TlsRouter {
  readonly server: Server;
  readonly #opts: TlsRouterOptions;
  readonly #sockets = new Set<Socket>();

  constructor(opts: TlsRouterOptions) {
    this.#opts = opts;
    this.server = createServer((socket) => this.#route(socket));
  }

  /** Drops connections still waiting for their ClientHello (the TLS servers close their own). */
  destroyPending(): void {
    for (const s of this.#sockets) s.destroy();
  }

  #route(socket: Socket): void {
    this.#sockets.add(socket);
    let buffered = Buffer.alloc(0);
    const done = () => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
      this.#sockets.delete(socket);
    };
    const drop = (why: string) => {
      done();
      this.#opts.logger.debug('dropped a connection before TLS', { remote: socket.remoteAddress, reason: why });
      socket.destroy();
    };
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      const hello = readClientHello(buffered);
      if ('invalid' in hello) return drop(hello.invalid);
      if (!hello.complete) {
        if (buffered.length > MAX_HELLO_BYTES) drop('ClientHello too large');
        return;
      }
      done();
      socket.pause();
      // Put the bytes back: the TLS socket reads what is buffered on the raw socket before anything new.
      socket.unshift(buffered);
      const routes = this.#opts.routes;
      const name = hello.alpn.find((p) => Object.hasOwn(routes, p));
      const target = (name === undefined ? undefined : routes[name]) ?? this.#opts.fallback;
      target.emit('connection', socket);
    };
    const onError = () => drop('socket error');
    const onClose = () => done();
    const timer = setTimeout(() => drop('no ClientHello in time'), HELLO_TIMEOUT_MS);
    timer.unref();
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
  }
}
