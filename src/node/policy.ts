/**
 * The node's own policy (`[node.policy]`): which tools it runs, how many at
 * once, how large their arguments may be, and whether it accepts deployed
 * functions. It lives in the node's configuration and no gateway can change
 * it; the node advertises it in REGISTER and refuses any task that breaks it
 * with FM_ERR_NODE_POLICY_DENIED, naming the rule.
 */
import type { ErrorBody } from '../core/errors.js';
import type { NodePolicy } from '../protocol/frames.js';
import type { CompiledNodeOptions } from './options.js';

/** The policy as REGISTER advertises it. */
export function nodePolicy(options: CompiledNodeOptions): NodePolicy {
  return {
    allowed_tools: options.allowedTools,
    max_concurrent_tasks: options.maxConcurrency,
    max_payload_bytes: options.maxPayloadBytes,
    allow_deploy: options.allowDeploy,
  };
}

function denied(nodeId: string, rule: string, message: string, details: Record<string, unknown>): ErrorBody {
  return {
    code: 'FM_ERR_NODE_POLICY_DENIED',
    message: `Node "${nodeId}" policy ${rule}: ${message}`,
    retryable: false,
    details: { node_id: nodeId, rule, ...details },
  };
}

/** Why the node's policy refuses a task, or undefined when it may run. */
export function checkTaskPolicy(policy: NodePolicy, nodeId: string, toolName: string, args: unknown): ErrorBody | undefined {
  if (policy.allowed_tools !== null && !policy.allowed_tools.includes(toolName)) {
    return denied(nodeId, 'allowed_tools', `tool "${toolName}" is not among the allowed tools (${policy.allowed_tools.join(', ')})`, {
      tool_name: toolName,
      allowed_tools: policy.allowed_tools,
    });
  }
  if (policy.max_payload_bytes !== null) {
    const size = Buffer.byteLength(JSON.stringify(args ?? {}));
    if (size > policy.max_payload_bytes) {
      return denied(nodeId, 'max_payload_bytes', `tool_args are ${size} bytes, over the limit of ${policy.max_payload_bytes}`, {
        size,
        limit: policy.max_payload_bytes,
      });
    }
  }
  return undefined;
}
