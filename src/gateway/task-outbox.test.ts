// Tests for the task outbox: the tasks for one node in one turn go as signed TASK_BATCH frames within the frame limit, to nodes that take them.
import { describe, expect, it } from 'vitest';
import { decodeFrame } from '../protocol/codec.js';
import { type Frame, MAX_BATCH_TASKS, type TaskBatchFrame, type TaskFrame } from '../protocol/frames.js';
import { generateSigningKeys, loadSigningKeys, verifyTask, verifyTaskBatch } from '../protocol/signing.js';
import type { NodeConnection } from './registry.js';
import { type OutgoingTask, TaskOutbox } from './task-outbox.js';

const keys = loadSigningKeys(generateSigningKeys().privateKeyPem);
const LIMIT = 64 * 1024;

/** A node connection held in memory: it decodes what the gateway sends with the node's codec. */
class MemoryConnection implements NodeConnection {
  readonly remoteAddress = '127.0.0.1';
  readonly frames: Frame[] = [];
  constructor(
    readonly features: ReadonlySet<string>,
    readonly limit = LIMIT,
  ) {}
  send(text: string): void {
    const decoded = decodeFrame(text, this.limit);
    if (!decoded.ok) throw new Error(decoded.error.message);
    this.frames.push(decoded.frame);
  }
  close(): void {}
  terminate(): void {}
}

const turn = () => new Promise<void>((r) => setImmediate(r));

function task(n: number, extra: Partial<OutgoingTask> = {}, argBytes = 10): OutgoingTask & { lost: boolean } {
  const t = {
    fields: {
      task_id: `task_${n}`,
      attempt: 1,
      node_id: 'node:a',
      tool_name: 'echo',
      tool_args: { n, pad: 'x'.repeat(argBytes) },
      timeout_ms: 1000,
    },
    lost: false,
    wanted: () => true,
    unsent: () => {
      t.lost = true;
    },
    ...extra,
  };
  return t;
}

describe('task outbox', () => {
  it('task outbox - the tasks for one node in one turn leave as one TASK_BATCH whose one signature verifies', async () => {
    const outbox = new TaskOutbox(keys.privateKey, LIMIT);
    const conn = new MemoryConnection(new Set(['task_batch']));
    for (let n = 1; n <= 5; n++) outbox.send(conn, task(n));
    expect(conn.frames).toEqual([]);
    await turn();
    expect(conn.frames.map((f) => f.type)).toEqual(['TASK_BATCH']);
    const batch = conn.frames[0] as TaskBatchFrame;
    expect(batch.node_id).toBe('node:a');
    expect(batch.tasks.map((t) => t.task_id)).toEqual(['task_1', 'task_2', 'task_3', 'task_4', 'task_5']);
    expect(verifyTaskBatch(keys.publicKeyPem, batch, batch.gateway_signature)).toBe(true);
    expect([outbox.batches, outbox.batchedTasks]).toEqual([1, 5]);
  });

  it('task outbox - a task alone in its turn, and every task to a node without task_batch, goes as a signed TASK', async () => {
    const outbox = new TaskOutbox(keys.privateKey, LIMIT);
    const batching = new MemoryConnection(new Set(['task_batch']));
    outbox.send(batching, task(1));
    await turn();
    const older = new MemoryConnection(new Set());
    outbox.send(older, task(2));
    outbox.send(older, task(3));
    expect(older.frames.map((f) => f.type)).toEqual(['TASK', 'TASK']);
    expect(batching.frames.map((f) => f.type)).toEqual(['TASK']);
    for (const f of [...batching.frames, ...older.frames] as TaskFrame[]) {
      expect(verifyTask(keys.publicKeyPem, f, f.gateway_signature)).toBe(true);
    }
    expect(outbox.batches).toBe(0);
  });

  it('task outbox - a batch that would pass the frame limit is split, each part signed on its own', async () => {
    const outbox = new TaskOutbox(keys.privateKey, LIMIT);
    const conn = new MemoryConnection(new Set(['task_batch']));
    // Ten tasks of about 15 KB each: no more than four fit in 64 KB with the envelope.
    for (let n = 1; n <= 10; n++) outbox.send(conn, task(n, {}, 15_000));
    await turn();
    const sizes = conn.frames.map((f) => (f.type === 'TASK_BATCH' ? f.tasks.length : 1));
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(10);
    expect(conn.frames.length).toBeGreaterThanOrEqual(3);
    for (const f of conn.frames) {
      expect(Buffer.byteLength(JSON.stringify(f))).toBeLessThanOrEqual(LIMIT);
      if (f.type === 'TASK_BATCH') expect(verifyTaskBatch(keys.publicKeyPem, f, f.gateway_signature)).toBe(true);
      else if (f.type === 'TASK') expect(verifyTask(keys.publicKeyPem, f, f.gateway_signature)).toBe(true);
    }
    const ids = conn.frames.flatMap((f) =>
      f.type === 'TASK_BATCH' ? f.tasks.map((t) => t.task_id) : f.type === 'TASK' ? [f.task_id] : [],
    );
    expect(ids).toEqual(Array.from({ length: 10 }, (_, i) => `task_${i + 1}`));
  });

  it('task outbox - no batch carries more than MAX_BATCH_TASKS tasks, however small they are', async () => {
    const outbox = new TaskOutbox(keys.privateKey, 16 * 1024 * 1024);
    const conn = new MemoryConnection(new Set(['task_batch']), 16 * 1024 * 1024);
    for (let n = 1; n <= MAX_BATCH_TASKS + 10; n++) outbox.send(conn, task(n, {}, 0));
    await turn();
    expect(conn.frames.map((f) => (f.type === 'TASK_BATCH' ? f.tasks.length : f.type))).toEqual([MAX_BATCH_TASKS, 10]);
  });

  it('task outbox - an attempt settled before its turn ended is not sent, and a refused write reports every task of the frame', async () => {
    const outbox = new TaskOutbox(keys.privateKey, LIMIT);
    const conn = new MemoryConnection(new Set(['task_batch']));
    outbox.send(conn, task(1));
    outbox.send(conn, task(2, { wanted: () => false }));
    outbox.send(conn, task(3));
    await turn();
    expect((conn.frames[0] as TaskBatchFrame).tasks.map((t) => t.task_id)).toEqual(['task_1', 'task_3']);

    const closed = new MemoryConnection(new Set(['task_batch']));
    closed.send = () => {
      throw new Error('closed');
    };
    const lost = [task(4), task(5)];
    for (const t of lost) outbox.send(closed, t);
    await turn();
    expect(lost.map((t) => t.lost)).toEqual([true, true]);
    expect(outbox.batches).toBe(1);
  });
});
