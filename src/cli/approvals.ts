/** `fieldmesh approvals | approve | reject`: decide on tasks of supervised tools. */
import type { Command } from 'commander';
import type { TaskView } from '../protocol/api.js';
import { apiOption, clientFrom } from './client.js';
import { printJson, table } from './format.js';

function printDecision(t: TaskView): void {
  const reason = t.approval?.reason ? ` (${t.approval.reason})` : '';
  process.stdout.write(`task ${t.task_id} (${t.tool_name}): ${t.approval?.decision ?? '-'}${reason}, now ${t.status}\n`);
}

export function approvalsCommand(program: Command): void {
  apiOption(program.command('approvals').description('list tasks of supervised tools waiting for an approval')).action(async (o) => {
    const list = await clientFrom(o).listApprovals();
    if (o.json) return printJson({ approvals: list });
    if (list.length === 0) {
      process.stdout.write('no tasks awaiting approval\n');
      return;
    }
    process.stdout.write(
      `${table(
        ['TASK', 'TOOL', 'RUN', 'STEP', 'REQUESTED', 'EXPIRES', 'ARGS'],
        list.map((a) => {
          const args = JSON.stringify(a.tool_args);
          return [
            a.task_id,
            a.tool_name,
            a.run_id,
            a.step_id,
            a.requested_at,
            a.expires_at,
            args.length > 60 ? `${args.slice(0, 57)}...` : args,
          ];
        }),
      )}\n`,
    );
  });

  apiOption(
    program.command('approve <task_id>').description('approve a task awaiting approval; it then runs').option('--reason <text>', 'why'),
  ).action(async (id: string, o) => {
    const t = await clientFrom(o).approve(id, o.reason);
    if (o.json) printJson(t);
    else printDecision(t);
  });

  apiOption(
    program
      .command('reject <task_id>')
      .description('reject a task awaiting approval; it fails with FM_ERR_APPROVAL_REJECTED')
      .option('--reason <text>', 'why, kept with the decision'),
  ).action(async (id: string, o) => {
    const t = await clientFrom(o).reject(id, o.reason);
    if (o.json) printJson(t);
    else printDecision(t);
  });
}
