/**
 * Multicast on the loopback interface for tests: every socket joins and sends
 * on 127.0.0.1 only, on a port the kernel hands out, so test files running in
 * parallel never hear each other and nothing leaves the machine.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';

export const LOOPBACK = '127.0.0.1';
export const TEST_GROUP = '239.255.70.77';

/** A UDP port nobody holds right now. */
export async function freeUdpPort(): Promise<number> {
  const socket = createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, LOOPBACK, () => resolve());
  });
  const { port } = socket.address();
  await new Promise<void>((resolve) => socket.close(() => resolve()));
  return port;
}

/** Polls `check` until it returns a value other than undefined/false, or fails after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => T | undefined | false, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export interface Heard {
  message: Record<string, unknown>;
  from: RemoteInfo;
}

/** A raw member of the test group: sends crafted datagrams and records what it hears. */
export class GroupProbe {
  readonly heard: Heard[] = [];
  private constructor(
    private readonly socket: Socket,
    readonly port: number,
    readonly group: string,
  ) {}

  static async join(port: number, group = TEST_GROUP): Promise<GroupProbe> {
    const socket = createSocket({ type: 'udp4', reuseAddr: true });
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(port, group, () => resolve());
    });
    socket.addMembership(group, LOOPBACK);
    socket.setMulticastInterface(LOOPBACK);
    socket.setMulticastTTL(1);
    socket.setMulticastLoopback(true);
    const probe = new GroupProbe(socket, port, group);
    socket.on('message', (data, from) => {
      try {
        probe.heard.push({ message: JSON.parse(data.toString('utf8')) as Record<string, unknown>, from });
      } catch {
        // the probe's own junk datagrams
      }
    });
    return probe;
  }

  send(data: string | Buffer | Record<string, unknown>): Promise<void> {
    const bytes = Buffer.isBuffer(data) ? data : Buffer.from(typeof data === 'string' ? data : JSON.stringify(data));
    return new Promise((resolve, reject) => this.socket.send(bytes, this.port, this.group, (err) => (err ? reject(err) : resolve())));
  }

  /** Messages of a type heard so far. */
  ofType(type: string): Heard[] {
    return this.heard.filter((h) => h.message.type === type);
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.socket.close(() => resolve()));
  }
}
