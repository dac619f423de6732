/**
 * Summarizes a V8 .cpuprofile (what `node --cpu-prof` writes): self time per
 * function and per area (our modules, the SQLite driver, ws, Node internals…),
 * from the sampled nodes and their time deltas.
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface SelfTime {
  name: string;
  where: string;
  self_ms: number;
  share: number;
}

export interface ProfileSummary {
  total_ms: number;
  idle_ms: number;
  busy_ms: number;
  top_functions: SelfTime[];
  by_area: { area: string; self_ms: number; share: number }[];
}

/** Where a script lives, shortened to the part a reader recognises. */
function shortUrl(url: string): string {
  if (url === '') return '(native)';
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) return url.slice(nm + 'node_modules/'.length);
  const src = url.lastIndexOf('/src/');
  if (src >= 0) return url.slice(src + 1);
  return url.replace(/^file:\/\//, '');
}

/** Coarse areas, so the summary says "SQLite" or "TLS" and not only function names. */
export function areaOf(url: string, name: string): string {
  if (name === '(garbage collector)') return 'garbage collection';
  if (name === '(program)') return 'V8/native (program)';
  if (name === '(idle)') return 'idle';
  if (url.includes('better-sqlite3')) return 'better-sqlite3';
  if (url.includes('kysely')) return 'kysely (query building)';
  if (url.includes('node_modules/ws/')) return 'ws (WebSocket)';
  if (url.includes('@sinclair/typebox')) return 'typebox (schema checks)';
  if (url.includes('node_modules/ajv')) return 'ajv (tool_args checks)';
  const src = /\/src\/([a-z]+)\/(?:[a-z]+\/)?([a-z-]+)\.js$/.exec(url);
  if (src) return `src/${src[1]}/${src[2]}`;
  if (url.startsWith('node:')) {
    const mod = url.slice(5).split('/')[1] ?? url.slice(5);
    return `node:${mod}`;
  }
  if (url === '') return 'native (crypto, JSON, TLS, syscalls)';
  return shortUrl(url);
}

export function summarizeProfile(file: string, top = 25): ProfileSummary {
  const prof = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  for (const n of prof.nodes) byId.set(n.id, n);
  const selfUs = new Map<number, number>();
  for (let i = 0; i < prof.samples.length; i++) {
    const id = prof.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0));
  }
  const fns = new Map<string, { name: string; where: string; us: number }>();
  const areas = new Map<string, number>();
  let total = 0;
  let idle = 0;
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (!node) continue;
    total += us;
    const { functionName, url, lineNumber } = node.callFrame;
    const name = functionName || '(anonymous)';
    if (name === '(idle)') {
      idle += us;
      continue;
    }
    const where = url ? `${shortUrl(url)}:${lineNumber + 1}` : '(native)';
    const key = `${name}@${where}`;
    const f = fns.get(key) ?? { name, where, us: 0 };
    f.us += us;
    fns.set(key, f);
    const area = areaOf(url, name);
    areas.set(area, (areas.get(area) ?? 0) + us);
  }
  const busy = total - idle;
  const ms = (us: number) => Math.round(us / 100) / 10;
  const share = (us: number) => Math.round((1000 * us) / Math.max(1, busy)) / 10;
  return {
    total_ms: ms(total),
    idle_ms: ms(idle),
    busy_ms: ms(busy),
    top_functions: [...fns.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, top)
      .map((f) => ({ name: f.name, where: f.where, self_ms: ms(f.us), share: share(f.us) })),
    by_area: [...areas].sort((a, b) => b[1] - a[1]).map(([area, us]) => ({ area, self_ms: ms(us), share: share(us) })),
  };
}
