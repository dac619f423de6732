/**
 * Freshness and replay checks for signed discovery messages: `sent_at` must lie
 * within the clock-skew window of this machine's clock, and a nonce is
 * accepted once while its message could still pass that check.
 */

export type FreshnessVerdict = 'ok' | 'stale' | 'replay';

export interface ReplayGuardOptions {
  /** Allowed distance between `sent_at` and this clock, in ms. */
  windowMs: number;
  /** Nonces remembered at most; past it the oldest go first. @default 65536 */
  maxEntries?: number;
  now?: () => number;
}

export class ReplayGuard {
  private readonly windowMs: number;
  private readonly maxEntries: number;
  private readonly now: () => number;
  /** nonce → time after which its message is stale anyway. Insertion order is arrival order. */
  private readonly seen = new Map<string, number>();

  constructor(options: ReplayGuardOptions) {
    this.windowMs = options.windowMs;
    this.maxEntries = options.maxEntries ?? 65_536;
    this.now = options.now ?? Date.now;
  }

  /** Checks `sent_at` (ms since the epoch) and remembers the nonce when the message is fresh and new. */
  check(sentAtMs: number, nonce: string): FreshnessVerdict {
    const now = this.now();
    if (!Number.isFinite(sentAtMs) || Math.abs(now - sentAtMs) > this.windowMs) return 'stale';
    if (this.seen.has(nonce)) return 'replay';
    if (this.seen.size >= this.maxEntries) this.prune(now);
    this.seen.set(nonce, sentAtMs + this.windowMs);
    return 'ok';
  }

  get size(): number {
    return this.seen.size;
  }

  private prune(now: number): void {
    for (const [nonce, until] of this.seen) if (until < now) this.seen.delete(nonce);
    // Still full of live nonces: forget the oldest tenth rather than grow without bound.
    if (this.seen.size >= this.maxEntries) {
      let drop = Math.max(1, Math.floor(this.maxEntries / 10));
      for (const nonce of this.seen.keys()) {
        if (drop-- <= 0) break;
        this.seen.delete(nonce);
      }
    }
  }
}
