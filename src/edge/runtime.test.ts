// Tests for EdgeRuntime: deployment, invocation in-process and in worker threads, time and memory limits, environments and errors.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StateDocument } from '../protocol/state.js';
import { EdgeErrorCode, EdgeExecutionError, isEdgeExecutionError } from './errors.js';
import { type EdgeContext, EdgeFunction } from './function.js';
import { EdgeMetrics } from './metrics.js';
import { EdgeNode } from './node.js';
import { EdgeRuntime } from './runtime.js';
import type { StateHost } from './state-port.js';
import { SyncState } from './sync.js';

function newRuntime(metrics?: EdgeMetrics): EdgeRuntime {
  return new EdgeRuntime(new EdgeNode({ id: 'edge-01', name: 'warehouse-sensor' }), metrics ? { metrics } : {});
}

/** Resolves with what `promise` rejects with, failing the test if it resolves. */
async function rejection(promise: Promise<unknown>): Promise<EdgeExecutionError> {
  try {
    await promise;
  } catch (err) {
    expect(isEdgeExecutionError(err)).toBe(true);
    return err as EdgeExecutionError;
  }
  throw new Error('expected the call to fail');
}

/** A promise plus the function that resolves it, to hold a handler at a known point. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => {
    open = r;
  });
  return { promise, open };
}

/** Never settles, and its interval keeps the worker's event loop alive so only the time limit can end it. */
const HANG = 'export default () => new Promise(() => { setInterval(() => {}, 1000); });';

let dir: string;
let modulePath: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fieldmesh-edge-'));
  modulePath = join(dir, 'double.mjs');
  await writeFile(
    modulePath,
    'export default async (args, ctx) => ({ doubled: args.n * 2, functionId: ctx.functionId, nodeId: ctx.nodeId });\n',
  );
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('edge - runtime deployment', () => {
  it('edge - deploy, invoke, list and undeploy an in-process function', async () => {
    const runtime = newRuntime();
    const fn = new EdgeFunction({
      id: 'fn-1',
      name: 'add',
      handler: (args) => (args as { a: number; b: number }).a + (args as { b: number }).b,
    });
    runtime.deploy(fn);
    expect(runtime.listFunctions()).toEqual([fn]);
    await expect(runtime.invoke('fn-1', { a: 2, b: 3 })).resolves.toBe(5);
    expect(runtime.undeploy('fn-1')).toBe(true);
    expect(runtime.undeploy('fn-1')).toBe(false);
    expect(runtime.listFunctions()).toEqual([]);
    const err = await rejection(runtime.invoke('fn-1', { a: 1, b: 1 }));
    expect(err.code).toBe('FM_ERR_FUNCTION_NOT_FOUND');
    expect(err.functionId).toBe('fn-1');
    expect(err.nodeId).toBe('edge-01');
  });

  it('edge - an unknown function fails with FM_ERR_FUNCTION_NOT_FOUND', async () => {
    const err = await rejection(newRuntime().invoke('missing'));
    expect(err).toBeInstanceOf(EdgeExecutionError);
    expect(err.code).toBe(EdgeErrorCode.FUNCTION_NOT_FOUND);
    expect(err.message).toContain('missing');
  });

  it('edge - deploying the same id again replaces the function', async () => {
    const runtime = newRuntime();
    runtime.deploy(new EdgeFunction({ id: 'fn', name: 'v1', handler: () => 'v1' }));
    runtime.deploy(new EdgeFunction({ id: 'fn', name: 'v2', handler: () => 'v2' }));
    expect(runtime.listFunctions().map((f) => f.name)).toEqual(['v2']);
    await expect(runtime.invoke('fn')).resolves.toBe('v2');
  });

  it('edge - a module handler given as an absolute path or file URL runs in a worker', async () => {
    const runtime = newRuntime();
    runtime.deploy(new EdgeFunction({ id: 'by-path', name: 'double', handler: { module: modulePath } }));
    runtime.deploy(new EdgeFunction({ id: 'by-url', name: 'double', handler: { module: pathToFileURL(modulePath) } }));
    await expect(runtime.invoke('by-path', { n: 21 })).resolves.toEqual({ doubled: 42, functionId: 'by-path', nodeId: 'edge-01' });
    await expect(runtime.invoke('by-url', { n: 4 })).resolves.toEqual({ doubled: 8, functionId: 'by-url', nodeId: 'edge-01' });
  });

  it('edge - a source handler runs in a worker and may import node built-ins', async () => {
    const runtime = newRuntime();
    const source = "import { isMainThread } from 'node:worker_threads';\nexport default (args) => ({ isMainThread, echo: args });";
    runtime.deploy(new EdgeFunction({ id: 'src', name: 'echo', handler: { source } }));
    await expect(runtime.invoke('src', [1, 'two'])).resolves.toEqual({ isMainThread: false, echo: [1, 'two'] });
  });
});

describe('edge - runtime errors', () => {
  it('edge - a throw in an in-process handler gives FM_ERR_EXECUTION with the original error as cause', async () => {
    const runtime = newRuntime();
    const original = new RangeError('sensor out of range');
    runtime.deploy(
      new EdgeFunction({
        id: 'bad',
        name: 'bad',
        handler: () => {
          throw original;
        },
      }),
    );
    const err = await rejection(runtime.invoke('bad'));
    expect(err.code).toBe('FM_ERR_EXECUTION');
    expect(err.cause).toBe(original);
    expect(err.message).toContain('sensor out of range');
  });

  it('edge - an async rejection in an in-process handler is wrapped the same way', async () => {
    const runtime = newRuntime();
    runtime.deploy(new EdgeFunction({ id: 'bad', name: 'bad', handler: async () => Promise.reject(new Error('later')) }));
    const err = await rejection(runtime.invoke('bad'));
    expect(err.code).toBe('FM_ERR_EXECUTION');
    expect((err.cause as Error).message).toBe('later');
  });

  it('edge - a throw in a worker handler gives FM_ERR_EXECUTION with the original name, message and code as cause', async () => {
    const runtime = newRuntime();
    const source = "export default () => { throw Object.assign(new TypeError('bad frame'), { code: 'E_FRAME' }); };";
    runtime.deploy(new EdgeFunction({ id: 'bad', name: 'bad', handler: { source } }));
    const err = await rejection(runtime.invoke('bad'));
    expect(err.code).toBe('FM_ERR_EXECUTION');
    expect(err.message).toContain('bad frame');
    const cause = err.cause as Error & { code?: string };
    expect(cause).toBeInstanceOf(Error);
    expect(cause.name).toBe('TypeError');
    expect(cause.message).toBe('bad frame');
    expect(cause.code).toBe('E_FRAME');
  });

  it('edge - a thrown non-error value from a worker is kept as the cause', async () => {
    const runtime = newRuntime();
    runtime.deploy(new EdgeFunction({ id: 'bad', name: 'bad', handler: { source: "export default () => { throw 'plain string'; };" } }));
    const err = await rejection(runtime.invoke('bad'));
    expect(err.code).toBe('FM_ERR_EXECUTION');
    expect(err.cause).toBe('plain string');
  });

  it('edge - a module without a default export function fails with FM_ERR_EXECUTION', async () => {
    const runtime = newRuntime();
    runtime.deploy(new EdgeFunction({ id: 'none', name: 'none', handler: { source: 'export const handler = () => 1;' } }));
    const err = await rejection(runtime.invoke('none'));
    expect(err.code).toBe('FM_ERR_EXECUTION');
    expect(err.message).toContain('could not be loaded');
  });

  it('edge - arguments that cannot be copied to a worker fail with FM_ERR_INVALID_ARGS', async () => {
    const runtime = newRuntime();
    runtime.deploy(new EdgeFunction({ id: 'w', name: 'w', handler: { source: 'export default (a) => a;' } }));
    const err = await rejection(runtime.invoke('w', { callback: () => 1 }));
    expect(err.code).toBe('FM_ERR_INVALID_ARGS');
  });

  it('edge - a result that cannot be copied out of a worker fails with FM_ERR_EXECUTION', async () => {
    const runtime = newRuntime();
    runtime.deploy(new EdgeFunction({ id: 'w', name: 'w', handler: { source: 'export default () => ({ f: () => 1 });' } }));
    const err = await rejection(runtime.invoke('w'));
    expect(err.code).toBe('FM_ERR_EXECUTION');
    expect(err.message).toContain('cannot be copied');
  });

  it('edge - a worker handler awaiting a promise nothing can settle fails with FM_ERR_EXECUTION', async () => {
    const runtime = newRuntime();
    runtime.deploy(new EdgeFunction({ id: 'stuck', name: 'stuck', handler: { source: 'export default () => new Promise(() => {});' } }));
    const err = await rejection(runtime.invoke('stuck'));
    expect(err.code).toBe('FM_ERR_EXECUTION');
    expect(err.message).toContain('without a result');
  });

  it('edge - a worker that exits without answering fails with FM_ERR_WORKER_CRASHED', async () => {
    const runtime = newRuntime();
    runtime.deploy(new EdgeFunction({ id: 'exit', name: 'exit', handler: { source: 'export default () => { process.exit(3); };' } }));
    const err = await rejection(runtime.invoke('exit'));
    expect(err.code).toBe('FM_ERR_WORKER_CRASHED');
    expect(err.message).toContain('code 3');
  });
});

describe('edge - runtime limits', () => {
  it('edge - a worker function that never returns is stopped at its time limit and the runtime keeps serving', async () => {
    const runtime = newRuntime();
    runtime.deploy(new EdgeFunction({ id: 'hang', name: 'hang', timeoutSeconds: 0.3, handler: { source: HANG } }));
    runtime.deploy(
      new EdgeFunction({ id: 'spin', name: 'spin', timeoutSeconds: 0.3, handler: { source: 'export default () => { for (;;) {} };' } }),
    );
    runtime.deploy(new EdgeFunction({ id: 'ok', name: 'ok', handler: { source: "export default () => 'still serving';" } }));
    expect((await rejection(runtime.invoke('hang'))).code).toBe('FM_ERR_TOOL_TIMEOUT');
    expect((await rejection(runtime.invoke('spin'))).code).toBe('FM_ERR_TOOL_TIMEOUT');
    await expect(runtime.invoke('ok')).resolves.toBe('still serving');
    // The same function can be called again after its time-out.
    expect((await rejection(runtime.invoke('spin'))).code).toBe('FM_ERR_TOOL_TIMEOUT');
  });

  it('edge - an in-process function that never returns is stopped at its time limit and its signal is aborted', async () => {
    const runtime = newRuntime();
    let seen: EdgeContext | undefined;
    runtime.deploy(
      new EdgeFunction({
        id: 'hang',
        name: 'hang',
        timeoutSeconds: 0.2,
        handler: (_args, ctx) => {
          seen = ctx;
          return new Promise(() => undefined);
        },
      }),
    );
    runtime.deploy(new EdgeFunction({ id: 'ok', name: 'ok', handler: () => 'still serving' }));
    const err = await rejection(runtime.invoke('hang'));
    expect(err.code).toBe(EdgeErrorCode.TOOL_TIMEOUT);
    expect(seen?.signal.aborted).toBe(true);
    expect(seen?.signal.reason).toBe(err);
    await expect(runtime.invoke('ok')).resolves.toBe('still serving');
  });

  it('edge - an in-process function that rejects after its time limit leaves the time-out error in place', async () => {
    const runtime = newRuntime();
    const late = gate();
    runtime.deploy(
      new EdgeFunction({
        id: 'late',
        name: 'late',
        timeoutSeconds: 0.1,
        handler: async (_args, ctx) => {
          await new Promise((r) => ctx.signal.addEventListener('abort', r));
          late.open();
          throw new Error('too late');
        },
      }),
    );
    const err = await rejection(runtime.invoke('late'));
    await late.promise;
    expect(err.code).toBe('FM_ERR_TOOL_TIMEOUT');
  });

  it('edge - a function that allocates past its memory limit is stopped with FM_ERR_OUT_OF_MEMORY and the runtime keeps serving', async () => {
    const runtime = newRuntime();
    const source = 'export default () => { const keep = []; for (;;) keep.push({ n: keep.length, s: String(keep.length) }); };';
    runtime.deploy(new EdgeFunction({ id: 'hog', name: 'hog', memoryMb: 32, handler: { source } }));
    runtime.deploy(new EdgeFunction({ id: 'ok', name: 'ok', memoryMb: 32, handler: { source: 'export default (n) => n + 1;' } }));
    const err = await rejection(runtime.invoke('hog'));
    expect(err.code).toBe('FM_ERR_OUT_OF_MEMORY');
    expect(err.message).toContain('32 MB');
    await expect(runtime.invoke('ok', 41)).resolves.toBe(42);
  });

  it('edge - a worker is reused by the same version only, and not after its idle time or with warmWorkers 0', async () => {
    const source = 'let calls = 0;\nexport default () => ++calls;';
    const node = new EdgeNode({ id: 'edge-01', name: 'warehouse-sensor' });
    const runtime = new EdgeRuntime(node, { idleWorkerMs: 50 });
    runtime.deploy(new EdgeFunction({ id: 'count', name: 'count', handler: { source } }));
    await expect(runtime.invoke('count')).resolves.toBe(1);
    await expect(runtime.invoke('count')).resolves.toBe(2);
    await new Promise((r) => setTimeout(r, 300));
    await expect(runtime.invoke('count')).resolves.toBe(1);
    // The same code deployed again is a new version: it gets a worker of its own.
    runtime.deploy(new EdgeFunction({ id: 'count', name: 'count', handler: { source } }));
    await expect(runtime.invoke('count')).resolves.toBe(1);
    // Closing ends the idle worker; a closed runtime still serves calls, each in a worker of its own.
    runtime.close();
    await expect(runtime.invoke('count')).resolves.toBe(1);
    await expect(runtime.invoke('count')).resolves.toBe(1);

    const cold = new EdgeRuntime(node, { warmWorkers: 0 });
    cold.deploy(new EdgeFunction({ id: 'count', name: 'count', handler: { source } }));
    await expect(cold.invoke('count')).resolves.toBe(1);
    await expect(cold.invoke('count')).resolves.toBe(1);
  });

  it('edge - timers a call leaves running end with it: the next call in the warm worker does not see them fire', async () => {
    const source = [
      'let ticks = 0;',
      'let moduleTicks = 0;',
      'let libraryTicks = 0;',
      "// A module-level timer and an unreferenced one (as libraries keep) are not the call's: they keep running.",
      'setInterval(() => moduleTicks++, 5);',
      'export default async (args) => {',
      '  if (args.start) {',
      '    setInterval(() => ticks++, 5); setTimeout(() => { ticks += 1000; }, 20); setImmediate(() => ticks++);',
      '    setInterval(() => libraryTicks++, 5).unref();',
      '    const cleared = setInterval(() => { ticks += 1e6; }, 1); clearInterval(cleared);',
      '  }',
      '  // A timer the call awaits still fires: only what is left when the call ends is cleared.',
      '  await new Promise((r) => setTimeout(r, 30));',
      '  return args.housekeeping ? [moduleTicks, libraryTicks] : ticks;',
      '};',
    ].join('\n');
    const node = new EdgeNode({ id: 'edge-01', name: 'warehouse-sensor' });
    const runtime = new EdgeRuntime(node);
    runtime.deploy(new EdgeFunction({ id: 'ticker', name: 'ticker', handler: { source } }));
    const first = (await runtime.invoke('ticker', { start: true })) as number;
    // While the call ran, its interval, timeout and immediate fired.
    expect(first).toBeGreaterThan(1000);
    await new Promise((r) => setTimeout(r, 100));
    // The same warm worker (the module's ticks carried over), and no tick since the first call ended.
    await expect(runtime.invoke('ticker', {})).resolves.toBe(first);
    expect(first).toBeLessThan(1e6);
    const [moduleBefore, libraryBefore] = (await runtime.invoke('ticker', { housekeeping: true })) as number[];
    await new Promise((r) => setTimeout(r, 60));
    const [moduleAfter, libraryAfter] = (await runtime.invoke('ticker', { housekeeping: true })) as number[];
    expect(moduleAfter).toBeGreaterThan(moduleBefore as number);
    expect(libraryAfter).toBeGreaterThan(libraryBefore as number);
    runtime.close();
  });

  it('edge - a worker that ran out of memory is not reused: the next call starts from a fresh module', async () => {
    const runtime = newRuntime();
    const source =
      'let calls = 0;\nexport default (args) => { calls++; if (args.hog) { const keep = []; for (;;) keep.push({ s: String(keep.length) }); } return calls; };';
    runtime.deploy(new EdgeFunction({ id: 'hog', name: 'hog', memoryMb: 32, handler: { source } }));
    await expect(runtime.invoke('hog', {})).resolves.toBe(1);
    await expect(runtime.invoke('hog', {})).resolves.toBe(2);
    expect((await rejection(runtime.invoke('hog', { hog: true }))).code).toBe('FM_ERR_OUT_OF_MEMORY');
    await expect(runtime.invoke('hog', {})).resolves.toBe(1);
    runtime.close();
  });
});

describe('edge - runtime environments', () => {
  it('edge - worker functions see only their own environment in process.env and ctx.env', async () => {
    const runtime = newRuntime();
    const source = 'export default (_args, ctx) => ({ processEnv: { ...process.env }, ctxEnv: ctx.env });';
    runtime.deploy(new EdgeFunction({ id: 'a', name: 'a', environment: { REGION: 'north', TOKEN_A: 'a' }, handler: { source } }));
    runtime.deploy(new EdgeFunction({ id: 'b', name: 'b', environment: { REGION: 'south' }, handler: { source } }));
    const [a, b] = await Promise.all([runtime.invoke('a'), runtime.invoke('b')]);
    expect(a).toEqual({ processEnv: { REGION: 'north', TOKEN_A: 'a' }, ctxEnv: { REGION: 'north', TOKEN_A: 'a' } });
    expect(b).toEqual({ processEnv: { REGION: 'south' }, ctxEnv: { REGION: 'south' } });
  });

  it('edge - a worker function writing process.env changes neither the host nor the next call', async () => {
    const runtime = newRuntime();
    const source = 'export default () => { const before = process.env.COUNT ?? null; process.env.COUNT = "changed"; return before; };';
    runtime.deploy(new EdgeFunction({ id: 'w', name: 'w', environment: { COUNT: 'initial' }, handler: { source } }));
    await expect(runtime.invoke('w')).resolves.toBe('initial');
    await expect(runtime.invoke('w')).resolves.toBe('initial');
    expect(process.env.COUNT).toBeUndefined();
  });

  it('edge - in-process functions each get their own environment as ctx.env', async () => {
    const runtime = newRuntime();
    const handler = (_args: unknown, ctx: EdgeContext) => ({ ...ctx.env });
    runtime.deploy(new EdgeFunction({ id: 'a', name: 'a', environment: { REGION: 'north' }, handler }));
    runtime.deploy(new EdgeFunction({ id: 'b', name: 'b', environment: { MODE: 'test' }, handler }));
    await expect(runtime.invoke('a')).resolves.toEqual({ REGION: 'north' });
    await expect(runtime.invoke('b')).resolves.toEqual({ MODE: 'test' });
  });
});

describe('edge - runtime concurrency', () => {
  it('edge - deploy and undeploy during an invocation leave the running call on the version it started with', async () => {
    const runtime = newRuntime();
    const held = gate();
    runtime.deploy(
      new EdgeFunction({
        id: 'fn',
        name: 'v1',
        handler: async () => {
          await held.promise;
          return 'v1';
        },
      }),
    );
    const running = runtime.invoke('fn');
    runtime.deploy(new EdgeFunction({ id: 'fn', name: 'v2', handler: () => 'v2' }));
    await expect(runtime.invoke('fn')).resolves.toBe('v2');
    expect(runtime.undeploy('fn')).toBe(true);
    held.open();
    await expect(running).resolves.toBe('v1');
    expect((await rejection(runtime.invoke('fn'))).code).toBe('FM_ERR_FUNCTION_NOT_FOUND');
  });

  it('edge - redeploying a worker function while it runs does not change the running call', async () => {
    const runtime = newRuntime();
    runtime.deploy(
      new EdgeFunction({ id: 'fn', name: 'v1', handler: { source: "export default async () => { await null; return 'v1'; };" } }),
    );
    const running = runtime.invoke('fn');
    runtime.deploy(new EdgeFunction({ id: 'fn', name: 'v2', handler: { source: "export default () => 'v2';" } }));
    const [first, second] = await Promise.all([running, runtime.invoke('fn')]);
    expect(first).toBe('v1');
    expect(second).toBe('v2');
  });

  it('edge - many concurrent invocations of several functions each get their own result', async () => {
    const metrics = new EdgeMetrics();
    const runtime = newRuntime(metrics);
    runtime.deploy(new EdgeFunction({ id: 'sq', name: 'square', handler: async (n) => (n as number) ** 2 }));
    runtime.deploy(new EdgeFunction({ id: 'neg', name: 'negate', handler: { source: 'export default (n) => -n;' } }));
    runtime.deploy(new EdgeFunction({ id: 'env', name: 'env', environment: { WHO: 'env' }, handler: (_a, ctx) => ctx.env.WHO }));
    const calls: Promise<unknown>[] = [];
    const expected: unknown[] = [];
    for (let i = 0; i < 10; i++) {
      calls.push(runtime.invoke('sq', i), runtime.invoke('neg', i), runtime.invoke('env'));
      expected.push(i ** 2, -i, 'env');
    }
    expect(await Promise.all(calls)).toEqual(expected);
    expect(metrics.totalInvocations()).toBe(30);
    expect(metrics.totalInvocations('neg')).toBe(10);
    expect(metrics.errorCount()).toBe(0);
  });

  it('edge - failures among concurrent invocations do not affect the others', async () => {
    const runtime = newRuntime();
    runtime.deploy(new EdgeFunction({ id: 'hang', name: 'hang', timeoutSeconds: 0.3, handler: { source: HANG } }));
    runtime.deploy(new EdgeFunction({ id: 'ok', name: 'ok', handler: (n) => n }));
    const results = await Promise.allSettled([
      runtime.invoke('hang'),
      runtime.invoke('ok', 1),
      runtime.invoke('missing'),
      runtime.invoke('ok', 2),
    ]);
    expect(results.map((r) => (r.status === 'fulfilled' ? r.value : (r.reason as EdgeExecutionError).code))).toEqual([
      'FM_ERR_TOOL_TIMEOUT',
      1,
      'FM_ERR_FUNCTION_NOT_FOUND',
      2,
    ]);
  });
});

describe('edge - runtime metrics', () => {
  it('edge - the runtime records every call to a deployed function, with the error for failures', async () => {
    const metrics = new EdgeMetrics();
    const runtime = newRuntime(metrics);
    runtime.deploy(new EdgeFunction({ id: 'ok', name: 'ok', handler: () => 1 }));
    runtime.deploy(
      new EdgeFunction({
        id: 'bad',
        name: 'bad',
        handler: () => {
          throw new Error('boom');
        },
      }),
    );
    await runtime.invoke('ok');
    await runtime.invoke('ok');
    await rejection(runtime.invoke('bad'));
    await rejection(runtime.invoke('missing'));
    const records = metrics.list();
    expect(records.map((r) => [r.functionId, r.nodeId, r.success])).toEqual([
      ['ok', 'edge-01', true],
      ['ok', 'edge-01', true],
      ['bad', 'edge-01', false],
    ]);
    expect(records[2]?.error).toContain('FM_ERR_EXECUTION');
    expect(records[2]?.error).toContain('boom');
    expect(records.every((r) => r.durationMs >= 0)).toBe(true);
  });
});

/** State documents held in memory, versioned like a node's copies. */
function memoryState(): StateHost & { docs: Map<string, StateDocument> } {
  const docs = new Map<string, StateDocument>();
  return {
    docs,
    get: (doc) => docs.get(doc) ?? null,
    set: async (doc, data) => {
      const next = SyncState.fromData(data as Record<string, unknown>, (docs.get(doc)?.version ?? 0) + 1);
      const written: StateDocument = {
        version: next.version,
        data: { ...next.data },
        checksum: next.checksum,
        updated_at: next.updatedAt.toISOString(),
      };
      docs.set(doc, written);
      return written;
    },
  };
}

describe('edge - runtime state', () => {
  const withState = (state?: StateHost) => new EdgeRuntime(new EdgeNode({ id: 'edge-01', name: 'warehouse-sensor' }), { state });

  it('edge - a worker function reads and writes state documents through ctx.state', async () => {
    const state = memoryState();
    await state.set('config', { threshold: 7 });
    const runtime = withState(state);
    runtime.deploy(
      new EdgeFunction({
        id: 'count',
        name: 'count',
        handler: {
          source: `export default async (args, ctx) => {
            const config = await ctx.state.get('config');
            const none = await ctx.state.get('missing');
            const written = await ctx.state.set('counter', { n: args.n, threshold: config.data.threshold });
            return { config: config.data, none, written: { version: written.version, data: written.data } };
          };`,
        },
      }),
    );
    expect(await runtime.invoke('count', { n: 1 })).toEqual({
      config: { threshold: 7 },
      none: null,
      written: { version: 1, data: { n: 1, threshold: 7 } },
    });
    await runtime.invoke('count', { n: 2 });
    expect(state.docs.get('counter')).toMatchObject({ version: 2, data: { n: 2, threshold: 7 } });
  });

  it("edge - ctx.state refusals reach the function as errors with the host's code", async () => {
    const runtime = withState(memoryState());
    const source = `export default async (args, ctx) => {
      const codes = [];
      for (const attempt of [() => ctx.state.set('x', { big: 1n }), () => ctx.state.get('x')]) {
        try { await attempt(); codes.push('ok'); } catch (err) { codes.push(err.code); }
      }
      return codes;
    };`;
    runtime.deploy(new EdgeFunction({ id: 'bad', name: 'bad', handler: { source } }));
    expect(await runtime.invoke('bad')).toEqual(['FM_ERR_INVALID_REQUEST', 'ok']);
    // A runtime without a state host refuses every call.
    const bare = withState();
    bare.deploy(new EdgeFunction({ id: 'bad', name: 'bad', handler: { source } }));
    expect(await bare.invoke('bad')).toEqual(['FM_ERR_INVALID_REQUEST', 'FM_ERR_INTERNAL']);
  });

  it('edge - a worker function left pending on nothing after a state call still ends instead of hanging', async () => {
    const runtime = withState(memoryState());
    const source = "export default async (args, ctx) => { await ctx.state.get('x'); await new Promise(() => {}); };";
    runtime.deploy(new EdgeFunction({ id: 'stuck', name: 'stuck', handler: { source }, timeoutSeconds: 20 }));
    const err = await rejection(runtime.invoke('stuck'));
    expect(err.code).toBe(EdgeErrorCode.EXECUTION);
    expect(err.message).toContain('ran out of work');
  });

  it('edge - an in-process function may use ctx.state only while its call runs', async () => {
    const state = memoryState();
    const runtime = withState(state);
    let kept: EdgeContext['state'] | undefined;
    runtime.deploy(
      new EdgeFunction({
        id: 'keep',
        name: 'keep',
        handler: async (_args, ctx) => {
          kept = ctx.state;
          return (await ctx.state.set('doc', { during: true })).version;
        },
      }),
    );
    expect(await runtime.invoke('keep')).toBe(1);
    await expect(kept!.set('doc', { after: true })).rejects.toMatchObject({ code: 'FM_ERR_CANCELLED' });
    expect(state.docs.get('doc')?.data).toEqual({ during: true });
  });

  it('edge - a reused worker refuses the ctx.state of a call that has finished', async () => {
    const state = memoryState();
    const runtime = withState(state);
    const source = `let kept;
export default async (_args, ctx) => {
  if (!kept) {
    kept = ctx.state;
    return (await ctx.state.set('doc', { first: true })).version;
  }
  const refused = await kept.set('doc', { stale: true }).then(() => 'accepted', (err) => err.code);
  return [refused, (await ctx.state.set('doc', { second: true })).version];
};`;
    runtime.deploy(new EdgeFunction({ id: 'keep', name: 'keep', handler: { source } }));
    expect(await runtime.invoke('keep')).toBe(1);
    expect(await runtime.invoke('keep')).toEqual(['FM_ERR_CANCELLED', 2]);
    expect(state.docs.get('doc')?.data).toEqual({ second: true });
    runtime.close();
  });
});
