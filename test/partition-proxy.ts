// A loopback TCP proxy between nodes and a gateway that tests can partition or sever, for offline and partition scenarios.
import { connect, createServer, type Server, type Socket } from 'node:net';
import { parseHostPort } from '../src/core/address.js';

/**
 * A loopback TCP proxy the test can partition. `cut()` black-holes both
 * directions without closing anything: sockets stop being read (their bytes
 * wait, as TCP would retransmit them), nothing is written, and new
 * connections are accepted but held. `sever()` is a cut that also drops the
 * connections already made, so both ends see them close at once.
 * `heal()` forwards everything again.
 */
export class PartitionProxy {
  readonly #target: { host: string; port: number };
  readonly #server: Server = createServer((client) => this.#accept(client));
  readonly #sockets = new Set<Socket>();
  readonly #held: Socket[] = [];
  /** Closes and errors seen during a cut, delivered on heal like the rest of the traffic. */
  readonly #deferred: (() => void)[] = [];
  #cut = false;
  address = '';
  /** Bytes written towards the node (gateway → node) so far. */
  downstreamBytes = 0;

  constructor(target: string) {
    this.#target = parseHostPort('target', target);
  }

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    const addr = this.#server.address();
    if (addr === null || typeof addr === 'string') throw new Error('proxy has no TCP address');
    this.address = `127.0.0.1:${addr.port}`;
    return this.address;
  }

  get connections(): number {
    return this.#sockets.size;
  }

  cut(): void {
    this.#cut = true;
    for (const s of this.#sockets) s.pause();
  }

  sever(): void {
    this.cut();
    for (const s of this.#sockets) s.destroy();
  }

  heal(): void {
    this.#cut = false;
    for (const fn of this.#deferred.splice(0)) fn();
    for (const s of this.#sockets) s.resume();
    for (const client of this.#held.splice(0)) this.#link(client);
  }

  close(): void {
    this.#server.close();
    for (const s of [...this.#sockets, ...this.#held]) s.destroy();
  }

  #accept(client: Socket): void {
    client.on('error', () => undefined);
    if (this.#cut) {
      // The SYN is answered (the kernel did) but nothing goes any further until heal().
      client.pause();
      this.#held.push(client);
      return;
    }
    this.#link(client);
  }

  #link(client: Socket): void {
    if (client.destroyed) return;
    const upstream = connect(this.#target.port, this.#target.host);
    this.#track(client);
    this.#track(upstream);
    this.#forward(client, upstream);
    this.#forward(upstream, client);
    upstream.on('data', (chunk: Buffer) => {
      this.downstreamBytes += chunk.length;
    });
    if (this.#cut) {
      client.pause();
      upstream.pause();
    } else {
      client.resume(); // a connection held during a cut was paused
    }
  }

  #track(s: Socket): void {
    this.#sockets.add(s);
    s.on('close', () => this.#sockets.delete(s));
  }

  #forward(from: Socket, to: Socket): void {
    const later = (fn: () => void) => (this.#cut ? this.#deferred.push(fn) : fn());
    from.on('data', (chunk: Buffer) => {
      if (!to.destroyed) to.write(chunk);
    });
    from.on('end', () => later(() => to.end()));
    from.on('error', () => later(() => to.destroy()));
    from.on('close', (hadError) => {
      if (hadError) later(() => to.destroy());
    });
  }
}
