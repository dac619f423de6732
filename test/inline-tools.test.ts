// Inline tools: a tool marked `inline: true` runs on the node's own thread, with the same schema checks, task slots,
// deadlines, cancellation and ctx.state as a tool in a worker thread; everything else still runs in workers.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StateHost } from '../src/edge/state-port.js';
import type { RunOutcome, ToolRuntime as ToolRuntimeType } from '../src/node/runtime.js';

// The built module: its worker threads load the compiled worker.js next to it (npm test builds first).
const { ToolRuntime } = (await import(new URL('../dist/node/runtime.js', import.meta.url).href)) as {
  ToolRuntime: typeof ToolRuntimeType;
};

const TOOLS = `
import { isMainThread } from 'node:worker_threads';
const where = { type: 'object', properties: { main_thread: { type: 'boolean' }, n: { type: 'number' } }, required: ['main_thread'] };
const waitForAbort = (signal) => new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason), { once: true }));
export const tools = [
  { name: 'inline_where', description: 'where it ran', inline: true,
    input_schema: { type: 'object', properties: { n: { type: 'number' } }, required: ['n'] }, output_schema: where,
    run: (args) => ({ main_thread: isMainThread, n: args.n }) },
  { name: 'worker_where', description: 'where it ran',
    input_schema: { type: 'object' }, output_schema: where, run: () => ({ main_thread: isMainThread }) },
  { name: 'inline_wait', description: 'waits for its signal', inline: true,
    input_schema: { type: 'object' }, output_schema: { type: 'object' },
    run: async (_args, ctx) => { globalThis.lastAbort = undefined; try { await waitForAbort(ctx.signal); } catch (e) { globalThis.lastAbort = e.code; throw e; } } },
  { name: 'inline_throw', description: 'throws', inline: true,
    input_schema: { type: 'object' }, output_schema: { type: 'object' },
    run: () => { const e = new Error('no such unit'); e.code = 'FM_ERR_INVALID_ARGS'; throw e; } },
  { name: 'inline_crash', description: 'throws a plain error', inline: true,
    input_schema: { type: 'object' }, output_schema: { type: 'object' }, run: () => { throw new TypeError('boom'); } },
  { name: 'inline_bad_output', description: 'answers off its schema', inline: true,
    input_schema: { type: 'object' }, output_schema: where, run: () => ({ main_thread: 'yes' }) },
  { name: 'inline_state', description: 'writes state', inline: true,
    input_schema: { type: 'object' }, output_schema: { type: 'object' },
    run: async (_args, ctx) => ({ version: (await ctx.state.set('notes', { by: ctx.task_id })).version }) },
];
`;

let dir: string;
let runtime: ToolRuntimeType;
const written: { doc: string; data: unknown }[] = [];
// The node's journal stands behind StateHost on a node; here a record of what a tool wrote.
const state: StateHost = {
  get: () => null,
  set: async (_doc: string, data: unknown) => {
    written.push({ doc: _doc, data });
    return { version: written.length, data: data as Record<string, unknown>, checksum: 'sha256:-', updated_at: new Date().toISOString() };
  },
};

const call = (tool_name: string, args: unknown = {}, timeout_ms = 5_000) =>
  runtime.run({ task_id: `t-${tool_name}`, attempt: 1, tool_name, args, timeout_ms });

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'fm-inline-'));
  writeFileSync(join(dir, 'tools.mjs'), TOOLS);
  runtime = await ToolRuntime.create({ size: 2, toolModules: [join(dir, 'tools.mjs')], nodeId: 'inline:node', state });
});
afterAll(async () => {
  await runtime.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('inline tools', () => {
  it('inline tools - an inline tool runs on the node thread, any other tool in a worker thread', async () => {
    expect(await call('inline_where', { n: 3 }).promise).toEqual({ ok: true, output: { main_thread: true, n: 3 } });
    expect(await call('worker_where').promise).toEqual({ ok: true, output: { main_thread: false } });
  });

  it('inline tools - the built-in unit_convert is inline and answers as before', async () => {
    const out = await call('unit_convert', { value: 1, from_unit: 'mi', to_unit: 'km' }).promise;
    expect(out).toEqual({ ok: true, output: { value: 1.609344, unit: 'km' } });
    const bad = await call('unit_convert', { value: 1, from_unit: 'mi', to_unit: 'kg' }).promise;
    expect(bad.ok).toBe(false);
    expect((bad as Extract<RunOutcome, { ok: false }>).error.code).toBe('FM_ERR_INCOMPATIBLE_UNITS');
  });

  it('inline tools - bad arguments, a thrown code, a crash and output off the schema get the same errors as in a worker', async () => {
    const codeOf = async (p: Promise<RunOutcome>) => {
      const r = await p;
      return r.ok ? 'ok' : r.error.code;
    };
    expect(await codeOf(call('inline_where', { n: 'three' }).promise)).toBe('FM_ERR_INVALID_ARGS');
    expect(await codeOf(call('inline_throw').promise)).toBe('FM_ERR_INVALID_ARGS');
    const crash = await call('inline_crash').promise;
    expect(crash).toMatchObject({ ok: false, error: { code: 'FM_ERR_EXECUTION', message: 'Tool "inline_crash" failed: boom' } });
    expect(await codeOf(call('inline_bad_output').promise)).toBe('FM_ERR_INVALID_OUTPUT');
    // The node is unharmed: the next call answers.
    expect(await call('inline_where', { n: 1 }).promise).toMatchObject({ ok: true });
  });

  it('inline tools - the deadline ends an inline call and aborts its signal; a cancel does the same', async () => {
    const timedOut = await call('inline_wait', {}, 50).promise;
    expect(timedOut).toMatchObject({ ok: false, error: { code: 'FM_ERR_TOOL_TIMEOUT' } });
    expect((globalThis as { lastAbort?: string }).lastAbort).toBe('FM_ERR_TOOL_TIMEOUT');
    const h = call('inline_wait');
    await new Promise((r) => setTimeout(r, 20));
    h.cancel('operator');
    expect(await h.promise).toMatchObject({ ok: false, error: { code: 'FM_ERR_CANCELLED' } });
    expect((globalThis as { lastAbort?: string }).lastAbort).toBe('FM_ERR_CANCELLED');
  });

  it('inline tools - inline calls hold task slots: with 2 slots taken the third waits until one is free', async () => {
    const a = call('inline_wait');
    const b = call('inline_wait');
    const c = call('inline_where', { n: 9 });
    let cDone = false;
    void c.promise.then(() => {
      cDone = true;
    });
    await new Promise((r) => setTimeout(r, 50));
    expect(cDone).toBe(false);
    expect(runtime.inFlight()).toBe(3);
    a.cancel();
    expect(await c.promise).toEqual({ ok: true, output: { main_thread: true, n: 9 } });
    b.cancel();
    await b.promise;
    expect(runtime.inFlight()).toBe(0);
  });

  it('inline tools - ctx.state reaches the node state from an inline tool', async () => {
    const r = await call('inline_state').promise;
    expect(r).toEqual({ ok: true, output: { version: written.length } });
    expect(written.at(-1)).toEqual({ doc: 'notes', data: { by: 't-inline_state' } });
  });

  it('inline tools - a module whose tool has an "inline" that is not a boolean is refused at load', async () => {
    writeFileSync(
      join(dir, 'bad.mjs'),
      `export const tools = [{ name: 'x', description: 'x', inline: 'yes', input_schema: {}, output_schema: {}, run: () => ({}) }];`,
    );
    await expect(ToolRuntime.create({ size: 1, toolModules: [join(dir, 'bad.mjs')] })).rejects.toThrow(
      /\("x"\) has an "inline" that is not a boolean/,
    );
  });
});
