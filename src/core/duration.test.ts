// Tests for durations as typed on the command line.
import { describe, expect, it } from 'vitest';
import { parseDuration } from './duration.js';
import { isFieldmeshError } from './errors.js';

describe('duration - parseDuration', () => {
  it('duration - reads ms, s, m, h and d, and bare numbers as seconds', () => {
    expect(parseDuration('x', '500ms')).toBe(500);
    expect(parseDuration('x', '30s')).toBe(30_000);
    expect(parseDuration('x', '10m')).toBe(600_000);
    expect(parseDuration('x', '1.5h')).toBe(5_400_000);
    expect(parseDuration('x', '90d')).toBe(90 * 86_400_000);
    expect(parseDuration('x', '45')).toBe(45_000);
    expect(parseDuration('x', 2)).toBe(2000);
  });

  it('duration - anything else is FM_ERR_INVALID_OPTION naming the option', () => {
    for (const bad of ['', 'soon', '-5m', '0s', '10 weeks', '1e3s']) {
      let caught: unknown;
      try {
        parseDuration('--ttl', bad);
      } catch (err) {
        caught = err;
      }
      expect(isFieldmeshError(caught) && caught.code).toBe('FM_ERR_INVALID_OPTION');
      expect((caught as Error).message).toContain('--ttl');
    }
  });
});
