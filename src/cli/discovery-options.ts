/** The discovery flags `fieldmesh gateway` and `fieldmesh node` share: where multicast and mDNS run. */
import type { Command } from 'commander';
import { intOption } from './format.js';

export function discoveryNetworkFlags(command: Command): Command {
  return command
    .option('--multicast-group <ip>', 'multicast group (default 239.255.70.77)')
    .option('--multicast-port <n>', 'multicast UDP port (default 37020)', intOption)
    .option('--multicast-interface <ip>', 'IPv4 address of the interface to use for multicast and mDNS (default: the system picks)')
    .option('--service-name <name>', 'mDNS service type (default _fieldmesh._tcp.local.)')
    .option('--mdns-port <n>', 'mDNS UDP port (default 5353; another port makes a private test network)', intOption);
}
