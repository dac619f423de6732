/**
 * A Moleculer worker broker for the dispatch bench: one process, TCP
 * transporter on loopback only, offering `converter.unit_convert` with the same
 * conversion code as fieldmesh's built-in tool.
 *
 * `node moleculer-worker.js <node_id> <port> <peer urls, comma-separated>`
 */
import { createMoleculerBroker } from './moleculer.js';

const [nodeId, port, urls] = process.argv.slice(2);
if (!nodeId || !port || urls === undefined) {
  process.stderr.write('usage: moleculer-worker <node_id> <port> <urls>\n');
  process.exit(2);
}
const broker = createMoleculerBroker(nodeId, Number(port), urls.split(',').filter(Boolean), true);
await broker.start();
process.stdout.write(`${JSON.stringify({ msg: 'worker ready', node_id: nodeId, port: Number(port) })}\n`);
const stop = () => {
  void broker.stop().then(() => process.exit(0));
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
