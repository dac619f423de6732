import { connect, createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseHostPort } from '../src/core/address.js';
import { Cluster, http, waitFor } from './harness.js';

/**
 * A loopback TCP proxy the test can partition. `cut()` black-holes both
 * directions without closing anything: sockets stop being read (their bytes
 * wait, as TCP would retransmit them), nothing is written, and new
 * connections are accepted but held. `heal()` forwards everything again.
 */
class PartitionProxy {
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

async function staleResults(api: string): Promise<number> {
  const res = await http(api, 'GET', '/healthz');
  return Number(res.json.stale_results);
}

describe('partition', () => {
  const c = new Cluster();
  const A = 'partition:a';
  const B = 'partition:b';
  let proxy: PartitionProxy;

  beforeAll(async () => {
    await c.startGateway(['--heartbeat-interval-ms', '200', '--offline-after-ms', '1000']);
    proxy = new PartitionProxy(c.gateway.listen);
    await proxy.start();
    // Two slots each, so one busy slot ranks B below the idle A on any machine.
    const slots = ['--max-concurrency', '2'];
    await Promise.all([
      c.startNode({ id: A, capabilities: ['role:shared'], extraArgs: slots, gateway: proxy.address }),
      c.startNode({ id: B, capabilities: ['role:shared'], extraArgs: slots }),
    ]);
  }, 60_000);
  afterAll(async () => {
    proxy?.close();
    await c.stop();
  });

  it('partition - a task on a black-holed node migrates, and its late result is discarded after the heal', async () => {
    const client = c.gateway.client;
    expect(proxy.connections).toBeGreaterThan(0);
    // Load B so the idle A is ranked first for the shared capability.
    const filler = client.toolCall({
      tool_name: 'slow_echo',
      tool_args: { ms: 1500, value: 'filler' },
      target: { kind: 'explicit', node_id: B },
    });
    await waitFor('B busy', async () => (await client.getNode(B)).load.in_flight > 0);
    // The padding makes the TASK frame stand out from pongs, so the test knows the proxy handed it to A before the cut.
    const value = { tag: 'partitioned', pad: 'x'.repeat(4096) };
    const sentBefore = proxy.downstreamBytes;
    const taskId = await client.submitTask({
      tool_name: 'slow_echo',
      tool_args: { ms: 3000, value },
      target: { kind: 'capability', required_capabilities: ['role:shared'] },
    });
    await waitFor('A running the task', async () => {
      const t = await client.getTask(taskId);
      return t.status === 'running' && t.attempts.length === 1 && t.attempts[0]?.node_id === A;
    });
    await waitFor('TASK frame delivered to A', () => proxy.downstreamBytes - sentBefore >= value.pad.length);
    const staleBefore = await staleResults(c.gateway.api);

    proxy.cut();
    await waitFor('A OFFLINE', async () => (await client.getNode(A)).status === 'OFFLINE', 10_000);
    const task = await waitFor(
      'task finished',
      async () => {
        const t = await client.getTask(taskId, 5_000);
        return ['succeeded', 'failed', 'cancelled'].includes(t.status) ? t : undefined;
      },
      20_000,
    );
    expect((await filler).ok).toBe(true);
    expect(task.status).toBe('succeeded');
    expect(task.result?.output).toEqual({ value, node_id: B });
    expect(task.result?.execution_path).toEqual([`${A} (failed)`, `${B} (success)`]);
    expect(task.attempts.map((a) => [a.attempt, a.node_id, a.outcome, a.error?.code ?? null])).toEqual([
      [1, A, 'failed', 'FM_ERR_CONNECTION_LOST'],
      [2, B, 'success', null],
    ]);
    // Still cut: A cannot have reported anything.
    expect((await client.getNode(A)).status).toBe('OFFLINE');

    proxy.heal();
    await waitFor('A ONLINE again', async () => (await client.getNode(A)).status === 'ONLINE', 20_000);
    await waitFor('stale result discarded', async () => (await staleResults(c.gateway.api)) > staleBefore, 10_000);
    const after = await client.getTask(taskId);
    expect(after.status).toBe('succeeded');
    expect(after.attempts).toEqual(task.attempts);
    expect(after.result).toEqual(task.result);
    expect(after.attempts.filter((a) => a.outcome === 'success').map((a) => a.node_id)).toEqual([B]);

    // The healed node takes work again.
    const again = await client.toolCall({
      tool_name: 'slow_echo',
      tool_args: { ms: 0, value: 'healed' },
      target: { kind: 'explicit', node_id: A },
    });
    expect(again.ok).toBe(true);
    expect(again.output).toEqual({ value: 'healed', node_id: A });
    expect(again.execution_path).toEqual([A]);
  }, 60_000);
});
