// The sys_info built-in tool: reports the node's platform, CPUs, memory, uptime and load from node:os and process.
import os from 'node:os';
import type { ToolDefinition } from './types.js';

export type SysInfoArgs = Record<string, never>;

export interface SysInfoResult {
  platform: string;
  arch: string;
  hostname: string;
  cpu_count: number;
  cpu_model: string;
  total_memory_bytes: number;
  free_memory_bytes: number;
  uptime_seconds: number;
  load_average: [number, number, number];
  node_version: string;
}

/** Reads the current system facts; every call reads fresh values. */
export function readSysInfo(): SysInfoResult {
  const cpus = os.cpus();
  const [one = 0, five = 0, fifteen = 0] = os.loadavg();
  return {
    platform: process.platform,
    arch: process.arch,
    hostname: os.hostname(),
    // os.cpus() is empty on some sandboxed and Android systems; availableParallelism still knows how many CPUs can run us.
    cpu_count: cpus.length > 0 ? cpus.length : os.availableParallelism(),
    cpu_model: cpus[0]?.model.trim() || 'unknown',
    total_memory_bytes: os.totalmem(),
    free_memory_bytes: os.freemem(),
    uptime_seconds: os.uptime(),
    load_average: [one, five, fifteen],
    node_version: process.version,
  };
}

const nonNegative = (description: string) => ({ type: 'number', minimum: 0, description });

export const sysInfoTool: ToolDefinition<SysInfoArgs, SysInfoResult> = {
  name: 'sys_info',
  description:
    'Reports the node: OS platform and architecture, hostname, CPU count and model, total and free memory, uptime, load average and Node.js version.',
  input_schema: {
    type: 'object',
    description: 'Takes no arguments.',
    properties: {},
    additionalProperties: false,
  },
  output_schema: {
    type: 'object',
    properties: {
      platform: { type: 'string', description: 'Operating system platform as Node.js names it, e.g. "linux", "darwin", "win32".' },
      arch: { type: 'string', description: 'CPU architecture, e.g. "x64", "arm64".' },
      hostname: { type: 'string', description: 'Host name of the machine.' },
      cpu_count: { type: 'integer', minimum: 1, description: 'Number of logical CPUs.' },
      cpu_model: { type: 'string', description: 'Model name of the first CPU, or "unknown".' },
      total_memory_bytes: { type: 'integer', minimum: 0, description: 'Total system memory in bytes.' },
      free_memory_bytes: { type: 'integer', minimum: 0, description: 'Free system memory in bytes.' },
      uptime_seconds: nonNegative('System uptime in seconds.'),
      load_average: {
        type: 'array',
        items: { type: 'number', minimum: 0 },
        minItems: 3,
        maxItems: 3,
        description: '1, 5 and 15 minute load averages; always zeros on Windows.',
      },
      node_version: { type: 'string', description: 'Node.js version, e.g. "v20.11.1".' },
    },
    required: [
      'platform',
      'arch',
      'hostname',
      'cpu_count',
      'cpu_model',
      'total_memory_bytes',
      'free_memory_bytes',
      'uptime_seconds',
      'load_average',
      'node_version',
    ],
    additionalProperties: false,
  },
  run() {
    return readSysInfo();
  },
};
