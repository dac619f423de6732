/** `fieldmesh run workflow.json`: runs a workflow and prints its timeline. */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { FieldmeshClient } from '../client/index.js';
import type { Workflow, WorkflowRunResult } from '../protocol/api.js';
import { parseJsonOption, printJson, table } from './format.js';
import { apiOption } from './nodes.js';

export function formatTimeline(r: WorkflowRunResult): string {
  const head = `workflow ${r.workflow_id}  run ${r.run_id}  ${r.ok ? 'ok' : 'FAILED'}  verified=${r.verified} degraded=${r.degraded}  ${r.duration_ms} ms`;
  const rows = r.timeline.map((t) => [
    t.step,
    t.node,
    t.node_id,
    t.timestamp,
    `${t.duration_ms} ms`,
    t.attempts,
    t.verified,
    t.ok ? 'ok' : 'failed',
  ]);
  const lines = [head, table(['STEP', 'NODE', 'NODE ID', 'TIMESTAMP', 'DURATION', 'ATTEMPTS', 'VERIFIED', 'RESULT'], rows)];
  lines.push(`execution path: ${r.execution_path.join(' → ') || '-'}`);
  if (r.error) lines.push(`error ${r.error.code}: ${r.error.message}`);
  return lines.join('\n');
}

export function runCommand(program: Command): void {
  apiOption(
    program
      .command('run <workflow_file>')
      .description('run a workflow from a JSON file ({ workflow_id, steps }) and print its timeline')
      .option('--input <json>', 'workflow input as JSON'),
  ).action(async (file: string, o) => {
    let workflow: Workflow;
    try {
      workflow = JSON.parse(readFileSync(file, 'utf8')) as Workflow;
    } catch (err) {
      throw new Error(`${file}: cannot read a workflow (${(err as Error).message})`);
    }
    const input = parseJsonOption('--input', o.input) as Record<string, unknown> | undefined;
    const r = await new FieldmeshClient({ baseUrl: o.api }).runWorkflow(workflow, input);
    if (o.json) printJson(r);
    else process.stdout.write(`${formatTimeline(r)}\n`);
    if (!r.ok) process.exitCode = 1;
  });
}
