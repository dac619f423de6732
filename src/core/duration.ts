/** Durations as people type them: `500ms`, `30s`, `10m`, `2h`, `90d`, or a bare number of seconds. */
import { FieldmeshError } from './errors.js';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Milliseconds in `value`; throws FM_ERR_INVALID_OPTION naming `option` when it is not a positive duration. */
export function parseDuration(option: string, value: string | number): number {
  const m = typeof value === 'number' ? null : /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(value);
  const ms = typeof value === 'number' ? value * 1000 : m ? Number(m[1]) * (UNITS[m[2] ?? 's'] ?? 1000) : Number.NaN;
  if (!Number.isFinite(ms) || ms <= 0 || ms > Number.MAX_SAFE_INTEGER) {
    throw new FieldmeshError('FM_ERR_INVALID_OPTION', `${option}: ${JSON.stringify(value)} is not a duration such as 30s, 10m, 2h or 90d`, {
      details: { option, value },
    });
  }
  return Math.round(ms);
}
