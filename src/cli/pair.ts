/** `fieldmesh pair`: a single-use pairing code for a new node (`POST /v1/pairing-codes`). */
import type { Command } from 'commander';
import { parseDuration } from '../core/duration.js';
import { printJson } from './format.js';
import { apiClient, apiOption } from './nodes.js';

export function pairCommand(program: Command): void {
  apiOption(
    program
      .command('pair')
      .description('create a single-use pairing code; run the new node with `fieldmesh node --pair CODE`')
      .option('--node-id <id>', 'only this node id may pair with the code')
      .option('--ttl <duration>', 'how long the code stays valid, e.g. 10m, 1h', '10m'),
  ).action(async (o) => {
    const ttlSeconds = Math.max(1, Math.round(parseDuration('--ttl', o.ttl as string) / 1000));
    const body: { node_id?: string; ttl_seconds: number } = { ttl_seconds: ttlSeconds };
    if (o.nodeId) body.node_id = o.nodeId;
    const r = await apiClient(o).createPairingCode(body);
    if (o.json) return printJson(r);
    process.stdout.write(
      `${r.code}\n` +
        `  single use, valid until ${r.expires_at}${r.node_id ? ` for node ${r.node_id}` : ''}\n` +
        `  gateway CA ${r.ca_fingerprint}\n` +
        `  on the node: fieldmesh node --gateway HOST:PORT --id ${r.node_id ?? 'NODE_ID'} --data-dir DIR --pair ${r.code}\n`,
    );
  });
}
