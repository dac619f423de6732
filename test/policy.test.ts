// Tool policy at the gateway (deny, supervised approvals) and each node's own policy, with real gateway and node processes.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Workflow } from '../src/protocol/api.js';
import { Cluster, http, runCli, waitFor } from './harness.js';

const GATEWAY_TOML = `
[gateway]
# The harness passes --api and --listen on port 0: flags override the file.
api = "127.0.0.1:9"
max_attempts = 3

[security.tool_policy]
default = "allow"
approval_timeout = "10m"

[security.tool_policy.tools]
fail_with = "deny"
web_fetch = "supervised"
`;

const STRICT_NODE_TOML = `
[node]
name = "Strict node"
capabilities = ["site:lab"]

[node.policy]
allowed_tools = ["slow_echo"]
max_concurrent_tasks = 4
max_payload_bytes = 300
allow_deploy = false
`;

/** Waits until a task is stored in a final status. */
async function finished(c: Cluster, taskId: string) {
  return waitFor(`task ${taskId} to finish`, async () => {
    const t = await c.gateway.client.getTask(taskId, 2000);
    return ['succeeded', 'failed', 'cancelled'].includes(t.status) ? t : undefined;
  });
}

describe('policy - tool policy and node policy', () => {
  const c = new Cluster();
  let api: string[];

  beforeAll(async () => {
    const gatewayToml = join(c.root, 'gateway.toml');
    writeFileSync(gatewayToml, GATEWAY_TOML);
    const strictToml = join(c.root, 'strict.toml');
    writeFileSync(strictToml, STRICT_NODE_TOML);
    await c.startGateway(['--config', gatewayToml]);
    api = ['--api', c.gateway.api, '--data-dir', c.gateway.dataDir];
    await Promise.all([
      c.startNode({ id: 'open' }),
      c.startNode({ id: 'strict', extraArgs: ['--config', strictToml, '--max-concurrency', '1'] }),
    ]);
  }, 60_000);
  afterAll(() => c.stop());

  it('config - the gateway file applies, and flags given next to it win', async () => {
    expect(c.gateway.api).not.toMatch(/:9$/);
    const strict = await c.gateway.client.getNode('strict');
    expect(strict.name).toBe('Strict node');
    expect(strict.capabilities).toContain('site:lab');
    // --max-concurrency 1 overrides max_concurrent_tasks = 4 from the node's file.
    expect(strict.policy).toEqual({ allowed_tools: ['slow_echo'], max_concurrent_tasks: 1, max_payload_bytes: 300, allow_deploy: false });
    expect((await c.gateway.client.getNode('open')).policy).toMatchObject({
      allowed_tools: null,
      max_payload_bytes: null,
      allow_deploy: false,
    });
  });

  it('tool policy - a denied tool fails at once with FM_ERR_TOOL_DENIED, as a call, a task or a workflow step', async () => {
    const call = await http(c.gateway.api, 'POST', '/v1/tool_call', JSON.stringify({ tool_name: 'fail_with', tool_args: {} }));
    expect(call.status).toBe(403);
    expect(call.json.error).toMatchObject({ code: 'FM_ERR_TOOL_DENIED' });
    expect(call.json.error.message).toMatch(/denies tool "fail_with"/);
    const task = await http(c.gateway.api, 'POST', '/v1/tasks', JSON.stringify({ tool_name: 'fail_with', tool_args: {} }));
    expect(task.status).toBe(403);
    const workflow: Workflow = {
      workflow_id: 'denied-step',
      steps: [
        { step_id: 'echo', tool_name: 'slow_echo', tool_args: { ms: 0 } },
        { step_id: 'fail', tool_name: 'fail_with', tool_args: {} },
      ],
    };
    const run = await http(c.gateway.api, 'POST', '/v1/workflows/run', JSON.stringify({ workflow }));
    expect(run.status).toBe(403);
    expect(run.json.error).toMatchObject({ code: 'FM_ERR_TOOL_DENIED', details: { step_id: 'fail' } });
    expect(await c.gateway.client.listRuns({ workflow_id: 'denied-step' })).toEqual([]);
  });

  it('tool policy - a supervised task waits without a node, is listed, and runs once approved through the API', async () => {
    const client = c.gateway.client;
    const submitted = await http(
      c.gateway.api,
      'POST',
      '/v1/tool_call',
      JSON.stringify({ tool_name: 'web_fetch', tool_args: { url: 'http://a' } }),
    );
    expect(submitted.status).toBe(202);
    expect(submitted.json).toMatchObject({ ok: true, status: 'awaiting_approval', approval: { decision: null } });
    const taskId = submitted.json.task_id as string;

    const waiting = await client.getTask(taskId);
    expect(waiting.status).toBe('awaiting_approval');
    expect(waiting.attempts).toEqual([]);
    expect(Date.parse(waiting.approval!.expires_at) - Date.parse(waiting.approval!.requested_at)).toBe(600_000);
    const listed = (await client.listApprovals()).find((a) => a.task_id === taskId);
    expect(listed).toMatchObject({ tool_name: 'web_fetch', tool_args: { url: 'http://a' }, run_id: null, step_id: null });

    // Other tasks run meanwhile, and the waiting one holds no node.
    const other = await client.toolCall({
      tool_name: 'slow_echo',
      tool_args: { ms: 0, value: 1 },
      target: { kind: 'explicit', node_id: 'strict' },
    });
    expect(other.ok).toBe(true);
    expect((await client.getNode('open')).load.in_flight).toBe(0);
    expect((await client.getTask(taskId)).status).toBe('awaiting_approval');

    const approved = await client.approve(taskId, 'checked the url');
    expect(approved.approval).toMatchObject({ decision: 'approved', reason: 'checked the url' });
    const done = await finished(c, taskId);
    expect(done.status).toBe('succeeded');
    expect(done.result).toMatchObject({ ok: true, node_id: 'open', output: { url: 'http://a' } });
    expect(done.approval).toMatchObject({ decision: 'approved', reason: 'checked the url' });
    expect((await client.listApprovals()).some((a) => a.task_id === taskId)).toBe(false);

    const again = await http(c.gateway.api, 'POST', `/v1/approvals/${taskId}/approve`);
    expect(again.status).toBe(409);
    expect(again.json.error.code).toBe('FM_ERR_NOT_AWAITING_APPROVAL');
    expect((await http(c.gateway.api, 'POST', '/v1/approvals/task_nope/reject')).json.error.code).toBe('FM_ERR_TASK_NOT_FOUND');
  });

  it('tool policy - a supervised task is rejected through the API and fails with FM_ERR_APPROVAL_REJECTED', async () => {
    const client = c.gateway.client;
    const taskId = await client.submitTask({ tool_name: 'web_fetch', tool_args: { url: 'http://b' } });
    const rejected = await http(c.gateway.api, 'POST', `/v1/approvals/${taskId}/reject`, JSON.stringify({ reason: 'unknown host' }));
    expect(rejected.status).toBe(200);
    const done = await finished(c, taskId);
    expect(done.status).toBe('failed');
    expect(done.attempts).toEqual([]);
    expect(done.result?.error).toMatchObject({ code: 'FM_ERR_APPROVAL_REJECTED', details: { reason: 'unknown host' } });
    expect(done.result?.error?.message).toMatch(/rejected: unknown host/);
    expect(done.approval).toMatchObject({ decision: 'rejected', reason: 'unknown host' });
    const bad = await http(c.gateway.api, 'POST', `/v1/approvals/${taskId}/approve`, JSON.stringify({ reason: 7 }));
    expect(bad.status).toBe(400);
  });

  it('tool policy - approvals, approve and reject from the CLI', async () => {
    const client = c.gateway.client;
    const yes = await client.submitTask({ tool_name: 'web_fetch', tool_args: { url: 'http://cli-yes' } });
    const no = await client.submitTask({ tool_name: 'web_fetch', tool_args: { url: 'http://cli-no' } });

    const list = await runCli(['approvals', ...api]);
    expect(list.code).toBe(0);
    expect(list.stdout).toContain(yes);
    expect(list.stdout).toContain(no);
    expect(list.stdout).toContain('web_fetch');

    const approve = await runCli(['approve', yes, ...api]);
    expect(approve.code).toBe(0);
    expect(approve.stdout).toContain(`task ${yes} (web_fetch): approved`);
    const reject = await runCli(['reject', no, '--reason', 'not today', ...api]);
    expect(reject.code).toBe(0);
    expect(reject.stdout).toContain('rejected (not today)');

    expect((await finished(c, yes)).result).toMatchObject({ ok: true, output: { url: 'http://cli-yes' } });
    expect((await finished(c, no)).result?.error?.code).toBe('FM_ERR_APPROVAL_REJECTED');

    const twice = await runCli(['reject', no, ...api]);
    expect(twice.code).toBe(1);
    expect(twice.stderr).toContain('FM_ERR_NOT_AWAITING_APPROVAL');
    const empty = await runCli(['approvals', ...api]);
    expect(empty.stdout).toContain('no tasks awaiting approval');
  });

  it('tool policy - a workflow step on a supervised tool waits for approval and its run shows it', async () => {
    const client = c.gateway.client;
    const workflow: Workflow = {
      workflow_id: 'fetch-after-echo',
      steps: [
        { step_id: 'name', tool_name: 'slow_echo', tool_args: { ms: 0, value: 'report' } },
        { step_id: 'fetch', tool_name: 'web_fetch', tool_args: { url: 'http://host/{{steps.name.output.value}}' } },
      ],
    };
    const runId = await client.startWorkflow(workflow);
    const waiting = await waitFor('step fetch awaiting approval', async () => {
      const run = await client.getRun(runId);
      return run.steps.fetch?.status === 'awaiting_approval' ? run : undefined;
    });
    expect(waiting.status).toBe('running');
    expect(waiting.steps.name?.status).toBe('succeeded');
    const entry = (await client.listApprovals()).find((a) => a.run_id === runId);
    expect(entry).toMatchObject({ step_id: 'fetch', tool_name: 'web_fetch', tool_args: { url: 'http://host/report' } });
    expect(waiting.timeline.find((t) => t.step === 'fetch')?.approval).toMatchObject({ decision: null });

    await client.approve(entry!.task_id, 'fine');
    const done = await waitFor('run to finish', async () => {
      const run = await client.getRun(runId);
      return run.status !== 'running' ? run : undefined;
    });
    expect(done.status).toBe('succeeded');
    expect(done.steps.fetch?.output).toEqual({ url: 'http://host/report' });
    expect(done.timeline.find((t) => t.step === 'fetch')?.approval).toMatchObject({ decision: 'approved', reason: 'fine' });
  });

  it('node policy - a task breaking it on an explicit target fails with FM_ERR_NODE_POLICY_DENIED and is not moved', async () => {
    const res = await http(
      c.gateway.api,
      'POST',
      '/v1/tool_call',
      JSON.stringify({
        tool_name: 'sys_info',
        tool_args: {},
        target: { kind: 'explicit', node_id: 'strict' },
        retry: { max_attempts: 3, backoff_ms: 0, failover: true },
      }),
    );
    expect(res.status).toBe(403);
    expect(res.json.error).toMatchObject({ code: 'FM_ERR_NODE_POLICY_DENIED', details: { rule: 'allowed_tools', node_id: 'strict' } });
    expect(res.json.execution_path).toEqual(['strict (failed)']);
    const task = await c.gateway.client.getTask(res.json.task_id);
    expect(task.attempts.map((a) => a.node_id)).toEqual(['strict']);
  });

  it('node policy - arguments over max_payload_bytes are refused by the node; its other tasks run untouched', async () => {
    const client = c.gateway.client;
    const strict = { kind: 'explicit', node_id: 'strict' } as const;
    const beside = client.toolCall({ tool_name: 'slow_echo', tool_args: { ms: 300, value: 'small' }, target: strict });
    const big = await client.toolCall({ tool_name: 'slow_echo', tool_args: { ms: 0, value: 'x'.repeat(1000) }, target: strict });
    expect(big.ok).toBe(false);
    expect(big.error).toMatchObject({ code: 'FM_ERR_NODE_POLICY_DENIED', details: { rule: 'max_payload_bytes', limit: 300 } });
    expect(big.execution_path).toEqual(['strict (failed)']);
    expect(await beside).toMatchObject({ ok: true, node_id: 'strict', output: { value: 'small' } });
    // Without a target the same call goes to a node whose policy takes it.
    const placed = await client.toolCall({ tool_name: 'slow_echo', tool_args: { ms: 0, value: 'x'.repeat(1000) } });
    expect(placed).toMatchObject({ ok: true, node_id: 'open' });
  });

  it('node policy - the scheduler does not place a tool on a node whose policy excludes it', async () => {
    for (let i = 0; i < 4; i++) {
      const r = await c.gateway.client.toolCall({ tool_name: 'sys_info', tool_args: {} });
      expect(r).toMatchObject({ ok: true, node_id: 'open', execution_path: ['open'] });
    }
    const chain = await c.gateway.client.toolCall({
      tool_name: 'sys_info',
      tool_args: {},
      target: { kind: 'failover_chain', nodes: ['strict', 'open'] },
    });
    expect(chain).toMatchObject({ ok: true, execution_path: ['open'] });
  });

  // Last: it restarts the gateway.
  it('tool policy - a task awaiting approval survives a gateway kill -9 and runs once approved after the restart', async () => {
    const taskId = await c.gateway.client.submitTask({ tool_name: 'web_fetch', tool_args: { url: 'http://after-restart' } });
    expect((await c.gateway.client.getTask(taskId)).status).toBe('awaiting_approval');
    const before = (await c.gateway.client.getTask(taskId)).approval;
    await c.restartGateway();
    const client = c.gateway.client;
    const after = await client.getTask(taskId);
    expect(after.status).toBe('awaiting_approval');
    expect(after.approval).toEqual(before);
    expect((await client.listApprovals()).map((a) => a.task_id)).toContain(taskId);
    await client.approve(taskId);
    const done = await finished(c, taskId);
    expect(done.result).toMatchObject({ ok: true, node_id: 'open', output: { url: 'http://after-restart' } });
  });
});

describe('policy - approval timeout', () => {
  const c = new Cluster();

  beforeAll(async () => {
    await c.startGateway(['--tool-policy', 'web_fetch=supervised', '--approval-timeout', '1s']);
    await c.startNode({ id: 'only' });
  }, 60_000);
  afterAll(() => c.stop());

  it('tool policy - with no decision before the approval timeout the task fails with FM_ERR_APPROVAL_TIMEOUT', async () => {
    const taskId = await c.gateway.client.submitTask({ tool_name: 'web_fetch', tool_args: { url: 'http://late' } });
    const done = await finished(c, taskId);
    expect(done.status).toBe('failed');
    expect(done.attempts).toEqual([]);
    expect(done.result?.error?.code).toBe('FM_ERR_APPROVAL_TIMEOUT');
    expect(done.approval).toMatchObject({ decision: 'timed_out' });
    const late = await http(c.gateway.api, 'POST', `/v1/approvals/${taskId}/approve`);
    expect(late.status).toBe(409);
    expect(late.json.error.code).toBe('FM_ERR_NOT_AWAITING_APPROVAL');
    expect(await c.gateway.client.listApprovals()).toEqual([]);
  });
});
