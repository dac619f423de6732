/** `fieldmesh state list|get|set`: a node's state documents, desired written at the gateway and reported by the node. */
import { type Command, Option } from 'commander';
import type { StateDocView } from '../protocol/api.js';
import { CONFLICT_STRATEGIES, type StateDocument } from '../protocol/state.js';
import { apiOption, clientFrom } from './client.js';
import { intOption, parseJsonOption, printJson, table } from './format.js';

function printSide(name: string, side: StateDocument | null): void {
  if (!side) {
    process.stdout.write(`  ${name}: -\n`);
    return;
  }
  process.stdout.write(`  ${name}: version ${side.version}, ${side.updated_at}, ${side.checksum}\n`);
  process.stdout.write(`${JSON.stringify(side.data, null, 2).replace(/^/gm, '    ')}\n`);
}

function printDoc(d: StateDocView): void {
  process.stdout.write(`${d.doc} on ${d.node_id} (${d.strategy}, ${d.in_sync ? 'in sync' : 'not in sync'})\n`);
  printSide('desired', d.desired);
  printSide('reported', d.reported);
}

export function stateCommand(program: Command): void {
  const state = program
    .command('state')
    .description("read and write nodes' state documents (desired at the gateway, reported by the node)");

  apiOption(state.command('list <node_id>').description("a node's state documents")).action(async (nodeId: string, o) => {
    const docs = await clientFrom(o).listState(nodeId);
    if (o.json) return printJson({ node_id: nodeId, docs });
    if (docs.length === 0) {
      process.stdout.write('no state documents\n');
      return;
    }
    process.stdout.write(
      `${table(
        ['DOC', 'STRATEGY', 'DESIRED', 'REPORTED', 'IN-SYNC', 'UPDATED'],
        docs.map((d) => [d.doc, d.strategy, d.desired_version, d.reported_version, d.in_sync ? 'yes' : 'no', d.updated_at]),
      )}\n`,
    );
  });

  apiOption(state.command('get <node_id> <doc>').description('one state document, both sides with their versions')).action(
    async (nodeId: string, doc: string, o) => {
      const d = await clientFrom(o).getState(nodeId, doc);
      if (o.json) printJson(d);
      else printDoc(d);
    },
  );

  apiOption(
    state
      .command('set <node_id> <doc> <json>')
      .description('write the desired side of a document (a JSON object); the node gets it at once, or when it reconnects')
      .option('--version <n>', 'the desired version this write is based on (0: a new document); a stale one is refused', intOption)
      .addOption(
        new Option('--strategy <strategy>', 'how conflicts with changes made on the node are settled').choices(CONFLICT_STRATEGIES),
      ),
  ).action(async (nodeId: string, doc: string, json: string, o) => {
    const what = `the data of state document "${doc}"`;
    const data = parseJsonOption(what, json);
    if (typeof data !== 'object' || data === null || Array.isArray(data)) throw new Error(`${what} must be a JSON object`);
    const options: { version?: number; strategy?: StateDocView['strategy'] } = {};
    if (o.version !== undefined) options.version = o.version;
    if (o.strategy !== undefined) options.strategy = o.strategy;
    const d = await clientFrom(o).putState(nodeId, doc, data as Record<string, unknown>, options);
    if (o.json) printJson(d);
    else process.stdout.write(`${d.doc} on ${d.node_id}: desired version ${d.desired?.version} (${d.strategy})\n`);
  });
}
