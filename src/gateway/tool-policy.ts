/**
 * The gateway's tool policy (`[security.tool_policy]`): each tool is `allow`
 * (run as usual), `deny` (refused with FM_ERR_TOOL_DENIED) or `supervised`
 * (stored as `awaiting_approval` until a person approves or rejects it, or it
 * times out), with a default for tools the table does not name.
 */
import type { ToolMode } from '../core/config.js';
import { FieldmeshError } from '../core/errors.js';

export type { ToolMode } from '../core/config.js';

export const TOOL_MODES: readonly ToolMode[] = ['allow', 'deny', 'supervised'];

export interface ToolPolicyOptions {
  /** Mode of a tool the table does not name. @default "allow" */
  default?: ToolMode;
  /** Mode per tool name. @default {} */
  tools?: Record<string, ToolMode>;
  /** How long a supervised task waits for a decision before it fails with FM_ERR_APPROVAL_TIMEOUT. @default 600000 (10 min) */
  approvalTimeoutMs?: number;
}

export interface CompiledToolPolicy {
  default: ToolMode;
  tools: Record<string, ToolMode>;
  approvalTimeoutMs: number;
}

function invalid(option: string, value: unknown, why: string): FieldmeshError {
  return new FieldmeshError('FM_ERR_INVALID_OPTION', `${option}: ${JSON.stringify(value)} ${why}`, { details: { option, value } });
}

function mode(option: string, value: unknown): ToolMode {
  if (!TOOL_MODES.includes(value as ToolMode)) throw invalid(option, value, `is not one of ${TOOL_MODES.join(', ')}`);
  return value as ToolMode;
}

export function compileToolPolicy(options: ToolPolicyOptions = {}): CompiledToolPolicy {
  const tools: Record<string, ToolMode> = Object.create(null);
  for (const [name, value] of Object.entries(options.tools ?? {})) {
    if (!/^[A-Za-z0-9_.:-]{1,128}$/.test(name)) throw invalid('gateway.toolPolicy.tools', name, 'is not a valid tool name');
    tools[name] = mode(`gateway.toolPolicy.tools.${name}`, value);
  }
  const timeout = options.approvalTimeoutMs ?? 600_000;
  if (!Number.isInteger(timeout) || timeout < 1 || timeout > 30 * 86_400_000) {
    throw invalid('gateway.toolPolicy.approvalTimeoutMs', timeout, 'is not an integer from 1 ms to 30 days');
  }
  return { default: mode('gateway.toolPolicy.default', options.default ?? 'allow'), tools, approvalTimeoutMs: timeout };
}

/** The mode that applies to a tool. */
export function toolMode(policy: CompiledToolPolicy, toolName: string): ToolMode {
  return policy.tools[toolName] ?? policy.default;
}

/** Throws FM_ERR_TOOL_DENIED when the policy denies the tool; otherwise tells whether it needs an approval. */
export function checkToolPolicy(policy: CompiledToolPolicy, toolName: string, where = ''): 'allow' | 'supervised' {
  const m = toolMode(policy, toolName);
  if (m === 'deny') {
    throw new FieldmeshError('FM_ERR_TOOL_DENIED', `${where}The gateway tool policy denies tool "${toolName}"`, {
      details: { tool_name: toolName, policy: 'deny' },
    });
  }
  return m;
}
