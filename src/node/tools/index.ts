// The registry of tools every fieldmesh node ships with.
import { piiRedactTool } from './pii-redact.js';
import { summarizeTool } from './summarize.js';
import { sysInfoTool } from './sys-info.js';
import type { ToolDefinition } from './types.js';
import { unitConvertTool } from './unit-convert.js';

export { piiRedactTool } from './pii-redact.js';
export { summarizeTool } from './summarize.js';
export { sysInfoTool } from './sys-info.js';
export { unitConvertTool } from './unit-convert.js';

export const builtinTools: ToolDefinition[] = [piiRedactTool, unitConvertTool, summarizeTool, sysInfoTool];

const byName = new Map(builtinTools.map((tool) => [tool.name, tool]));

/** The built-in tool with this name, or undefined. */
export function findBuiltinTool(name: string): ToolDefinition | undefined {
  return byName.get(name);
}
