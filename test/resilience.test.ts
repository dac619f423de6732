import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster, http, type NodeSpec, waitFor } from './harness.js';

const SF = '37.7749,-122.4194';
const OAKLAND = '37.8044,-122.2712';
const LA = '34.0522,-118.2437';

describe('resilience - targets', () => {
  const c = new Cluster();

  beforeAll(async () => {
    await c.startGateway();
    await Promise.all([
      c.startNode({ id: 'geo:sf', location: SF, capabilities: ['role:geo'] }),
      c.startNode({ id: 'geo:oakland', location: OAKLAND, capabilities: ['role:geo', 'hardware:gps'] }),
      c.startNode({ id: 'geo:la', location: LA, capabilities: ['role:geo'] }),
      c.startNode({ id: 'geo:nowhere', capabilities: ['role:geo'] }),
    ]);
  }, 60_000);
  afterAll(() => c.stop());

  it('geographic - picks the nearest node inside the radius', async () => {
    const r = await c.gateway.client.toolCall({
      tool_name: 'slow_echo',
      tool_args: { ms: 0 },
      target: { kind: 'geographic', center: { lat: 37.78, lon: -122.41 }, radius_meters: 50_000 },
    });
    expect(r.ok).toBe(true);
    expect(r.node_id).toBe('geo:sf');
  });

  it('geographic - a node outside the radius or without a location never matches', async () => {
    // 15 km around Oakland holds Oakland and San Francisco (13 km away); with SF excluded by capability only Oakland is left.
    const r = await c.gateway.client.toolCall({
      tool_name: 'slow_echo',
      tool_args: { ms: 0 },
      target: {
        kind: 'geographic',
        center: { lat: 37.8044, lon: -122.2712 },
        radius_meters: 15_000,
        required_capabilities: ['hardware:gps'],
      },
    });
    expect(r.node_id).toBe('geo:oakland');
    const err = await c.gateway.client
      .toolCall({
        tool_name: 'slow_echo',
        tool_args: { ms: 0 },
        target: { kind: 'geographic', center: { lat: 0, lon: 0 }, radius_meters: 100_000 },
      })
      .catch((e: unknown) => e as { code: string; status: number });
    expect(err).toMatchObject({ code: 'FM_ERR_NO_NODE_IN_AREA', status: 503 });
  });

  it('prefer - ranks a node higher without excluding the others', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await c.gateway.client.toolCall({
        tool_name: 'slow_echo',
        tool_args: { ms: 0 },
        target: { kind: 'local', prefer: ['hardware:gps'] },
      });
      expect(r.node_id).toBe('geo:oakland');
    }
    const r = await c.gateway.client.toolCall({
      tool_name: 'slow_echo',
      tool_args: { ms: 0 },
      target: { kind: 'local', prefer: ['hardware:lidar'] },
    });
    expect(r.ok).toBe(true);
  });

  it('failover_chain - tries the nodes in order and records each attempt', async () => {
    const r = await c.gateway.client.toolCall({
      tool_name: 'fail_on_node',
      tool_args: { fail_node: 'geo:la', value: 7 },
      target: { kind: 'failover_chain', nodes: ['geo:la', 'geo:oakland', 'geo:sf'] },
    });
    expect(r.ok).toBe(true);
    expect(r.output).toEqual({ value: 7, node_id: 'geo:oakland' });
    expect(r.execution_path).toEqual(['geo:la (failed)', 'geo:oakland (success)']);
    expect(r.degraded).toBe(true);
  });

  it('failover_chain - a chain whose every node fails returns the whole path', async () => {
    const r = await c.gateway.client.toolCall({
      tool_name: 'fail_with',
      tool_args: { message: 'always', retryable: true },
      target: { kind: 'failover_chain', nodes: ['geo:la', 'geo:sf'] },
    });
    expect(r.ok).toBe(false);
    expect(r.execution_path).toEqual(['geo:la (failed)', 'geo:sf (failed)']);
    expect(r.error?.message).toContain('always');
  });

  it('load_balanced - one sub-task per item, spread over nodes, results in item order', async () => {
    const items = Array.from({ length: 8 }, (_, i) => `item-${i}`);
    const r = await c.gateway.client.toolCall({
      tool_name: 'slow_echo',
      tool_args: { ms: 100, value: '{{item}}#{{item_index}}' },
      target: { kind: 'load_balanced', min_nodes: 2, failover: true },
      for_each: items,
    });
    expect(r.ok).toBe(true);
    const results = (r.output as { results: { value: string; node_id: string }[] }).results;
    expect(results.map((x) => x.value)).toEqual(items.map((x, i) => `${x}#${i}`));
    const used = new Set(results.map((x) => x.node_id));
    expect(used.size).toBeGreaterThanOrEqual(2);
    expect(new Set(r.execution_path)).toEqual(used);
  });

  it('load_balanced - "{{item}}" passes each item as the whole arguments', async () => {
    const items = [
      { ms: 0, value: 'a' },
      { ms: 0, value: 'b' },
      { ms: 0, value: 'c' },
    ];
    const r = await c.gateway.client.toolCall({
      tool_name: 'slow_echo',
      tool_args: '{{item}}',
      target: { kind: 'load_balanced' },
      for_each: items,
    });
    expect((r.output as { results: { value: string }[] }).results.map((x) => x.value)).toEqual(['a', 'b', 'c']);
  });

  it('load_balanced - a failed item is retried on another node', async () => {
    const r = await c.gateway.client.toolCall({
      tool_name: 'fail_on_node',
      tool_args: { fail_node: 'geo:sf', value: '{{item}}' },
      target: { kind: 'load_balanced', min_nodes: 4 },
      for_each: [1, 2, 3, 4, 5, 6, 7, 8],
    });
    expect(r.ok).toBe(true);
    const results = (r.output as { results: { value: number; node_id: string }[] }).results;
    expect(results.map((x) => x.value)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(results.every((x) => x.node_id !== 'geo:sf')).toBe(true);
    expect(r.execution_path).toContain('geo:sf (failed)');
    expect(r.degraded).toBe(true);
  });

  it('load_balanced - fewer online nodes than min_nodes is refused', async () => {
    const res = await http(
      c.gateway.api,
      'POST',
      '/v1/tool_call',
      JSON.stringify({ tool_name: 'slow_echo', tool_args: { ms: 0 }, target: { kind: 'load_balanced', min_nodes: 9 }, for_each: [1] }),
    );
    expect(res.status).toBe(503);
    expect(res.json.error.code).toBe('FM_ERR_NO_CAPABLE_NODE');
  });
});

describe('resilience - retry, idempotency, cancel', () => {
  const c = new Cluster();

  beforeAll(async () => {
    await c.startGateway();
    await Promise.all([c.startNode({ id: 'r:one', capabilities: ['role:r'] }), c.startNode({ id: 'r:two', capabilities: ['role:r'] })]);
  }, 60_000);
  afterAll(() => c.stop());

  it('retry - waits backoff_ms × multiplier^(n-2) between attempts on the same explicit node', async () => {
    const r = await c.gateway.client.toolCall({
      tool_name: 'fail_with',
      tool_args: { message: 'flaky', retryable: true },
      target: { kind: 'explicit', node_id: 'r:one' },
      retry: { max_attempts: 4, backoff_ms: 200, backoff_multiplier: 2, max_backoff_ms: 500 },
    });
    expect(r.ok).toBe(false);
    const task = await c.gateway.client.getTask(r.task_id);
    expect(task.attempts.map((a) => a.node_id)).toEqual(['r:one', 'r:one', 'r:one', 'r:one']);
    const starts = task.attempts.map((a) => Date.parse(a.started_at));
    const ends = task.attempts.map((a) => Date.parse(a.finished_at ?? a.started_at));
    const waits = starts.slice(1).map((s, i) => s - (ends[i] ?? 0));
    // Planned waits 200, 400, 500 (capped); the store's millisecond timestamps and scheduling give some slack.
    [200, 400, 500].forEach((planned, i) => {
      expect(waits[i]).toBeGreaterThanOrEqual(planned - 5);
      expect(waits[i]).toBeLessThan(planned + 400);
    });
  });

  it('retry - failover moves each retry to the next candidate', async () => {
    const r = await c.gateway.client.toolCall({
      tool_name: 'fail_with',
      tool_args: { message: 'flaky', retryable: true },
      target: { kind: 'capability', required_capabilities: ['role:r'] },
      retry: { max_attempts: 2, backoff_ms: 0, failover: true },
    });
    expect(r.ok).toBe(false);
    expect(new Set(r.execution_path)).toEqual(new Set(['r:one (failed)', 'r:two (failed)']));
  });

  it('retry - errors that are not retryable are not retried', async () => {
    const r = await c.gateway.client.toolCall({
      tool_name: 'unit_convert',
      tool_args: { value: 1, from_unit: 'km', to_unit: 'kg' },
      target: { kind: 'local' },
      retry: { max_attempts: 3, backoff_ms: 0 },
    });
    expect(r.ok).toBe(false);
    expect(r.execution_path).toHaveLength(1);
    expect(r.error?.code).toBe('FM_ERR_INCOMPATIBLE_UNITS');
  });

  it('idempotency - a repeated key returns the existing task and runs the tool once', async () => {
    const body = { tool_name: 'slow_echo', tool_args: { ms: 300, value: 'once' }, idempotency_key: 'order-42' };
    const [a, b] = await Promise.all([c.gateway.client.toolCall(body), c.gateway.client.toolCall(body)]);
    expect(a.task_id).toBe(b.task_id);
    expect(b.output).toEqual(a.output);
    const again = await http(c.gateway.api, 'POST', '/v1/tasks', JSON.stringify(body));
    expect(again.json.task_id).toBe(a.task_id);
    const task = await c.gateway.client.getTask(a.task_id);
    expect(task.attempts).toHaveLength(1);
  });

  it('cancel - stops the running tool on its node and records cancelled', async () => {
    const id = await c.gateway.client.submitTask({
      tool_name: 'slow_echo',
      tool_args: { ms: 20_000 },
      target: { kind: 'explicit', node_id: 'r:two' },
    });
    await waitFor('running', async () => (await c.gateway.client.getTask(id)).status === 'running');
    await waitFor('node busy', async () => (await c.gateway.client.getNode('r:two')).load.in_flight > 0);
    const t = await c.gateway.client.cancelTask(id);
    expect(t.status).toBe('cancelled');
    expect(t.result?.error?.code).toBe('FM_ERR_CANCELLED');
    // The node's own heartbeat reports no tool running once the worker is terminated.
    await waitFor('node idle', async () => (await c.gateway.client.getNode('r:two')).load.in_flight === 0, 5000);
  });
});

describe('resilience - offline queue', () => {
  const c = new Cluster();
  const spec: NodeSpec = { id: 'field:pump', name: 'Pump station' };

  beforeAll(async () => {
    await c.startGateway(['--heartbeat-interval-ms', '200', '--offline-after-ms', '1000']);
  }, 60_000);
  afterAll(() => c.stop());

  it('offline queue - a task for an offline node waits, survives a gateway restart, and runs when the node is back', async () => {
    const node = await c.startNode(spec);
    await node.proc.stop();
    await waitFor('pump offline', async () => (await c.gateway.client.getNode('field:pump')).status === 'OFFLINE');
    const res = await http(
      c.gateway.api,
      'POST',
      '/v1/tasks',
      JSON.stringify({
        tool_name: 'slow_echo',
        tool_args: { ms: 0, value: 'stored' },
        target: { kind: 'explicit', node_id: 'field:pump' },
        offline_behavior: { mode: 'queue', ttl_seconds: 120, retry_interval_seconds: 1 },
      }),
    );
    expect(res.status).toBe(202);
    expect(res.json.status).toBe('queued');
    const id = String(res.json.task_id);
    expect((await c.gateway.client.getTask(id)).status).toBe('queued');

    await c.restartGateway();
    expect((await c.gateway.client.getTask(id)).status).toBe('queued');

    await c.startNode(spec);
    const done = await c.gateway.client.getTask(id, 10_000);
    expect(done.status).toBe('succeeded');
    expect(done.result?.output).toEqual({ value: 'stored', node_id: 'field:pump' });
  });

  it('offline queue - a queued task expires with FM_ERR_EXPIRED', async () => {
    await waitFor('pump online', async () => (await c.gateway.client.getNode('field:pump')).status === 'ONLINE');
    const pump = c.procs.at(-1)!;
    await pump.stop();
    await waitFor('pump offline', async () => (await c.gateway.client.getNode('field:pump')).status === 'OFFLINE');
    const r = await c.gateway.client.toolCall({
      tool_name: 'slow_echo',
      tool_args: { ms: 0 },
      target: { kind: 'explicit', node_id: 'field:pump' },
      offline_behavior: { mode: 'queue', ttl_seconds: 1 },
    });
    expect(r.status).toBe('queued');
    const t = await c.gateway.client.getTask(r.task_id, 10_000);
    expect(t.status).toBe('failed');
    expect(t.result?.error?.code).toBe('FM_ERR_EXPIRED');
  });

  it('offline queue - mode "fail" refuses a task for an offline node', async () => {
    const res = await http(
      c.gateway.api,
      'POST',
      '/v1/tool_call',
      JSON.stringify({
        tool_name: 'slow_echo',
        tool_args: { ms: 0 },
        target: { kind: 'explicit', node_id: 'field:pump' },
        offline_behavior: { mode: 'fail' },
      }),
    );
    expect(res.status).toBe(503);
    expect(res.json.error.code).toBe('FM_ERR_NODE_OFFLINE');
  });

  it('migration - an explicit task whose node dies mid-call waits in the queue and runs as the next attempt', async () => {
    await c.startNode(spec);
    const id = await c.gateway.client.submitTask({
      tool_name: 'slow_echo',
      tool_args: { ms: 3000, value: 'again' },
      target: { kind: 'explicit', node_id: 'field:pump' },
      offline_behavior: { mode: 'queue', ttl_seconds: 120, retry_interval_seconds: 1 },
    });
    await waitFor('pump busy', async () => (await c.gateway.client.getNode('field:pump')).load.in_flight > 0);
    const pump = c.procs.at(-1)!;
    pump.proc.kill('SIGKILL');
    await waitFor('queued', async () => (await c.gateway.client.getTask(id)).status === 'queued');
    await c.startNode(spec);
    const done = await c.gateway.client.getTask(id, 15_000);
    expect(done.status).toBe('succeeded');
    expect(done.attempts.map((a) => [a.attempt, a.outcome, a.error?.code ?? null])).toEqual([
      [1, 'failed', 'FM_ERR_CONNECTION_LOST'],
      [2, 'success', null],
    ]);
  });
});
