// Tests for the Scheduler and the Registry's health sweeps: a real Registry on a real SQLite store, with in-memory node connections.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FieldmeshError } from '../core/errors.js';
import { silentLogger } from '../core/logger.js';
import type { RegisterFrame } from '../protocol/frames.js';
import { generateSigningKeys } from '../protocol/signing.js';
import type { Target } from '../protocol/target.js';
import { openSqliteStore, type SqliteStore } from '../store/sqlite/index.js';
import { NodeStatus } from '../store/types.js';
import { type NodeConnection, type NodeEntry, Registry, type RegistryOptions } from './registry.js';
import { Scheduler } from './scheduler.js';

/** A node connection held in memory: it records what the gateway sends and how it closed. */
class MemoryConnection implements NodeConnection {
  readonly remoteAddress = '127.0.0.1';
  readonly sent: string[] = [];
  closed: { code: number; reason: string } | undefined;

  send(text: string): void {
    this.sent.push(text);
  }

  close(code: number, reason: string): void {
    this.closed = { code, reason };
  }

  terminated = false;

  terminate(): void {
    this.terminated = true;
  }
}

interface NodeSpec {
  tools?: string[];
  capabilities?: string[];
  maxConcurrency?: number;
  /** The node's own policy, as REGISTER advertises it. */
  policy?: RegisterFrame['policy'];
  /** Send NODE_READY after REGISTER. @default true */
  ready?: boolean;
}

const publicKey = generateSigningKeys().publicKeyPem;
const opts: Omit<RegistryOptions, 'logger'> = { heartbeatIntervalMs: 1000, degradedAfterMissed: 2, offlineAfterMs: 5000 };
const local: Target = { kind: 'local' };

function registerFrame(nodeId: string, spec: NodeSpec): RegisterFrame {
  const tools = spec.tools ?? ['echo'];
  return {
    v: 1,
    type: 'REGISTER',
    versions: [1],
    node_id: nodeId,
    name: nodeId,
    platform: 'linux',
    // As a node agent does: every tool is also a `tool:<name>` capability.
    capabilities: [...(spec.capabilities ?? []), ...tools.map((t) => `tool:${t}`)],
    tools: tools.map((name) => ({ name, description: name, input_schema: { type: 'object' }, output_schema: { type: 'object' } })),
    location: null,
    public_key: publicKey,
    agent_version: 'test',
    max_concurrency: spec.maxConcurrency ?? 4,
    ...(spec.policy ? { policy: spec.policy } : {}),
  };
}

function errorOf(fn: () => unknown): FieldmeshError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(FieldmeshError);
    return err as FieldmeshError;
  }
  throw new Error('expected a FieldmeshError');
}

const ids = (entries: NodeEntry[]) => entries.map((e) => e.record.node_id);
/** Lets the registry's fire-and-forget store writes land. */
const settle = () => new Promise((r) => setTimeout(r, 20));

let dir: string;
let store: SqliteStore;
let registry: Registry;
let scheduler: Scheduler;

async function addNode(nodeId: string, spec: NodeSpec = {}): Promise<{ entry: NodeEntry; conn: MemoryConnection }> {
  const conn = new MemoryConnection();
  const entry = await registry.register(registerFrame(nodeId, spec), 1, conn);
  if (spec.ready ?? true) await registry.ready(entry);
  return { entry, conn };
}

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fm-scheduler-'));
  store = await openSqliteStore(join(dir, 'fieldmesh.db'));
  registry = new Registry(store, { ...opts, logger: silentLogger });
  scheduler = new Scheduler(registry);
});

afterEach(async () => {
  await settle();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('scheduler - node policy', () => {
  const policy = (p: Partial<NonNullable<RegisterFrame['policy']>>) => ({
    allowed_tools: null,
    max_concurrent_tasks: 4,
    max_payload_bytes: null,
    allow_deploy: false,
    ...p,
  });

  it('scheduler - automatic placement leaves out a node whose policy excludes the tool', async () => {
    await addNode('strict', { tools: ['echo', 'sum'], policy: policy({ allowed_tools: ['sum'] }) });
    await addNode('open', { tools: ['echo', 'sum'] });
    expect(ids(scheduler.candidates('echo', local))).toEqual(['open']);
    expect(ids(scheduler.candidates('sum', local)).sort()).toEqual(['open', 'strict']);
    expect(ids(scheduler.candidates('echo', { kind: 'failover_chain', nodes: ['strict', 'open'] }))).toEqual(['open']);
  });

  it('scheduler - automatic placement leaves out a node whose payload limit the arguments exceed', async () => {
    await addNode('small', { policy: policy({ max_payload_bytes: 100 }) });
    await addNode('large', { policy: policy({ max_payload_bytes: 10_000 }) });
    expect(ids(scheduler.candidates('echo', local, new Set(), 50)).sort()).toEqual(['large', 'small']);
    expect(ids(scheduler.candidates('echo', local, new Set(), 500))).toEqual(['large']);
  });

  it('scheduler - when every holder of the tool refuses it by policy the error says so', async () => {
    await addNode('strict', { policy: policy({ allowed_tools: ['sum'] }) });
    const e = errorOf(() => scheduler.candidates('echo', local));
    expect(e.code).toBe('FM_ERR_NO_CAPABLE_NODE');
    expect(e.message).toMatch(/refuses this call by its own node policy \(strict\)/);
  });

  it('scheduler - an explicit target is left to the node, which answers for its own policy', async () => {
    await addNode('strict', { policy: policy({ allowed_tools: ['sum'] }) });
    expect(ids(scheduler.candidates('echo', { kind: 'explicit', node_id: 'strict' }))).toEqual(['strict']);
  });
});

describe('scheduler - targets', () => {
  it('scheduler - capability target returns only nodes with every required capability', async () => {
    await addNode('gps-cam', { capabilities: ['hardware:gps', 'hardware:camera'] });
    await addNode('gps-only', { capabilities: ['hardware:gps'] });
    await addNode('cam-only', { capabilities: ['hardware:camera'] });
    const found = scheduler.candidates('echo', { kind: 'capability', required_capabilities: ['hardware:gps', 'hardware:camera'] });
    expect(ids(found)).toEqual(['gps-cam']);
    const gps = scheduler.candidates('echo', { kind: 'capability', required_capabilities: ['hardware:gps'] });
    expect(ids(gps).sort()).toEqual(['gps-cam', 'gps-only']);
  });

  it('scheduler - capability target also requires the tool itself', async () => {
    await addNode('gps-no-tool', { tools: ['other'], capabilities: ['hardware:gps'] });
    await addNode('gps-with-tool', { tools: ['echo'], capabilities: ['hardware:gps'] });
    const found = scheduler.candidates('echo', { kind: 'capability', required_capabilities: ['hardware:gps'] });
    expect(ids(found)).toEqual(['gps-with-tool']);
  });

  it('scheduler - local target returns only nodes that offer the tool', async () => {
    await addNode('has-echo', { tools: ['echo', 'sum'] });
    await addNode('has-sum', { tools: ['sum'] });
    expect(ids(scheduler.candidates('echo', local))).toEqual(['has-echo']);
    expect(ids(scheduler.candidates('sum', local)).sort()).toEqual(['has-echo', 'has-sum']);
  });

  it('scheduler - local target with required capabilities needs both the tool and the capabilities', async () => {
    await addNode('plain');
    await addNode('gpu', { capabilities: ['gpu:available'] });
    expect(ids(scheduler.candidates('echo', { kind: 'local', required_capabilities: ['gpu:available'] }))).toEqual(['gpu']);
  });

  it('scheduler - explicit target returns the named node', async () => {
    await addNode('a');
    await addNode('b');
    expect(ids(scheduler.candidates('echo', { kind: 'explicit', node_id: 'b' }))).toEqual(['b']);
  });
});

describe('scheduler - ranking', () => {
  it('scheduler - an idle node ranks before a busy one', async () => {
    const { entry: busy } = await addNode('busy');
    await addNode('idle');
    busy.inFlight = 2;
    expect(ids(scheduler.candidates('echo', local))).toEqual(['idle', 'busy']);
  });

  it('scheduler - busy share is measured against max_concurrency', async () => {
    const { entry: small } = await addNode('small', { maxConcurrency: 1 });
    const { entry: large } = await addNode('large', { maxConcurrency: 8 });
    small.inFlight = 1;
    large.inFlight = 1;
    expect(ids(scheduler.candidates('echo', local))).toEqual(['large', 'small']);
  });

  it('scheduler - among equally busy nodes the lower cpu ranks first', async () => {
    const { entry: hot } = await addNode('hot');
    const { entry: cool } = await addNode('cool');
    registry.heartbeat(hot, { cpu: 0.9, memory: 0.2, in_flight: 1 });
    registry.heartbeat(cool, { cpu: 0.1, memory: 0.2, in_flight: 1 });
    hot.inFlight = 1;
    cool.inFlight = 1;
    expect(ids(scheduler.candidates('echo', local))).toEqual(['cool', 'hot']);
  });

  it('scheduler - a DEGRADED node ranks after every ONLINE node, however loaded', async () => {
    const { entry: lagging } = await addNode('lagging');
    const { entry: loaded } = await addNode('loaded');
    // Both fall silent past the degraded threshold; only `loaded` heartbeats again.
    registry.sweep(Math.max(lagging.lastSeenMs, loaded.lastSeenMs) + 3000);
    expect(lagging.record.status).toBe(NodeStatus.Degraded);
    registry.heartbeat(loaded, { cpu: 3, memory: 0.9, in_flight: 4 });
    loaded.inFlight = 4;
    expect(loaded.record.status).toBe(NodeStatus.Online);
    expect(ids(scheduler.candidates('echo', local))).toEqual(['loaded', 'lagging']);
  });

  it('scheduler - equal nodes take turns once picked', async () => {
    await addNode('one');
    await addNode('two');
    await addNode('three');
    const picks: string[] = [];
    for (let i = 0; i < 6; i++) {
      const [first] = scheduler.candidates('echo', local);
      picks.push(first!.record.node_id);
      scheduler.picked(first!);
    }
    expect(new Set(picks.slice(0, 3))).toEqual(new Set(['one', 'two', 'three']));
    expect(picks.slice(3)).toEqual(picks.slice(0, 3));
  });
});

describe('scheduler - best among many nodes', () => {
  /** 200 nodes offering echo; every second one also has a GPS; odd ones are saturated. */
  async function fleet(): Promise<{ entry: NodeEntry; conn: MemoryConnection }[]> {
    const entries: { entry: NodeEntry; conn: MemoryConnection }[] = [];
    for (let i = 0; i < 200; i++) {
      const added = await addNode(`n${i}`, { capabilities: i % 4 < 2 ? ['hardware:gps'] : [], maxConcurrency: 2 });
      if (i % 2 === 1) added.entry.inFlight = 2;
      entries.push(added);
    }
    return entries;
  }

  it('scheduler - best never picks a saturated node while idle ones are eligible, and spreads over the idle ones', async () => {
    await fleet();
    const chosen = new Map<string, number>();
    for (let i = 0; i < 400; i++) {
      const entry = scheduler.best('echo', local)!;
      scheduler.picked(entry);
      expect(entry.inFlight).toBe(0);
      chosen.set(entry.record.node_id, (chosen.get(entry.record.node_id) ?? 0) + 1);
    }
    // 100 idle nodes: decisions do not pile onto a few of them.
    expect(chosen.size).toBeGreaterThan(50);
    expect(Math.max(...chosen.values())).toBeLessThan(40);
  });

  it('scheduler - best honours required capabilities, exclusion and status among many nodes', async () => {
    const entries = await fleet();
    await registry.disconnected('n0', entries[0]!.conn);
    const gps: Target = { kind: 'capability', required_capabilities: ['hardware:gps'] };
    const exclude = new Set(['n4', 'n8', 'n12']);
    for (let i = 0; i < 200; i++) {
      const entry = scheduler.best('echo', gps, exclude)!;
      expect(entry.record.capabilities).toContain('hardware:gps');
      expect(exclude.has(entry.record.node_id)).toBe(false);
      expect(entry.record.node_id).not.toBe('n0');
    }
  });

  it('scheduler - best finds the one eligible node left and nothing once it too is excluded', async () => {
    await fleet();
    const all = new Set(Array.from({ length: 200 }, (_, i) => `n${i}`));
    all.delete('n137');
    expect(scheduler.best('echo', local, all)?.record.node_id).toBe('n137');
    all.add('n137');
    expect(scheduler.best('echo', local, all)).toBeUndefined();
    expect(errorOf(() => scheduler.best('nope', local)).code).toBe('FM_ERR_UNKNOWN_TOOL');
  });
});

describe('scheduler - exclusion', () => {
  it('scheduler - OFFLINE, disconnected and SYNCING nodes are left out', async () => {
    const { entry: gone, conn: goneConn } = await addNode('gone');
    const { entry: silent } = await addNode('silent');
    await registry.disconnected(gone.record.node_id, goneConn);
    registry.sweep(silent.lastSeenMs + opts.offlineAfterMs + 1);
    // Registered after that sweep: one has not sent NODE_READY yet, the other has.
    await addNode('syncing', { ready: false });
    await addNode('live');
    expect(gone.record.status).toBe(NodeStatus.Offline);
    expect(silent.record.status).toBe(NodeStatus.Offline);
    expect(registry.get('syncing')?.record.status).toBe(NodeStatus.Syncing);
    expect(ids(scheduler.candidates('echo', local))).toEqual(['live']);
  });

  it('scheduler - exclude leaves out nodes already tried', async () => {
    await addNode('a');
    await addNode('b');
    await addNode('c');
    expect(ids(scheduler.candidates('echo', local, new Set(['a', 'c'])))).toEqual(['b']);
  });

  it('scheduler - with every candidate excluded there is nothing left, not an error', async () => {
    await addNode('a');
    expect(scheduler.candidates('echo', local, new Set(['a']))).toEqual([]);
    expect(scheduler.candidates('echo', { kind: 'explicit', node_id: 'a' }, new Set(['a']))).toEqual([]);
  });
});

describe('scheduler - errors', () => {
  it('scheduler - a tool no node offers is FM_ERR_UNKNOWN_TOOL', async () => {
    await addNode('a', { tools: ['echo'] });
    for (const target of [local, { kind: 'capability', required_capabilities: ['hardware:gps'] } satisfies Target]) {
      const err = errorOf(() => scheduler.candidates('teleport', target));
      expect(err.code).toBe('FM_ERR_UNKNOWN_TOOL');
      expect(err.message).toContain('teleport');
      expect(err.status).toBe(404);
    }
  });

  it('scheduler - no node with every capability is FM_ERR_NO_CAPABLE_NODE naming the capabilities', async () => {
    await addNode('gps', { capabilities: ['hardware:gps'] });
    await addNode('cam', { capabilities: ['hardware:camera'] });
    const err = errorOf(() =>
      scheduler.candidates('echo', { kind: 'capability', required_capabilities: ['hardware:gps', 'hardware:camera'] }),
    );
    expect(err.code).toBe('FM_ERR_NO_CAPABLE_NODE');
    expect(err.status).toBe(503);
    expect(err.message).toContain('hardware:gps');
    expect(err.message).toContain('hardware:camera');
    expect(err.details).toEqual({ required_capabilities: ['tool:echo', 'hardware:gps', 'hardware:camera'] });
  });

  it('scheduler - a capability nobody advertises is FM_ERR_NO_CAPABLE_NODE', async () => {
    await addNode('a');
    const err = errorOf(() => scheduler.candidates('echo', { kind: 'capability', required_capabilities: ['gpu:available'] }));
    expect(err.code).toBe('FM_ERR_NO_CAPABLE_NODE');
    expect(err.message).toContain('gpu:available');
  });

  it('scheduler - a tool only offline nodes offer is FM_ERR_NO_CAPABLE_NODE', async () => {
    const { entry, conn } = await addNode('a');
    await registry.disconnected(entry.record.node_id, conn);
    const err = errorOf(() => scheduler.candidates('echo', local));
    expect(err.code).toBe('FM_ERR_NO_CAPABLE_NODE');
    expect(err.message).toContain('tool:echo');
  });

  it('scheduler - explicit unknown node is FM_ERR_NODE_NOT_FOUND', async () => {
    await addNode('a');
    const err = errorOf(() => scheduler.candidates('echo', { kind: 'explicit', node_id: 'nobody' }));
    expect(err.code).toBe('FM_ERR_NODE_NOT_FOUND');
    expect(err.status).toBe(404);
    expect(err.message).toContain('nobody');
  });

  it('scheduler - explicit offline node is FM_ERR_NODE_OFFLINE', async () => {
    const { entry, conn } = await addNode('a');
    await registry.disconnected(entry.record.node_id, conn);
    const err = errorOf(() => scheduler.candidates('echo', { kind: 'explicit', node_id: 'a' }));
    expect(err.code).toBe('FM_ERR_NODE_OFFLINE');
    expect(err.retryable).toBe(true);
    expect(err.message).toContain('OFFLINE');
  });

  it('scheduler - explicit node without the tool is FM_ERR_NO_CAPABLE_NODE', async () => {
    await addNode('a', { tools: ['sum'] });
    await addNode('b', { tools: ['echo'] });
    const err = errorOf(() => scheduler.candidates('echo', { kind: 'explicit', node_id: 'a' }));
    expect(err.code).toBe('FM_ERR_NO_CAPABLE_NODE');
    expect(err.message).toContain('echo');
  });
});

describe('registry - register', () => {
  it('registry - a node is SYNCING after REGISTER and ONLINE after ready, in memory and in the store', async () => {
    const { entry } = await addNode('a', { ready: false });
    expect(entry.record.status).toBe(NodeStatus.Syncing);
    expect((await store.getNode('a'))?.status).toBe(NodeStatus.Syncing);
    await registry.ready(entry);
    expect(entry.record.status).toBe(NodeStatus.Online);
    expect((await store.getNode('a'))?.status).toBe(NodeStatus.Online);
  });

  it('registry - registering again replaces the advertised capabilities', async () => {
    await addNode('a', { capabilities: ['hardware:gps'] });
    await addNode('a', { capabilities: ['hardware:camera'] });
    expect(registry.withCapability('hardware:gps')).toBeUndefined();
    expect([...(registry.withCapability('hardware:camera') ?? [])]).toEqual(['a']);
    expect(ids(scheduler.candidates('echo', { kind: 'capability', required_capabilities: ['hardware:camera'] }))).toEqual(['a']);
  });

  it('registry - the close of a connection a reconnect replaced changes nothing', async () => {
    const { entry: old, conn: oldConn } = await addNode('a');
    const { conn: newConn } = await addNode('a');
    const disconnects: string[] = [];
    registry.on('disconnected', (e) => disconnects.push(e.record.node_id));
    // The old socket closes late, as a half-open one does; the listener reports it with the entry it registered.
    await registry.disconnected(old.record.node_id, oldConn);
    await settle();
    expect(registry.get('a')?.conn).toBe(newConn);
    expect(registry.get('a')?.record.status).toBe(NodeStatus.Online);
    expect((await store.getNode('a'))?.status).toBe(NodeStatus.Online);
    expect(disconnects).toEqual([]);
  });

  it('registry - load starts every stored node OFFLINE and disconnected', async () => {
    await addNode('a', { capabilities: ['hardware:gps'] });
    await settle();
    const reloaded = new Registry(store, { ...opts, logger: silentLogger });
    await reloaded.load();
    const entry = reloaded.get('a');
    expect(entry?.record.status).toBe(NodeStatus.Offline);
    expect(entry?.conn).toBeNull();
    expect(entry?.record.capabilities).toContain('hardware:gps');
    expect((await store.getNode('a'))?.status).toBe(NodeStatus.Offline);
    const err = errorOf(() => new Scheduler(reloaded).candidates('echo', { kind: 'explicit', node_id: 'a' }));
    expect(err.code).toBe('FM_ERR_NODE_OFFLINE');
  });
});

describe('registry - sweeps', () => {
  // heartbeat 1000 ms, 2 missed (+10% jitter allowance) → DEGRADED past 2100 ms of silence; OFFLINE past 5000 ms.
  it('registry - sweep keeps a node ONLINE up to the degraded threshold and DEGRADED just past it', async () => {
    const { entry, conn } = await addNode('a');
    const t0 = entry.lastSeenMs;
    registry.sweep(t0 + 1000);
    registry.sweep(t0 + 2100);
    expect(entry.record.status).toBe(NodeStatus.Online);
    registry.sweep(t0 + 2101);
    expect(entry.record.status).toBe(NodeStatus.Degraded);
    expect(conn.closed).toBeUndefined();
    expect(entry.conn).toBe(conn);
  });

  it('registry - sweep keeps a DEGRADED node connected up to the offline threshold and drops it just past it', async () => {
    const { entry, conn } = await addNode('a');
    const t0 = entry.lastSeenMs;
    registry.sweep(t0 + 3000);
    registry.sweep(t0 + 5000);
    expect(entry.record.status).toBe(NodeStatus.Degraded);
    expect(conn.closed).toBeUndefined();
    registry.sweep(t0 + 5001);
    expect(entry.record.status).toBe(NodeStatus.Offline);
    expect(entry.conn).toBeNull();
    expect(conn.terminated).toBe(true);
    await settle();
    expect((await store.getNode('a'))?.status).toBe(NodeStatus.Offline);
  });

  it('registry - sweep records ONLINE → DEGRADED → OFFLINE as status events', async () => {
    const { entry } = await addNode('a');
    const seen: string[] = [];
    registry.on('status', (e, previous) => seen.push(`${previous}→${e.record.status}`));
    const t0 = entry.lastSeenMs;
    for (let t = 0; t <= 6000; t += 250) registry.sweep(t0 + t);
    expect(seen).toEqual(['ONLINE→DEGRADED', 'DEGRADED→OFFLINE']);
  });

  it('registry - a heartbeat brings a DEGRADED node back ONLINE', async () => {
    const { entry } = await addNode('a');
    registry.sweep(entry.lastSeenMs + 3000);
    expect(entry.record.status).toBe(NodeStatus.Degraded);
    registry.heartbeat(entry, { cpu: 0.5, memory: 0.5, in_flight: 1 });
    expect(entry.record.status).toBe(NodeStatus.Online);
    expect(entry.record.load).toEqual({ cpu: 0.5, memory: 0.5, in_flight: 1 });
  });

  it('registry - a silent ONLINE node past the offline threshold is dropped in one sweep', async () => {
    const { entry, conn } = await addNode('a');
    registry.sweep(entry.lastSeenMs + 60_000);
    expect(entry.record.status).toBe(NodeStatus.Offline);
    expect(conn.terminated).toBe(true);
  });

  it('registry - sweep leaves nodes that are already disconnected alone', async () => {
    const { entry, conn } = await addNode('a');
    await registry.disconnected(entry.record.node_id, conn);
    const seen: string[] = [];
    registry.on('status', (e) => seen.push(e.record.status));
    registry.sweep(entry.lastSeenMs + 60_000);
    expect(seen).toEqual([]);
    expect(entry.record.status).toBe(NodeStatus.Offline);
  });

  it('registry - disconnected makes a node OFFLINE at once', async () => {
    const { entry, conn } = await addNode('a');
    const disconnects: string[] = [];
    registry.on('disconnected', (e) => disconnects.push(e.record.node_id));
    await registry.disconnected(entry.record.node_id, conn);
    expect(entry.record.status).toBe(NodeStatus.Offline);
    expect(entry.conn).toBeNull();
    expect(disconnects).toEqual(['a']);
    expect((await store.getNode('a'))?.status).toBe(NodeStatus.Offline);
  });
});
