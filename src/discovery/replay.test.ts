import { describe, expect, it } from 'vitest';
import { ReplayGuard } from './replay.js';

describe('replay guard', () => {
  it('replay guard - a nonce passes once within the window', () => {
    let now = 1_000_000;
    const guard = new ReplayGuard({ windowMs: 1000, now: () => now });
    expect(guard.check(now, 'a')).toBe('ok');
    expect(guard.check(now, 'a')).toBe('replay');
    expect(guard.check(now - 500, 'b')).toBe('ok');
    now += 2000;
    // Too old to pass now, whatever its nonce.
    expect(guard.check(now - 2000, 'a')).toBe('stale');
    expect(guard.check(now - 1001, 'c')).toBe('stale');
    expect(guard.check(now + 1001, 'd')).toBe('stale');
    expect(guard.check(Number.NaN, 'e')).toBe('stale');
  });

  it('replay guard - memory stays bounded, expired nonces go first', () => {
    let now = 0;
    const guard = new ReplayGuard({ windowMs: 100, maxEntries: 10, now: () => now });
    for (let i = 0; i < 10; i++) expect(guard.check(now, `old-${i}`)).toBe('ok');
    now = 150;
    // The old ones have expired: the next insert prunes them all.
    expect(guard.check(now, 'fresh-0')).toBe('ok');
    expect(guard.size).toBe(1);
    for (let i = 1; i < 30; i++) guard.check(now, `fresh-${i}`);
    expect(guard.size).toBeLessThanOrEqual(10);
    // The most recent nonce is still remembered.
    expect(guard.check(now, 'fresh-29')).toBe('replay');
  });
});
