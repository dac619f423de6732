// EdgeMetrics and InvocationRecord: per-invocation records and the summary figures of the original edge API (design doc 002, section 2.6).
import { FieldmeshError } from '../core/errors.js';

export interface InvocationRecordInit {
  functionId: string;
  nodeId: string;
  durationMs: number;
  success: boolean;
  /** @default now */
  timestamp?: Date;
  /** What went wrong; empty for a success. @default '' */
  error?: string;
}

/** One function invocation. */
export class InvocationRecord {
  readonly functionId: string;
  readonly nodeId: string;
  readonly durationMs: number;
  readonly success: boolean;
  readonly timestamp: Date;
  readonly error: string;

  constructor(init: InvocationRecordInit) {
    if (!Number.isFinite(init.durationMs) || init.durationMs < 0) {
      throw new FieldmeshError(
        'FM_ERR_INVALID_OPTION',
        `InvocationRecord.durationMs: ${String(init.durationMs)} is not a non-negative number`,
      );
    }
    this.functionId = init.functionId;
    this.nodeId = init.nodeId;
    this.durationMs = init.durationMs;
    this.success = init.success;
    this.timestamp = init.timestamp ?? new Date();
    this.error = init.error ?? '';
  }
}

/** What {@link EdgeMetrics.summary} returns. */
export interface EdgeMetricsSummary {
  totalInvocations: number;
  /** Percent, 0-100; 0 when nothing was recorded. */
  successRate: number;
  /** 0 when nothing was recorded. */
  avgLatencyMs: number;
  errorCount: number;
}

export interface EdgeMetricsOptions {
  /**
   * Keep only the most recent this many records, so a long-running process
   * that records every call does not grow without bound; every figure then
   * covers the records kept. @default Infinity
   */
  maxRecords?: number;
}

/**
 * Records invocations and answers the summary figures over them. Every method
 * is synchronous, so calls from interleaved async code each see and leave a
 * whole list: nothing can run between reading and writing it.
 */
export class EdgeMetrics {
  private readonly records: InvocationRecord[] = [];
  private readonly maxRecords: number;

  constructor(options: EdgeMetricsOptions = {}) {
    const max = options.maxRecords ?? Number.POSITIVE_INFINITY;
    if (max !== Number.POSITIVE_INFINITY && (!Number.isInteger(max) || max < 1)) {
      throw new FieldmeshError('FM_ERR_INVALID_OPTION', `EdgeMetrics.maxRecords: ${String(max)} is not a positive integer`);
    }
    this.maxRecords = max;
  }

  /** Adds one invocation; a plain object with the record's fields is accepted too. */
  record(record: InvocationRecord | InvocationRecordInit): InvocationRecord {
    const r = record instanceof InvocationRecord ? record : new InvocationRecord(record);
    this.records.push(r);
    if (this.records.length > this.maxRecords) this.records.splice(0, this.records.length - this.maxRecords);
    return r;
  }

  /** Invocations recorded, of one function if `functionId` is given. */
  totalInvocations(functionId?: string): number {
    if (functionId === undefined) return this.records.length;
    let n = 0;
    for (const r of this.records) if (r.functionId === functionId) n++;
    return n;
  }

  /** Share of successful invocations in percent (0-100); 0 when there are none. */
  successRate(): number {
    if (this.records.length === 0) return 0;
    return ((this.records.length - this.errorCount()) / this.records.length) * 100;
  }

  /** Mean duration in milliseconds; 0 when there are none. */
  avgLatencyMs(): number {
    if (this.records.length === 0) return 0;
    let sum = 0;
    for (const r of this.records) sum += r.durationMs;
    return sum / this.records.length;
  }

  /** Invocations that failed. */
  errorCount(): number {
    let n = 0;
    for (const r of this.records) if (!r.success) n++;
    return n;
  }

  summary(): EdgeMetricsSummary {
    return {
      totalInvocations: this.totalInvocations(),
      successRate: this.successRate(),
      avgLatencyMs: this.avgLatencyMs(),
      errorCount: this.errorCount(),
    };
  }

  /** The records kept, oldest first (a copy). */
  list(): InvocationRecord[] {
    return [...this.records];
  }
}
