/** `fieldmesh task send|result|cancel`: one tool call through the HTTP API. */
import type { Command } from 'commander';
import type { ToolCallBody, ToolCallResult } from '../protocol/api.js';
import { apiOption, clientFrom } from './client.js';
import { intOption, parseJsonOption, printJson } from './format.js';

function printResult(r: ToolCallResult): void {
  process.stdout.write(
    `${r.ok ? 'ok' : 'failed'}  task ${r.task_id} on ${r.node_id ?? '-'} in ${r.duration_ms} ms` +
      `  verified=${r.verified} degraded=${r.degraded}\n  path: ${r.execution_path.join(' → ') || '-'}\n`,
  );
  if (r.ok) process.stdout.write(`${JSON.stringify(r.output, null, 2)}\n`);
  else process.stdout.write(`  error ${r.error?.code}: ${r.error?.message}\n`);
}

export function taskCommand(program: Command): void {
  const task = program.command('task').description('send tool calls and read their results');

  apiOption(
    task
      .command('send <tool_name>')
      .description('run a tool call (waits for the result unless --async)')
      .option('--args <json>', 'tool arguments as JSON', '{}')
      .option('--target <json>', 'target as JSON, e.g. {"kind":"explicit","node_id":"rpi:device_b"}')
      .option('--timeout-ms <ms>', 'time limit', intOption)
      .option('--async', 'submit and print the task id without waiting'),
  ).action(async (tool: string, o) => {
    const body: ToolCallBody = { tool_name: tool, tool_args: parseJsonOption('--args', o.args) as Record<string, unknown> };
    const target = parseJsonOption('--target', o.target);
    if (target !== undefined) body.target = target as ToolCallBody['target'];
    if (o.timeoutMs !== undefined) body.timeout_ms = o.timeoutMs;
    const client = clientFrom(o);
    if (o.async) {
      const taskId = await client.submitTask(body);
      if (o.json) printJson({ task_id: taskId });
      else process.stdout.write(`${taskId}\n`);
      return;
    }
    const r = await client.toolCall(body);
    if (o.json) printJson(r);
    else if (r.status === 'queued' || r.status === 'awaiting_approval') process.stdout.write(`${r.status}  task ${r.task_id}\n`);
    else printResult(r);
    if (!r.ok) process.exitCode = 1;
  });

  apiOption(
    task
      .command('result <task_id>')
      .description('a task and its result')
      .option('--wait-ms <ms>', 'wait up to this long for it to finish', intOption),
  ).action(async (id: string, o) => {
    const t = await clientFrom(o).getTask(id, o.waitMs);
    if (o.json) return printJson(t);
    process.stdout.write(`task ${t.task_id} (${t.tool_name}): ${t.status}, ${t.attempts.length} attempt(s)\n`);
    if (t.result) printResult(t.result);
    if (t.status === 'failed' || t.status === 'cancelled') process.exitCode = 1;
  });

  apiOption(task.command('cancel <task_id>').description('cancel a task that has not finished')).action(async (id: string, o) => {
    const t = await clientFrom(o).cancelTask(id);
    if (o.json) printJson(t);
    else process.stdout.write(`task ${t.task_id}: ${t.status}\n`);
  });
}
