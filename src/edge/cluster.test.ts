// Tests for EdgeCluster, EdgeNode and EdgeFunction: registration, heartbeats, listing by status, deployment to online nodes and defaults.
import { describe, expect, it } from 'vitest';
import { isFieldmeshError } from '../core/errors.js';
import { EdgeCluster } from './cluster.js';
import { EdgeFunction } from './function.js';
import { EdgeMetrics } from './metrics.js';
import { EdgeNode, EdgeNodeStatus } from './node.js';

const PAST = new Date('2020-01-01T00:00:00Z');

function node(id: string, status: EdgeNodeStatus = EdgeNodeStatus.ONLINE): EdgeNode {
  return new EdgeNode({ id, name: `node ${id}`, status, lastHeartbeat: PAST });
}

describe('edge - node and function records', () => {
  it('edge - EdgeNode has the original defaults and copies what it is given', () => {
    const capabilities = ['gpu'];
    const n = new EdgeNode({ id: 'edge-01', name: 'warehouse-sensor', capabilities, metadata: { rack: 3 } });
    capabilities.push('camera');
    expect(n.location).toBe('');
    expect(n.status).toBe('ONLINE');
    expect(n.capabilities).toEqual(['gpu']);
    expect(n.metadata).toEqual({ rack: 3 });
    expect(n.lastHeartbeat).toBeInstanceOf(Date);
  });

  it('edge - EdgeNodeStatus holds the four original states', () => {
    expect(Object.values(EdgeNodeStatus)).toEqual(['ONLINE', 'OFFLINE', 'DEGRADED', 'SYNCING']);
  });

  it('edge - EdgeFunction has the original defaults and a frozen copy of its environment', () => {
    const environment = { KEY: 'v' };
    const fn = new EdgeFunction({ id: 'fn-1', name: 'process-image', handler: () => null, environment });
    environment.KEY = 'changed';
    expect(fn.memoryMb).toBe(128);
    expect(fn.timeoutSeconds).toBe(30);
    expect(fn.environment).toEqual({ KEY: 'v' });
    expect(Object.isFrozen(fn.environment)).toBe(true);
  });

  it('edge - bad function options name the property and the value', () => {
    const bad = (init: Partial<ConstructorParameters<typeof EdgeFunction>[0]>) => () =>
      new EdgeFunction({ id: 'fn', name: 'fn', handler: () => null, ...init } as ConstructorParameters<typeof EdgeFunction>[0]);
    expect(bad({ memoryMb: 0 })).toThrow('EdgeFunction.memoryMb: 0');
    expect(bad({ memoryMb: 1.5 })).toThrow('EdgeFunction.memoryMb: 1.5');
    expect(bad({ timeoutSeconds: -1 })).toThrow('EdgeFunction.timeoutSeconds: -1');
    expect(bad({ environment: { N: 1 as unknown as string } })).toThrow('EdgeFunction.environment.N');
    expect(bad({ handler: { module: './relative.mjs' } })).toThrow('EdgeFunction.handler.module: ./relative.mjs');
    expect(bad({ handler: 42 as unknown as () => null })).toThrow('EdgeFunction.handler');
    try {
      bad({ memoryMb: -5 })();
    } catch (err) {
      expect(isFieldmeshError(err) && err.code).toBe('FM_ERR_INVALID_OPTION');
    }
    expect.assertions(7);
  });
});

describe('edge - cluster', () => {
  it('edge - register, get and deregister nodes with their runtimes', () => {
    const cluster = new EdgeCluster();
    const a = node('a');
    const runtime = cluster.registerNode(a);
    expect(cluster.getNode('a')).toBe(a);
    expect(cluster.getRuntime('a')).toBe(runtime);
    expect(runtime.node).toBe(a);
    expect(cluster.deregisterNode('a')).toBe(true);
    expect(cluster.deregisterNode('a')).toBe(false);
    expect(cluster.getNode('a')).toBeUndefined();
    expect(cluster.getRuntime('a')).toBeUndefined();
  });

  it('edge - registering a node id again keeps the functions deployed on it', async () => {
    const cluster = new EdgeCluster();
    cluster.registerNode(node('a'));
    cluster.getRuntime('a')?.deploy(new EdgeFunction({ id: 'fn', name: 'fn', handler: () => 'kept' }));
    const restarted = node('a');
    const runtime = cluster.registerNode(restarted);
    expect(cluster.getNode('a')).toBe(restarted);
    expect(runtime.node).toBe(restarted);
    await expect(runtime.invoke('fn')).resolves.toBe('kept');
    expect(cluster.listNodes()).toHaveLength(1);
  });

  it('edge - heartbeat refreshes the timestamp and sets the node ONLINE', () => {
    const cluster = new EdgeCluster();
    const a = node('a', EdgeNodeStatus.DEGRADED);
    cluster.registerNode(a);
    expect(cluster.heartbeat('a')).toBe(true);
    expect(a.status).toBe(EdgeNodeStatus.ONLINE);
    expect(a.lastHeartbeat.getTime()).toBeGreaterThan(PAST.getTime());
    expect(cluster.heartbeat('unknown')).toBe(false);
  });

  it('edge - listNodes returns all nodes or those in one status', () => {
    const cluster = new EdgeCluster();
    for (const n of [node('a'), node('b', 'OFFLINE'), node('c', 'DEGRADED'), node('d'), node('e', 'SYNCING')]) cluster.registerNode(n);
    expect(cluster.listNodes().map((n) => n.id)).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect(cluster.listNodes({ status: EdgeNodeStatus.ONLINE }).map((n) => n.id)).toEqual(['a', 'd']);
    expect(cluster.listNodes({ status: EdgeNodeStatus.OFFLINE }).map((n) => n.id)).toEqual(['b']);
    expect(cluster.listNodes({ status: EdgeNodeStatus.SYNCING }).map((n) => n.id)).toEqual(['e']);
    cluster.heartbeat('b');
    expect(cluster.listNodes({ status: EdgeNodeStatus.ONLINE }).map((n) => n.id)).toEqual(['a', 'b', 'd']);
  });

  it('edge - deployToAll deploys to the online nodes and returns how many', async () => {
    const cluster = new EdgeCluster();
    for (const n of [node('a'), node('b', 'OFFLINE'), node('c'), node('d', 'DEGRADED')]) cluster.registerNode(n);
    const fn = new EdgeFunction({ id: 'fn-1', name: 'where', handler: (_args, ctx) => ctx.nodeId });
    expect(cluster.deployToAll(fn)).toBe(2);
    await expect(cluster.getRuntime('a')?.invoke('fn-1')).resolves.toBe('a');
    await expect(cluster.getRuntime('c')?.invoke('fn-1')).resolves.toBe('c');
    expect(cluster.getRuntime('b')?.listFunctions()).toEqual([]);
    expect(cluster.getRuntime('d')?.listFunctions()).toEqual([]);
    expect(new EdgeCluster().deployToAll(fn)).toBe(0);
  });

  it('edge - all node runtimes record into the cluster metrics', async () => {
    const metrics = new EdgeMetrics();
    const cluster = new EdgeCluster({ metrics });
    cluster.registerNode(node('a'));
    cluster.registerNode(node('b'));
    cluster.deployToAll(new EdgeFunction({ id: 'fn', name: 'fn', handler: () => 1 }));
    await Promise.all([
      cluster.getRuntime('a')?.invoke('fn'),
      cluster.getRuntime('b')?.invoke('fn'),
      cluster.getRuntime('b')?.invoke('fn'),
    ]);
    expect(metrics.list().map((r) => r.nodeId)).toEqual(['a', 'b', 'b']);
  });

  it('edge - concurrent registration, heartbeats, deployment and invocation leave a consistent cluster', async () => {
    const cluster = new EdgeCluster();
    const ids = Array.from({ length: 20 }, (_, i) => `n${i}`);
    const fn = new EdgeFunction({
      id: 'fn',
      name: 'fn',
      handler: async (_args, ctx) => {
        await null;
        return ctx.nodeId;
      },
    });
    await Promise.all(
      ids.map(async (id, i) => {
        await null;
        cluster.registerNode(node(id, i % 2 === 0 ? 'ONLINE' : 'OFFLINE'));
        await null;
        if (i % 4 === 1) cluster.heartbeat(id);
      }),
    );
    // Even ids were ONLINE, and ids 1, 5, 9, 13, 17 came ONLINE by heartbeat.
    expect(cluster.listNodes({ status: 'ONLINE' })).toHaveLength(15);
    expect(cluster.deployToAll(fn)).toBe(15);
    const online = cluster.listNodes({ status: 'ONLINE' }).map((n) => n.id);
    const results = await Promise.all(
      online.map(async (id, i) => {
        const runtime = cluster.getRuntime(id);
        const call = runtime?.invoke('fn');
        // Deregistering mid-call does not disturb the call already running.
        if (i % 3 === 0) cluster.deregisterNode(id);
        return call;
      }),
    );
    expect(results).toEqual(online);
    expect(cluster.listNodes()).toHaveLength(20 - 5);
  });
});
