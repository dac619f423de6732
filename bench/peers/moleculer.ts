/**
 * Moleculer set up as a user on one LAN would, but held to loopback: the TCP
 * transporter with UDP discovery off, peers listed by 127.0.0.1 URLs, and each
 * broker advertising only 127.0.0.1 so no peer ever dials another interface.
 */
import moleculer from 'moleculer';
import { convertUnits, type UnitConvertArgs } from '../../src/node/tools/unit-convert.js';

export function createMoleculerBroker(nodeId: string, port: number, urls: string[], worker: boolean): moleculer.ServiceBroker {
  const broker = new moleculer.ServiceBroker({
    nodeID: nodeId,
    namespace: 'fmbench',
    logger: false,
    transporter: {
      type: 'TCP',
      options: { udpDiscovery: false, useHostname: false, port, urls },
    },
  });
  // The local node otherwise advertises every interface address and the host name; peers would dial those.
  const local = broker.registry.nodes.localNode as unknown as { ipList: string[]; hostname: string };
  local.ipList = ['127.0.0.1'];
  local.hostname = '127.0.0.1';
  if (worker) {
    broker.createService({
      name: 'converter',
      actions: {
        unit_convert: {
          // Declared parameters are checked by Moleculer's validator, as fieldmesh checks tool_args against the tool's schema.
          params: { value: 'number', from_unit: 'string', to_unit: 'string' },
          handler(ctx: moleculer.Context<UnitConvertArgs>) {
            return convertUnits(ctx.params.value, ctx.params.from_unit, ctx.params.to_unit);
          },
        },
      },
    });
  }
  return broker;
}
