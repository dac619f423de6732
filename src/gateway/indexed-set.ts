/**
 * A set of strings that also keeps its members in an array, so a member can
 * be read by position: the scheduler samples large candidate sets at random
 * offsets instead of walking them. Removal swaps the last member into the gap.
 */
export class IndexedSet implements Iterable<string> {
  readonly #items: string[] = [];
  readonly #pos = new Map<string, number>();

  get size(): number {
    return this.#items.length;
  }

  has(id: string): boolean {
    return this.#pos.has(id);
  }

  add(id: string): void {
    if (this.#pos.has(id)) return;
    this.#pos.set(id, this.#items.length);
    this.#items.push(id);
  }

  delete(id: string): boolean {
    const at = this.#pos.get(id);
    if (at === undefined) return false;
    const last = this.#items.pop()!;
    this.#pos.delete(id);
    if (last !== id) {
      this.#items[at] = last;
      this.#pos.set(last, at);
    }
    return true;
  }

  /** The member at `index` (0 ≤ index < size). */
  at(index: number): string {
    return this.#items[index]!;
  }

  [Symbol.iterator](): Iterator<string> {
    return this.#items[Symbol.iterator]();
  }
}
