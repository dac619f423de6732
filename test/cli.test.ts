import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seedWorkflow } from '../src/cli/demo.js';
import type { NodeView, ToolCallResult, WorkflowRunResult } from '../src/protocol/api.js';
import { Cluster, cliPath, runCli, seedNodes, waitFor } from './harness.js';

const convertArgs = JSON.stringify({ value: 10, from_unit: 'miles', to_unit: 'km' });
const onPi = JSON.stringify({ kind: 'explicit', node_id: 'rpi:device_b' });

describe('cli', () => {
  const c = new Cluster();
  let api: string[];

  beforeAll(async () => {
    await c.startGateway();
    api = ['--api', c.gateway.api, '--data-dir', c.gateway.dataDir];
    await Promise.all([...seedNodes.map((n) => c.startNode(n))]);
  }, 60_000);
  afterAll(() => c.stop());

  it('cli - nodes list prints a table of the nodes', async () => {
    const r = await runCli(['nodes', 'list', ...api]);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NODE\s+NAME\s+STATUS\s+PLATFORM\s+IN-FLIGHT\s+CPU\s+CAPABILITIES$/);
    expect(lines[1]).toMatch(/^[- ]+$/);
    expect(lines).toHaveLength(4);
    expect(lines[2]).toMatch(/^android:device_a\s+Android Device A\s+ONLINE\s+android\s+\d+\s+\d+%\s+.*platform:android/);
    expect(lines[3]).toMatch(/^rpi:device_b\s+Raspberry Pi B\s+ONLINE\s+linux\s+\d+\s+\d+%\s+.*hardware:gps/);
    // Tool capabilities are left out of the table; `nodes caps` lists the tools.
    expect(r.stdout).not.toContain('tool:');
  });

  it('cli - nodes list --json prints the nodes as JSON', async () => {
    const r = await runCli(['nodes', 'list', '--json', ...api]);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { nodes: NodeView[] };
    expect(out.nodes.map((n) => n.node_id)).toEqual(['android:device_a', 'rpi:device_b']);
    expect(out.nodes[1]).toMatchObject({
      name: 'Raspberry Pi B',
      status: 'ONLINE',
      platform: 'linux',
      location: { lat: 37.7749, lon: -122.4194 },
      load: { cpu: expect.any(Number), memory: expect.any(Number), in_flight: expect.any(Number) },
    });
    expect(out.nodes[1]!.capabilities).toEqual(expect.arrayContaining(['hardware:gps', 'tool:unit_convert']));

    const offline = await runCli(['nodes', 'list', '--status', 'offline', ...api]);
    expect(offline.code, offline.stderr).toBe(0);
    expect(offline.stdout).toBe('no nodes\n');
  });

  it('cli - nodes health prints the status and last heartbeat of a node', async () => {
    const r = await runCli(['nodes', 'health', 'rpi:device_b', ...api]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^rpi:device_b: ONLINE\n/);
    expect(r.stdout).toMatch(/last heartbeat \d+\.\d s ago \(\d{4}-\d{2}-\d{2}T[\d:.]+Z\)/);
    expect(r.stdout).toMatch(/load cpu \d+%, memory \d+%, in flight \d+/);

    const json = await runCli(['nodes', 'health', 'rpi:device_b', '--json', ...api]);
    expect(json.code, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: true, node_id: 'rpi:device_b', status: 'ONLINE', healthy: true, connected: true });
  });

  it('cli - nodes caps prints capabilities and tools', async () => {
    const r = await runCli(['nodes', 'caps', 'rpi:device_b', ...api]);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines[0]).toBe('rpi:device_b');
    expect(lines[1]).toMatch(/^ {2}capabilities: .*hardware:gps/);
    expect(lines[1]).toContain('platform:linux');
    expect(lines[1]).toContain('tool:pii_redact');
    for (const tool of ['pii_redact', 'unit_convert', 'summarize', 'sys_info', 'slow_echo']) {
      expect(r.stdout).toMatch(new RegExp(`\\n {4}${tool} - \\S`));
    }

    const json = await runCli(['nodes', 'capabilities', 'android:device_a', '--json', ...api]);
    expect(json.code, json.stderr).toBe(0);
    const caps = JSON.parse(json.stdout) as { node_id: string; tools: { name: string; input_schema: unknown }[] };
    expect(caps.node_id).toBe('android:device_a');
    expect(caps.tools.find((t) => t.name === 'unit_convert')?.input_schema).toMatchObject({ type: 'object' });
  });

  it('cli - an unknown node prints FM_ERR_NODE_NOT_FOUND and exits 1', async () => {
    for (const cmd of ['health', 'caps']) {
      const r = await runCli(['nodes', cmd, 'nope:node', ...api]);
      expect(r.code, cmd).toBe(1);
      expect(r.stderr, cmd).toMatch(/^error FM_ERR_NODE_NOT_FOUND: .*nope:node/);
      expect(r.stdout, cmd).toBe('');
    }
    const send = await runCli(['task', 'send', 'sys_info', '--target', '{"kind":"explicit","node_id":"nope:node"}', ...api]);
    expect(send.code).toBe(1);
    expect(send.stderr).toContain('FM_ERR_NODE_NOT_FOUND');
  });

  it('cli - task send --json runs a tool call on the target node', async () => {
    const r = await runCli(['task', 'send', 'unit_convert', '--args', convertArgs, '--target', onPi, '--json', ...api]);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as ToolCallResult;
    expect(out).toMatchObject({
      ok: true,
      node_id: 'rpi:device_b',
      output: { value: 16.09344, unit: 'km' },
      execution_path: ['rpi:device_b'],
      verified: true,
      degraded: false,
    });
    expect(out.result_hash).toMatch(/^sha256:/);
  });

  it('cli - task send without --json prints the result and its output', async () => {
    const r = await runCli(['task', 'send', 'unit_convert', '--args', convertArgs, '--target', onPi, ...api]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^ok {2}task \S+ on rpi:device_b in [\d.]+ ms {2}verified=true degraded=false\n {2}path: rpi:device_b\n/);
    expect(r.stdout).toContain('"value": 16.09344');
    expect(r.stdout).toContain('"unit": "km"');
  });

  it('cli - task send --async prints a task id that task result can wait for', async () => {
    const sent = await runCli(['task', 'send', 'unit_convert', '--args', convertArgs, '--target', onPi, '--async', ...api]);
    expect(sent.code, sent.stderr).toBe(0);
    const taskId = sent.stdout.trim();
    expect(taskId).toMatch(/^\S+$/);

    const r = await runCli(['task', 'result', taskId, '--wait-ms', '5000', ...api]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`task ${taskId} (unit_convert): succeeded, 1 attempt(s)`);
    expect(r.stdout).toContain('"value": 16.09344');

    const json = await runCli(['task', 'result', taskId, '--json', ...api]);
    expect(json.code, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({
      task_id: taskId,
      status: 'succeeded',
      result: { ok: true, output: { value: 16.09344, unit: 'km' } },
    });

    const asyncJson = await runCli(['task', 'send', 'sys_info', '--async', '--json', ...api]);
    expect(asyncJson.code, asyncJson.stderr).toBe(0);
    expect(JSON.parse(asyncJson.stdout)).toEqual({ task_id: expect.any(String) });
  });

  it('cli - task cancel cancels a running task and refuses a finished one', async () => {
    const sent = await runCli(['task', 'send', 'slow_echo', '--args', '{"ms":10000}', '--target', onPi, '--async', ...api]);
    expect(sent.code, sent.stderr).toBe(0);
    const taskId = sent.stdout.trim();
    await waitFor('task running', async () => (await c.gateway.client.getTask(taskId)).status === 'running');

    const r = await runCli(['task', 'cancel', taskId, ...api]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`task ${taskId}: cancelled\n`);

    const result = await runCli(['task', 'result', taskId, ...api]);
    expect(result.code).toBe(1);
    expect(result.stdout).toContain(`task ${taskId} (slow_echo): cancelled`);
    expect(result.stdout).toContain('error FM_ERR_CANCELLED:');

    const again = await runCli(['task', 'cancel', taskId, ...api]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^error FM_ERR_TASK_FINISHED: /);
  });

  it('cli - a failing task exits 1 and prints its error code', async () => {
    const args = JSON.stringify({ value: 1, from_unit: 'km', to_unit: 'kg' });
    const r = await runCli(['task', 'send', 'unit_convert', '--args', args, '--target', onPi, ...api]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^failed {2}task \S+ on rpi:device_b/);
    expect(r.stdout).toContain('path: rpi:device_b (failed)');
    expect(r.stdout).toContain('error FM_ERR_INCOMPATIBLE_UNITS:');

    const json = await runCli([
      'task',
      'send',
      'fail_with',
      '--args',
      '{"code":"FM_ERR_EXECUTION","message":"boom"}',
      '--target',
      onPi,
      '--json',
      ...api,
    ]);
    expect(json.code).toBe(1);
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: false, error: { code: 'FM_ERR_EXECUTION', message: 'boom' } });

    const result = await runCli(['task', 'result', JSON.parse(json.stdout).task_id, ...api]);
    expect(result.code).toBe(1);
    expect(result.stdout).toContain(': failed, 1 attempt(s)');
    expect(result.stdout).toContain('error FM_ERR_EXECUTION: boom');
  });

  it('cli - bad --args JSON exits non-zero with a message naming the option', async () => {
    const r = await runCli(['task', 'send', 'unit_convert', '--args', '{value: 10', '--target', onPi, ...api]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/^error: --args: not valid JSON/);
    expect(r.stdout).toBe('');

    const target = await runCli(['task', 'send', 'sys_info', '--target', 'rpi:device_b', ...api]);
    expect(target.code).not.toBe(0);
    expect(target.stderr).toMatch(/^error: --target: not valid JSON/);
  });

  it('cli - what a user plausibly gets wrong is one line naming the problem, never a stack or library text', async () => {
    const https = c.gateway.api.replace(/^http:/, 'https:');
    const cases: [string[], RegExp][] = [
      [
        ['nodes', 'list', '--api', https, '--data-dir', c.gateway.dataDir],
        /^error FM_ERR_UNAVAILABLE: Cannot reach the gateway at https:.*: the TLS handshake failed \(an https URL for a plain-HTTP API\?/,
      ],
      [
        ['pair', '--node-id', 'rpi device b', ...api],
        /^error FM_ERR_INVALID_REQUEST: Invalid body at \/node_id: "rpi device b" is not valid; a node id starts with a letter or digit/,
      ],
      [['task', 'send', 'no_such_tool', ...api], /^error FM_ERR_UNKNOWN_TOOL: /],
      [
        ['task', 'send', 'sys_info', '--target', '{"kind":"nearest"}', ...api],
        /^error FM_ERR_INVALID_REQUEST: .*\/target\/kind: "nearest" is not valid/,
      ],
    ];
    for (const [args, message] of cases) {
      const r = await runCli(args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr).toMatch(message);
      expect(r.stderr.trimEnd().split('\n'), r.stderr).toHaveLength(1);
      expect(r.stderr).not.toMatch(/\.(js|ts|c):\d+/);
    }
  });

  it('cli - a gateway whose --api or --listen address is taken names the option and the address', async () => {
    const api = c.gateway.api.replace(/^https?:\/\//, '');
    const cases: [string[], string][] = [
      [['--api', api, '--listen', '127.0.0.1:0'], `error FM_ERR_INVALID_OPTION: gateway.api: cannot listen on ${api}: listen EADDRINUSE`],
      [
        ['--api', '127.0.0.1:0', '--listen', c.gateway.listen],
        `error FM_ERR_INVALID_OPTION: gateway.listen: cannot listen on ${c.gateway.listen}: listen EADDRINUSE`,
      ],
    ];
    for (const [flags, message] of cases) {
      const r = await runCli(['gateway', '--data-dir', join(c.root, 'second-gateway'), ...flags, '--log-level', 'silent']);
      expect(r.code, flags.join(' ')).toBe(1);
      expect(r.stderr.startsWith(message), r.stderr).toBe(true);
    }
  });

  it('cli - output piped to a reader that stops early (| head) ends the command quietly, with no stack trace', async () => {
    // The reading end is closed before the command writes, as `fieldmesh nodes caps … | head -1` does once it has its line.
    const child = spawn(process.execPath, [cliPath, 'nodes', 'caps', 'rpi:device_b', ...api], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.destroy();
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
    expect(stderr).toBe('');
    expect(code).toBe(0);
  });

  it('cli - task result for an unknown task prints FM_ERR_TASK_NOT_FOUND and exits 1', async () => {
    const r = await runCli(['task', 'result', 'task_does_not_exist', ...api]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error FM_ERR_TASK_NOT_FOUND: .*task_does_not_exist/);
  });

  it('cli - run prints the timeline of a workflow file with each step and node', async () => {
    const file = join(c.root, 'seed-workflow.json');
    writeFileSync(file, JSON.stringify(seedWorkflow, null, 2));
    const r = await runCli(['run', file, ...api]);
    expect(r.code, r.stderr).toBe(0);
    const all = r.stdout.trimEnd().split('\n');
    expect(all[0]).toMatch(/^run \S+ of offline_multinode_demo$/);
    // Live progress: each step is seen running, then done.
    expect(r.stdout).toMatch(/\n {2}redact\s+done in \d+ ms on Android Device A\n/);
    expect(r.stdout).toMatch(/\n {2}convert\s+done in \d+ ms on Raspberry Pi B\n/);
    const lines = all.slice(all.findIndex((l) => l.startsWith('workflow ')));
    expect(lines[0]).toMatch(/^workflow offline_multinode_demo {2}run \S+ {2}ok {2}verified=true degraded=false {2}\d+ ms$/);
    expect(lines[1]).toMatch(/^STEP\s+NODE\s+NODE ID\s+TIMESTAMP\s+DURATION\s+ATTEMPTS\s+VERIFIED\s+RESULT$/);
    const redact = lines.find((l) => l.startsWith('redact '));
    const convert = lines.find((l) => l.startsWith('convert '));
    expect(redact).toMatch(/^redact\s+Android Device A\s+android:device_a\s+\d{4}-\d{2}-\d{2}T\S+Z\s+[\d.]+ ms\s+1\s+true\s+ok$/);
    expect(convert).toMatch(/^convert\s+Raspberry Pi B\s+rpi:device_b\s+\d{4}-\d{2}-\d{2}T\S+Z\s+[\d.]+ ms\s+1\s+true\s+ok$/);
    expect(lines.indexOf(redact!)).toBeLessThan(lines.indexOf(convert!));
    expect(r.stdout).toContain('execution path: android:device_a → rpi:device_b');
  });

  it('cli - run --json prints the raw workflow result', async () => {
    const file = join(c.root, 'seed-workflow-json.json');
    writeFileSync(file, JSON.stringify(seedWorkflow));
    const r = await runCli(['run', file, '--json', ...api]);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as WorkflowRunResult;
    expect(out).toMatchObject({
      ok: true,
      workflow_id: 'offline_multinode_demo',
      status: 'succeeded',
      verified: true,
      degraded: false,
      execution_path: ['android:device_a', 'rpi:device_b'],
      outputs: { redact: { redacted_text: 'Email me at [EMAIL]' }, convert: { value: 16.09344, unit: 'km' } },
    });
    expect(out.timeline.map((t) => [t.step, t.node, t.node_id])).toEqual([
      ['redact', 'Android Device A', 'android:device_a'],
      ['convert', 'Raspberry Pi B', 'rpi:device_b'],
    ]);
  });

  it('cli - run exits 1 when a step fails and when the file is not a workflow', async () => {
    const failing = join(c.root, 'failing-workflow.json');
    writeFileSync(
      failing,
      JSON.stringify({
        workflow_id: 'fails',
        steps: [
          seedWorkflow.steps[0],
          {
            step_id: 'broken',
            tool_name: 'fail_with',
            tool_args: { message: 'no signal' },
            target: { kind: 'explicit', node_id: 'rpi:device_b' },
          },
        ],
      }),
    );
    const r = await runCli(['run', failing, ...api]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^run \S+ of fails\n/);
    expect(r.stdout).toMatch(/ {2}broken\s+failed: FM_ERR_EXECUTION/);
    expect(r.stdout).toMatch(/\nworkflow fails {2}run \S+ {2}FAILED/);
    expect(r.stdout).toMatch(/\nbroken\s+Raspberry Pi B\s+rpi:device_b\s.*failed\n/);
    expect(r.stdout).toContain('error FM_ERR_STEP_FAILED: Step "broken" failed');

    const notJson = join(c.root, 'not-a-workflow.json');
    writeFileSync(notJson, 'steps: []');
    const bad = await runCli(['run', notJson, ...api]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain(`${notJson}: cannot read a workflow`);
  });

  it('cli - demo runs the offline multi-node workflow and prints its timeline and result', async () => {
    const r = await runCli(['demo'], 60_000);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    for (const name of ['Android Device A', 'Raspberry Pi B', 'GPU Box']) expect(r.stdout).toContain(name);
    expect(r.stdout).toMatch(/\nredact\s+Android Device A\s+android:device_a\s/);
    expect(r.stdout).toMatch(/\nconvert\s+Raspberry Pi B\s+rpi:device_b\s/);
    expect(r.stdout).toMatch(/\nsummarize\s+GPU Box\s+local:gpu_box\s/);
    expect(r.stdout).toMatch(/ {2}summarize\s+done in \d+ ms on GPU Box/);
    const json = r.stdout.slice(r.stdout.indexOf('result:\n') + 'result:\n'.length);
    const result = JSON.parse(json) as WorkflowRunResult;
    expect(r.stdout).toContain('"ok": true');
    expect(result).toMatchObject({
      ok: true,
      workflow_id: 'offline_multinode_demo',
      verified: true,
      outputs: { convert: { value: 16.09344, unit: 'km' } },
    });
    // The summary is built from the redacted text that the first step passed on.
    const redacted = (result.outputs.redact as { redacted_text: string }).redacted_text;
    expect(redacted).toContain('Email me at [EMAIL]');
    const summary = (result.outputs.summarize as { summary: string }).summary;
    expect(summary.length).toBeGreaterThan(0);
    expect(redacted).toContain(summary.split('. ')[0]!);
    expect(summary).not.toContain('john@example.com');
    // convert ran in parallel with redact: it started before redact finished.
    const t = Object.fromEntries(result.timeline.map((e) => [e.step, e]));
    expect(Date.parse(t.convert!.timestamp)).toBeLessThan(Date.parse(t.redact!.timestamp) + t.redact!.duration_ms);
  }, 90_000);
});
