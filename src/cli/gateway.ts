/** `fieldmesh gateway`: runs a gateway until SIGINT or SIGTERM. */
import type { Command } from 'commander';
import { definedOnly } from '../core/config.js';
import { createLogger } from '../core/logger.js';
import { Gateway } from '../gateway/gateway.js';
import type { GatewayOptions } from '../gateway/options.js';
import { configFileOption, loadConfigOption } from './config.js';
import {
  durationOption,
  type Flags,
  type GatewayConfigOptions,
  networkAndLogOptions,
  refuseIdleDiscoveryFlags,
  resolveGatewayOptions,
  toolModeOption,
  toolPolicyOption,
} from './config-options.js';
import { collect, intOption } from './format.js';

export function gatewayCommand(program: Command): void {
  networkAndLogOptions(
    program
      .command('gateway')
      .description('run a gateway: HTTP API, node listener (TLS), registry, scheduler and store')
      .option(...configFileOption("[gateway], [security.tool_policy], a controller's [node]"))
      .option('--data-dir <dir>', 'directory for the SQLite store, TLS material and admin token (default ~/.fieldmesh/gateway)')
      .option('--api <host:port>', 'HTTP API address (default 127.0.0.1:8787)')
      .option('--api-tls', 'serve the API over HTTPS with a certificate from the gateway CA')
      .option('--insecure-api', 'allow plain HTTP on an API address other than 127.0.0.1, ::1 or localhost')
      .option('--listen <host:port>', 'node listener address, TLS (default 0.0.0.0:8788)')
      .option('--heartbeat-interval-ms <ms>', 'heartbeat interval nodes are told to use', intOption)
      .option('--degraded-after-missed <n>', 'missed heartbeats before a node is DEGRADED', intOption)
      .option('--offline-after-ms <ms>', 'silence before a node is OFFLINE', intOption)
      .option('--max-frame-bytes <n>', 'largest node frame accepted', intOption)
      .option('--max-body-bytes <n>', 'largest HTTP body accepted', intOption)
      .option('--default-timeout-ms <ms>', 'time limit of calls that name none', intOption)
      .option('--max-attempts <n>', 'attempts across nodes for local and capability targets', intOption)
      .option('--placement-timeout-ms <ms>', 'how long a task waits for an eligible node to come online', intOption)
      .option('--env-allow <name>', 'environment variable workflows may read as {{env.NAME}} (repeatable)', collect)
      .option(
        '--egress-tool <name>',
        'tool that sends data off the mesh, for privacy_strict (repeatable; default summarize, upload_result)',
        collect,
      )
      .option('--run-retention-ms <ms>', 'prune finished workflow runs older than this', intOption)
      .option(
        '--node-cert-ttl <duration>',
        'life of the node certificates pairing issues, e.g. 30d (default 90d; nodes renew at two thirds)',
        durationOption,
      )
      .option('--tool-policy <tool=mode>', 'allow | deny | supervised for one tool (repeatable; over the file)', toolPolicyOption)
      .option('--tool-policy-default <mode>', 'mode of the tools not named: allow (default) | deny | supervised', toolModeOption)
      .option(
        '--approval-timeout <duration>',
        'how long a supervised task waits for a decision, e.g. 30s, 10m (default 10m)',
        durationOption,
      )
      .option('--gateway-id <id>', 'id in WELCOME frames, GATEWAY announcements and the mDNS instance name (default gateway:main)')
      .option('--peer <host:port>', 'listen-mode node to dial (fieldmesh node --listen), redialed with backoff (repeatable)', collect)
      .option('--advertise-address <host:port>', 'node-listener address told to nodes by multicast and mDNS (default the --listen address)')
      .option('--multicast', 'UDP multicast discovery: send DISCOVER, cache signed ADVERTISE, answer nodes looking for a gateway')
      .option('--multicast-interval-ms <ms>', 'interval between DISCOVER requests (default 30000)', intOption)
      .option('--mdns', 'advertise the gateway over mDNS with its node port and CA fingerprint'),
  ).action(async (o) => {
    const flags: Flags<GatewayConfigOptions> = {
      dataDir: o.dataDir,
      api: o.api,
      apiTls: o.apiTls,
      insecureApi: o.insecureApi,
      listen: o.listen,
      heartbeatIntervalMs: o.heartbeatIntervalMs,
      degradedAfterMissed: o.degradedAfterMissed,
      offlineAfterMs: o.offlineAfterMs,
      maxFrameBytes: o.maxFrameBytes,
      maxBodyBytes: o.maxBodyBytes,
      defaultTimeoutMs: o.defaultTimeoutMs,
      maxAttempts: o.maxAttempts,
      placementTimeoutMs: o.placementTimeoutMs,
      envAllow: o.envAllow,
      egressTools: o.egressTool,
      runRetentionMs: o.runRetentionMs,
      nodeCertTtlMs: o.nodeCertTtl,
      toolPolicy: { default: o.toolPolicyDefault, approvalTimeoutMs: o.approvalTimeout, tools: o.toolPolicy },
      logLevel: o.logLevel,
      gatewayId: o.gatewayId,
      peers: o.peer,
      advertiseAddress: o.advertiseAddress,
    };
    const loaded = loadConfigOption(o.config);
    flags.discovery = discoveryFlags(o, resolveGatewayOptions({}, process.env, loaded).discovery);
    const { logLevel, ...options } = resolveGatewayOptions(flags, process.env, loaded);
    const gateway = await Gateway.start({
      ...options,
      dataDir: options.dataDir!,
      logger: createLogger(logLevel),
    });
    const stop = () => {
      void gateway.stop().then(() => process.exit(0));
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}

/**
 * The `discovery` options the flags ask for, or undefined when no discovery flag was given. A flag
 * that tunes multicast or mDNS applies when that discovery is on (by its flag, or by the file or a
 * variable); without it the flag would do nothing, so it is refused rather than ignored.
 */
function discoveryFlags(o: Record<string, unknown>, configured: GatewayOptions['discovery']): GatewayOptions['discovery'] {
  const iface = o.multicastInterface as string | undefined;
  const multicastOn = o.multicast === true || configured?.multicast !== undefined;
  const mdnsOn = o.mdns === true || configured?.mdns !== undefined;
  const tuned = refuseIdleDiscoveryFlags(
    {
      multicast: [
        ['--multicast-group', o.multicastGroup],
        ['--multicast-port', o.multicastPort],
        ['--multicast-interval-ms', o.multicastIntervalMs],
      ],
      mdns: [
        ['--service-name', o.serviceName],
        ['--mdns-port', o.mdnsPort],
      ],
      iface,
    },
    { multicast: multicastOn, mdns: mdnsOn },
    {
      multicast: 'add --multicast (or method = "multicast" in [node.discovery] of a controller --config file)',
      mdns: 'add --mdns (or method = "mdns" in [node.discovery] of a controller --config file)',
    },
  );
  const out: NonNullable<GatewayOptions['discovery']> = {};
  if (multicastOn && (o.multicast === true || tuned.multicast)) {
    out.multicast = definedOnly({
      group: o.multicastGroup as string | undefined,
      port: o.multicastPort as number | undefined,
      interface: iface,
      intervalMs: o.multicastIntervalMs as number | undefined,
    });
  }
  if (mdnsOn && (o.mdns === true || tuned.mdns)) {
    out.mdns = definedOnly({ serviceName: o.serviceName as string | undefined, interface: iface, port: o.mdnsPort as number | undefined });
  }
  return out.multicast || out.mdns ? out : undefined;
}
