/** `fieldmesh run workflow.json`, `fieldmesh runs …` and `fieldmesh workflows …`: workflows with live progress. */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { FieldmeshClient } from '../client/index.js';
import type { RunView, StepState, Workflow, WorkflowRunResult } from '../protocol/api.js';
import { apiOption, clientFrom } from './client.js';
import { parseJsonOption, printJson, table } from './format.js';

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

function readWorkflow(file: string): Workflow {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as Workflow;
  } catch (err) {
    throw new Error(`${file}: cannot read a workflow (${(err as Error).message})`);
  }
}

/** One progress line per step change: waiting, running on <node>, done in N ms, failed: … */
function describe(state: StepState, runningOn: string | undefined): string {
  switch (state.status) {
    case 'running':
      return runningOn ? `running on ${runningOn}` : 'running';
    case 'succeeded':
      return `done in ${state.duration_ms ?? 0} ms on ${state.node ?? state.node_id ?? '?'}`;
    case 'failed':
      return `failed: ${state.error?.code ?? ''} ${state.error?.message ?? ''}`.trimEnd();
    default:
      return state.status;
  }
}

/** Follows a run until it ends, printing each step's changes, and returns its final view. */
export async function followRun(client: FieldmeshClient, runId: string, print: (line: string) => void): Promise<RunView> {
  const last = new Map<string, string>();
  const width = { n: 0 };
  for (;;) {
    const run = await client.getRun(runId);
    width.n = Math.max(width.n, ...Object.keys(run.steps).map((s) => s.length));
    for (const [id, state] of Object.entries(run.steps)) {
      let on: string | undefined;
      if (state.status === 'running' && state.task_id) {
        const task = await client.getTask(state.task_id).catch(() => undefined);
        on = task?.attempts.at(-1)?.node_id;
      }
      const line = describe(state, on);
      if (last.get(id) !== line) {
        last.set(id, line);
        print(`  ${id.padEnd(width.n)}  ${line}`);
      }
    }
    if (run.status !== 'running') return run;
    await new Promise((r) => setTimeout(r, 100));
  }
}

export function runCommand(program: Command): void {
  apiOption(
    program
      .command('run <workflow_file>')
      .description('run a workflow from a JSON file ({ workflow_id, steps }) with live progress, then its timeline')
      .option('--input <json>', 'workflow input as JSON'),
  ).action(async (file: string, o) => {
    const workflow = readWorkflow(file);
    const input = parseJsonOption('--input', o.input) as Record<string, unknown> | undefined;
    const client = clientFrom(o);
    if (o.json) {
      const r = await client.runWorkflow(workflow, input);
      printJson(r);
      if (!r.ok) process.exitCode = 1;
      return;
    }
    const runId = await client.startWorkflow(workflow, input);
    process.stdout.write(`run ${runId} of ${workflow.workflow_id}\n`);
    const run = await followRun(client, runId, (l) => process.stdout.write(`${l}\n`));
    const result = run.result as WorkflowRunResult | null;
    if (result) process.stdout.write(`\n${formatTimeline(result)}\n`);
    if (!result?.ok) process.exitCode = 1;
  });

  const runs = program.command('runs').description('workflow runs');
  apiOption(
    runs
      .command('list')
      .description('runs, newest first')
      .option('--workflow <id>', 'only runs of this workflow')
      .option('--status <status>', 'running | succeeded | failed | cancelled'),
  ).action(async (o) => {
    const list = await clientFrom(o).listRuns({ workflow_id: o.workflow, status: o.status });
    if (o.json) return printJson({ runs: list });
    if (list.length === 0) return void process.stdout.write('no runs\n');
    process.stdout.write(
      `${table(
        ['RUN', 'WORKFLOW', 'STATUS', 'STEPS', 'STARTED'],
        list.map((r) => [r.run_id, r.workflow_id, r.status, r.steps, r.created_at]),
      )}\n`,
    );
  });
  apiOption(runs.command('show <run_id>').description("a run's steps and timeline")).action(async (id: string, o) => {
    const run = await clientFrom(o).getRun(id);
    if (o.json) return printJson(run);
    process.stdout.write(`run ${run.run_id} of ${run.workflow_id}: ${run.status}  trace ${run.trace_id}\n`);
    for (const [step, state] of Object.entries(run.steps)) process.stdout.write(`  ${step}  ${describe(state, undefined)}\n`);
    if (run.result) process.stdout.write(`\n${formatTimeline(run.result)}\n`);
  });
  apiOption(runs.command('cancel <run_id>').description('cancel a running run')).action(async (id: string, o) => {
    const run = await clientFrom(o).cancelRun(id);
    if (o.json) printJson(run);
    else process.stdout.write(`run ${run.run_id}: ${run.status}\n`);
  });

  const workflows = program.command('workflows').description('saved workflows');
  apiOption(workflows.command('put <workflow_file>').description('save (or update) a workflow')).action(async (file: string, o) => {
    const saved = await clientFrom(o).putWorkflow(readWorkflow(file));
    if (o.json) printJson(saved);
    else process.stdout.write(`saved ${saved.workflow_id} version ${saved.version}\n`);
  });
  apiOption(workflows.command('list').description('saved workflows')).action(async (o) => {
    const list = await clientFrom(o).listWorkflows();
    if (o.json) return printJson({ workflows: list });
    if (list.length === 0) return void process.stdout.write('no saved workflows\n');
    process.stdout.write(
      `${table(
        ['WORKFLOW', 'VERSION', 'STEPS', 'UPDATED'],
        list.map((w) => [w.workflow_id, w.version, w.steps, w.updated_at]),
      )}\n`,
    );
  });
}
