/**
 * Scheduler: turns a target into a ranked list of candidate nodes. Candidates
 * come from the capability index (the rarest required capability first), never
 * from a scan of every node.
 */
import { FieldmeshError } from '../core/errors.js';
import { haversineMeters, type Target } from '../protocol/target.js';
import { NodeStatus } from '../store/types.js';
import type { IndexedSet } from './indexed-set.js';
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

function preferScore(entry: NodeEntry, prefer: readonly string[] | undefined): number {
  if (!prefer || prefer.length === 0) return 0;
  let n = 0;
  for (const p of prefer) if (entry.record.capabilities.includes(p)) n += 1;
  return n;
}

function compareWith(prefer: readonly string[] | undefined) {
  return (a: NodeEntry, b: NodeEntry): number => {
    const p = preferScore(b, prefer) - preferScore(a, prefer);
    if (p !== 0) return p;
    const da = a.record.status === NodeStatus.Degraded ? 1 : 0;
    const db = b.record.status === NodeStatus.Degraded ? 1 : 0;
    if (da !== db) return da - db;
    const s = loadScore(a) - loadScore(b);
    if (Math.abs(s) > 1e-9) return s;
    return a.lastPicked - b.lastPicked;
  };
}

const byLoad = compareWith(undefined);
const noneExcluded: ReadonlySet<string> = new Set();

/** Up to this many holders of the rarest required capability, a decision compares every one of them. */
const EXACT_LIMIT = 64;
/** Beyond EXACT_LIMIT, how many eligible nodes a decision compares. */
const SAMPLE = 16;

/**
 * Whether a node's own advertised policy lets it run the tool with arguments
 * of this size; automatic placement never picks a node that would refuse.
 */
export function policyAllows(entry: NodeEntry, toolName: string, payloadBytes?: number): boolean {
  const policy = entry.policy;
  if (!policy) return true;
  if (policy.allowed_tools !== null && !policy.allowed_tools.includes(toolName)) return false;
  return payloadBytes === undefined || policy.max_payload_bytes === null || payloadBytes <= policy.max_payload_bytes;
}

export function requiredCapabilities(toolName: string, target: Target): string[] {
  const caps = new Set<string>([`tool:${toolName}`]);
  for (const c of target.required_capabilities ?? []) caps.add(c);
  return [...caps];
}

/**
 * Whether a node falls inside a target, whatever its status and tools: its
 * capabilities, and for the kinds that name nodes or an area, those. Deploys
 * use it to pick the nodes a function goes to.
 */
export function targetMatches(entry: NodeEntry, target: Target): boolean {
  const caps = entry.record.capabilities;
  if (!(target.required_capabilities ?? []).every((c) => caps.includes(c))) return false;
  const id = entry.record.node_id;
  switch (target.kind) {
    case 'explicit':
      return target.node_id === id;
    case 'failover_chain':
      return target.nodes.includes(id);
    case 'geographic': {
      const loc = entry.record.location;
      return loc !== null && haversineMeters(target.center, loc) <= target.radius_meters;
    }
    default:
      return true;
  }
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
  candidates(toolName: string, target: Target, exclude: ReadonlySet<string> = noneExcluded, payloadBytes?: number): NodeEntry[] {
    // An explicit target is the caller's own choice: the node itself answers for its policy.
    if (target.kind === 'explicit') return this.#explicit(toolName, target.node_id, requiredCapabilities(toolName, target), exclude);
    const allows = (e: NodeEntry) => policyAllows(e, toolName, payloadBytes);
    if (target.kind === 'failover_chain')
      return this.#chain(toolName, target.nodes, requiredCapabilities(toolName, target), exclude, allows);
    const required = requiredCapabilities(toolName, target);
    if (!this.#registry.withCapability(`tool:${toolName}`)) {
      throw new FieldmeshError('FM_ERR_UNKNOWN_TOOL', `No node in the mesh offers tool "${toolName}"`, {
        details: { tool_name: toolName },
      });
    }
    const matching = this.#matching(required, exclude);
    let found = matching.filter(allows);
    if (target.kind === 'geographic') {
      const inArea: { entry: NodeEntry; d: number }[] = [];
      for (const entry of found) {
        const loc = entry.record.location;
        if (!loc) continue;
        const d = haversineMeters(target.center, loc);
        if (d <= target.radius_meters) inArea.push({ entry, d });
      }
      if (inArea.length === 0 && exclude.size === 0) {
        throw new FieldmeshError(
          'FM_ERR_NO_NODE_IN_AREA',
          `No online node with ${required.join(', ')} lies within ${target.radius_meters} m of ${target.center.lat},${target.center.lon}`,
          { details: { center: target.center, radius_meters: target.radius_meters, required_capabilities: required } },
        );
      }
      const rank = compareWith(target.prefer);
      return inArea
        .sort((a, b) => preferScore(b.entry, target.prefer) - preferScore(a.entry, target.prefer) || a.d - b.d || rank(a.entry, b.entry))
        .map((x) => x.entry);
    }
    if (found.length === 0 && exclude.size === 0) {
      if (matching.length > 0) {
        throw new FieldmeshError(
          'FM_ERR_NO_CAPABLE_NODE',
          `Every online node with ${required.join(', ')} refuses this call by its own node policy (${matching.map((e) => e.record.node_id).join(', ')})`,
          { details: { required_capabilities: required, refused_by_policy: matching.map((e) => e.record.node_id) } },
        );
      }
      throw new FieldmeshError('FM_ERR_NO_CAPABLE_NODE', `No online node has all of: ${required.join(', ')}`, {
        details: { required_capabilities: required },
      });
    }
    found = found.sort(compareWith(target.prefer));
    return found;
  }

  /**
   * The node a task should go to now: the first of `candidates`, or
   * undefined when every eligible node is in `exclude`; throws the same
   * errors. When more than EXACT_LIMIT nodes hold the rarest required
   * capability (and no `prefer` or area ranks them), it compares SAMPLE
   * eligible nodes read from a random offset in the capability index instead
   * of ranking all of them, so a decision costs as much among 10,000 nodes as
   * among 100, and load still spreads (the power of d choices).
   */
  best(toolName: string, target: Target, exclude: ReadonlySet<string> = noneExcluded, payloadBytes?: number): NodeEntry | undefined {
    if ((target.kind === 'local' || target.kind === 'capability' || target.kind === 'load_balanced') && !target.prefer?.length) {
      const found = this.#sampled(toolName, requiredCapabilities(toolName, target), exclude, payloadBytes);
      if (found) return found;
    }
    return this.candidates(toolName, target, exclude, payloadBytes)[0];
  }

  #sampled(toolName: string, required: readonly string[], exclude: ReadonlySet<string>, payloadBytes?: number): NodeEntry | undefined {
    let smallest: IndexedSet | undefined;
    const others: IndexedSet[] = [];
    for (const c of required) {
      const set = this.#registry.withCapability(c);
      if (!set) return undefined;
      if (!smallest || set.size < smallest.size) {
        if (smallest) others.push(smallest);
        smallest = set;
      } else others.push(set);
    }
    const n = smallest?.size ?? 0;
    if (!smallest || n <= EXACT_LIMIT) return undefined;
    const start = Math.floor(Math.random() * n);
    let best: NodeEntry | undefined;
    let compared = 0;
    for (let i = 0; i < n && compared < SAMPLE; i++) {
      const id = smallest.at((start + i) % n);
      if (exclude.has(id) || !others.every((s) => s.has(id))) continue;
      const entry = this.#registry.get(id);
      if (!entry || !isDispatchable(entry) || !policyAllows(entry, toolName, payloadBytes)) continue;
      compared += 1;
      if (!best || byLoad(entry, best) < 0) best = entry;
    }
    return best;
  }

  /** Dispatchable nodes with every capability, found through the index starting from the rarest capability. */
  #matching(required: readonly string[], exclude: ReadonlySet<string>): NodeEntry[] {
    const sets = required.map((c) => this.#registry.withCapability(c));
    const found: NodeEntry[] = [];
    if (!sets.every((s) => s !== undefined && s.size > 0)) return found;
    const ordered = (sets as IndexedSet[]).slice().sort((a, b) => a.size - b.size);
    const [smallest, ...rest] = ordered;
    for (const id of smallest ?? []) {
      if (exclude.has(id) || !rest.every((s) => s.has(id))) continue;
      const entry = this.#registry.get(id);
      if (entry && isDispatchable(entry)) found.push(entry);
    }
    return found;
  }

  /** Every known node inside a target (see {@link targetMatches}), whatever its status, found through the index where it can. */
  nodesInTarget(target: Target): NodeEntry[] {
    let pool: Iterable<NodeEntry>;
    if (target.kind === 'explicit' || target.kind === 'failover_chain') {
      const ids = target.kind === 'explicit' ? [target.node_id] : target.nodes;
      pool = ids.flatMap((id) => this.#registry.get(id) ?? []);
    } else if ((target.required_capabilities ?? []).length > 0) {
      const sets = target.required_capabilities!.map((c) => this.#registry.withCapability(c));
      if (!sets.every((s) => s !== undefined)) return [];
      const smallest = (sets as IndexedSet[]).reduce((a, b) => (b.size < a.size ? b : a));
      pool = [...smallest].flatMap((id) => this.#registry.get(id) ?? []);
    } else pool = this.#registry.all();
    return [...pool].filter((e) => targetMatches(e, target));
  }

  /** Marks a node as just picked so equal nodes take turns. */
  picked(entry: NodeEntry): void {
    entry.lastPicked = this.#registry.nextPick();
  }

  #explicit(toolName: string, nodeId: string, required: readonly string[], exclude: ReadonlySet<string>): NodeEntry[] {
    const entry = this.#usable(toolName, nodeId, required);
    if (exclude.has(nodeId)) return [];
    if (!isDispatchable(entry)) {
      throw new FieldmeshError('FM_ERR_NODE_OFFLINE', `Node "${nodeId}" is ${entry.record.status}`, {
        details: { node_id: nodeId, status: entry.record.status },
      });
    }
    return [entry];
  }

  /** The chain's nodes that can run the tool now, in the chain's order. */
  #chain(
    toolName: string,
    nodes: readonly string[],
    required: readonly string[],
    exclude: ReadonlySet<string>,
    allows: (entry: NodeEntry) => boolean,
  ): NodeEntry[] {
    const out: NodeEntry[] = [];
    let known = 0;
    for (const id of nodes) {
      const entry = this.#registry.get(id);
      if (!entry) continue;
      known += 1;
      if (exclude.has(id) || !entry.tools.has(toolName) || !required.every((c) => entry.record.capabilities.includes(c))) continue;
      if (!allows(entry)) continue;
      if (isDispatchable(entry)) out.push(entry);
    }
    if (out.length === 0 && exclude.size === 0) {
      if (known === 0) {
        throw new FieldmeshError('FM_ERR_NODE_NOT_FOUND', `None of the chain's nodes is known: ${nodes.join(', ')}`, {
          details: { nodes },
        });
      }
      throw new FieldmeshError(
        'FM_ERR_NO_CAPABLE_NODE',
        `No node of the chain (${nodes.join(', ')}) is online with ${required.join(', ')}`,
        {
          details: { nodes, required_capabilities: required },
        },
      );
    }
    return out;
  }

  /** An explicit node that exists and has the tool and capabilities, whatever its status. */
  #usable(toolName: string, nodeId: string, required: readonly string[]): NodeEntry {
    const entry = this.#registry.get(nodeId);
    if (!entry)
      throw new FieldmeshError('FM_ERR_NODE_NOT_FOUND', `Node "${nodeId}" is not known to this gateway`, { details: { node_id: nodeId } });
    if (!entry.tools.has(toolName)) {
      throw new FieldmeshError('FM_ERR_NO_CAPABLE_NODE', `Node "${nodeId}" does not offer tool "${toolName}"`, {
        details: { node_id: nodeId, required_capabilities: [`tool:${toolName}`] },
      });
    }
    const missing = required.filter((c) => !entry.record.capabilities.includes(c));
    if (missing.length > 0) {
      throw new FieldmeshError('FM_ERR_NO_CAPABLE_NODE', `Node "${nodeId}" lacks ${missing.join(', ')}`, {
        details: { node_id: nodeId, required_capabilities: required },
      });
    }
    return entry;
  }

  /** Throws when an explicit target can never run the tool (unknown node, missing tool); offline is fine. */
  checkExplicit(toolName: string, nodeId: string, target: Target): NodeEntry {
    return this.#usable(toolName, nodeId, requiredCapabilities(toolName, target));
  }
}
