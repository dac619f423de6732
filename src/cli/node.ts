/** `fieldmesh node`: runs a node agent that dials a gateway, until SIGINT or SIGTERM. */
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { definedOnly } from '../core/config.js';
import { createLogger } from '../core/logger.js';
import { NodeAgent } from '../node/agent.js';
import { checkToolModuleFiles } from '../node/options.js';
import { configFileOption, loadConfigOption } from './config.js';
import {
  type Flags,
  type NodeConfigOptions,
  networkAndLogOptions,
  refuseIdleDiscoveryFlags,
  required,
  resolveNodeOptions,
} from './config-options.js';
import { collect, intOption, reportError } from './format.js';

export function nodeCommand(program: Command): void {
  networkAndLogOptions(
    program
      .command('node')
      .description('run a node agent: dial the gateway, advertise tools and capabilities, run tool calls in worker threads')
      .option(...configFileOption('[node], [node.discovery], [node.policy]'))
      .option('--gateway <host:port>', 'gateway node listener (required unless --discover or --listen, here or in the file)')
      .option(
        '--listen <host:port>',
        'listen mode: wait for the gateway to dial this address (mutual TLS); pair first with --gateway or --discover',
      )
      .option(
        '--advertise-address <host:port>',
        'address put in ADVERTISE as where this node accepts a dial (default the --listen address)',
      )
      .option(
        '--discover <method>',
        'find the gateway without --gateway: multicast | mdns (multicast also advertises this node)',
        discoverOption,
      )
      .option('--advertise-interval-ms <ms>', 'interval between ADVERTISE messages (default 30000)', intOption)
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
      .option('--gateway-ca <file>', 'verify the gateway against this CA certificate (also while pairing)'),
  ).action(async (o) => {
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
      listen: o.listen,
      advertiseAddress: o.advertiseAddress,
      discover: o.discover,
      multicast:
        o.multicastGroup || o.multicastPort || o.multicastInterface
          ? definedOnly({ group: o.multicastGroup, port: o.multicastPort, interface: o.multicastInterface })
          : undefined,
      advertiseIntervalMs: o.advertiseIntervalMs,
      serviceName: o.serviceName,
      mdnsPort: o.mdnsPort,
    };
    const { logLevel, ...options } = resolveNodeOptions(flags, process.env, loadConfigOption(o.config));
    const id = required(options.id, '--id', 'node.node_id');
    refuseIdleDiscoveryFlags(
      {
        multicast: [
          ['--multicast-group', o.multicastGroup],
          ['--multicast-port', o.multicastPort],
          ['--advertise-interval-ms', o.advertiseIntervalMs],
        ],
        mdns: [
          ['--service-name', o.serviceName],
          ['--mdns-port', o.mdnsPort],
        ],
        iface: o.multicastInterface,
      },
      { multicast: options.discover === 'multicast', mdns: options.discover === 'mdns' },
      {
        multicast: 'add --discover multicast (or method = "multicast" in [node.discovery] of the --config file)',
        mdns: 'add --discover mdns (or method = "mdns" in [node.discovery] of the --config file)',
      },
    );
    checkToolModuleFiles(options.toolModules);
    const agent = await NodeAgent.start({
      ...options,
      gateway:
        options.listen !== undefined || (options.discover !== undefined && options.discover !== 'static')
          ? options.gateway
          : required(options.gateway, '--gateway', 'node.controller'),
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

function discoverOption(value: string): 'static' | 'multicast' | 'mdns' {
  if (value !== 'static' && value !== 'multicast' && value !== 'mdns') {
    throw new InvalidArgumentError(`"${value}" is not one of multicast, mdns, static`);
  }
  return value;
}
