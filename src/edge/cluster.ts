// EdgeCluster: the registry of edge nodes, their heartbeats and runtimes, and deployment to every online node (design doc 002, section 2.5).
import type { EdgeFunction } from './function.js';
import type { EdgeMetrics } from './metrics.js';
import { type EdgeNode, EdgeNodeStatus } from './node.js';
import { EdgeRuntime } from './runtime.js';

export interface EdgeClusterOptions {
  /** Given to every node's runtime, so one place records all invocations. */
  metrics?: EdgeMetrics;
}

export interface ListNodesOptions {
  /** Only nodes in this state. */
  status?: EdgeNodeStatus;
}

/**
 * Edge nodes and one {@link EdgeRuntime} per node.
 *
 * Safe under concurrent use: no method awaits, so each runs whole and no two
 * can interleave on this thread. Invocations that are running on a node's
 * runtime when the node is deregistered or redeployed to keep the function
 * they started with (see {@link EdgeRuntime}).
 */
export class EdgeCluster {
  private readonly nodes = new Map<string, EdgeNode>();
  private readonly runtimes = new Map<string, EdgeRuntime>();
  private readonly metrics: EdgeMetrics | undefined;

  constructor(options: EdgeClusterOptions = {}) {
    this.metrics = options.metrics;
  }

  /**
   * Adds a node and gives it a runtime. Registering an id again (a node that
   * restarted, say) replaces the node record and carries its deployed
   * functions over to the new runtime.
   */
  registerNode(node: EdgeNode): EdgeRuntime {
    const runtime = new EdgeRuntime(node, this.metrics === undefined ? {} : { metrics: this.metrics });
    const previous = this.runtimes.get(node.id);
    if (previous) {
      for (const fn of previous.listFunctions()) runtime.deploy(fn);
      previous.close();
    }
    this.nodes.set(node.id, node);
    this.runtimes.set(node.id, runtime);
    return runtime;
  }

  /** Removes a node and its runtime (whose idle workers end); false if no such node. */
  deregisterNode(nodeId: string): boolean {
    this.runtimes.get(nodeId)?.close();
    this.runtimes.delete(nodeId);
    return this.nodes.delete(nodeId);
  }

  /** Records that the node is alive: refreshes `lastHeartbeat` and sets it ONLINE. False if no such node. */
  heartbeat(nodeId: string): boolean {
    const node = this.nodes.get(nodeId);
    if (!node) return false;
    node.lastHeartbeat = new Date();
    node.status = EdgeNodeStatus.ONLINE;
    return true;
  }

  getNode(nodeId: string): EdgeNode | undefined {
    return this.nodes.get(nodeId);
  }

  getRuntime(nodeId: string): EdgeRuntime | undefined {
    return this.runtimes.get(nodeId);
  }

  /** The nodes in registration order, only those in `status` if given. */
  listNodes(options: ListNodesOptions = {}): EdgeNode[] {
    const all = [...this.nodes.values()];
    return options.status === undefined ? all : all.filter((n) => n.status === options.status);
  }

  /**
   * Deploys `fn` to every ONLINE node and returns how many that was. Nodes in
   * any other state are skipped, as the mesh skips nodes that cannot take a
   * deploy now; a heartbeat brings them back, and a later call reaches them.
   */
  deployToAll(fn: EdgeFunction): number {
    let count = 0;
    for (const node of this.nodes.values()) {
      if (node.status !== EdgeNodeStatus.ONLINE) continue;
      const runtime = this.runtimes.get(node.id);
      if (!runtime) continue;
      runtime.deploy(fn);
      count++;
    }
    return count;
  }
}
