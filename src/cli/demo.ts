/**
 * `fieldmesh demo`: the original offline multi-node demo on this machine. A
 * gateway and three node processes (an Android phone, a Raspberry Pi with GPS
 * and a GPU box) run the seed workflow plus a capability-targeted step, then
 * everything shuts down.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { FieldmeshClient } from '../client/index.js';
import type { Workflow } from '../protocol/api.js';
import { readAdminToken } from './client.js';
import { printJson } from './format.js';
import { type Managed, pairingArgs, startProcess } from './processes.js';
import { followRun, formatTimeline } from './run.js';

/** The seed workflow of the original design: redact on the phone, convert on the Pi. */
export const seedWorkflow: Workflow = {
  workflow_id: 'offline_multinode_demo',
  steps: [
    {
      step_id: 'redact',
      tool_name: 'pii_redact',
      tool_args: { text: 'Email me at john@example.com' },
      target: { kind: 'explicit', node_id: 'android:device_a' },
    },
    {
      step_id: 'convert',
      tool_name: 'unit_convert',
      tool_args: { value: 10, from_unit: 'miles', to_unit: 'km' },
      target: { kind: 'explicit', node_id: 'rpi:device_b' },
    },
  ],
};

/**
 * The demo: the seed's redaction on the phone feeds a summary on the GPU box
 * (data passed by template), while the Pi converts units in a parallel branch.
 */
export const demoWorkflow: Workflow = {
  workflow_id: 'offline_multinode_demo',
  steps: [
    {
      step_id: 'redact',
      tool_name: 'pii_redact',
      tool_args: {
        text:
          'Email me at john@example.com about pump 4. The pump at the north site lost pressure twice this week. ' +
          'Call +1 415 555 2671 before Friday. A technician should replace the seal and check the intake filter.',
      },
      target: { kind: 'explicit', node_id: 'android:device_a' },
    },
    {
      step_id: 'convert',
      tool_name: 'unit_convert',
      tool_args: { value: 10, from_unit: 'miles', to_unit: 'km' },
      target: { kind: 'explicit', node_id: 'rpi:device_b' },
      depends_on: [],
    },
    {
      step_id: 'summarize',
      tool_name: 'summarize',
      tool_args: { text: '{{steps.redact.output.redacted_text}}', max_sentences: 2 },
      target: { kind: 'capability', required_capabilities: ['gpu:available'] },
      depends_on: ['redact'],
    },
  ],
};

const demoNodes = [
  { id: 'android:device_a', name: 'Android Device A', platform: 'android', caps: [] as string[] },
  { id: 'rpi:device_b', name: 'Raspberry Pi B', platform: 'linux', caps: ['hardware:gps'], location: '37.7749,-122.4194' },
  { id: 'local:gpu_box', name: 'GPU Box', platform: 'linux', caps: ['gpu:available'] },
];

export async function runDemo(log: (line: string) => void = (l) => process.stdout.write(`${l}\n`)): Promise<boolean> {
  const dir = mkdtempSync(join(tmpdir(), 'fieldmesh-demo-'));
  const procs: Managed[] = [];
  const env = { FIELDMESH_LOG_LEVEL: 'info' };
  try {
    log(`fieldmesh demo: gateway and ${demoNodes.length} nodes in ${dir}`);
    const gw = await startProcess(
      ['gateway', '--data-dir', join(dir, 'gateway'), '--api', '127.0.0.1:0', '--listen', '127.0.0.1:0'],
      'gateway ready',
      { env },
    );
    procs.push(gw.managed);
    const api = String(gw.ready.api);
    const listen = String(gw.ready.listen);
    log(`gateway  api ${api}  nodes ${listen} (mutual TLS)`);
    const client = new FieldmeshClient({ baseUrl: api, token: readAdminToken(join(dir, 'gateway')) });
    await Promise.all(
      demoNodes.map(async (n) => {
        const dataDir = join(dir, n.id.replace(/[:/]/g, '_'));
        const args = [
          'node',
          '--gateway',
          listen,
          '--id',
          n.id,
          '--name',
          n.name,
          '--platform',
          n.platform,
          '--data-dir',
          dataDir,
          // Each node pairs with a one-time code, so everything runs over mutual TLS.
          ...(await pairingArgs(client, n.id, dataDir)),
        ];
        for (const c of n.caps) args.push('--capability', c);
        if (n.location) args.push('--location', n.location);
        const p = await startProcess(args, 'node ready', { env });
        procs.push(p.managed);
        log(`node     ${n.id} ("${n.name}", ${n.platform}${n.caps.length ? `, ${n.caps.join(', ')}` : ''}) paired and online`);
      }),
    );
    const deadline = Date.now() + 15_000;
    while ((await client.listNodes('online')).length < demoNodes.length) {
      if (Date.now() > deadline) throw new Error('nodes did not come online within 15 s');
      await new Promise((r) => setTimeout(r, 50));
    }
    log('');
    const runId = await client.startWorkflow(demoWorkflow);
    log(`run ${runId}: redact → summarize, with convert in parallel`);
    const run = await followRun(client, runId, log);
    const result = run.result;
    if (!result) throw new Error(`run ${runId} ended without a result`);
    log('');
    log(formatTimeline(result));
    log('');
    log('result:');
    printJson(result);
    return result.ok;
  } finally {
    await Promise.all(procs.map((p) => p.stop()));
    rmSync(dir, { recursive: true, force: true });
  }
}

export function demoCommand(program: Command): void {
  program
    .command('demo')
    .description('start a gateway and three local nodes, run the offline multi-node workflow, print its timeline')
    .action(async () => {
      const ok = await runDemo();
      if (!ok) process.exitCode = 1;
    });
}
