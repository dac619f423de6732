/**
 * A gateway stand-in for tests of what a node refuses: it holds the real
 * gateway's TLS identity (so paired nodes connect to it over mutual TLS) but
 * sends whatever frames a test writes, signed or forged as the test likes.
 */
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { type WebSocket, WebSocketServer } from 'ws';
import { startProcess } from '../src/cli/processes.js';
import { type Cluster, cliPath, testToolsModule, waitFor } from './harness.js';
import type { Json } from './raw-node.js';

/** One node's connection to the fake gateway, keeping every frame the node sent. */
export class FakeLink {
  readonly frames: Json[] = [];
  #read = 0;

  constructor(readonly ws: WebSocket) {}

  send(frame: Json): void {
    this.ws.send(JSON.stringify({ v: 1, ...frame }));
  }

  /** The next frame from the node that is not a HEARTBEAT (and, with `type`, of that type). */
  next(what: string, type?: string): Promise<Json> {
    return waitFor(what, () => {
      for (;;) {
        const f = this.frames[this.#read];
        if (!f) return undefined;
        this.#read += 1;
        if (f.type !== 'HEARTBEAT' && (type === undefined || f.type === type)) return f;
      }
    });
  }

  /** Answers REGISTER with a WELCOME, as a gateway does; without `features`, as one that predates them. */
  welcome(nodeId: string, features?: string[]): void {
    this.send({
      type: 'WELCOME',
      version: 1,
      gateway_id: 'gateway:fake',
      node_id: nodeId,
      leader_id: 'gateway:fake',
      peers: [],
      heartbeat_interval_ms: 60_000,
      max_frame_bytes: 1024 * 1024,
      ...(features ? { features } : {}),
    });
  }
}

export class FakeGateway {
  readonly #links = new Map<string, FakeLink>();

  private constructor(
    readonly server: Server,
    readonly wss: WebSocketServer,
    /** The real gateway's signing key, for genuine frames. */
    readonly signingKey: KeyObject,
  ) {
    wss.on('connection', (ws) => {
      const link = new FakeLink(ws);
      ws.on('message', (d) => {
        const frame = JSON.parse(String(d)) as Json;
        if (frame.type === 'REGISTER') this.#links.set(frame.node_id, link);
        link.frames.push(frame);
      });
    });
  }

  /** Listens on loopback with the TLS identity of the gateway whose data dir is given. */
  static async start(gatewayDataDir: string): Promise<FakeGateway> {
    const tls = join(gatewayDataDir, 'tls');
    const ca = readFileSync(join(tls, 'ca.crt'), 'utf8');
    const server = createServer({
      key: readFileSync(join(tls, 'gateway.key')),
      cert: readFileSync(join(tls, 'gateway.crt'), 'utf8') + ca,
      ca: [ca],
      requestCert: true,
      rejectUnauthorized: true,
    });
    const wss = new WebSocketServer({ server });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const key = createPrivateKey(readFileSync(join(tls, 'gateway-signing.key'), 'utf8'));
    return new FakeGateway(server, wss, key);
  }

  get address(): string {
    return `127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** The connection of a node once its REGISTER arrived. */
  link(nodeId: string): Promise<FakeLink> {
    return waitFor(`REGISTER from ${nodeId}`, () => this.#links.get(nodeId));
  }

  close(): void {
    for (const ws of this.wss.clients) ws.terminate();
    this.server.close();
  }
}

/**
 * A real node paired with the cluster's gateway, then restarted against a fake
 * gateway that answers its REGISTER with a WELCOME (as a gateway that predates
 * optional features, unless `features` are given) and waits for NODE_READY.
 */
export async function nodeOnFakeGateway(
  c: Cluster,
  nodeId: string,
  features?: string[],
): Promise<{ fake: FakeGateway; link: FakeLink; register: Json; dataDir: string }> {
  const node = await c.startNode({ id: nodeId });
  await node.proc.stop();
  const fake = await FakeGateway.start(c.gateway.dataDir);
  const ready = startProcess(
    ['node', '--gateway', fake.address, '--id', nodeId, '--data-dir', node.dataDir, '--tools-module', testToolsModule],
    'node ready',
    { cliPath },
  ).then(({ managed }) => c.procs.push(managed));
  const link = await fake.link(nodeId);
  const register = await link.next('REGISTER', 'REGISTER');
  link.welcome(nodeId, features);
  await ready;
  await link.next('NODE_READY', 'NODE_READY');
  return { fake, link, register, dataDir: node.dataDir };
}
