/**
 * Scheduler: turns a target into a ranked list of candidate nodes. Candidates
 * come from the capability index (the rarest required capability first), never
 * from a scan of every node.
 */
import { FieldmeshError } from '../core/errors.js';
import type { Target } from '../protocol/target.js';
import { NodeStatus } from '../store/types.js';
import type { NodeEntry, Registry } from './registry.js';

/** Nodes that may receive work: connected and ONLINE, or DEGRADED as a last resort. */
export function isDispatchable(entry: NodeEntry): boolean {
  return entry.conn !== null && (entry.record.status === NodeStatus.Online || entry.record.status === NodeStatus.Degraded);
}

/** Lower is better: busy share of the node, then its CPU load. */
export function loadScore(entry: NodeEntry): number {
  const busy = entry.inFlight / Math.max(1, entry.record.max_concurrency);
  return busy + Math.min(entry.record.load.cpu, 4) * 0.25;
}

function compare(a: NodeEntry, b: NodeEntry): number {
  const da = a.record.status === NodeStatus.Degraded ? 1 : 0;
  const db = b.record.status === NodeStatus.Degraded ? 1 : 0;
  if (da !== db) return da - db;
  const s = loadScore(a) - loadScore(b);
  if (Math.abs(s) > 1e-9) return s;
  return a.lastPicked - b.lastPicked;
}

export function requiredCapabilities(toolName: string, target: Target): string[] {
  const caps = new Set<string>([`tool:${toolName}`]);
  if (target.kind === 'capability' || target.kind === 'local') for (const c of target.required_capabilities ?? []) caps.add(c);
  return [...caps];
}

export class Scheduler {
  readonly #registry: Registry;

  constructor(registry: Registry) {
    this.#registry = registry;
  }

  /**
   * Ranked candidates for a tool on a target, best first, leaving out
   * `exclude` (nodes already tried). Throws the error a user should see when
   * no node can ever take the task right now.
   */
  candidates(toolName: string, target: Target, exclude: ReadonlySet<string> = new Set()): NodeEntry[] {
    if (target.kind === 'explicit') return this.#explicit(toolName, target.node_id, exclude);
    const required = requiredCapabilities(toolName, target);
    const sets = required.map((c) => this.#registry.withCapability(c));
    if (!this.#registry.withCapability(`tool:${toolName}`)) {
      throw new FieldmeshError('FM_ERR_UNKNOWN_TOOL', `No node in the mesh offers tool "${toolName}"`, {
        details: { tool_name: toolName },
      });
    }
    const found: NodeEntry[] = [];
    if (sets.every((s) => s !== undefined && s.size > 0)) {
      const ordered = (sets as ReadonlySet<string>[]).slice().sort((a, b) => a.size - b.size);
      const [smallest, ...rest] = ordered;
      for (const id of smallest ?? []) {
        if (exclude.has(id) || !rest.every((s) => s.has(id))) continue;
        const entry = this.#registry.get(id);
        if (entry && isDispatchable(entry)) found.push(entry);
      }
    }
    if (found.length === 0 && exclude.size === 0) {
      throw new FieldmeshError('FM_ERR_NO_CAPABLE_NODE', `No online node has all of: ${required.join(', ')}`, {
        details: { required_capabilities: required },
      });
    }
    return found.sort(compare);
  }

  /** Marks a node as just picked so equal nodes take turns. */
  picked(entry: NodeEntry): void {
    entry.lastPicked = this.#registry.nextPick();
  }

  #explicit(toolName: string, nodeId: string, exclude: ReadonlySet<string>): NodeEntry[] {
    const entry = this.#registry.get(nodeId);
    if (!entry)
      throw new FieldmeshError('FM_ERR_NODE_NOT_FOUND', `Node "${nodeId}" is not known to this gateway`, { details: { node_id: nodeId } });
    if (!entry.tools.has(toolName)) {
      throw new FieldmeshError('FM_ERR_NO_CAPABLE_NODE', `Node "${nodeId}" does not offer tool "${toolName}"`, {
        details: { node_id: nodeId, required_capabilities: [`tool:${toolName}`] },
      });
    }
    if (exclude.has(nodeId)) return [];
    if (!isDispatchable(entry)) {
      throw new FieldmeshError('FM_ERR_NODE_OFFLINE', `Node "${nodeId}" is ${entry.record.status}`, {
        details: { node_id: nodeId, status: entry.record.status },
      });
    }
    return [entry];
  }
}
