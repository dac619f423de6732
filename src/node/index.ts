// Public surface of the node agent: the agent itself, its options and the worker-thread tool runtime.
export {
  CLOSE_IDENTITY_REFUSED,
  NODE_CONNECT_PATH,
  NodeAgent,
  type NodeAgentEvents,
  type NodeAgentState,
  type NodeDisconnectedInfo,
  type NodeReadyInfo,
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
export {
  GATEWAY_CA_FILE,
  GATEWAY_SIGNING_KEY_FILE,
  loadNodeIdentity,
  NODE_CERT_FILE,
  NODE_KEY_FILE,
  type NodeIdentity,
  requestCertificate,
  TLS_DIR,
} from './pairing.js';
export { type RunHandle, type RunOutcome, type RunRequest, ToolRuntime, type ToolRuntimeOptions } from './runtime.js';
export type { ToolContext, ToolDefinition, ToolDescriptor, ToolState } from './tools/types.js';
