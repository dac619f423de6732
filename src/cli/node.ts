/** `fieldmesh node`: runs a node agent that dials a gateway, until SIGINT or SIGTERM. */
import type { Command } from 'commander';
import { createLogger } from '../core/logger.js';
import { NodeAgent } from '../node/agent.js';
import { configFileOption, loadConfigOption } from './config.js';
import { type Flags, logLevelOption, type NodeConfigOptions, required, resolveNodeOptions } from './config-options.js';
import { collect, intOption, reportError } from './format.js';

export function nodeCommand(program: Command): void {
  program
    .command('node')
    .description('run a node agent: dial the gateway, advertise tools and capabilities, run tool calls in worker threads')
    .option(...configFileOption('[node], [node.discovery], [node.policy]'))
    .option('--gateway <host:port>', 'gateway node listener (required, here or in the file)')
    .option('--id <node_id>', 'node id, e.g. rpi:device_b (required, here or as node_id in the file)')
    .option('--data-dir <dir>', 'directory for the node key and pinned gateway identity (required, here or in the file)')
    .option('--name <name>', 'human name, e.g. "Raspberry Pi B"')
    .option('--platform <platform>', 'platform (linux, android, macos, windows, …); detected when absent')
    .option('--capability <cap>', 'capability to advertise (repeatable), e.g. hardware:gps', collect)
    .option('--location <lat,lon>', 'location, e.g. 37.7749,-122.4194')
    .option('--max-concurrency <n>', 'node policy max_concurrent_tasks: tool calls run at once (default: CPU count)', intOption)
    .option('--allow-tool <name>', 'node policy allowed_tools: run only these tools (repeatable; default all)', collect)
    .option('--max-payload <bytes>', 'node policy max_payload_bytes: largest tool_args accepted, in bytes of JSON', intOption)
    .option('--allow-deploy', 'node policy allow_deploy: accept functions deployed by the gateway')
    .option('--no-allow-deploy', 'refuse deployed functions (the default)')
    .option('--tools-module <path>', 'ESM module exporting `tools` to run besides the built-ins (repeatable)', collect)
    .option('--pair <code>', 'pair with this code from `fieldmesh pair` (only needed on the first start)')
    .option('--request-pairing', 'without a certificate or code, ask to pair and wait for `fieldmesh nodes approve ID`')
    .option('--gateway-ca <file>', 'verify the gateway against this CA certificate (also while pairing)')
    .option(
      '--log-level <level>',
      'debug | info | warn | error | silent (default FIELDMESH_LOG_LEVEL, then the file, then info)',
      logLevelOption,
    )
    .action(async (o) => {
      const flags: Flags<NodeConfigOptions> = {
        gateway: o.gateway,
        id: o.id,
        dataDir: o.dataDir,
        name: o.name,
        platform: o.platform,
        capabilities: o.capability,
        location: o.location,
        maxConcurrency: o.maxConcurrency,
        allowedTools: o.allowTool,
        maxPayloadBytes: o.maxPayload,
        allowDeploy: o.allowDeploy,
        toolModules: o.toolsModule,
        gatewayCaFile: o.gatewayCa,
        pairingCode: o.pair,
        requestPairing: o.requestPairing,
        logLevel: o.logLevel,
      };
      const { logLevel, ...options } = resolveNodeOptions(flags, process.env, loadConfigOption(o.config));
      const id = required(options.id, '--id', 'node.node_id');
      const agent = await NodeAgent.start({
        ...options,
        gateway: required(options.gateway, '--gateway', 'node.controller'),
        id,
        dataDir: required(options.dataDir, '--data-dir', 'node.data_dir'),
        logger: createLogger(logLevel, { node_id: id }),
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
