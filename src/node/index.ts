// Public surface of the node agent: the agent itself, its options and the worker-thread tool runtime.
export {
  GATEWAY_PIN_FILE,
  type GatewayPin,
  NODE_CONNECT_PATH,
  NodeAgent,
  type NodeAgentEvents,
  type NodeAgentState,
  type NodeDisconnectedInfo,
  type NodeReadyInfo,
  rootFingerprint,
  SIGNING_KEY_FILE,
} from './agent.js';
export {
  type CompiledNodeOptions,
  compileNodeOptions,
  defaultPlatform,
  type GeoLocation,
  type NodeOptions,
  parseLocation,
} from './options.js';
export { type RunHandle, type RunOutcome, type RunRequest, ToolRuntime, type ToolRuntimeOptions } from './runtime.js';
export type { ToolContext, ToolDefinition, ToolDescriptor, ToolState } from './tools/types.js';
