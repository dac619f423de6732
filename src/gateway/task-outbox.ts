/**
 * Task outbox: how a signed task leaves for its node. To a node that
 * advertised `task_batch` at REGISTER, the tasks sent to it in one turn of the
 * event loop (the burst that follows a group commit) go as TASK_BATCH frames
 * under one gateway signature each, split so that no frame exceeds the frame
 * limit nor MAX_BATCH_TASKS tasks; a task alone in its turn, and every task to a node without the
 * feature, goes as a TASK frame with its own signature.
 */
import type { KeyObject } from 'node:crypto';
import { encodeFrame } from '../protocol/codec.js';
import { MAX_BATCH_TASKS, NodeFeature, PROTOCOL_VERSION } from '../protocol/frames.js';
import { type SignedTaskFields, signTask, signTaskBatch } from '../protocol/signing.js';
import type { NodeConnection } from './registry.js';

export interface OutgoingTask {
  fields: Omit<SignedTaskFields, 'issued_at'>;
  /** False once the attempt was settled (cancelled, node lost) before it left: it is then not sent. */
  wanted(): boolean;
  /** The connection refused the frame. */
  unsent(): void;
}

/** Room in a TASK_BATCH frame for everything but its tasks: envelope, node id, time and signature, with margin. */
const BATCH_ENVELOPE_BYTES = 1024;

export class TaskOutbox {
  readonly #key: KeyObject;
  readonly #maxFrameBytes: number;
  readonly #queues = new Map<NodeConnection, OutgoingTask[]>();
  /** TASK_BATCH frames sent, and the tasks they carried. */
  batches = 0;
  batchedTasks = 0;

  constructor(key: KeyObject, maxFrameBytes: number) {
    this.#key = key;
    this.#maxFrameBytes = maxFrameBytes;
  }

  /** Sends a task to a node's connection now (TASK) or at the end of this turn (TASK_BATCH). */
  send(conn: NodeConnection, task: OutgoingTask): void {
    if (!conn.features?.has(NodeFeature.TaskBatch)) {
      this.#single(conn, task, new Date().toISOString());
      return;
    }
    const queue = this.#queues.get(conn);
    if (queue) {
      queue.push(task);
      return;
    }
    this.#queues.set(conn, [task]);
    process.nextTick(() => this.#flush(conn));
  }

  #flush(conn: NodeConnection): void {
    const queue = this.#queues.get(conn) ?? [];
    this.#queues.delete(conn);
    const tasks = queue.filter((t) => t.wanted());
    if (tasks.length === 0) return;
    const issuedAt = new Date().toISOString();
    const nodeId = tasks[0]?.fields.node_id ?? '';
    let chunk: OutgoingTask[] = [];
    let texts: string[] = [];
    let bytes = BATCH_ENVELOPE_BYTES + Buffer.byteLength(nodeId);
    const send = () => {
      if (chunk.length === 1) this.#single(conn, chunk[0] as OutgoingTask, issuedAt);
      else if (chunk.length > 1) this.#batch(conn, nodeId, issuedAt, chunk, texts);
      chunk = [];
      texts = [];
      bytes = BATCH_ENVELOPE_BYTES + Buffer.byteLength(nodeId);
    };
    for (const t of tasks) {
      const f = t.fields;
      const text = JSON.stringify({
        task_id: f.task_id,
        attempt: f.attempt,
        tool_name: f.tool_name,
        tool_args: f.tool_args,
        timeout_ms: f.timeout_ms,
      });
      const size = Buffer.byteLength(text) + 1;
      if (chunk.length >= MAX_BATCH_TASKS || (chunk.length > 0 && bytes + size > this.#maxFrameBytes)) send();
      chunk.push(t);
      texts.push(text);
      bytes += size;
    }
    send();
  }

  #single(conn: NodeConnection, task: OutgoingTask, issuedAt: string): void {
    const fields: SignedTaskFields = { ...task.fields, issued_at: issuedAt };
    this.#write(conn, encodeFrame('TASK', { ...fields, gateway_signature: signTask(this.#key, fields) }), [task]);
  }

  #batch(conn: NodeConnection, nodeId: string, issuedAt: string, tasks: OutgoingTask[], texts: string[]): void {
    const signature = signTaskBatch(this.#key, { node_id: nodeId, issued_at: issuedAt, tasks: tasks.map((t) => t.fields) });
    // The tasks' JSON was made once, for sizing the batch; the frame is assembled around it.
    const head = JSON.stringify({
      v: PROTOCOL_VERSION,
      type: 'TASK_BATCH',
      node_id: nodeId,
      issued_at: issuedAt,
      gateway_signature: signature,
    });
    if (this.#write(conn, `${head.slice(0, -1)},"tasks":[${texts.join(',')}]}`, tasks)) {
      this.batches += 1;
      this.batchedTasks += tasks.length;
    }
  }

  #write(conn: NodeConnection, text: string, tasks: readonly OutgoingTask[]): boolean {
    try {
      conn.send(text);
      return true;
    } catch {
      for (const t of tasks) t.unsent();
      return false;
    }
  }
}
