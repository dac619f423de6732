import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster, http } from './harness.js';

/** Parses Prometheus text exposition into sample lines, failing on any line that is not a comment or a sample. */
function parsePrometheus(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('# HELP ') || line.startsWith('# TYPE ')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (-?[0-9.eE+-]+|NaN|\+Inf|-Inf)$/.exec(line);
    if (!m) throw new Error(`not Prometheus text: ${line}`);
    samples.set(m[1]!, Number(m[2]));
  }
  return samples;
}

describe('metrics', () => {
  const c = new Cluster();

  beforeAll(async () => {
    await c.startGateway();
    await c.startNode({ id: 'm:one', name: 'Metrics One' });
  }, 60_000);
  afterAll(() => c.stop());

  it('metrics - the summary matches the invocations that ran', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await c.gateway.client.toolCall({ tool_name: 'unit_convert', tool_args: { value: i, from_unit: 'km', to_unit: 'm' } });
      expect(r.ok).toBe(true);
    }
    const bad = await c.gateway.client.toolCall({ tool_name: 'fail_with', tool_args: { message: 'boom' } });
    expect(bad.ok).toBe(false);

    const all = await http(c.gateway.api, 'GET', '/v1/metrics/summary');
    expect(all.status).toBe(200);
    expect(all.json).toMatchObject({ ok: true, total_invocations: 4, error_count: 1, success_rate: 75 });
    expect(all.json.avg_latency_ms).toBeGreaterThan(0);
    expect(all.json.p50_ms).toBeLessThanOrEqual(all.json.p99_ms);

    const convert = await http(c.gateway.api, 'GET', '/v1/metrics/summary?tool=unit_convert');
    expect(convert.json).toMatchObject({ tool: 'unit_convert', total_invocations: 3, error_count: 0, success_rate: 100 });
    const node = await http(c.gateway.api, 'GET', '/v1/metrics/summary?node_id=m:one&tool=fail_with');
    expect(node.json).toMatchObject({ node_id: 'm:one', total_invocations: 1, error_count: 1, success_rate: 0 });
    const none = await http(c.gateway.api, 'GET', '/v1/metrics/summary?tool=no_such_tool');
    expect(none.json).toMatchObject({ total_invocations: 0, success_rate: 0, error_count: 0 });
  });

  it('metrics - /metrics is Prometheus text with invocations by tool and node, nodes by status and process metrics', async () => {
    const res = await http(c.gateway.api, 'GET', '/metrics');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toContain('text/plain');
    const samples = parsePrometheus(res.text);
    expect(samples.get('fieldmesh_invocations_total{tool="unit_convert",node_id="m:one",outcome="success"}')).toBe(3);
    expect(samples.get('fieldmesh_invocations_total{tool="fail_with",node_id="m:one",outcome="failure"}')).toBe(1);
    expect(samples.get('fieldmesh_invocation_duration_seconds_count{tool="unit_convert",node_id="m:one"}')).toBe(3);
    expect(samples.get('fieldmesh_nodes{status="ONLINE"}')).toBe(1);
    expect(samples.get('fieldmesh_queue_depth{queue="attempts_in_flight"}')).toBe(0);
    expect([...samples.keys()].some((k) => k.startsWith('fieldmesh_gateway_process_resident_memory_bytes'))).toBe(true);
  });
});
