import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster, waitFor } from './harness.js';

describe('targeting', () => {
  const c = new Cluster();

  beforeAll(async () => {
    await c.startGateway();
    await Promise.all([
      c.startNode({ id: 'android:device_a', name: 'Android Device A', platform: 'android' }),
      c.startNode({
        id: 'rpi:device_b',
        name: 'Raspberry Pi B',
        platform: 'linux',
        capabilities: ['hardware:gps'],
        location: '37.7749,-122.4194',
      }),
    ]);
  }, 60_000);
  afterAll(() => c.stop());

  it('targeting - explicit runs on the named node', async () => {
    const r = await c.gateway.client.toolCall({
      tool_name: 'slow_echo',
      tool_args: { ms: 0, value: 1 },
      target: { kind: 'explicit', node_id: 'rpi:device_b' },
    });
    expect(r.ok).toBe(true);
    expect(r.node_id).toBe('rpi:device_b');
    expect(r.output).toEqual({ value: 1, node_id: 'rpi:device_b' });
    expect(r.execution_path).toEqual(['rpi:device_b']);
    expect(r.verified).toBe(true);
    expect(r.degraded).toBe(false);
  });

  it('targeting - capability picks the node with every capability', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await c.gateway.client.toolCall({
        tool_name: 'slow_echo',
        tool_args: { ms: 0 },
        target: { kind: 'capability', required_capabilities: ['hardware:gps', 'platform:linux'] },
      });
      expect(r.node_id).toBe('rpi:device_b');
    }
  });

  it('targeting - local spreads calls over the nodes with the tool', async () => {
    const results = await Promise.all(
      Array.from({ length: 6 }, () =>
        c.gateway.client.toolCall({ tool_name: 'slow_echo', tool_args: { ms: 200 }, target: { kind: 'local' } }),
      ),
    );
    expect(results.every((r) => r.ok)).toBe(true);
    expect(new Set(results.map((r) => r.node_id))).toEqual(new Set(['android:device_a', 'rpi:device_b']));
  });

  it('targeting - no capable node names what was required', async () => {
    const err = await c.gateway.client
      .toolCall({ tool_name: 'slow_echo', tool_args: { ms: 0 }, target: { kind: 'capability', required_capabilities: ['gpu:available'] } })
      .catch((e: unknown) => e as { code: string; status: number; message: string });
    expect(err).toMatchObject({ code: 'FM_ERR_NO_CAPABLE_NODE', status: 503 });
    expect((err as { message: string }).message).toContain('gpu:available');
  });

  it('targeting - a node killed mid-call fails over to the next candidate', async () => {
    const victim = await c.startNode({ id: 'victim:node', capabilities: ['role:victim', 'role:shared'] });
    await c.startNode({ id: 'backup:node', capabilities: ['role:shared'] });
    // Load the backup so the idle victim is ranked first.
    const pending = c.gateway.client.toolCall({
      tool_name: 'slow_echo',
      tool_args: { ms: 1500, value: 'x' },
      target: { kind: 'explicit', node_id: 'backup:node' },
    });
    await waitFor('backup busy', async () => (await c.gateway.client.getNode('backup:node')).load.in_flight > 0);
    const call = c.gateway.client.toolCall({
      tool_name: 'slow_echo',
      tool_args: { ms: 2000, value: 'survives' },
      // prefer puts the victim first even when a busy machine makes its heartbeats late (DEGRADED ranks last otherwise).
      target: { kind: 'capability', required_capabilities: ['role:shared'], prefer: ['role:victim'] },
    });
    await waitFor('victim busy', async () => (await c.gateway.client.getNode('victim:node')).load.in_flight > 0);
    victim.proc.proc.kill('SIGKILL');
    const r = await call;
    await pending;
    expect(r.ok).toBe(true);
    expect(r.output).toEqual({ value: 'survives', node_id: 'backup:node' });
    expect(r.execution_path).toEqual(['victim:node (failed)', 'backup:node (success)']);
    expect(r.degraded).toBe(true);
    const task = await c.gateway.client.getTask(r.task_id);
    expect(task.attempts.map((a) => [a.node_id, a.outcome, a.error?.code ?? null])).toEqual([
      ['victim:node', 'failed', 'FM_ERR_CONNECTION_LOST'],
      ['backup:node', 'success', null],
    ]);
    expect((await c.gateway.client.getNode('victim:node')).status).toBe('OFFLINE');
  });
});
