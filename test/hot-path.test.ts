// The dispatch hot path keeps its guarantees under load: every answered tool call is in the store, with its verified result,
// even when the gateway is killed right after the last answer.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ToolCallResult } from '../src/protocol/api.js';
import { Cluster, waitFor } from './harness.js';

describe('hot path', () => {
  const c = new Cluster();
  const nodes = ['hot:a', 'hot:b'];

  beforeAll(async () => {
    await c.startGateway();
    await Promise.all(nodes.map((id) => c.startNode({ id })));
  }, 60_000);
  afterAll(() => c.stop());

  it('hot path - 300 concurrent tool calls: each answer is verified, and after kill -9 the store holds every task with that answer', async () => {
    const client = c.gateway.client;
    const answers: ToolCallResult[] = await Promise.all(
      Array.from({ length: 300 }, (_, i) =>
        client.toolCall({ tool_name: 'unit_convert', tool_args: { value: i + 0.5, from_unit: 'miles', to_unit: 'km' } }),
      ),
    );
    answers.forEach((r, i) => {
      expect(r, `call ${i}`).toMatchObject({ ok: true, verified: true, output: { unit: 'km' } });
      expect((r.output as { value: number }).value).toBeCloseTo((i + 0.5) * 1.609344, 9);
      expect(nodes).toContain(r.node_id);
    });
    expect(new Set(answers.map((r) => r.task_id)).size).toBe(300);
    // Both nodes took calls: the TASK frames batched per node still reach each node.
    expect(new Set(answers.map((r) => r.node_id)).size).toBe(2);

    await c.restartGateway();
    const after = c.gateway.client;
    await waitFor('nodes back online', async () => (await after.listNodes('online')).length === 2, 30_000);
    for (const r of answers) {
      const task = await after.getTask(r.task_id);
      expect(task.status, r.task_id).toBe('succeeded');
      expect(task.result).toMatchObject({ ok: true, verified: true, output: r.output, result_hash: r.result_hash, node_id: r.node_id });
      expect(task.attempts.map((a) => [a.attempt, a.node_id, a.outcome, a.verified])).toEqual([[1, r.node_id, 'success', true]]);
      expect(task.attempts[0]?.node_signature).toMatch(/\S/);
    }
  }, 90_000);
});
