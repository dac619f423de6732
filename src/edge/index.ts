// In-process edge SDK with the original edge module API: nodes, functions with limits, cluster, state sync and metrics (issue 7, item 5).
export { EdgeCluster, type EdgeClusterOptions, type ListNodesOptions } from './cluster.js';
export { EdgeErrorCode, EdgeExecutionError, type EdgeExecutionErrorOptions, isEdgeExecutionError } from './errors.js';
export {
  type EdgeContext,
  EdgeFunction,
  type EdgeFunctionInit,
  type EdgeHandler,
  type EdgeHandlerFunction,
  type EdgeModuleHandler,
  type EdgeSourceHandler,
} from './function.js';
export { EdgeMetrics, type EdgeMetricsOptions, type EdgeMetricsSummary, InvocationRecord, type InvocationRecordInit } from './metrics.js';
export { EdgeNode, type EdgeNodeInit, EdgeNodeStatus } from './node.js';
export { type EdgeInvokeOptions, EdgeRuntime, type EdgeRuntimeOptions } from './runtime.js';
export type { ContextState, StateHost } from './state-port.js';
export { EdgeSynchronizer, type SyncData, SyncState, type SyncStateInit } from './sync.js';
