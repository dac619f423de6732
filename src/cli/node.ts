/** `fieldmesh node`: runs a node agent that dials a gateway, until SIGINT or SIGTERM. */
import type { Command } from 'commander';
import { createLogger, type LogLevel } from '../core/logger.js';
import { NodeAgent } from '../node/agent.js';
import { collect, intOption, reportError } from './format.js';

export function nodeCommand(program: Command): void {
  program
    .command('node')
    .description('run a node agent: dial the gateway, advertise tools and capabilities, run tool calls in worker threads')
    .requiredOption('--gateway <host:port>', 'gateway node listener')
    .requiredOption('--id <node_id>', 'node id, e.g. rpi:device_b')
    .requiredOption('--data-dir <dir>', 'directory for the node key and pinned gateway identity')
    .option('--name <name>', 'human name, e.g. "Raspberry Pi B"')
    .option('--platform <platform>', 'platform (linux, android, macos, windows, …); detected when absent')
    .option('--capability <cap>', 'capability to advertise (repeatable), e.g. hardware:gps', collect, [])
    .option('--location <lat,lon>', 'location, e.g. 37.7749,-122.4194')
    .option('--max-concurrency <n>', 'tool calls run at once', intOption)
    .option('--tools-module <path>', 'ESM module exporting `tools` to run besides the built-ins (repeatable)', collect, [])
    .option('--pair <code>', 'pair with this code from `fieldmesh pair` (only needed on the first start)')
    .option('--request-pairing', 'without a certificate or code, ask to pair and wait for `fieldmesh nodes approve ID`')
    .option('--gateway-ca <file>', 'verify the gateway against this CA certificate (also while pairing)')
    .option('--log-level <level>', 'debug | info | warn | error | silent', process.env.FIELDMESH_LOG_LEVEL ?? 'info')
    .action(async (o) => {
      const agent = await NodeAgent.start({
        gateway: o.gateway,
        id: o.id,
        name: o.name,
        platform: o.platform,
        capabilities: o.capability,
        location: o.location,
        dataDir: o.dataDir,
        maxConcurrency: o.maxConcurrency,
        toolModules: o.toolsModule,
        gatewayCaFile: o.gatewayCa,
        pairingCode: o.pair,
        requestPairing: o.requestPairing === true,
        logger: createLogger(o.logLevel as LogLevel, { node_id: o.id }),
      });
      // Revoked, or refused as another node: reconnecting cannot help.
      agent.once('fatal', (err) => {
        reportError(err);
        void agent.stop().then(() => process.exit(1));
      });
      const stop = () => {
        void agent.stop().then(() => process.exit(0));
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
}
