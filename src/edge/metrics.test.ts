// Tests for EdgeMetrics and InvocationRecord: counts, success rate, mean latency and the summary over known records.
import { describe, expect, it } from 'vitest';
import { EdgeMetrics, InvocationRecord } from './metrics.js';

function known(): EdgeMetrics {
  const metrics = new EdgeMetrics();
  metrics.record(new InvocationRecord({ functionId: 'fn-1', nodeId: 'edge-01', durationMs: 10, success: true }));
  metrics.record(new InvocationRecord({ functionId: 'fn-1', nodeId: 'edge-02', durationMs: 20, success: true }));
  metrics.record(new InvocationRecord({ functionId: 'fn-2', nodeId: 'edge-01', durationMs: 30, success: false, error: 'boom' }));
  metrics.record({ functionId: 'fn-1', nodeId: 'edge-01', durationMs: 60, success: true });
  return metrics;
}

describe('edge - metrics', () => {
  it('edge - InvocationRecord defaults timestamp to now and error to empty', () => {
    const before = Date.now();
    const r = new InvocationRecord({ functionId: 'fn-1', nodeId: 'edge-01', durationMs: 42.5, success: true });
    expect(r.timestamp.getTime()).toBeGreaterThanOrEqual(before);
    expect(r.error).toBe('');
    expect(() => new InvocationRecord({ functionId: 'f', nodeId: 'n', durationMs: -1, success: true })).toThrow('durationMs: -1');
  });

  it('edge - figures over known records', () => {
    const metrics = known();
    expect(metrics.totalInvocations()).toBe(4);
    expect(metrics.totalInvocations('fn-1')).toBe(3);
    expect(metrics.totalInvocations('fn-2')).toBe(1);
    expect(metrics.totalInvocations('nope')).toBe(0);
    expect(metrics.successRate()).toBe(75);
    expect(metrics.avgLatencyMs()).toBe(30);
    expect(metrics.errorCount()).toBe(1);
    expect(metrics.summary()).toEqual({ totalInvocations: 4, successRate: 75, avgLatencyMs: 30, errorCount: 1 });
  });

  it('edge - figures with no records are zero', () => {
    expect(new EdgeMetrics().summary()).toEqual({ totalInvocations: 0, successRate: 0, avgLatencyMs: 0, errorCount: 0 });
  });

  it('edge - all failures give a success rate of 0 and all successes 100', () => {
    const fail = new EdgeMetrics();
    const pass = new EdgeMetrics();
    for (let i = 0; i < 3; i++) {
      fail.record({ functionId: 'f', nodeId: 'n', durationMs: 1, success: false });
      pass.record({ functionId: 'f', nodeId: 'n', durationMs: 1, success: true });
    }
    expect(fail.successRate()).toBe(0);
    expect(pass.successRate()).toBe(100);
  });

  it('edge - maxRecords keeps only the most recent records', () => {
    const metrics = new EdgeMetrics({ maxRecords: 2 });
    metrics.record({ functionId: 'a', nodeId: 'n', durationMs: 100, success: false });
    metrics.record({ functionId: 'b', nodeId: 'n', durationMs: 10, success: true });
    metrics.record({ functionId: 'c', nodeId: 'n', durationMs: 20, success: true });
    expect(metrics.list().map((r) => r.functionId)).toEqual(['b', 'c']);
    expect(metrics.summary()).toEqual({ totalInvocations: 2, successRate: 100, avgLatencyMs: 15, errorCount: 0 });
    expect(() => new EdgeMetrics({ maxRecords: 0 })).toThrow('EdgeMetrics.maxRecords: 0');
  });

  it('edge - concurrent recorders lose no records', async () => {
    const metrics = new EdgeMetrics();
    await Promise.all(
      Array.from({ length: 100 }, async (_, i) => {
        await null;
        metrics.record({ functionId: `fn-${i % 4}`, nodeId: 'n', durationMs: i, success: i % 10 !== 0 });
      }),
    );
    expect(metrics.totalInvocations()).toBe(100);
    expect(metrics.totalInvocations('fn-0')).toBe(25);
    expect(metrics.errorCount()).toBe(10);
    expect(metrics.successRate()).toBe(90);
    expect(metrics.avgLatencyMs()).toBe(49.5);
  });
});
