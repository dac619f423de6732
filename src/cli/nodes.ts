/** `fieldmesh nodes list|health|caps`: the original `nodes` tool's actions over the HTTP API. */
import type { Command } from 'commander';
import { apiOption, clientFrom } from './client.js';
import { printJson, table } from './format.js';

/** Kept here too for commands that import it from this module. */
export { apiOption };

export function nodesCommand(program: Command): void {
  const nodes = program.command('nodes').description('inspect the nodes a gateway knows');

  apiOption(nodes.command('list').description('list nodes').option('--status <status>', 'online | degraded | offline | syncing')).action(
    async (o) => {
      const list = await clientFrom(o).listNodes(o.status);
      if (o.json) return printJson({ nodes: list });
      if (list.length === 0) {
        process.stdout.write('no nodes\n');
        return;
      }
      process.stdout.write(
        `${table(
          ['NODE', 'NAME', 'STATUS', 'PLATFORM', 'IN-FLIGHT', 'CPU', 'CAPABILITIES'],
          list.map((n) => [
            n.node_id,
            n.name,
            n.status,
            n.platform,
            n.load.in_flight,
            `${Math.round(n.load.cpu * 100)}%`,
            n.capabilities.filter((c) => !c.startsWith('tool:')).join(','),
          ]),
        )}\n`,
      );
    },
  );

  apiOption(nodes.command('health <node_id>').description("a node's health from its heartbeats")).action(async (id: string, o) => {
    const h = await clientFrom(o).nodeHealth(id);
    if (o.json) return printJson(h);
    process.stdout.write(
      `${h.node_id}: ${h.status}${h.connected ? '' : ' (not connected)'}\n` +
        `  last heartbeat ${h.seconds_since_heartbeat.toFixed(1)} s ago (${h.last_seen})\n` +
        `  load cpu ${Math.round(h.load.cpu * 100)}%, memory ${Math.round(h.load.memory * 100)}%, in flight ${h.load.in_flight}\n`,
    );
  });

  apiOption(nodes.command('caps <node_id>').alias('capabilities').description("a node's capabilities and tools")).action(
    async (id: string, o) => {
      const c = await clientFrom(o).nodeCapabilities(id);
      if (o.json) return printJson(c);
      process.stdout.write(`${c.node_id}\n  capabilities: ${c.capabilities.join(', ')}\n  tools:\n`);
      for (const t of c.tools) process.stdout.write(`    ${t.name} - ${t.description}\n`);
    },
  );
}
