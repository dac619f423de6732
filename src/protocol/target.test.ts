import { describe, expect, it } from 'vitest';
import { backoffBefore, haversineMeters } from './target.js';

describe('retry backoff', () => {
  it('retry - multiplier 1 waits backoff_ms before every retry (attempts at 0, 1 s, 2 s)', () => {
    const retry = { max_attempts: 3, backoff_ms: 1000, backoff_multiplier: 1, max_backoff_ms: 10_000 };
    expect([1, 2, 3].map((n) => backoffBefore(n, retry))).toEqual([0, 1000, 1000]);
  });

  it('retry - 500 ms with multiplier 2 waits 0, 500, 1000, 2000, 4000', () => {
    const retry = { backoff_ms: 500, backoff_multiplier: 2, max_backoff_ms: 10_000 };
    expect([1, 2, 3, 4, 5].map((n) => backoffBefore(n, retry))).toEqual([0, 500, 1000, 2000, 4000]);
  });

  it('retry - waits are capped at max_backoff_ms', () => {
    const retry = { backoff_ms: 500, backoff_multiplier: 2, max_backoff_ms: 1500 };
    expect([2, 3, 4, 5].map((n) => backoffBefore(n, retry))).toEqual([500, 1000, 1500, 1500]);
  });

  it('retry - no policy means no wait', () => {
    expect(backoffBefore(3, undefined)).toBe(0);
  });
});

describe('haversine', () => {
  it.each([
    [{ lat: 37.7749, lon: -122.4194 }, { lat: 37.8044, lon: -122.2712 }, 13_400, 300],
    [{ lat: 51.5074, lon: -0.1278 }, { lat: 48.8566, lon: 2.3522 }, 343_500, 1500],
    [{ lat: 0, lon: 0 }, { lat: 0, lon: 180 }, 20_015_000, 5000],
  ])('geographic - distance %j → %j is about %i m', (a, b, meters, tolerance) => {
    expect(Math.abs(haversineMeters(a, b) - meters)).toBeLessThan(tolerance);
  });

  it('geographic - distance to itself is 0', () => {
    expect(haversineMeters({ lat: 10, lon: 20 }, { lat: 10, lon: 20 })).toBe(0);
  });
});
