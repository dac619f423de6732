/** Shared by `fieldmesh gateway` and `fieldmesh node`: flags over the configuration file over defaults. */
import { InvalidArgumentError } from 'commander';
import { parseDuration } from '../core/config.js';
import { FieldmeshError } from '../core/errors.js';
import type { LogLevel } from '../core/logger.js';
import { TOOL_MODES, type ToolMode } from '../gateway/tool-policy.js';

/** `--log-level` if given, else FIELDMESH_LOG_LEVEL, else the file's `log_level`, else info. */
export function effectiveLogLevel(flag: string | undefined, fromFile: LogLevel | undefined): LogLevel {
  return (flag ?? process.env.FIELDMESH_LOG_LEVEL ?? fromFile ?? 'info') as LogLevel;
}

/** A required value that may come from a flag or from the configuration file. */
export function required<T>(value: T | undefined, flag: string, key: string): T {
  if (value === undefined) {
    throw new FieldmeshError('FM_ERR_INVALID_OPTION', `${flag} is required (or ${key} in the --config file)`, {
      details: { option: flag },
    });
  }
  return value;
}

/** Commander parser for repeatable `--tool-policy TOOL=MODE`. */
export function toolPolicyOption(value: string, previous: Record<string, ToolMode> = {}): Record<string, ToolMode> {
  const m = /^([A-Za-z0-9_.:-]{1,128})=(\w+)$/.exec(value.trim());
  if (!m || !TOOL_MODES.includes(m[2] as ToolMode)) {
    throw new InvalidArgumentError(`"${value}" is not TOOL=MODE with MODE one of ${TOOL_MODES.join(', ')}`);
  }
  return { ...previous, [m[1]!]: m[2] as ToolMode };
}

/** Commander parser for a tool mode. */
export function toolModeOption(value: string): ToolMode {
  if (!TOOL_MODES.includes(value as ToolMode)) throw new InvalidArgumentError(`"${value}" is not one of ${TOOL_MODES.join(', ')}`);
  return value as ToolMode;
}

/** Commander parser for a duration such as 30s, 10m or 1h, in milliseconds. */
export function durationOption(value: string): number {
  try {
    return parseDuration('duration', value);
  } catch {
    throw new InvalidArgumentError(`"${value}" is not a duration such as 30s, 10m or 1h`);
  }
}
