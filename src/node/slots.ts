// SlotPool: the node's task slots, one pool for tool calls and deployed-function calls alike.
import { FieldmeshError } from '../core/errors.js';

/**
 * How many calls run at once on a node (its max concurrency), tools and
 * deployed functions together. A call beyond that waits for a slot, first come
 * first served whichever kind it is, and holds it until it calls `release`.
 */
export class SlotPool {
  readonly size: number;
  #busy = 0;
  readonly #waiting: (() => void)[] = [];

  constructor(size: number) {
    if (!Number.isInteger(size) || size < 1) {
      throw new FieldmeshError('FM_ERR_INVALID_OPTION', `max concurrency: ${String(size)} must be a positive integer`);
    }
    this.size = size;
  }

  /** Slots held now. */
  get busy(): number {
    return this.#busy;
  }

  /**
   * Calls `start` once a slot is free (at once if one is, before returning)
   * and returns a function that withdraws the request if it has not started.
   */
  request(start: () => void): () => void {
    if (this.#busy < this.size && this.#waiting.length === 0) {
      this.#busy++;
      start();
      return () => undefined;
    }
    const go = () => {
      this.#busy++;
      start();
    };
    this.#waiting.push(go);
    return () => {
      const i = this.#waiting.indexOf(go);
      if (i >= 0) this.#waiting.splice(i, 1);
    };
  }

  /** Resolves once a slot is held; rejects with the signal's reason if it aborts first. */
  acquire(signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        withdraw();
        reject(signal.reason);
      };
      const withdraw = this.request(() => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      });
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Gives a held slot back; the longest waiting request starts. */
  release(): void {
    this.#busy--;
    this.#waiting.shift()?.();
  }
}
