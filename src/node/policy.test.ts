// Tests for the node's own policy: what it advertises and which tasks it refuses, naming the rule.
import { describe, expect, it } from 'vitest';
import { silentLogger } from '../core/logger.js';
import { compileNodeOptions } from './options.js';
import { checkTaskPolicy, nodePolicy } from './policy.js';

const base = { gateway: '10.0.0.5:8788', id: 'node-a', dataDir: 'tmp/node-a', logger: silentLogger };

describe('node policy', () => {
  it('node policy - defaults allow every tool and any payload, refuse deploys', () => {
    const policy = nodePolicy(compileNodeOptions({ ...base, maxConcurrency: 3 }));
    expect(policy).toEqual({ allowed_tools: null, max_concurrent_tasks: 3, max_payload_bytes: null, allow_deploy: false });
    expect(checkTaskPolicy(policy, 'node-a', 'anything', { big: 'x'.repeat(100_000) })).toBeUndefined();
  });

  it('node policy - a tool outside allowed_tools is refused, naming the rule', () => {
    const policy = nodePolicy(compileNodeOptions({ ...base, allowedTools: ['sys_info', 'sys_info', 'unit_convert'] }));
    expect(policy.allowed_tools).toEqual(['sys_info', 'unit_convert']);
    expect(checkTaskPolicy(policy, 'node-a', 'sys_info', {})).toBeUndefined();
    const refused = checkTaskPolicy(policy, 'node-a', 'shell_exec', {});
    expect(refused).toMatchObject({
      code: 'FM_ERR_NODE_POLICY_DENIED',
      retryable: false,
      details: { rule: 'allowed_tools', node_id: 'node-a', tool_name: 'shell_exec' },
    });
    expect(refused?.message).toMatch(/policy allowed_tools: tool "shell_exec" is not among the allowed tools/);
  });

  it('node policy - arguments over max_payload_bytes are refused with their size and the limit', () => {
    const policy = nodePolicy(compileNodeOptions({ ...base, maxPayloadBytes: 64 }));
    expect(checkTaskPolicy(policy, 'node-a', 't', { v: 'x'.repeat(50) })).toBeUndefined();
    const refused = checkTaskPolicy(policy, 'node-a', 't', { v: 'x'.repeat(100) });
    expect(refused).toMatchObject({ code: 'FM_ERR_NODE_POLICY_DENIED', details: { rule: 'max_payload_bytes', limit: 64, size: 108 } });
  });

  it('node policy - invalid policy options are refused naming the option', () => {
    expect(() => compileNodeOptions({ ...base, maxPayloadBytes: 0 })).toThrow(/node\.maxPayloadBytes: 0/);
    expect(() => compileNodeOptions({ ...base, allowedTools: ['ok', 'not a tool'] })).toThrow(/node\.allowedTools\[1\]: "not a tool"/);
    expect(() => compileNodeOptions({ ...base, allowDeploy: 'yes' as unknown as boolean })).toThrow(/node\.allowDeploy/);
  });
});
