/**
 * Workflow overhead: a 20-step sequential workflow of `unit_convert` calls;
 * overhead per step is the run's duration minus the time the nodes report
 * for running the tools, divided by the step count. Median of `--runs` (5).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readAdminToken } from '../src/cli/client.js';
import { type Managed, startProcess } from '../src/cli/processes.js';
import { FieldmeshClient } from '../src/client/index.js';
import type { Workflow } from '../src/protocol/api.js';
import { type BenchArgs, machine, num, percentile, saveResult } from './index.js';

export async function workflowBench(args: BenchArgs): Promise<void> {
  const runs = num(args, 'runs', 5);
  const stepCount = num(args, 'steps', 20);
  const dir = mkdtempSync(join(tmpdir(), 'fm-bench-workflow-'));
  const procs: Managed[] = [];
  try {
    const gw = await startProcess(
      ['gateway', '--data-dir', join(dir, 'gw'), '--api', '127.0.0.1:0', '--listen', '127.0.0.1:0'],
      'gateway ready',
      {
        env: { FIELDMESH_LOG_LEVEL: 'info' },
      },
    );
    procs.push(gw.managed);
    const client = new FieldmeshClient({ baseUrl: String(gw.ready.api), token: readAdminToken(join(dir, 'gw')) });
    for (const id of ['bench:a', 'bench:b']) {
      const p = await startProcess(['node', '--gateway', String(gw.ready.listen), '--id', id, '--data-dir', join(dir, id)], 'node ready', {
        env: { FIELDMESH_LOG_LEVEL: 'info' },
      });
      procs.push(p.managed);
    }
    while ((await client.listNodes('online')).length < 2) await new Promise((r) => setTimeout(r, 20));
    const workflow: Workflow = {
      workflow_id: 'bench_sequential',
      steps: Array.from({ length: stepCount }, (_, i) => ({
        step_id: `s${i}`,
        tool_name: 'unit_convert',
        tool_args:
          i === 0
            ? { value: 1, from_unit: 'km', to_unit: 'm' }
            : { value: `{{steps.s${i - 1}.output.value}}`, from_unit: 'm', to_unit: 'm' },
      })),
    };
    // One warm-up run so every node has its worker threads started.
    await client.runWorkflow(workflow);
    const perStep: number[] = [];
    const totals: number[] = [];
    for (let i = 0; i < runs; i++) {
      const r = await client.runWorkflow(workflow);
      if (!r.ok) throw new Error(`run failed: ${r.error?.message}`);
      let toolMs = 0;
      for (const t of r.timeline) {
        const task = await client.getTask(t.task_id);
        for (const a of task.attempts) toolMs += a.duration_ms ?? 0;
      }
      totals.push(r.duration_ms);
      perStep.push((r.duration_ms - toolMs) / stepCount);
    }
    const sorted = [...perStep].sort((a, b) => a - b);
    const result = {
      steps: stepCount,
      runs,
      overhead_per_step_ms_median: round(percentile(sorted, 50)),
      overhead_per_step_ms_max: round(sorted.at(-1) ?? Number.NaN),
      run_ms_median: percentile(
        [...totals].sort((a, b) => a - b),
        50,
      ),
      samples_overhead_per_step_ms: perStep.map(round),
    };
    const file = args.flags.has('smoke') ? '(smoke run, not saved)' : saveResult('workflow', result);
    if (args.json) process.stdout.write(`${JSON.stringify({ ...result, machine: machine() })}\n`);
    else {
      process.stdout.write(`workflow: ${stepCount}-step sequential run, ${runs} runs\n`);
      process.stdout.write(
        `  overhead per step: median ${result.overhead_per_step_ms_median} ms, max ${result.overhead_per_step_ms_max} ms; run median ${result.run_ms_median} ms\n  → ${file}\n`,
      );
    }
  } finally {
    await Promise.all(procs.map((p) => p.stop(2000)));
    rmSync(dir, { recursive: true, force: true });
  }
}

const round = (n: number) => Math.round(n * 100) / 100;
