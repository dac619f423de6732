// Tests for the sys_info tool against the real host, and for the built-in tool registry that ships it.
import os from 'node:os';
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { builtinTools, findBuiltinTool } from './index.js';
import { readSysInfo, sysInfoTool } from './sys-info.js';
import { describeTool, type ToolContext } from './types.js';

// These tools never touch state documents, so the context has none.
const ctx = { node_id: 'node-a', task_id: 'task-1', attempt: 1, signal: new AbortController().signal } as ToolContext;
const ajv = new Ajv({ allErrors: true });
const validateInput = ajv.compile(sysInfoTool.input_schema);
const validateOutput = ajv.compile(sysInfoTool.output_schema);

describe('sys_info - output', () => {
  it('reports this host', async () => {
    const info = await sysInfoTool.run({}, ctx);
    expect(info.platform).toBe(process.platform);
    expect(info.arch).toBe(process.arch);
    expect(info.hostname).toBe(os.hostname());
    expect(info.node_version).toBe(process.version);
    expect(info.cpu_count).toBeGreaterThanOrEqual(1);
    expect(info.cpu_model.length).toBeGreaterThan(0);
    expect(info.total_memory_bytes).toBeGreaterThan(0);
    expect(info.free_memory_bytes).toBeLessThanOrEqual(info.total_memory_bytes);
    expect(info.uptime_seconds).toBeGreaterThan(0);
    expect(info.load_average).toHaveLength(3);
  });

  it.each([
    ['platform', 'string'],
    ['arch', 'string'],
    ['hostname', 'string'],
    ['cpu_count', 'number'],
    ['cpu_model', 'string'],
    ['total_memory_bytes', 'number'],
    ['free_memory_bytes', 'number'],
    ['uptime_seconds', 'number'],
    ['node_version', 'string'],
  ] as const)('%s is a %s', (key, type) => {
    expect(typeof readSysInfo()[key]).toBe(type);
  });

  it('matches its output schema', () => {
    const info = readSysInfo();
    expect(validateOutput(info), JSON.stringify(validateOutput.errors)).toBe(true);
  });

  it.each([
    ['a missing field', { ...readSysInfo(), hostname: undefined }],
    ['an extra field', { ...readSysInfo(), kernel: '6.1' }],
    ['a short load average', { ...readSysInfo(), load_average: [0.1, 0.2] }],
    ['a fractional cpu count', { ...readSysInfo(), cpu_count: 1.5 }],
  ])('output schema rejects %s', (_name, output) => {
    expect(validateOutput(JSON.parse(JSON.stringify(output)))).toBe(false);
  });

  it.each([
    [{}, true],
    [{ verbose: true }, false],
    [[], false],
    ['x', false],
  ])('input schema on %j is %s', (input, ok) => {
    expect(validateInput(input)).toBe(ok);
  });
});

describe('builtin tools - registry', () => {
  it('lists the four built-in tools with unique names', () => {
    const names = builtinTools.map((t) => t.name);
    expect(names).toEqual(['pii_redact', 'unit_convert', 'summarize', 'sys_info']);
    expect(new Set(names).size).toBe(names.length);
  });

  it.each(['pii_redact', 'unit_convert', 'summarize', 'sys_info'])('findBuiltinTool(%s) finds it', (name) => {
    expect(findBuiltinTool(name)?.name).toBe(name);
  });

  it('findBuiltinTool returns undefined for an unknown name', () => {
    expect(findBuiltinTool('rm_rf')).toBeUndefined();
  });

  it.each(builtinTools.map((t) => [t.name, t] as const))('%s has compilable schemas that close their inputs', (_name, tool) => {
    expect(() => ajv.compile(tool.input_schema)).not.toThrow();
    expect(() => ajv.compile(tool.output_schema)).not.toThrow();
    expect(tool.input_schema).toMatchObject({ type: 'object', additionalProperties: false });
    expect(tool.description.length).toBeGreaterThan(20);
    expect(JSON.parse(JSON.stringify(describeTool(tool)))).toEqual(describeTool(tool));
  });
});
