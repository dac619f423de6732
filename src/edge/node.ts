// EdgeNode and EdgeNodeStatus: the node record of the original edge API (design doc 002, section 2.2).
import { FieldmeshError } from '../core/errors.js';

/** Health of an edge node. */
export const EdgeNodeStatus = {
  ONLINE: 'ONLINE',
  OFFLINE: 'OFFLINE',
  DEGRADED: 'DEGRADED',
  SYNCING: 'SYNCING',
} as const;
export type EdgeNodeStatus = (typeof EdgeNodeStatus)[keyof typeof EdgeNodeStatus];

export interface EdgeNodeInit {
  id: string;
  name: string;
  /** @default '' */
  location?: string;
  /** @default EdgeNodeStatus.ONLINE */
  status?: EdgeNodeStatus;
  /** What the node can do, e.g. `['gpu', 'camera']`. @default [] */
  capabilities?: readonly string[];
  /** @default {} */
  metadata?: Record<string, unknown>;
  /** @default now */
  lastHeartbeat?: Date;
}

/** A physical or virtual edge node. `status` and `lastHeartbeat` change as the cluster hears from it. */
export class EdgeNode {
  readonly id: string;
  name: string;
  location: string;
  status: EdgeNodeStatus;
  capabilities: string[];
  metadata: Record<string, unknown>;
  lastHeartbeat: Date;

  constructor(init: EdgeNodeInit) {
    if (typeof init.id !== 'string' || init.id === '')
      throw new FieldmeshError('FM_ERR_INVALID_OPTION', 'EdgeNode.id: must be a non-empty string');
    if (init.status !== undefined && !Object.values<string>(EdgeNodeStatus).includes(init.status)) {
      throw new FieldmeshError(
        'FM_ERR_INVALID_OPTION',
        `EdgeNode.status: ${JSON.stringify(init.status)} is not one of ${Object.values(EdgeNodeStatus).join(', ')}`,
      );
    }
    this.id = init.id;
    this.name = init.name;
    this.location = init.location ?? '';
    this.status = init.status ?? EdgeNodeStatus.ONLINE;
    // Copies, so the caller's arrays and objects do not alias the node's.
    this.capabilities = [...(init.capabilities ?? [])];
    this.metadata = { ...(init.metadata ?? {}) };
    this.lastHeartbeat = init.lastHeartbeat ?? new Date();
  }
}
