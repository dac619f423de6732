/**
 * The two processes of the tls-memory bench (tls-memory.ts): `server <variant>`
 * is a bare `node:https` + `ws` server configured as the gateway's node
 * listener, answering `usage` messages with its RSS and memory split; `client
 * <variant> <port> <count>` opens `count` WebSockets to it and holds them. The
 * certificates come in FM_TLS_MEMORY (JSON).
 */
import { constants as cryptoConstants } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import WebSocket, { WebSocketServer } from 'ws';
import { silentLogger } from '../src/core/logger.js';
import { TlsRouter } from '../src/gateway/tls-router.js';

export const VARIANTS = ['plain', 'mtls', 'mtls-router'] as const;
export type Variant = (typeof VARIANTS)[number];

export interface Material {
  caPem: string;
  serverKeyPem: string;
  serverCertPem: string;
  clientKeyPem: string;
  clientCertPem: string;
}

export type Usage = NodeJS.MemoryUsage & { vmRss: number; connections: number };

function usage(connections: number): Usage {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  gc();
  gc();
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
  return { ...process.memoryUsage(), vmRss: Number(m?.[1] ?? 0) * 1024, connections };
}

/** The server side, in its own process: listens, then answers `usage` requests. */
function serve(variant: Variant, m: Material): void {
  let connections = 0;
  const wss = new WebSocketServer({ noServer: true, maxPayload: 4 << 20 });
  const server =
    variant === 'plain'
      ? createHttpServer()
      : createHttpsServer({
          key: m.serverKeyPem,
          cert: m.serverCertPem + m.caPem,
          ca: [m.caPem],
          requestCert: true,
          rejectUnauthorized: true,
          minVersion: 'TLSv1.2',
          secureOptions: cryptoConstants.SSL_OP_NO_TICKET,
        });
  server.on('upgrade', (req, socket, head) => {
    // As the listener reads the peer at the upgrade.
    if (variant !== 'plain') void (socket as TLSSocket).getPeerX509Certificate()?.serialNumber;
    wss.handleUpgrade(req, socket, head, (ws) => {
      connections += 1;
      ws.on('close', () => {
        connections -= 1;
      });
    });
  });
  const front: Server | import('node:net').Server =
    variant === 'mtls-router' && 'addContext' in server
      ? new TlsRouter({ routes: {}, fallback: server, logger: silentLogger }).server
      : server;
  front.listen(0, '127.0.0.1', () => {
    const address = front.address();
    process.send?.({ port: typeof address === 'object' && address ? address.port : 0 });
  });
  process.on('message', (msg) => {
    if (msg === 'usage') setTimeout(() => process.send?.({ usage: usage(connections) }), 200);
    // A normal exit runs the exit handlers of an allocator under test (e.g. jemalloc's final heap profile).
    if (msg === 'exit') process.exit(0);
  });
}

/** The client side: `count` WebSockets, 32 connecting at a time, then holds them open. */
async function connect(variant: Variant, port: number, count: number, m: Material): Promise<void> {
  const sockets: WebSocket[] = [];
  let failed = 0;
  const one = () =>
    new Promise<void>((resolve) => {
      const ws =
        variant === 'plain'
          ? new WebSocket(`ws://127.0.0.1:${port}/`)
          : new WebSocket(`wss://127.0.0.1:${port}/`, {
              ...{ key: m.clientKeyPem, cert: m.clientCertPem, ca: m.caPem, servername: 'localhost' },
              perMessageDeflate: false,
            });
      sockets.push(ws);
      ws.once('open', () => resolve());
      ws.once('error', () => {
        failed += 1;
        resolve();
      });
    });
  let started = 0;
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (started < count) {
        started += 1;
        await one();
      }
    }),
  );
  process.send?.({ connected: sockets.length - failed, failed });
}

// Only as a process of its own (tls-memory.ts imports the names above).
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { variant, m } = JSON.parse(process.env.FM_TLS_MEMORY ?? '{}') as { variant: Variant; m: Material };
  if (process.argv[2] === 'server') serve(variant, m);
  else void connect(variant, Number(process.argv[3]), Number(process.argv[4]), m);
}
