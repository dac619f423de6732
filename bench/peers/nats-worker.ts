/**
 * A NATS request-reply worker for the dispatch bench: one process, subscribed
 * to the subject in a queue group so each request goes to one worker, doing the
 * same conversion as fieldmesh's built-in tool.
 *
 * `node nats-worker.js <server> <subject> <worker_id>`
 */
import { connect } from '@nats-io/transport-node';
import { convertUnits, type UnitConvertArgs } from '../../src/node/tools/unit-convert.js';

const [server, subject, workerId] = process.argv.slice(2);
if (!server || !subject || !workerId) {
  process.stderr.write('usage: nats-worker <server> <subject> <worker_id>\n');
  process.exit(2);
}
const nc = await connect({ servers: server, name: `fmbench-${workerId}` });
const sub = nc.subscribe(subject, { queue: 'fmbench-workers' });
void (async () => {
  for await (const msg of sub) {
    try {
      const args = msg.json<UnitConvertArgs>();
      msg.respond(JSON.stringify({ ok: true, output: convertUnits(args.value, args.from_unit, args.to_unit) }));
    } catch (err) {
      msg.respond(JSON.stringify({ ok: false, error: (err as Error).message }));
    }
  }
})();
await nc.flush();
process.stdout.write(`${JSON.stringify({ msg: 'worker ready', worker_id: workerId })}\n`);
const stop = () => {
  void nc.drain().then(() => process.exit(0));
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
