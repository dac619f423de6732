// SyncState and EdgeSynchronizer of the original edge API (design doc 002, section 2.3); the mesh's state sync uses the same classes.
export { EdgeSynchronizer, type SyncData, SyncState, type SyncStateInit } from '../protocol/state.js';
