// Node health as users see it through the API: heartbeats missed, timeouts, clean stops, reconnects and a gateway restart.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FieldmeshClient } from '../src/client/index.js';
import type { NodeHealth } from '../src/protocol/api.js';
import { Cluster, http, waitFor } from './harness.js';

const HEARTBEAT_MS = 200;
const DEGRADED_AFTER_MISSED = 2;
const OFFLINE_AFTER_MS = 1200;
const gatewayArgs = [
  '--heartbeat-interval-ms',
  String(HEARTBEAT_MS),
  '--degraded-after-missed',
  String(DEGRADED_AFTER_MISSED),
  '--offline-after-ms',
  String(OFFLINE_AFTER_MS),
];

/** Polls a node's health every ~20 ms and keeps every answer, to read the order of its status changes. */
class HealthRecorder {
  readonly samples: NodeHealth[] = [];
  #running = true;
  readonly #loop: Promise<void>;

  constructor(
    private readonly client: FieldmeshClient,
    private readonly nodeId: string,
  ) {
    this.#loop = this.#run();
  }

  async #run(): Promise<void> {
    while (this.#running) {
      try {
        this.samples.push(await this.client.nodeHealth(this.nodeId));
      } catch {
        // a poll that fails is simply not a sample
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Statuses in the order seen, repeats dropped. */
  transitions(): string[] {
    const out: string[] = [];
    for (const s of this.samples) if (out.at(-1) !== s.status) out.push(s.status);
    return out;
  }

  /** True once `statuses` were seen in this order (other statuses may come between). */
  saw(...statuses: string[]): boolean {
    let i = 0;
    for (const s of this.transitions()) if (s === statuses[i]) i += 1;
    return i === statuses.length;
  }

  withStatus(status: string): NodeHealth[] {
    return this.samples.filter((s) => s.status === status);
  }

  async stop(): Promise<void> {
    this.#running = false;
    await this.#loop;
  }
}

describe('health', () => {
  const c = new Cluster();

  beforeAll(async () => {
    await c.startGateway(gatewayArgs);
  }, 60_000);
  afterAll(() => c.stop());

  it('health - a frozen node goes DEGRADED, then OFFLINE, and comes back ONLINE by itself once it runs again', async () => {
    const node = await c.startNode({ id: 'freeze:node', capabilities: ['role:freeze'] });
    const rec = new HealthRecorder(c.gateway.client, node.id);
    try {
      await waitFor('a first ONLINE sample', () => rec.transitions()[0] === 'ONLINE');
      node.proc.proc.kill('SIGSTOP');
      try {
        await waitFor('OFFLINE', () => rec.saw('ONLINE', 'DEGRADED', 'OFFLINE'));
      } finally {
        node.proc.proc.kill('SIGCONT');
      }
      await waitFor('ONLINE again', () => rec.saw('ONLINE', 'DEGRADED', 'OFFLINE', 'ONLINE'));
    } finally {
      await rec.stop();
    }
    // A reconnect passes through SYNCING between REGISTER and NODE_READY; a poll may or may not catch it.
    expect(rec.transitions().filter((s) => s !== 'SYNCING')).toEqual(['ONLINE', 'DEGRADED', 'OFFLINE', 'ONLINE']);

    const degraded = rec.withStatus('DEGRADED');
    expect(degraded.length).toBeGreaterThan(0);
    for (const h of degraded) {
      // Heartbeats missed, but the connection is still there.
      expect(h).toMatchObject({ ok: true, node_id: node.id, healthy: false, connected: true });
      expect(h.seconds_since_heartbeat).toBeGreaterThanOrEqual((HEARTBEAT_MS * DEGRADED_AFTER_MISSED) / 1000);
    }
    const offline = rec.withStatus('OFFLINE');
    expect(offline.length).toBeGreaterThan(0);
    for (const h of offline) {
      // Timed out: the gateway dropped the connection.
      expect(h).toMatchObject({ healthy: false, connected: false });
    }
    const online = rec.withStatus('ONLINE');
    for (const h of online) expect(h).toMatchObject({ healthy: true, connected: true });
    expect(online.at(-1)?.seconds_since_heartbeat).toBeLessThan(OFFLINE_AFTER_MS / 1000);

    // Back for real: it takes work again.
    const r = await c.gateway.client.toolCall({
      tool_name: 'slow_echo',
      tool_args: { ms: 0, value: 'back' },
      target: { kind: 'explicit', node_id: node.id },
    });
    expect(r).toMatchObject({ ok: true, node_id: node.id, output: { value: 'back', node_id: node.id } });
    expect((await c.gateway.client.listNodes('online')).map((n) => n.node_id)).toContain(node.id);
  });

  it('health - a node stopped cleanly is OFFLINE at once, without passing through DEGRADED', async () => {
    const node = await c.startNode({ id: 'clean:node' });
    const rec = new HealthRecorder(c.gateway.client, node.id);
    try {
      await waitFor('a first ONLINE sample', () => rec.transitions()[0] === 'ONLINE');
      await node.proc.stop(5000);
      expect(node.proc.proc.signalCode ?? node.proc.proc.exitCode).toBe(0);
      await waitFor('OFFLINE', () => rec.transitions().includes('OFFLINE'));
    } finally {
      await rec.stop();
    }
    expect(rec.transitions()).toEqual(['ONLINE', 'OFFLINE']);
    const health = await c.gateway.client.nodeHealth(node.id);
    expect(health).toMatchObject({ status: 'OFFLINE', healthy: false, connected: false });
    expect(typeof health.seconds_since_heartbeat).toBe('number');
    expect(Date.parse(health.last_seen)).not.toBeNaN();
  });

  it('health - a running node reports its heartbeat age and connection', async () => {
    const node = await c.startNode({ id: 'steady:node' });
    // Across several heartbeat intervals, a live node stays fresh.
    for (let i = 0; i < 5; i++) {
      const h = await c.gateway.client.nodeHealth(node.id);
      expect(h).toMatchObject({ ok: true, node_id: node.id, status: 'ONLINE', healthy: true, connected: true });
      expect(h.seconds_since_heartbeat).toBeGreaterThanOrEqual(0);
      expect(h.seconds_since_heartbeat).toBeLessThan(OFFLINE_AFTER_MS / 1000);
      expect(h.load.cpu).toBeGreaterThanOrEqual(0);
      await new Promise((r) => setTimeout(r, HEARTBEAT_MS));
    }
  });

  it('health - ?status filters the node list by status', async () => {
    await waitFor('clean:node OFFLINE and steady:node ONLINE', async () => {
      const all = await c.gateway.client.listNodes();
      const status = (id: string) => all.find((n) => n.node_id === id)?.status;
      return status('clean:node') === 'OFFLINE' && status('steady:node') === 'ONLINE';
    });
    const online = await c.gateway.client.listNodes('online');
    expect(online.length).toBeGreaterThan(0);
    expect(online.every((n) => n.status === 'ONLINE')).toBe(true);
    expect(online.map((n) => n.node_id)).toContain('steady:node');
    expect(online.map((n) => n.node_id)).not.toContain('clean:node');
    const offline = await c.gateway.client.listNodes('offline');
    expect(offline.every((n) => n.status === 'OFFLINE')).toBe(true);
    expect(offline.map((n) => n.node_id)).toContain('clean:node');
    // Case does not matter; a status that does not exist is refused.
    const upper = await http(c.gateway.api, 'GET', '/v1/nodes?status=ONLINE');
    expect(upper.json.nodes.map((n: { node_id: string }) => n.node_id)).toEqual(online.map((n) => n.node_id));
    const bad = await http(c.gateway.api, 'GET', '/v1/nodes?status=asleep');
    expect(bad.status).toBe(400);
    expect(bad.json.error.code).toBe('FM_ERR_INVALID_REQUEST');
  });

  it('health - a call in flight on a node that times out fails over at once to another node', async () => {
    const stuck = await c.startNode({ id: 'stuck:node', capabilities: ['role:pair', 'role:stuck'], extraArgs: ['--max-concurrency', '2'] });
    await c.startNode({ id: 'spare:node', capabilities: ['role:pair'], extraArgs: ['--max-concurrency', '2'] });
    // Load the spare so the idle stuck node is ranked first.
    const busy = c.gateway.client.toolCall({
      tool_name: 'slow_echo',
      tool_args: { ms: 1500 },
      target: { kind: 'explicit', node_id: 'spare:node' },
    });
    await waitFor('spare busy', async () => (await c.gateway.client.getNode('spare:node')).load.in_flight > 0);
    const call = c.gateway.client.toolCall({
      tool_name: 'slow_echo',
      tool_args: { ms: 1000, value: 'moved' },
      // prefer puts the stuck node first even when a busy machine makes its heartbeats late.
      target: { kind: 'capability', required_capabilities: ['role:pair'], prefer: ['role:stuck'] },
      // Long enough that only losing the node, not the deadline, can end the first attempt.
      timeout_ms: 8000,
    });
    await waitFor('stuck busy', async () => (await c.gateway.client.getNode('stuck:node')).load.in_flight > 0);
    stuck.proc.proc.kill('SIGSTOP');
    try {
      const r = await call;
      expect(r).toMatchObject({ ok: true, node_id: 'spare:node', output: { value: 'moved', node_id: 'spare:node' }, degraded: true });
      expect(r.execution_path).toEqual(['stuck:node (failed)', 'spare:node (success)']);
      const task = await c.gateway.client.getTask(r.task_id);
      expect(task.attempts.map((a) => [a.node_id, a.outcome, a.error?.code ?? null])).toEqual([
        ['stuck:node', 'failed', 'FM_ERR_CONNECTION_LOST'],
        ['spare:node', 'success', null],
      ]);
      expect((await c.gateway.client.nodeHealth('stuck:node')).status).toBe('OFFLINE');
    } finally {
      stuck.proc.proc.kill('SIGCONT');
      await busy;
    }
  });

  it('health - after a gateway restart on the same data dir, known nodes are listed OFFLINE from the store', async () => {
    const before = await c.gateway.client.listNodes();
    expect(before.map((n) => n.node_id)).toEqual(expect.arrayContaining(['freeze:node', 'clean:node', 'steady:node']));
    await c.gateway.proc.stop(5000);
    // The nodes keep dialling the old port, so none of them reconnects to the new gateway.
    const g = await c.startGateway(gatewayArgs);
    const after = await g.client.listNodes();
    expect(after.map((n) => n.node_id)).toEqual(before.map((n) => n.node_id));
    expect(after.every((n) => n.status === 'OFFLINE')).toBe(true);
    expect(await g.client.listNodes('online')).toEqual([]);
    const freeze = after.find((n) => n.node_id === 'freeze:node');
    const freezeBefore = before.find((n) => n.node_id === 'freeze:node');
    // What the node advertised survives the restart.
    expect(freeze?.capabilities).toEqual(freezeBefore?.capabilities);
    expect(freeze?.capabilities).toContain('role:freeze');
    expect(freeze?.name).toBe(freezeBefore?.name);
    expect(await g.client.nodeHealth('freeze:node')).toMatchObject({ status: 'OFFLINE', healthy: false, connected: false });
    const health = await g.client.health();
    expect(health.nodes_online).toBe(0);
    const res = await http(g.api, 'POST', '/v1/tool_call', JSON.stringify({ tool_name: 'slow_echo', tool_args: { ms: 0 } }));
    expect(res.status).toBe(503);
    expect(res.json.error.code).toBe('FM_ERR_NO_CAPABLE_NODE');
  });
});
