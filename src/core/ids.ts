/** Sortable, unique ids: `<prefix>_<time base36><random hex>`. */
import { randomFillSync } from 'node:crypto';

/** Random bytes drawn from the CSPRNG 4 KiB at a time: one call per 512 ids instead of one per id. */
const pool = Buffer.alloc(4096);
let offset = pool.length;

export function newId(prefix: string): string {
  if (offset + 8 > pool.length) {
    randomFillSync(pool);
    offset = 0;
  }
  const random = pool.toString('hex', offset, offset + 8);
  offset += 8;
  return `${prefix}_${Date.now().toString(36)}${random}`;
}
