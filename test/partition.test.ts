import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster, http, waitFor } from './harness.js';
import { PartitionProxy } from './partition-proxy.js';

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
    // Only A has site:a, which the task prefers: A is ranked first whatever the machine's load, B is where it can go.
    await Promise.all([
      c.startNode({ id: A, capabilities: ['role:shared', 'site:a'], gateway: proxy.address }),
      c.startNode({ id: B, capabilities: ['role:shared'] }),
    ]);
  }, 60_000);
  afterAll(async () => {
    proxy?.close();
    await c.stop();
  });

  it('partition - a task on a black-holed node migrates, and its late result is discarded after the heal', async () => {
    const client = c.gateway.client;
    expect(proxy.connections).toBeGreaterThan(0);
    // The padding makes the TASK frame stand out from pongs, so the test knows the proxy handed it to A before the cut.
    const value = { tag: 'partitioned', pad: 'x'.repeat(4096) };
    const sentBefore = proxy.downstreamBytes;
    const taskId = await client.submitTask({
      tool_name: 'slow_echo',
      tool_args: { ms: 3000, value },
      target: { kind: 'capability', required_capabilities: ['role:shared'], prefer: ['site:a'] },
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
