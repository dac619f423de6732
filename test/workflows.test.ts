import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FieldmeshClient } from '../src/client/index.js';
import type { RunView, StepState, TimelineEntry, Workflow, WorkflowStep } from '../src/protocol/api.js';
import { resultHash } from '../src/protocol/signing.js';
import { Cluster, http, runCli, waitFor } from './harness.js';

const post = (api: string, path: string, body?: unknown) => http(api, 'POST', path, body === undefined ? undefined : JSON.stringify(body));
const put = (api: string, path: string, body: unknown) => http(api, 'PUT', path, JSON.stringify(body));
const runPath = (id: string, rest = '') => `/v1/runs/${encodeURIComponent(id)}${rest}`;

const echo = (step_id: string, ms: number, extra: Partial<WorkflowStep> = {}): WorkflowStep => ({
  step_id,
  tool_name: 'slow_echo',
  tool_args: { ms, value: step_id },
  ...extra,
});

const ALPHA = { id: 'wf:alpha', name: 'Alpha Node' };
const BETA = { id: 'wf:beta', name: 'Beta Node' };

/** A timeline entry's interval as recorded by the gateway: its start and start + duration_ms. */
const span = (t: TimelineEntry) => ({ start: Date.parse(t.timestamp), end: Date.parse(t.timestamp) + t.duration_ms });
const byStep = (timeline: TimelineEntry[]) => Object.fromEntries(timeline.map((t) => [t.step, t]));
const at = (iso: string | null | undefined) => Date.parse(iso ?? '');

/** Polls a run until `pred` holds, within a deadline. */
function runWhere(client: FieldmeshClient, runId: string, what: string, pred: (run: RunView) => boolean, timeoutMs = 20_000) {
  return waitFor(
    what,
    async () => {
      const run = await client.getRun(runId);
      return pred(run) ? run : undefined;
    },
    timeoutMs,
  );
}

const finished = (client: FieldmeshClient, runId: string, timeoutMs = 30_000) =>
  runWhere(client, runId, `run ${runId} to finish`, (r) => r.status !== 'running', timeoutMs);

/** Waits until a step's task has an attempt running on a node, so the node really holds the work. */
async function stepRunningOnNode(client: FieldmeshClient, runId: string, step: string): Promise<StepState> {
  return waitFor(`step ${step} running on a node`, async () => {
    const s = (await client.getRun(runId)).steps[step];
    if (s?.status !== 'running' || !s.task_id) return undefined;
    const task = await client.getTask(s.task_id).catch(() => undefined);
    return task?.attempts.at(-1)?.outcome === 'running' ? s : undefined;
  });
}

describe('workflows', () => {
  const c = new Cluster();
  let api: string;
  let client: FieldmeshClient;

  beforeAll(async () => {
    await c.startGateway(['--env-allow', 'FM_WF_VAR'], {}, { FM_WF_VAR: 'from-the-gateway', FM_WF_SECRET: 'not-for-workflows' });
    api = c.gateway.api;
    client = c.gateway.client;
    await Promise.all([c.startNode(ALPHA), c.startNode(BETA)]);
  }, 60_000);
  afterAll(() => c.stop());

  describe('dag', () => {
    it('dag - independent steps overlap in time and a fan-in step starts only after all its dependencies finished', async () => {
      const r = await client.runWorkflow({
        workflow_id: 'wf_diamond',
        steps: [
          echo('root', 0),
          echo('left', 1000, { depends_on: ['root'] }),
          echo('right', 1000, { depends_on: ['root'] }),
          echo('join', 0, { depends_on: ['left', 'right'] }),
        ],
      });
      expect(r).toMatchObject({ ok: true, status: 'succeeded' });
      expect(Object.keys(r.outputs).sort()).toEqual(['join', 'left', 'right', 'root']);
      const t = byStep(r.timeline);
      const [root, left, right, join] = [span(t.root!), span(t.left!), span(t.right!), span(t.join!)];
      // left and right ran at the same time: each started before the other ended.
      expect(left.start).toBeLessThan(right.end);
      expect(right.start).toBeLessThan(left.end);
      // Both waited for root; join waited for both.
      expect(left.start).toBeGreaterThanOrEqual(root.end);
      expect(right.start).toBeGreaterThanOrEqual(root.end);
      expect(join.start).toBeGreaterThanOrEqual(Math.max(left.end, right.end));
      const run = await client.getRun(r.run_id);
      expect(at(run.steps.join!.started_at)).toBeGreaterThanOrEqual(
        Math.max(at(run.steps.left!.finished_at), at(run.steps.right!.finished_at)),
      );
      expect(r.timeline.map((e) => e.step).at(-1)).toBe('join');
    });

    it('dag - without depends_on each step runs after the one before it', async () => {
      const r = await client.runWorkflow({ workflow_id: 'wf_sequential', steps: [echo('s1', 200), echo('s2', 200), echo('s3', 200)] });
      expect(r.ok).toBe(true);
      expect(r.timeline.map((e) => e.step)).toEqual(['s1', 's2', 's3']);
      const run = await client.getRun(r.run_id);
      const s = run.steps;
      expect(at(s.s2!.started_at)).toBeGreaterThanOrEqual(at(s.s1!.finished_at));
      expect(at(s.s3!.started_at)).toBeGreaterThanOrEqual(at(s.s2!.finished_at));
      const t = byStep(r.timeline);
      expect(span(t.s2!).start).toBeGreaterThanOrEqual(span(t.s1!).end);
      expect(span(t.s3!).start).toBeGreaterThanOrEqual(span(t.s2!).end);
    });

    it('dag - a run has a trace id and each timeline entry carries its evidence', async () => {
      const r = await client.runWorkflow({ workflow_id: 'wf_evidence', steps: [echo('a', 0), echo('b', 0)] });
      expect(r.trace_id).toMatch(/\S/);
      for (const e of r.timeline) {
        expect(e).toMatchObject({ ok: true, attempts: 1, verified: true, node: expect.stringMatching(/Node$/) });
        expect(e.node_id).toMatch(/^wf:/);
        expect(new Date(e.timestamp).toISOString()).toBe(e.timestamp);
        expect(e.result_hash).toMatch(/^sha256:[0-9a-f]{64}$/);
        expect(e.duration_ms).toBeGreaterThanOrEqual(0);
      }
    });
  });

  describe('templates', () => {
    it('templates - a whole-string template keeps the JSON type; inside a longer string it is stringified', async () => {
      const r = await client.runWorkflow(
        {
          workflow_id: 'wf_templates',
          steps: [
            { step_id: 'num', tool_name: 'slow_echo', tool_args: { ms: 0, value: '{{input.n}}' } },
            { step_id: 'obj', tool_name: 'slow_echo', tool_args: { ms: 0, value: '{{ input.obj }}' }, depends_on: [] },
            {
              step_id: 'use',
              tool_name: 'slow_echo',
              depends_on: ['num', 'obj'],
              tool_args: {
                ms: 0,
                value: {
                  num: '{{steps.num.output.value}}',
                  obj: '{{steps.obj.output.value}}',
                  first: '{{steps.obj.output.value.k[0]}}',
                  text: 'n={{steps.num.output.value}} obj={{steps.obj.output.value}} name={{input.name}}',
                  env: '{{env.FM_WF_VAR}}',
                },
              },
            },
          ],
        },
        { n: 7, obj: { k: [1, 2], s: 'x' }, name: 'pump-4' },
      );
      expect(r.ok, JSON.stringify(r.error)).toBe(true);
      expect(r.outputs.num).toMatchObject({ value: 7 });
      const value = (r.outputs.use as { value: Record<string, unknown> }).value;
      expect(value).toEqual({
        num: 7,
        obj: { k: [1, 2], s: 'x' },
        first: 1,
        text: 'n=7 obj={"k":[1,2],"s":"x"} name=pump-4',
        env: 'from-the-gateway',
      });
      expect(typeof value.num).toBe('number');
    });

    it.each([
      ['a missing step output field', '{{steps.a.output.nope}}', 'steps.a.output.nope', {}],
      ['a missing input field', 'x {{input.absent}} y', 'input.absent', { present: 1 }],
      ['an environment variable not on the allow-list', '{{env.FM_WF_SECRET}}', 'env.FM_WF_SECRET', {}],
    ])('templates - %s fails the step with FM_ERR_TEMPLATE naming the path', async (_what, template, path, input) => {
      const workflow: Workflow = {
        workflow_id: 'wf_missing_ref',
        steps: [echo('a', 0), { step_id: 'b', tool_name: 'slow_echo', tool_args: { ms: 0, value: template } }, echo('c', 0)],
      };
      const res = await post(api, '/v1/workflows/run', { workflow, input });
      expect(res.status).toBe(502);
      expect(res.json).toMatchObject({
        ok: false,
        status: 'failed',
        error: { code: 'FM_ERR_STEP_FAILED', details: { step: 'b', cause: { code: 'FM_ERR_TEMPLATE' } } },
      });
      expect(res.json.error.details.cause.message).toContain(path);
      expect(res.json.error.message).toContain(path);
      const run = await client.getRun(res.json.run_id);
      expect(run.steps.a!.status).toBe('succeeded');
      expect(run.steps.b).toMatchObject({ status: 'failed', error: { code: 'FM_ERR_TEMPLATE' } });
      expect(run.steps.c).toMatchObject({ status: 'skipped', task_id: null });
      // The secret never reaches a step, not even in an error.
      expect(JSON.stringify(run)).not.toContain('not-for-workflows');
    });
  });

  describe('rejections', () => {
    it.each<[string, WorkflowStep[], string]>([
      ['an unknown depends_on id', [echo('a', 0), echo('b', 0, { depends_on: ['ghost'] })], 'step "b" depends on unknown step "ghost"'],
      [
        'a cycle',
        [echo('a', 0, { depends_on: ['c'] }), echo('b', 0, { depends_on: ['a'] }), echo('c', 0, { depends_on: ['b'] })],
        'steps form a cycle',
      ],
      ['duplicate step ids', [echo('a', 0), echo('b', 0), echo('a', 0)], 'two steps have step_id "a"'],
      [
        'reading a step that is not an ancestor',
        [echo('a', 0, { depends_on: [] }), echo('b', 0, { depends_on: [], tool_args: { ms: 0, value: '{{steps.a.output.value}}' } })],
        'step "b" reads "{{steps.a.output.value}}" but does not depend on step "a"',
      ],
    ])('rejections - %s is refused with 400 FM_ERR_INVALID_WORKFLOW before any run', async (what, steps, message) => {
      const workflow_id = `wf_reject_${what.replace(/\W+/g, '_')}`;
      const res = await post(api, '/v1/workflows/run', { workflow: { workflow_id, steps } });
      expect(res.status).toBe(400);
      expect(res.json).toMatchObject({ ok: false, error: { code: 'FM_ERR_INVALID_WORKFLOW', details: { workflow_id } } });
      expect(res.json.error.message).toContain(message);
      const asyncRes = await post(api, '/v1/workflows/run?async=true', { workflow: { workflow_id, steps } });
      expect(asyncRes.status).toBe(400);
      expect(await client.listRuns({ workflow_id })).toEqual([]);
    });
  });

  describe('on_failure', () => {
    it('on_failure - "fail" ends the run ok:false naming the step, skips its dependents, keeps the failed node in the path', async () => {
      const r = await client.runWorkflow({
        workflow_id: 'wf_fail',
        steps: [
          echo('first', 0, { target: { kind: 'explicit', node_id: ALPHA.id } }),
          {
            step_id: 'broken',
            tool_name: 'fail_with',
            tool_args: { code: 'FM_ERR_EXECUTION', message: 'sensor broke', retryable: false },
            target: { kind: 'explicit', node_id: BETA.id },
          },
          echo('after', 0),
          echo('tail', 0),
        ],
      });
      expect(r).toMatchObject({
        ok: false,
        status: 'failed',
        execution_path: [ALPHA.id, `${BETA.id} (failed)`],
        error: { code: 'FM_ERR_STEP_FAILED', details: { step: 'broken', cause: { code: 'FM_ERR_EXECUTION', message: 'sensor broke' } } },
      });
      expect(r.error?.message).toContain('"broken"');
      expect(Object.keys(r.outputs)).toEqual(['first']);
      const run = await client.getRun(r.run_id);
      expect(run).toMatchObject({
        status: 'failed',
        steps: {
          first: { status: 'succeeded' },
          broken: { status: 'failed', execution_path: [`${BETA.id} (failed)`] },
          after: { status: 'skipped', task_id: null },
          tail: { status: 'skipped', task_id: null },
        },
      });
      expect(r.timeline.map((e) => [e.step, e.ok])).toEqual([
        ['first', true],
        ['broken', false],
      ]);
    });

    it('on_failure - "continue" lets the run go on and the other steps succeed', async () => {
      const r = await client.runWorkflow({
        workflow_id: 'wf_continue',
        steps: [
          echo('first', 0),
          {
            step_id: 'flaky',
            tool_name: 'fail_with',
            tool_args: { message: 'optional step broke', retryable: false },
            target: { kind: 'explicit', node_id: BETA.id },
            on_failure: 'continue',
          },
          echo('after', 0, { depends_on: ['flaky'] }),
          echo('side', 0, { depends_on: ['first'] }),
        ],
      });
      expect(r).toMatchObject({ ok: true, status: 'succeeded', degraded: true });
      expect(r.error).toBeUndefined();
      expect(Object.keys(r.outputs).sort()).toEqual(['after', 'first', 'side']);
      expect(r.execution_path).toContain(`${BETA.id} (failed)`);
      const run = await client.getRun(r.run_id);
      expect(run.steps.flaky).toMatchObject({ status: 'failed', error: { message: expect.stringContaining('optional step broke') } });
      expect(run.steps.after!.status).toBe('succeeded');
      expect(at(run.steps.after!.started_at)).toBeGreaterThanOrEqual(at(run.steps.flaky!.finished_at));
    });
  });

  describe('policies', () => {
    const expectViolation = async (workflow: Workflow, policy: string, ...fragments: string[]) => {
      const res = await post(api, '/v1/workflows/run', { workflow, input: { text: 'Mail john@example.com today. Pump 4 lost pressure.' } });
      expect(res.status, res.text).toBe(400);
      expect(res.json).toMatchObject({ ok: false, error: { code: 'FM_ERR_POLICY_VIOLATION', details: { policy } } });
      expect(res.json.error.message).toContain(`Policy ${policy}`);
      for (const f of fragments) expect(res.json.error.message).toContain(f);
      expect(await client.listRuns({ workflow_id: workflow.workflow_id })).toEqual([]);
    };

    it('schema_strict - static arguments that violate the input_schema are rejected before the run', async () => {
      await expectViolation(
        {
          workflow_id: 'wf_strict_type',
          policies: ['schema_strict'],
          steps: [echo('ok', 0), echo('bad', 0, { tool_args: { ms: 'slow' } })],
        },
        'schema_strict',
        'step "bad"',
        'tool_args/ms',
      );
      await expectViolation(
        {
          workflow_id: 'wf_strict_extra',
          policies: ['schema_strict'],
          steps: [echo('bad', 0, { tool_args: { ms: 0, colour: 'red' } })],
        },
        'schema_strict',
        'step "bad"',
      );
      // Without the policy the same workflow starts and fails in the step instead.
      const r = await client.runWorkflow({ workflow_id: 'wf_lax', steps: [echo('ok', 0), echo('bad', 0, { tool_args: { ms: 'slow' } })] });
      expect(r).toMatchObject({
        ok: false,
        outputs: { ok: { value: 'ok' } },
        error: { details: { step: 'bad', cause: { code: 'FM_ERR_INVALID_ARGS' } } },
      });
    });

    it('schema_strict - valid arguments are accepted and the run succeeds', async () => {
      const r = await client.runWorkflow(
        {
          workflow_id: 'wf_strict_ok',
          policies: ['schema_strict'],
          steps: [
            { step_id: 'convert', tool_name: 'unit_convert', tool_args: { value: 10, from_unit: 'miles', to_unit: 'km' } },
            { step_id: 'echo', tool_name: 'slow_echo', tool_args: { ms: '{{input.ms}}', value: '{{steps.convert.output.value}}' } },
          ],
        },
        { ms: 0 },
      );
      expect(r).toMatchObject({ ok: true, outputs: { convert: { value: 16.09344, unit: 'km' }, echo: { value: 16.09344 } } });
    });

    it('schema_strict - templated arguments are checked once they resolve and a mismatch fails the step', async () => {
      const r = await client.runWorkflow(
        {
          workflow_id: 'wf_strict_late',
          policies: ['schema_strict'],
          steps: [echo('a', 0), echo('b', 0, { tool_args: { ms: '{{input.ms}}' } })],
        },
        { ms: 'soon' },
      );
      expect(r).toMatchObject({ ok: false, error: { details: { step: 'b', cause: { code: 'FM_ERR_INVALID_ARGS' } } } });
    });

    it('privacy_strict - an egress tool receiving input text without a pii_redact step before it is rejected', async () => {
      await expectViolation(
        {
          workflow_id: 'wf_privacy_raw',
          policies: ['privacy_strict'],
          steps: [{ step_id: 'sum', tool_name: 'summarize', tool_args: { text: '{{input.text}}' } }],
        },
        'privacy_strict',
        'step "sum"',
        'summarize',
        '{{input.text}}',
      );
      // A redaction of other text does not count.
      await expectViolation(
        {
          workflow_id: 'wf_privacy_other',
          policies: ['privacy_strict'],
          steps: [
            { step_id: 'redact', tool_name: 'pii_redact', tool_args: { text: '{{input.title}}' } },
            { step_id: 'sum', tool_name: 'summarize', tool_args: { text: '{{input.text}}' } },
          ],
        },
        'privacy_strict',
        'step "sum"',
      );
      // Nor does passing the text through another tool first.
      await expectViolation(
        {
          workflow_id: 'wf_privacy_relay',
          policies: ['privacy_strict'],
          steps: [
            echo('relay', 0, { tool_args: { ms: 0, value: '{{input.text}}' } }),
            { step_id: 'sum', tool_name: 'summarize', tool_args: { text: '{{steps.relay.output.value}}' } },
          ],
        },
        'privacy_strict',
        'step "sum"',
        '"relay"',
      );
    });

    it('privacy_strict - redact then summarize the redacted text is accepted and runs', async () => {
      const text = 'Mail john@example.com about pump 4 today. The pump at the north site lost pressure twice this week.';
      const r = await client.runWorkflow(
        {
          workflow_id: 'wf_privacy_ok',
          policies: ['privacy_strict'],
          steps: [
            { step_id: 'redact', tool_name: 'pii_redact', tool_args: { text: '{{input.text}}' } },
            { step_id: 'sum', tool_name: 'summarize', tool_args: { text: '{{steps.redact.output.redacted_text}}', max_sentences: 2 } },
          ],
        },
        { text },
      );
      expect(r.ok, JSON.stringify(r.error)).toBe(true);
      const redacted = (r.outputs.redact as { redacted_text: string }).redacted_text;
      expect(redacted).toContain('[EMAIL]');
      const summary = (r.outputs.sum as { summary: string }).summary;
      expect(summary).toContain('[EMAIL]');
      expect(summary).not.toContain('john@example.com');
    });

    it('offline_capable - a tool marked network: true is rejected', async () => {
      await expectViolation(
        {
          workflow_id: 'wf_offline_net',
          policies: ['offline_capable'],
          steps: [echo('a', 0), { step_id: 'fetch', tool_name: 'web_fetch', tool_args: { url: 'https://example.com' } }],
        },
        'offline_capable',
        'step "fetch"',
        'web_fetch',
        'network',
      );
      // Without the policy the tool runs (it only echoes its url).
      const r = await client.runWorkflow({
        workflow_id: 'wf_online',
        steps: [{ step_id: 'fetch', tool_name: 'web_fetch', tool_args: { url: 'https://example.com' } }],
      });
      expect(r).toMatchObject({ ok: true, outputs: { fetch: { url: 'https://example.com' } } });
    });

    it('offline_capable - a tool no node in the mesh offers is rejected', async () => {
      await expectViolation(
        {
          workflow_id: 'wf_offline_missing',
          policies: ['offline_capable'],
          steps: [{ step_id: 'infer', tool_name: 'llm_generate', tool_args: { prompt: 'hi' } }],
        },
        'offline_capable',
        'step "infer"',
        'llm_generate',
      );
    });

    it('offline_capable - built-in tools are accepted and the run succeeds', async () => {
      const r = await client.runWorkflow(
        {
          workflow_id: 'wf_offline_ok',
          policies: ['offline_capable'],
          steps: [
            { step_id: 'redact', tool_name: 'pii_redact', tool_args: { text: '{{input.text}}' } },
            { step_id: 'convert', tool_name: 'unit_convert', tool_args: { value: 3, from_unit: 'km', to_unit: 'm' }, depends_on: [] },
            {
              step_id: 'sum',
              tool_name: 'summarize',
              tool_args: { text: '{{steps.redact.output.redacted_text}}' },
              depends_on: ['redact'],
            },
          ],
        },
        { text: 'Call +1 415 555 0100. The well is dry.' },
      );
      expect(r.ok, JSON.stringify(r.error)).toBe(true);
      expect(r.outputs.convert).toEqual({ value: 3000, unit: 'm' });
    });

    it('audit_full - the audit log holds an entry per step attempt with hashes, node and signature', async () => {
      const r = await client.runWorkflow(
        {
          workflow_id: 'wf_audit',
          policies: ['audit_full'],
          steps: [
            { step_id: 'redact', tool_name: 'pii_redact', tool_args: { text: '{{input.text}}' } },
            {
              step_id: 'retry',
              tool_name: 'fail_on_node',
              tool_args: { fail_node: ALPHA.id, value: '{{steps.redact.output.redacted_text}}' },
              target: { kind: 'failover_chain', nodes: [ALPHA.id, BETA.id] },
            },
          ],
        },
        { text: 'mail ops@example.com' },
      );
      expect(r.ok, JSON.stringify(r.error)).toBe(true);
      const run = await client.getRun(r.run_id);
      const res = await http(api, 'GET', runPath(r.run_id, '/audit'));
      expect(res.status).toBe(200);
      expect(res.json).toMatchObject({ ok: true, run_id: r.run_id });
      const entries = await client.runAudit(r.run_id);
      expect(entries).toEqual(res.json.entries);
      expect(entries.map((e) => [e.step, e.attempt, e.node_id])).toEqual([
        ['redact', 1, run.steps.redact!.node_id],
        ['retry', 1, ALPHA.id],
        ['retry', 2, BETA.id],
      ]);
      for (const e of entries) {
        expect(e.run_id).toBe(r.run_id);
        expect(e.task_id).toBe(run.steps[e.step]!.task_id);
        expect(e.input_hash).toMatch(/^sha256:[0-9a-f]{64}$/);
        expect(e.output_hash).toMatch(/^sha256:[0-9a-f]{64}$/);
        expect(typeof e.node_signature === 'string' && e.node_signature.length > 0, `signature of ${e.step}#${e.attempt}`).toBe(true);
        expect(e.verified).toBe(true);
      }
      // The input hash is the hash of the arguments the step ran with, templates resolved.
      expect(entries[0]!.input_hash).toBe(resultHash({ text: 'mail ops@example.com' }));
      const redacted = (r.outputs.redact as { redacted_text: string }).redacted_text;
      expect(entries[1]!.input_hash).toBe(resultHash({ fail_node: ALPHA.id, value: redacted }));
      expect(entries[2]!.input_hash).toBe(entries[1]!.input_hash);
      // The last attempt's output hash is the step's result_hash.
      expect(entries[0]!.output_hash).toBe(run.steps.redact!.result_hash);
      expect(entries[2]!.output_hash).toBe(run.steps.retry!.result_hash);
      expect(entries[1]!.output_hash).not.toBe(run.steps.retry!.result_hash);

      const plain = await client.runWorkflow({ workflow_id: 'wf_no_audit', steps: [echo('a', 0)] });
      expect(await client.runAudit(plain.run_id)).toEqual([]);
    });
  });

  describe('api', () => {
    it('api - ?async=true answers 202 with the run id, and GET /v1/runs/{id} shows steps going waiting → running → succeeded', async () => {
      const workflow: Workflow = { workflow_id: 'wf_async', steps: [echo('first', 600), echo('second', 600)] };
      const res = await post(api, '/v1/workflows/run?async=true', { workflow });
      expect(res.status).toBe(202);
      expect(res.json).toEqual({ ok: true, run_id: expect.stringMatching(/\S/) });
      const runId = String(res.json.run_id);
      const seen: string[] = [];
      let whileSecondRuns: RunView | undefined;
      let whileFirstRuns: RunView | undefined;
      const done = await runWhere(client, runId, 'async run to finish', (run) => {
        const second = run.steps.second!.status;
        if (seen.at(-1) !== second) seen.push(second);
        if (second === 'running') whileSecondRuns ??= run;
        if (run.steps.first!.status === 'running') whileFirstRuns ??= run;
        return run.status !== 'running';
      });
      expect(seen).toEqual(['waiting', 'running', 'succeeded']);
      expect(done).toMatchObject({ status: 'succeeded', workflow_id: 'wf_async', result: { ok: true, run_id: runId } });
      // The timeline so far: the finished step, then the one in flight.
      expect(whileFirstRuns?.timeline.map((e) => e.step)).toEqual(['first']);
      expect(whileSecondRuns?.steps.first?.status).toBe('succeeded');
      expect(whileSecondRuns?.timeline.map((e) => [e.step, e.ok])).toEqual([
        ['first', true],
        ['second', false],
      ]);
      expect(whileSecondRuns?.result).toBeNull();

      const bad = await post(api, '/v1/workflows/run?async=maybe', { workflow });
      expect(bad.status).toBe(400);
      expect(bad.json.error.code).toBe('FM_ERR_INVALID_REQUEST');
    });

    it('api - GET /v1/runs filters by workflow_id and status', async () => {
      const ok1 = await client.runWorkflow({ workflow_id: 'wf_list_ok', steps: [echo('a', 0), echo('b', 0)] });
      const ok2 = await client.runWorkflow({ workflow_id: 'wf_list_ok', steps: [echo('a', 0), echo('b', 0)] });
      const bad = await client.runWorkflow({
        workflow_id: 'wf_list_bad',
        steps: [{ step_id: 'x', tool_name: 'fail_with', tool_args: {} }],
      });
      expect(bad.ok).toBe(false);

      const mine = await client.listRuns({ workflow_id: 'wf_list_ok' });
      expect(mine.map((r) => r.run_id)).toEqual([ok2.run_id, ok1.run_id]);
      expect(mine[0]).toMatchObject({ workflow_id: 'wf_list_ok', status: 'succeeded', steps: 2 });

      const failed = await client.listRuns({ status: 'failed' });
      expect(failed.map((r) => r.run_id)).toContain(bad.run_id);
      expect(failed.every((r) => r.status === 'failed')).toBe(true);
      expect(failed.map((r) => r.run_id)).not.toContain(ok1.run_id);

      const both = await http(api, 'GET', '/v1/runs?workflow_id=wf_list_bad&status=failed');
      expect(both.status).toBe(200);
      expect(both.json.runs.map((r: { run_id: string }) => r.run_id)).toEqual([bad.run_id]);
      expect(await client.listRuns({ workflow_id: 'wf_list_bad', status: 'succeeded' })).toEqual([]);

      const invalid = await http(api, 'GET', '/v1/runs?status=sleeping');
      expect(invalid.status).toBe(400);
      expect(invalid.json.error.code).toBe('FM_ERR_INVALID_REQUEST');
    });

    it('api - saved workflows: PUT versions, GET lists, POST runs with input', async () => {
      const v1: Workflow = { workflow_id: 'wf_saved', steps: [echo('a', 0, { tool_args: { ms: 0, value: '{{input.x}}' } })] };
      const v2: Workflow = { ...v1, steps: [...v1.steps, echo('b', 0, { tool_args: { ms: 0, value: '{{steps.a.output.value}}' } })] };
      const first = await put(api, '/v1/workflows/wf_saved', v1);
      expect(first.status).toBe(200);
      expect(first.json).toMatchObject({ ok: true, workflow_id: 'wf_saved', version: 1 });
      const second = await client.putWorkflow(v2);
      expect(second).toMatchObject({ workflow_id: 'wf_saved', version: 2 });

      const list = await client.listWorkflows();
      expect(list.find((w) => w.workflow_id === 'wf_saved')).toMatchObject({ version: 2, steps: 2 });
      const one = await http(api, 'GET', '/v1/workflows/wf_saved');
      expect(one.json).toMatchObject({ ok: true, version: 2, workflow: v2 });

      const res = await post(api, '/v1/workflows/wf_saved/runs', { input: { x: 41 } });
      expect(res.status).toBe(200);
      expect(res.json).toMatchObject({ ok: true, workflow_id: 'wf_saved', outputs: { a: { value: 41 }, b: { value: 41 } } });
      const typed = await client.runSavedWorkflow('wf_saved', { x: 'typed' });
      expect(typed).toMatchObject({ ok: true, outputs: { b: { value: 'typed' } } });
      const started = await post(api, '/v1/workflows/wf_saved/runs?async=true', { input: { x: 1 } });
      expect(started.status).toBe(202);
      const run = await finished(client, String(started.json.run_id));
      expect(run).toMatchObject({ status: 'succeeded', input: { x: 1 }, workflow: v2 });

      // An invalid save is refused and keeps the last version.
      const cyclic = await put(api, '/v1/workflows/wf_saved', { workflow_id: 'wf_saved', steps: [echo('a', 0, { depends_on: ['a'] })] });
      expect(cyclic.status).toBe(400);
      expect(cyclic.json.error.code).toBe('FM_ERR_INVALID_WORKFLOW');
      expect((await client.listWorkflows()).find((w) => w.workflow_id === 'wf_saved')?.version).toBe(2);
    });

    it('api - an unknown saved workflow is 404 FM_ERR_WORKFLOW_NOT_FOUND', async () => {
      const res = await post(api, '/v1/workflows/wf_never_saved/runs', { input: {} });
      expect(res.status).toBe(404);
      expect(res.json).toMatchObject({
        ok: false,
        error: { code: 'FM_ERR_WORKFLOW_NOT_FOUND', details: { workflow_id: 'wf_never_saved' } },
      });
      expect((await http(api, 'GET', '/v1/workflows/wf_never_saved')).status).toBe(404);
      await expect(client.runSavedWorkflow('wf_never_saved')).rejects.toMatchObject({ code: 'FM_ERR_WORKFLOW_NOT_FOUND', status: 404 });
    });

    it('api - a PUT whose body workflow_id differs from the path is 400', async () => {
      const res = await put(api, '/v1/workflows/wf_path_id', { workflow_id: 'wf_body_id', steps: [echo('a', 0)] });
      expect(res.status).toBe(400);
      expect(res.json.error.code).toBe('FM_ERR_INVALID_REQUEST');
      expect(res.json.error.message).toContain('wf_body_id');
      expect(res.json.error.message).toContain('wf_path_id');
      const names = (await client.listWorkflows()).map((w) => w.workflow_id);
      expect(names).not.toContain('wf_path_id');
      expect(names).not.toContain('wf_body_id');
    });
  });

  describe('cancel', () => {
    const longWorkflow = (workflow_id: string): Workflow => ({
      workflow_id,
      steps: [echo('quick', 0), echo('long', 30_000), echo('after', 0), echo('side', 0, { depends_on: ['long'] })],
    });

    it('cancel - POST /v1/runs/{id}/cancel cancels the running step task and the waiting steps never run', async () => {
      const runId = await client.startWorkflow(longWorkflow('wf_cancel'));
      const long = await stepRunningOnNode(client, runId, 'long');
      const res = await post(api, runPath(runId, '/cancel'));
      expect(res.status).toBe(200);
      expect(res.json).toMatchObject({ ok: true, run_id: runId, status: 'cancelled' });
      const run = await client.getRun(runId);
      expect(run.status).toBe('cancelled');
      expect(run.steps.quick!.status).toBe('succeeded');
      expect(run.steps.after).toMatchObject({ status: 'cancelled', task_id: null, started_at: null });
      expect(run.steps.side).toMatchObject({ status: 'cancelled', task_id: null, started_at: null });
      expect(run.timeline.map((e) => e.step)).toEqual(['quick', 'long']);
      const task = await client.getTask(long.task_id!);
      expect(task.status).toBe('cancelled');
      expect(task.result?.error?.code).toBe('FM_ERR_CANCELLED');
      expect(run.steps.long).toMatchObject({ status: 'cancelled', error: { code: 'FM_ERR_CANCELLED' } });
      expect(run.result).toMatchObject({ ok: false, status: 'cancelled', error: { code: 'FM_ERR_CANCELLED' } });
      expect(await client.listRuns({ workflow_id: 'wf_cancel', status: 'cancelled' })).toHaveLength(1);

      const again = await post(api, runPath(runId, '/cancel'));
      expect(again.status).toBe(409);
      expect(again.json.error.code).toBe('FM_ERR_TASK_FINISHED');
      expect((await post(api, runPath('run_missing', '/cancel'))).status).toBe(404);
    });

    it('cancel - a synchronous run request that is cancelled answers 409 FM_ERR_CANCELLED', async () => {
      const pending = post(api, '/v1/workflows/run', { workflow: longWorkflow('wf_cancel_sync') });
      const [summary] = await waitFor('the synchronous run to start', async () => {
        const runs = await client.listRuns({ workflow_id: 'wf_cancel_sync' });
        return runs.length > 0 ? runs : undefined;
      });
      await stepRunningOnNode(client, summary!.run_id, 'long');
      const cancelled = await client.cancelRun(summary!.run_id);
      expect(cancelled.status).toBe('cancelled');
      const res = await pending;
      expect(res.json).toMatchObject({ ok: false, run_id: summary!.run_id, status: 'cancelled', error: { code: 'FM_ERR_CANCELLED' } });
      expect(res.status).toBe(409);
    });
  });

  describe('scale', () => {
    it('scale - a 200-step workflow with fan-out and fan-in runs with 200 outputs', async () => {
      const middle = Array.from({ length: 198 }, (_, i) => `m${String(i + 1).padStart(3, '0')}`);
      const workflow: Workflow = {
        workflow_id: 'wf_200',
        steps: [
          echo('root', 0),
          ...middle.map((id, i) => echo(id, 0, { depends_on: ['root'], tool_args: { ms: 0, value: i } })),
          echo('final', 0, { depends_on: middle, tool_args: { ms: 0, value: '{{steps.m198.output.value}}' } }),
        ],
      };
      const r = await client.runWorkflow(workflow);
      expect(r.ok, JSON.stringify(r.error)).toBe(true);
      expect(Object.keys(r.outputs)).toHaveLength(200);
      expect(r.outputs.final).toMatchObject({ value: 197 });
      expect(middle.map((id) => (r.outputs[id] as { value: number }).value)).toEqual(middle.map((_, i) => i));
      expect(r.timeline).toHaveLength(200);
      const t = byStep(r.timeline);
      const rootEnd = span(t.root!).end;
      const final = span(t.final!);
      for (const id of middle) {
        expect(span(t[id]!).start).toBeGreaterThanOrEqual(rootEnd);
        expect(final.start).toBeGreaterThanOrEqual(span(t[id]!).end);
      }
      expect(new Set(r.timeline.map((e) => e.task_id)).size).toBe(200);
    }, 120_000);
  });

  describe('cli', () => {
    const apiArgs = () => ['--api', c.gateway.api, '--data-dir', c.gateway.dataDir];

    it('cli - workflows put saves a workflow file and workflows list shows it', async () => {
      const file = join(c.root, 'wf-cli-saved.json');
      writeFileSync(file, JSON.stringify({ workflow_id: 'wf_cli_saved', steps: [echo('a', 0), echo('b', 0)] }, null, 2));
      const put1 = await runCli(['workflows', 'put', file, ...apiArgs()]);
      expect(put1.code, put1.stderr).toBe(0);
      expect(put1.stdout).toBe('saved wf_cli_saved version 1\n');
      const put2 = await runCli(['workflows', 'put', file, ...apiArgs()]);
      expect(put2.stdout).toBe('saved wf_cli_saved version 2\n');
      const list = await runCli(['workflows', 'list', ...apiArgs()]);
      expect(list.code, list.stderr).toBe(0);
      const lines = list.stdout.trimEnd().split('\n');
      expect(lines[0]).toMatch(/^WORKFLOW\s+VERSION\s+STEPS\s+UPDATED$/);
      expect(lines.find((l) => l.startsWith('wf_cli_saved '))).toMatch(/^wf_cli_saved\s+2\s+2\s+\d{4}-\d{2}-\d{2}T\S+Z$/);
    });

    it('cli - run prints live progress per step, then the timeline; runs list and runs show find the run', async () => {
      const file = join(c.root, 'wf-cli-run.json');
      const workflow: Workflow = {
        workflow_id: 'wf_cli_run',
        steps: [
          echo('fetch', 800, { tool_args: { ms: 800, value: '{{input.site}}' }, target: { kind: 'explicit', node_id: ALPHA.id } }),
          {
            step_id: 'optional',
            tool_name: 'fail_with',
            tool_args: { code: 'FM_ERR_EXECUTION', message: 'no camera' },
            target: { kind: 'explicit', node_id: BETA.id },
            on_failure: 'continue',
          },
          echo('store', 0, { depends_on: ['fetch'], tool_args: { ms: 0, value: '{{steps.fetch.output.value}}' } }),
        ],
      };
      writeFileSync(file, JSON.stringify(workflow));
      const r = await runCli(['run', file, '--input', JSON.stringify({ site: 'north' }), ...apiArgs()]);
      expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
      const out = r.stdout;
      const runId = /^run (\S+) of wf_cli_run\n/.exec(out)?.[1];
      expect(runId, out).toBeDefined();
      const progress = out.slice(0, out.indexOf('\nworkflow wf_cli_run'));
      expect(progress).toMatch(/\n {2}fetch\s+running on wf:alpha\n/);
      expect(progress).toMatch(/\n {2}fetch\s+done in \d+ ms on Alpha Node\n/);
      expect(progress).toMatch(/\n {2}optional\s+failed: FM_ERR_EXECUTION no camera\n/);
      expect(progress).toMatch(/\n {2}store\s+done in \d+ ms on \S+ Node\n/);
      expect(progress.indexOf('fetch  running on')).toBeLessThan(progress.search(/fetch\s+done in/));
      // Then the timeline of the finished run; the failed step has no verified result, so neither has the run.
      expect(out).toMatch(new RegExp(`\\nworkflow wf_cli_run {2}run ${runId} {2}ok {2}verified=false degraded=true {2}\\d+ ms\\n`));
      expect(out).toMatch(/\nSTEP\s+NODE\s+NODE ID\s+TIMESTAMP\s+DURATION\s+ATTEMPTS\s+VERIFIED\s+RESULT\n/);
      expect(out).toMatch(/\nfetch\s+Alpha Node\s+wf:alpha\s+\d{4}-\S+Z\s+\d+ ms\s+1\s+true\s+ok\n/);
      expect(out).toMatch(/\noptional\s+Beta Node\s+wf:beta\s+\d{4}-\S+Z\s+\d+ ms\s+1\s+\w+\s+failed\n/);

      const list = await runCli(['runs', 'list', '--workflow', 'wf_cli_run', ...apiArgs()]);
      expect(list.code, list.stderr).toBe(0);
      const lines = list.stdout.trimEnd().split('\n');
      expect(lines[0]).toMatch(/^RUN\s+WORKFLOW\s+STATUS\s+STEPS\s+STARTED$/);
      expect(lines.slice(2)).toHaveLength(1);
      expect(lines[2]).toMatch(new RegExp(`^${runId}\\s+wf_cli_run\\s+succeeded\\s+3\\s+\\d{4}-\\S+Z$`));

      const show = await runCli(['runs', 'show', runId!, ...apiArgs()]);
      expect(show.code, show.stderr).toBe(0);
      expect(show.stdout).toMatch(new RegExp(`^run ${runId} of wf_cli_run: succeeded {2}trace \\S+\\n`));
      expect(show.stdout).toMatch(/\n {2}fetch {2}done in \d+ ms on Alpha Node\n/);
      expect(show.stdout).toMatch(/\n {2}optional {2}failed: FM_ERR_EXECUTION no camera\n/);
      expect(show.stdout).toContain(`\nworkflow wf_cli_run  run ${runId}  ok`);

      const stored = await client.getRun(runId!);
      expect(stored.steps.store!.output).toMatchObject({ value: 'north' });
    });

    it('cli - runs cancel cancels a running run; runs list --status finds it', async () => {
      const runId = await client.startWorkflow({ workflow_id: 'wf_cli_cancel', steps: [echo('long', 30_000), echo('next', 0)] });
      await stepRunningOnNode(client, runId, 'long');
      const r = await runCli(['runs', 'cancel', runId, ...apiArgs()]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe(`run ${runId}: cancelled\n`);
      expect((await client.getRun(runId)).steps.next!.status).toBe('cancelled');
      const list = await runCli(['runs', 'list', '--status', 'cancelled', '--workflow', 'wf_cli_cancel', ...apiArgs()]);
      expect(list.stdout).toMatch(new RegExp(`\\n${runId}\\s+wf_cli_cancel\\s+cancelled\\s+2\\s`));
      const again = await runCli(['runs', 'cancel', runId, ...apiArgs()]);
      expect(again.code).toBe(1);
      expect(again.stderr).toContain('FM_ERR_TASK_FINISHED');
    });
  });
});

describe('workflows - configurable egress set', () => {
  const c = new Cluster();

  beforeAll(async () => {
    await c.startGateway(['--egress-tool', 'slow_echo']);
    await c.startNode(ALPHA);
  }, 60_000);
  afterAll(() => c.stop());

  it('privacy_strict - a tool on the configured egress set needs redaction; a tool left off it does not', async () => {
    const input = { text: 'Mail john@example.com. The valve is stuck.' };
    const res = await post(c.gateway.api, '/v1/workflows/run', {
      workflow: {
        workflow_id: 'wf_egress_echo',
        policies: ['privacy_strict'],
        steps: [echo('send', 0, { tool_args: { ms: 0, value: '{{input.text}}' } })],
      },
      input,
    });
    expect(res.status).toBe(400);
    expect(res.json).toMatchObject({ ok: false, error: { code: 'FM_ERR_POLICY_VIOLATION', details: { policy: 'privacy_strict' } } });
    expect(res.json.error.message).toContain('slow_echo');

    // summarize is not on this gateway's egress set, so it may read the input directly.
    const r = await c.gateway.client.runWorkflow(
      {
        workflow_id: 'wf_egress_summarize',
        policies: ['privacy_strict'],
        steps: [{ step_id: 'sum', tool_name: 'summarize', tool_args: { text: '{{input.text}}' } }],
      },
      input,
    );
    expect(r.ok, JSON.stringify(r.error)).toBe(true);

    // With a redaction before it, slow_echo is accepted here too.
    const redacted = await c.gateway.client.runWorkflow(
      {
        workflow_id: 'wf_egress_redacted',
        policies: ['privacy_strict'],
        steps: [
          { step_id: 'redact', tool_name: 'pii_redact', tool_args: { text: '{{input.text}}' } },
          echo('send', 0, { tool_args: { ms: 0, value: '{{steps.redact.output.redacted_text}}' } }),
        ],
      },
      input,
    );
    expect(redacted.ok, JSON.stringify(redacted.error)).toBe(true);
    expect((redacted.outputs.send as { value: string }).value).toBe('Mail [EMAIL]. The valve is stuck.');
  });
});

describe('workflows - durability', () => {
  const c = new Cluster();

  beforeAll(async () => {
    await c.startGateway();
    await Promise.all([c.startNode(ALPHA), c.startNode(BETA)]);
  }, 60_000);
  afterAll(() => c.stop());

  it('durability - kill -9 of the gateway mid-run: the run resumes under its run_id, finished steps are not rerun', async () => {
    const before = c.gateway.client;
    const runId = await before.startWorkflow({
      workflow_id: 'wf_durable',
      steps: [
        echo('one', 0, { tool_args: { ms: 0, value: 'one' } }),
        echo('two', 3000, { tool_args: { ms: 3000, value: '{{steps.one.output.value}}-two' } }),
        echo('three', 0, { tool_args: { ms: 0, value: '{{steps.two.output.value}}-three' } }),
      ],
    });
    const two = await stepRunningOnNode(before, runId, 'two');
    const { trace_id } = await before.getRun(runId);

    await c.restartGateway();
    const client = c.gateway.client;
    // The nodes find the new gateway process by themselves.
    await waitFor('nodes back online', async () => (await client.listNodes('online')).length === 2, 30_000);
    const run = await finished(client, runId, 40_000);

    expect(run).toMatchObject({ run_id: runId, trace_id, status: 'succeeded', result: { ok: true, run_id: runId } });
    expect(run.steps.three!.output).toMatchObject({ value: 'one-two-three' });
    const [t1, t2, t3] = await Promise.all(['one', 'two', 'three'].map((s) => client.getTask(run.steps[s]!.task_id!)));
    expect(t1!.attempts).toHaveLength(1);
    expect(t1!.attempts[0]!.outcome).toBe('success');
    expect(run.steps.two!.task_id).toBe(two.task_id);
    expect(t2!.attempts.map((a) => [a.attempt, a.outcome, a.error?.code ?? null])).toEqual([
      [1, 'failed', 'FM_ERR_UNAVAILABLE'],
      [2, 'success', null],
    ]);
    expect(t3!.attempts).toHaveLength(1);
    expect(run.steps.two).toMatchObject({ status: 'succeeded', attempts: 2 });
    expect(run.steps.two!.execution_path).toHaveLength(2);
    expect(run.steps.two!.execution_path[0]).toMatch(/ \(failed\)$/);
    expect(run.steps.two!.execution_path[1]).toMatch(/ \(success\)$/);
    expect(run.timeline.map((e) => [e.step, e.attempts])).toEqual([
      ['one', 1],
      ['two', 2],
      ['three', 1],
    ]);
    expect(await client.listRuns({ workflow_id: 'wf_durable' })).toHaveLength(1);
  }, 90_000);
});

describe('workflows - pruning', () => {
  const c = new Cluster();

  beforeAll(async () => {
    await c.startGateway(['--run-retention-ms', '1500']);
    await c.startNode(ALPHA);
  }, 60_000);
  afterAll(() => c.stop());

  it('pruning - a finished run past the retention age is removed with its tasks; a running one is kept', async () => {
    const client = c.gateway.client;
    const longId = await client.startWorkflow({ workflow_id: 'wf_prune_long', steps: [echo('long', 15_000)] });
    await stepRunningOnNode(client, longId, 'long');
    const r = await client.runWorkflow({ workflow_id: 'wf_prune', steps: [echo('a', 0), echo('b', 0)] });
    expect(r.ok).toBe(true);
    const taskIds = r.timeline.map((e) => e.task_id);
    expect((await client.getTask(taskIds[0]!)).status).toBe('succeeded');

    await waitFor(
      'the finished run to be pruned',
      async () => (await http(c.gateway.api, 'GET', runPath(r.run_id))).status === 404,
      15_000,
    );
    const gone = await http(c.gateway.api, 'GET', runPath(r.run_id));
    expect(gone.json).toMatchObject({ ok: false, error: { code: 'FM_ERR_RUN_NOT_FOUND' } });
    for (const id of taskIds) {
      const task = await http(c.gateway.api, 'GET', `/v1/tasks/${encodeURIComponent(id)}`);
      expect(task.status).toBe(404);
      expect(task.json.error.code).toBe('FM_ERR_TASK_NOT_FOUND');
    }
    expect((await http(c.gateway.api, 'GET', runPath(r.run_id, '/audit'))).status).toBe(404);
    // The long run was last updated before the pruned run finished, yet it is kept while it runs.
    const long = await client.getRun(longId);
    expect(long.status).toBe('running');
    expect(at(long.updated_at)).toBeLessThan(at(r.timeline.at(-1)!.timestamp));
    await client.cancelRun(longId);
  }, 40_000);
});
