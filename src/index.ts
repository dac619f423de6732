/** Public API of the fieldmesh package. */
export { FieldmeshApiError, FieldmeshClient, type FieldmeshClientOptions } from './client/index.js';
export { type ErrorCode, ErrorCodes, FieldmeshError } from './core/errors.js';
export { VERSION } from './core/version.js';
export * from './edge/index.js';
export { Gateway, type GatewayOptions } from './gateway/index.js';
export { NodeAgent } from './node/agent.js';
export type { NodeOptions } from './node/options.js';
export type { ToolContext, ToolDefinition, ToolState } from './node/tools/types.js';
export * from './protocol/api.js';
export type { DiscoveryResponse, PeerStatusView, Registered } from './protocol/discovery-api.js';
export { type ResultBatchProof, type ResultEvidence, verifyResultEvidence } from './protocol/signing.js';
export { CONFLICT_STRATEGIES, ConflictStrategy, type StateDocument } from './protocol/state.js';
export type { Target } from './protocol/target.js';
