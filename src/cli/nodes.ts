/**
 * `fieldmesh nodes list|health|caps`: the original `nodes` tool's actions over
 * the HTTP API; `approve|deny|revoke`: pairing decisions and revocation.
 */
import type { Command } from 'commander';
import { type ApiCommandOptions, apiOption, clientFrom } from './client.js';
import { collect, printJson, table } from './format.js';

/** Kept here too for commands that import it from this module. */
export { apiOption };

/** The API client of a command given {@link apiOption}'s options. */
export const apiClient = clientFrom;

/** Pairing requests waiting for an operator, with the fingerprint to compare against the node's log. */
async function listPending(o: ApiCommandOptions & { json?: boolean }): Promise<void> {
  const pending = await apiClient(o).listPendingNodes();
  if (o.json) return printJson({ nodes: pending });
  process.stdout.write(
    pending.length === 0
      ? 'no pairing requests are pending\n'
      : `${table(
          ['NODE', 'NAME', 'PLATFORM', 'FINGERPRINT', 'FROM', 'REQUESTED'],
          pending.map((n) => [n.node_id, n.name, n.platform, n.fingerprint, n.remote_address, n.requested_at]),
        )}\n`,
  );
}

export function nodesCommand(program: Command): void {
  const nodes = program.command('nodes').description('inspect the nodes a gateway knows');

  apiOption(
    nodes.command('list').description('list nodes').option('--status <status>', 'online | degraded | offline | syncing | pending'),
  ).action(async (o) => {
    if (o.status?.toLowerCase() === 'pending') return listPending(o);
    const list = await apiClient(o).listNodes(o.status);
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
  });

  apiOption(nodes.command('health <node_id>').description("a node's health from its heartbeats")).action(async (id: string, o) => {
    const h = await apiClient(o).nodeHealth(id);
    if (o.json) return printJson(h);
    process.stdout.write(
      `${h.node_id}: ${h.status}${h.connected ? '' : ' (not connected)'}\n` +
        `  last heartbeat ${h.seconds_since_heartbeat.toFixed(1)} s ago (${h.last_seen})\n` +
        `  load cpu ${Math.round(h.load.cpu * 100)}%, memory ${Math.round(h.load.memory * 100)}%, in flight ${h.load.in_flight}\n`,
    );
  });

  apiOption(nodes.command('caps <node_id>').alias('capabilities').description("a node's capabilities and tools")).action(
    async (id: string, o) => {
      const c = await apiClient(o).nodeCapabilities(id);
      if (o.json) return printJson(c);
      process.stdout.write(`${c.node_id}\n  capabilities: ${c.capabilities.join(', ')}\n  tools:\n`);
      for (const t of c.tools) process.stdout.write(`    ${t.name} - ${t.description}\n`);
    },
  );

  apiOption(nodes.command('approve <node_id>').description('approve a pending pairing request (see `nodes list --status pending`)')).action(
    async (id: string, o) => {
      const r = await apiClient(o).approveNode(id);
      if (o.json) return printJson(r);
      process.stdout.write(`approved ${r.node_id} (fingerprint ${r.fingerprint}); it receives its certificate now\n`);
    },
  );

  apiOption(nodes.command('deny <node_id>').description('deny a pending pairing request')).action(async (id: string, o) => {
    const r = await apiClient(o).denyNode(id);
    if (o.json) return printJson(r);
    process.stdout.write(`denied ${r.node_id} (fingerprint ${r.fingerprint})\n`);
  });

  apiOption(
    nodes
      .command('revoke <node_id>')
      .description("revoke a node's certificates: its connection closes now and it can never reconnect with them"),
  ).action(async (id: string, o) => {
    const r = await apiClient(o).revokeNode(id);
    if (o.json) return printJson(r);
    process.stdout.write(
      r.revoked_serials.length === 0
        ? `${r.node_id} holds no certificate that was not already revoked\n`
        : `revoked ${r.node_id}: certificate${r.revoked_serials.length > 1 ? 's' : ''} ${r.revoked_serials.join(', ')}\n`,
    );
  });

  apiOption(
    nodes
      .command('discovered')
      .description('nodes heard by multicast (paired/trusted), dropped advertisements, and the listen-mode nodes dialed'),
  ).action(async (o) => {
    const d = await apiClient(o).discovery();
    if (o.json) return printJson(d);
    const on = [d.multicast.enabled ? 'multicast' : '', d.mdns.enabled ? 'mdns' : ''].filter(Boolean).join(', ') || 'none';
    const dropped = Object.entries(d.dropped).filter(([, n]) => n > 0);
    process.stdout.write(
      `discovery: ${on}${dropped.length ? `; dropped ${dropped.map(([why, n]) => `${n} ${why}`).join(', ')}` : ''}\n` +
        (d.nodes.length === 0
          ? 'no nodes heard\n'
          : `${table(
              ['NODE', 'ADDRESS', 'LISTEN', 'PLATFORM', 'PAIRED', 'TRUSTED', 'LAST SEEN'],
              d.nodes.map((n) => [n.node_id, n.address, n.listen, n.platform, n.paired, n.trusted, n.last_seen]),
            )}\n`) +
        (d.peers.length === 0
          ? ''
          : `${table(
              ['PEER', 'NODE', 'SOURCE', 'CONNECTED', 'FAILURES', 'LAST ERROR'],
              d.peers.map((p) => [p.endpoint, p.node_id, p.source, p.connected, p.failures, p.last_error]),
            )}\n`),
    );
  });

  apiOption(
    nodes
      .command('register <node_id> <endpoint>')
      .description('register a listen-mode node (fieldmesh node --listen HOST:PORT) for the gateway to dial')
      .option('--capability <cap>', 'capability the node offers (repeatable)', collect),
  ).action(async (id: string, endpoint: string, o) => {
    const r = await apiClient(o).registerNode({ node_id: id, endpoint, capabilities: o.capability ?? [] });
    if (o.json) return printJson(r);
    process.stdout.write(`registered ${r.node_id} at ${r.endpoint}; the gateway dials it now\n`);
  });

  apiOption(nodes.command('unregister <node_id>').description('stop dialing a registered listen-mode node')).action(
    async (id: string, o) => {
      const r = await apiClient(o).unregisterNode(id);
      if (o.json) return printJson(r);
      process.stdout.write(`unregistered ${r.node_id} (${r.endpoint})\n`);
    },
  );
}
