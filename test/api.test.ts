import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seedWorkflow } from '../src/cli/demo.js';
import { FieldmeshApiError } from '../src/client/index.js';
import type { NodeCapabilities, NodeView, ToolCallBody, Workflow } from '../src/protocol/api.js';
import { Cluster, http, seedNodes, waitFor } from './harness.js';

const ISO_8601 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?Z$/;
const isIsoTimestamp = (value: unknown) => typeof value === 'string' && ISO_8601.test(value) && !Number.isNaN(Date.parse(value));

const NODE_KEYS = ['capabilities', 'last_seen', 'load', 'location', 'name', 'node_id', 'platform', 'policy', 'status', 'trusted'];
const RESULT_KEYS = ['degraded', 'duration_ms', 'execution_path', 'node_id', 'ok', 'output', 'result_hash', 'task_id', 'verified'];
const TASK_KEYS = ['attempts', 'created_at', 'ok', 'status', 'target', 'task_id', 'tool_name', 'updated_at'];
const RUN_RESULT_KEYS = [
  'degraded',
  'duration_ms',
  'execution_path',
  'ok',
  'outputs',
  'run_id',
  'status',
  'timeline',
  'trace_id',
  'verified',
  'workflow_id',
];
const TIMELINE_KEYS = ['attempts', 'duration_ms', 'node', 'node_id', 'ok', 'result_hash', 'step', 'task_id', 'timestamp', 'verified'];
const BUILTIN_TOOLS = ['pii_redact', 'summarize', 'sys_info', 'unit_convert'];
const ALL_TOOLS = [
  'big_output',
  'fail_on_node',
  'fail_with',
  'pii_redact',
  'slow_echo',
  'span',
  'state_get',
  'state_script',
  'summarize',
  'sys_info',
  'unit_convert',
  'web_fetch',
];

const keys = (value: object) => Object.keys(value).sort();
const post = (api: string, path: string, body?: unknown) => http(api, 'POST', path, body === undefined ? undefined : JSON.stringify(body));
const nodePath = (id: string, rest = '') => `/v1/nodes/${encodeURIComponent(id)}${rest}`;

describe('api', () => {
  const c = new Cluster();
  let api: string;

  beforeAll(async () => {
    await c.startGateway();
    api = c.gateway.api;
    const [retired] = await Promise.all([
      c.startNode({ id: 'retired:node', name: 'Retired Node', platform: 'linux' }),
      ...seedNodes.map((n) => c.startNode(n)),
    ]);
    // One node that registered and left, so the status filter has an offline node to find.
    await retired.proc.stop(3000);
    await waitFor('retired:node OFFLINE', async () => (await c.gateway.client.getNode('retired:node')).status === 'OFFLINE');
  }, 60_000);
  afterAll(() => c.stop());

  it('api - GET /healthz reports the gateway version and online node count', async () => {
    const res = await http(api, 'GET', '/healthz');
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ ok: true, status: 'ok', version: '0.1.0', nodes_online: 2 });
    expect(res.json.frames_rejected).toEqual(expect.any(Number));
    expect(res.json.stale_results).toEqual(expect.any(Number));
    expect(await c.gateway.client.health()).toMatchObject({ ok: true, status: 'ok', nodes_online: 2 });
  });

  it('api - GET /openapi.json is an OpenAPI 3.1 document of every route with request body schemas', async () => {
    const res = await http(api, 'GET', '/openapi.json');
    expect(res.status).toBe(200);
    const doc = res.json;
    expect(doc.openapi).toBe('3.1.0');
    expect(doc.info).toMatchObject({ title: expect.any(String), version: '0.1.0' });
    const served: Record<string, string[]> = {
      '/healthz': ['get'],
      '/openapi.json': ['get'],
      '/metrics': ['get'],
      '/v1/metrics/summary': ['get'],
      '/v1/nodes': ['get'],
      '/v1/nodes/{node_id}': ['get'],
      '/v1/nodes/{node_id}/health': ['get'],
      '/v1/nodes/{node_id}/capabilities': ['get'],
      '/v1/nodes/{node_id}/approve': ['post'],
      '/v1/nodes/{node_id}/deny': ['post'],
      '/v1/nodes/{node_id}/revoke': ['post'],
      '/v1/pairing-codes': ['post'],
      '/v1/nodes/{node_id}/state': ['get'],
      '/v1/nodes/{node_id}/state/{doc}': ['get', 'put'],
      '/v1/tool_call': ['post'],
      '/v1/tasks': ['post'],
      '/v1/tasks/{task_id}': ['get'],
      '/v1/tasks/{task_id}/cancel': ['post'],
      '/v1/workflows': ['get'],
      '/v1/workflows/run': ['post'],
      '/v1/workflows/{workflow_id}': ['get', 'put'],
      '/v1/workflows/{workflow_id}/runs': ['post'],
      '/v1/runs': ['get'],
      '/v1/runs/{run_id}': ['get'],
      '/v1/runs/{run_id}/cancel': ['post'],
      '/v1/runs/{run_id}/audit': ['get'],
      '/v1/tokens': ['get', 'post'],
      '/v1/tokens/{token_id}/revoke': ['post'],
      '/v1/approvals': ['get'],
      '/v1/approvals/{task_id}/approve': ['post'],
      '/v1/approvals/{task_id}/reject': ['post'],
      '/v1/functions': ['get', 'post'],
      '/v1/functions/{name}': ['delete'],
      '/v1/discovery': ['get'],
      '/v1/nodes/register': ['post'],
      '/v1/nodes/register/{node_id}': ['delete'],
      '/v1/ws': ['get'],
    };
    expect(Object.keys(doc.paths).sort()).toEqual(Object.keys(served).sort());
    for (const [path, methods] of Object.entries(served)) expect(keys(doc.paths[path]), path).toEqual(methods.sort());

    const bodyRequired: Record<string, string[]> = {
      '/v1/tool_call': ['tool_name'],
      '/v1/tasks': ['tool_name'],
      '/v1/workflows/run': ['workflow'],
      '/v1/functions': ['name', 'bundle'],
    };
    for (const [path, required] of Object.entries(bodyRequired)) {
      const op = doc.paths[path].post;
      expect(op.requestBody?.required, path).toBe(true);
      const schema = op.requestBody.content['application/json'].schema;
      expect(schema.type, path).toBe('object');
      expect(schema.required, path).toEqual(required);
    }
    expect(keys(doc.paths['/v1/tool_call'].post.requestBody.content['application/json'].schema.properties)).toEqual([
      'for_each',
      'idempotency_key',
      'offline_behavior',
      'retry',
      'target',
      'timeout_ms',
      'tool_args',
      'tool_name',
    ]);
    expect(doc.paths['/v1/tasks'].post.responses['202']).toBeDefined();
    expect(doc.paths['/v1/tasks/{task_id}'].get.parameters).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ name: 'task_id', in: 'path', required: true }),
        expect.objectContaining({ name: 'wait_ms', in: 'query', required: false }),
      ]),
    );

    // Every documented operation is served: none answers "no such route" or "method not allowed".
    for (const [path, ops] of Object.entries(doc.paths as Record<string, Record<string, unknown>>)) {
      for (const method of Object.keys(ops)) {
        const concrete = path.replace(/\{[a-z_]+\}/g, 'unknown-id');
        const r = await http(api, method.toUpperCase(), concrete, method === 'post' ? '{}' : undefined);
        expect(r.json?.error?.code ?? 'none', `${method} ${path}`).not.toMatch(/FM_ERR_(ROUTE_NOT_FOUND|METHOD_NOT_ALLOWED)/);
      }
    }
  });

  it('api - unknown routes are 404 and wrong methods 405 with an allow header', async () => {
    const missing = await http(api, 'GET', '/v1/nope');
    expect(missing.status).toBe(404);
    expect(missing.json).toMatchObject({ ok: false, error: { code: 'FM_ERR_ROUTE_NOT_FOUND' } });
    const res = await http(api, 'GET', '/v1/tool_call');
    expect(res.status).toBe(405);
    expect(res.headers.allow).toBe('POST');
    expect(res.json).toMatchObject({ ok: false, error: { code: 'FM_ERR_METHOD_NOT_ALLOWED' } });
  });

  it('api - GET /v1/nodes lists every known node with its fields in snake_case', async () => {
    const res = await http(api, 'GET', '/v1/nodes');
    expect(res.status).toBe(200);
    expect(keys(res.json)).toEqual(['nodes', 'ok']);
    const nodes = res.json.nodes as NodeView[];
    expect(nodes.map((n) => n.node_id)).toEqual(['android:device_a', 'retired:node', 'rpi:device_b']);
    for (const n of nodes) {
      expect(keys(n), n.node_id).toEqual(NODE_KEYS);
      expect(keys(n.load)).toEqual(['cpu', 'in_flight', 'memory']);
      expect(n.load.cpu).toBeGreaterThanOrEqual(0);
      expect(n.load.memory).toBeGreaterThanOrEqual(0);
      expect(n.load.memory).toBeLessThanOrEqual(1);
      expect(Number.isInteger(n.load.in_flight)).toBe(true);
      expect(isIsoTimestamp(n.last_seen), n.last_seen).toBe(true);
      expect(typeof n.trusted).toBe('boolean');
    }
    const [android, , rpi] = nodes;
    expect(android).toMatchObject({ name: 'Android Device A', status: 'ONLINE', platform: 'android', location: null });
    expect(android!.capabilities).toEqual(expect.arrayContaining(['platform:android', ...ALL_TOOLS.map((t) => `tool:${t}`)]));
    expect(rpi).toMatchObject({ name: 'Raspberry Pi B', status: 'ONLINE', platform: 'linux', location: { lat: 37.7749, lon: -122.4194 } });
    expect(rpi!.capabilities).toEqual(expect.arrayContaining(['hardware:gps', 'platform:linux', 'tool:pii_redact', 'tool:unit_convert']));
    expect(android!.capabilities).not.toContain('hardware:gps');

    const typed = await c.gateway.client.listNodes();
    expect(typed).toEqual(nodes.map((n) => expect.objectContaining({ node_id: n.node_id, name: n.name, status: n.status })));
  });

  it('api - GET /v1/nodes?status= filters by status and refuses an unknown one', async () => {
    const online = await http(api, 'GET', '/v1/nodes?status=online');
    expect(online.status).toBe(200);
    expect(online.json.nodes.map((n: { node_id: string }) => n.node_id)).toEqual(['android:device_a', 'rpi:device_b']);
    const offline = await c.gateway.client.listNodes('offline');
    expect(offline.map((n) => [n.node_id, n.status])).toEqual([['retired:node', 'OFFLINE']]);
    expect(await c.gateway.client.listNodes('syncing')).toEqual([]);

    const bad = await http(api, 'GET', '/v1/nodes?status=sleeping');
    expect(bad.status).toBe(400);
    expect(bad.json).toEqual({
      ok: false,
      error: { code: 'FM_ERR_INVALID_REQUEST', message: expect.stringContaining('sleeping'), retryable: false },
    });
  });

  it('api - a malformed percent-encoded id is refused with 400, not an internal error', async () => {
    for (const path of ['/v1/nodes/%ZZ', '/v1/nodes/%E0%A4%A/health', '/v1/tasks/%E0%A4%A', '/v1/runs/%']) {
      const res = await http(api, 'GET', path);
      expect(res.status, path).toBe(400);
      expect(res.json, path).toMatchObject({ ok: false, error: { code: 'FM_ERR_INVALID_REQUEST' } });
    }
  });

  it('api - GET /v1/nodes/{id} returns one node', async () => {
    const res = await http(api, 'GET', nodePath('rpi:device_b'));
    expect(res.status).toBe(200);
    expect(keys(res.json)).toEqual(['node', 'ok']);
    expect(keys(res.json.node)).toEqual(NODE_KEYS);
    expect(res.json.node).toMatchObject({ node_id: 'rpi:device_b', name: 'Raspberry Pi B', status: 'ONLINE', platform: 'linux' });
    expect(await c.gateway.client.getNode('android:device_a')).toMatchObject({ node_id: 'android:device_a', platform: 'android' });
  });

  it('api - GET /v1/nodes/{id}/health reports heartbeats and connection', async () => {
    const res = await http(api, 'GET', nodePath('rpi:device_b', '/health'));
    expect(res.status).toBe(200);
    expect(keys(res.json)).toEqual(['connected', 'healthy', 'last_seen', 'load', 'node_id', 'ok', 'seconds_since_heartbeat', 'status']);
    expect(res.json).toMatchObject({ ok: true, node_id: 'rpi:device_b', status: 'ONLINE', healthy: true, connected: true });
    expect(res.json.seconds_since_heartbeat).toBeGreaterThanOrEqual(0);
    expect(isIsoTimestamp(res.json.last_seen)).toBe(true);
    expect(keys(res.json.load)).toEqual(['cpu', 'in_flight', 'memory']);

    const gone = await c.gateway.client.nodeHealth('retired:node');
    expect(gone).toMatchObject({ node_id: 'retired:node', status: 'OFFLINE', healthy: false, connected: false });
  });

  it('api - GET /v1/nodes/{id}/capabilities lists capabilities and tools with their schemas', async () => {
    const res = await http(api, 'GET', nodePath('android:device_a', '/capabilities'));
    expect(res.status).toBe(200);
    expect(keys(res.json)).toEqual(['capabilities', 'node_id', 'ok', 'tools']);
    expect(res.json.node_id).toBe('android:device_a');
    expect(res.json.capabilities).toEqual(expect.arrayContaining(['platform:android', 'tool:pii_redact']));
    const tools = res.json.tools as NodeCapabilities['tools'];
    expect(tools.map((t) => t.name).sort()).toEqual(ALL_TOOLS);
    for (const t of tools) {
      expect(t.description, t.name).toEqual(expect.any(String));
      expect(t.input_schema.type, t.name).toBe('object');
      expect(t.output_schema.type, t.name).toBe('object');
    }
    const convert = tools.find((t) => t.name === 'unit_convert')!;
    expect(convert.input_schema.required).toEqual(['value', 'from_unit', 'to_unit']);
    expect(convert.output_schema.required).toEqual(['value', 'unit']);

    const typed = await c.gateway.client.nodeCapabilities('rpi:device_b');
    expect(typed.capabilities).toContain('hardware:gps');
    expect(typed.tools.map((t) => t.name).sort()).toEqual(ALL_TOOLS);
  });

  it('api - unknown node ids are 404 FM_ERR_NODE_NOT_FOUND on every node route', async () => {
    for (const rest of ['', '/health', '/capabilities']) {
      const res = await http(api, 'GET', nodePath('nope:node', rest));
      expect(res.status, rest).toBe(404);
      expect(res.json, rest).toEqual({
        ok: false,
        error: {
          code: 'FM_ERR_NODE_NOT_FOUND',
          message: expect.stringContaining('nope:node'),
          retryable: false,
          details: { node_id: 'nope:node' },
        },
      });
    }
    const err = await c.gateway.client.getNode('nope:node').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FieldmeshApiError);
    expect(err).toMatchObject({ code: 'FM_ERR_NODE_NOT_FOUND', status: 404 });
  });

  it('api - POST /v1/tool_call runs each built-in tool and returns a verified, signed result', async () => {
    const calls: Record<string, { node: string; args: Record<string, unknown> }> = {
      pii_redact: { node: 'android:device_a', args: { text: 'Email me at john@example.com' } },
      unit_convert: { node: 'rpi:device_b', args: { value: 10, from_unit: 'miles', to_unit: 'km' } },
      summarize: {
        node: 'android:device_a',
        args: { text: 'The mesh runs offline. Nodes sign every result. The gateway checks each signature.', max_sentences: 1 },
      },
      sys_info: { node: 'rpi:device_b', args: {} },
    };
    expect(Object.keys(calls).sort()).toEqual(BUILTIN_TOOLS);
    const outputs: Record<string, Record<string, unknown>> = {};
    for (const [tool, { node, args }] of Object.entries(calls)) {
      const res = await post(api, '/v1/tool_call', { tool_name: tool, tool_args: args, target: { kind: 'explicit', node_id: node } });
      expect(res.status, tool).toBe(200);
      expect(keys(res.json), tool).toEqual(RESULT_KEYS);
      expect(res.json, tool).toMatchObject({ ok: true, node_id: node, execution_path: [node], verified: true, degraded: false });
      expect(res.json.task_id).toMatch(/\S/);
      expect(res.json.duration_ms).toBeGreaterThanOrEqual(0);
      expect(res.json.result_hash).toMatch(/^sha256:[0-9a-f]{64}$/);
      outputs[tool] = res.json.output;
    }
    expect(outputs.pii_redact).toEqual({
      redacted_text: 'Email me at [EMAIL]',
      counts: { email: 1, phone: 0, credit_card: 0, iban: 0, ipv4: 0, ssn: 0 },
    });
    expect(outputs.unit_convert).toEqual({ value: 16.09344, unit: 'km' });
    expect(outputs.summarize).toMatchObject({ sentence_count: 3, sentences: [expect.any(String)] });
    expect(outputs.summarize!.summary).toBe((outputs.summarize!.sentences as string[])[0]);
    expect(calls.summarize!.args.text).toContain(outputs.summarize!.summary as string);
    // The node processes run on this machine with this Node.js binary.
    expect(outputs.sys_info).toMatchObject({ platform: process.platform, arch: process.arch, node_version: process.version });
    expect(outputs.sys_info!.cpu_count).toBeGreaterThanOrEqual(1);

    const typed = await c.gateway.client.toolCall({
      tool_name: 'unit_convert',
      tool_args: { value: 10, from_unit: 'miles', to_unit: 'km' },
      target: { kind: 'capability', required_capabilities: ['hardware:gps'] },
    });
    expect(typed).toMatchObject({ ok: true, node_id: 'rpi:device_b', output: { value: 16.09344, unit: 'km' }, verified: true });
  });

  it('api - POST /v1/tool_call with a tool error is HTTP 400 with the tool error code and the failed node', async () => {
    const body: ToolCallBody = {
      tool_name: 'unit_convert',
      tool_args: { value: 1, from_unit: 'km', to_unit: 'kg' },
      target: { kind: 'explicit', node_id: 'rpi:device_b' },
    };
    const res = await post(api, '/v1/tool_call', body);
    expect(res.status).toBe(400);
    expect(keys(res.json)).toEqual([...RESULT_KEYS, 'error'].sort());
    expect(res.json).toMatchObject({
      ok: false,
      node_id: 'rpi:device_b',
      output: null,
      execution_path: ['rpi:device_b (failed)'],
      verified: false,
      degraded: false,
      result_hash: null,
      error: { code: 'FM_ERR_INCOMPATIBLE_UNITS', message: expect.stringContaining('Incompatible units') },
    });
    // The typed client resolves a failed call with its result instead of throwing.
    const typed = await c.gateway.client.toolCall(body);
    expect(typed).toMatchObject({ ok: false, error: { code: 'FM_ERR_INCOMPATIBLE_UNITS' }, execution_path: ['rpi:device_b (failed)'] });
  });

  it('api - POST /v1/tool_call refuses bad requests before running anything', async () => {
    const badArgs = await post(api, '/v1/tool_call', {
      tool_name: 'unit_convert',
      tool_args: { value: 'ten', from_unit: 'mi', to_unit: 'km' },
    });
    expect(badArgs.status).toBe(400);
    expect(badArgs.json).toMatchObject({ ok: false, error: { code: 'FM_ERR_INVALID_ARGS', message: expect.stringContaining('value') } });

    const noTool = await post(api, '/v1/tool_call', { tool_args: {} });
    expect(noTool.status).toBe(400);
    expect(noTool.json).toMatchObject({
      ok: false,
      error: { code: 'FM_ERR_INVALID_REQUEST', message: expect.stringContaining('tool_name') },
    });

    const notJson = await http(api, 'POST', '/v1/tool_call', '{"tool_name":');
    expect(notJson.status).toBe(400);
    expect(notJson.json).toMatchObject({ ok: false, error: { code: 'FM_ERR_INVALID_JSON' } });

    const unknownTool = await post(api, '/v1/tool_call', { tool_name: 'no_such_tool' });
    expect(unknownTool.status).toBe(404);
    expect(unknownTool.json).toMatchObject({ ok: false, error: { code: 'FM_ERR_UNKNOWN_TOOL' } });

    const offlineNode = await post(api, '/v1/tool_call', { tool_name: 'sys_info', target: { kind: 'explicit', node_id: 'retired:node' } });
    expect(offlineNode.status).toBe(503);
    expect(offlineNode.json).toMatchObject({
      ok: false,
      error: { code: 'FM_ERR_NODE_OFFLINE', details: { node_id: 'retired:node', status: 'OFFLINE' } },
    });

    const unknownNode = await post(api, '/v1/tool_call', { tool_name: 'sys_info', target: { kind: 'explicit', node_id: 'nope:node' } });
    expect(unknownNode.status).toBe(404);
    expect(unknownNode.json).toMatchObject({ ok: false, error: { code: 'FM_ERR_NODE_NOT_FOUND' } });
  });

  it('api - POST /v1/tasks stores the task and returns 202', async () => {
    const res = await post(api, '/v1/tasks', {
      tool_name: 'unit_convert',
      tool_args: { value: 10, from_unit: 'miles', to_unit: 'km' },
      target: { kind: 'explicit', node_id: 'rpi:device_b' },
    });
    expect(res.status).toBe(202);
    expect(keys(res.json)).toEqual(['ok', 'status', 'task_id']);
    expect(res.json.ok).toBe(true);
    const taskId = res.json.task_id as string;

    const done = await http(api, 'GET', `/v1/tasks/${encodeURIComponent(taskId)}?wait_ms=5000`);
    expect(done.status).toBe(200);
    expect(keys(done.json)).toEqual([...TASK_KEYS, 'result'].sort());
    expect(done.json).toMatchObject({
      ok: true,
      task_id: taskId,
      status: 'succeeded',
      tool_name: 'unit_convert',
      target: { kind: 'explicit', node_id: 'rpi:device_b' },
      result: {
        ok: true,
        task_id: taskId,
        node_id: 'rpi:device_b',
        output: { value: 16.09344, unit: 'km' },
        execution_path: ['rpi:device_b'],
        verified: true,
        degraded: false,
      },
    });
    expect(isIsoTimestamp(done.json.created_at)).toBe(true);
    expect(isIsoTimestamp(done.json.updated_at)).toBe(true);
    expect(done.json.attempts).toHaveLength(1);
    expect(done.json.attempts[0]).toEqual({
      attempt: 1,
      node_id: 'rpi:device_b',
      started_at: expect.stringMatching(ISO_8601),
      finished_at: expect.stringMatching(ISO_8601),
      outcome: 'success',
      error: null,
      duration_ms: expect.any(Number),
      verified: true,
      result_hash: done.json.result.result_hash,
      node_signature: expect.stringMatching(/^[A-Za-z0-9+/]+=*$/),
      signed_at: expect.stringMatching(ISO_8601),
    });

    const typedId = await c.gateway.client.submitTask({ tool_name: 'pii_redact', tool_args: { text: 'ip 10.0.0.1' } });
    const typed = await c.gateway.client.getTask(typedId, 5000);
    expect(typed).toMatchObject({ status: 'succeeded', result: { ok: true, output: { redacted_text: 'ip [IPV4]' } } });
  });

  it('api - GET /v1/tasks/{id} without wait_ms shows a running task as pending or running', async () => {
    const taskId = await c.gateway.client.submitTask({
      tool_name: 'slow_echo',
      tool_args: { ms: 1500, value: 'later' },
      target: { kind: 'explicit', node_id: 'android:device_a' },
    });
    const now = await http(api, 'GET', `/v1/tasks/${encodeURIComponent(taskId)}`);
    expect(now.status).toBe(200);
    expect(['pending', 'running']).toContain(now.json.status);
    expect(keys(now.json)).toEqual(TASK_KEYS);
    const done = await c.gateway.client.getTask(taskId, 5000);
    expect(done).toMatchObject({ status: 'succeeded', result: { ok: true, output: { value: 'later', node_id: 'android:device_a' } } });
  });

  it('api - GET /v1/tasks/{id} refuses a bad wait_ms', async () => {
    const res = await http(api, 'GET', '/v1/tasks/whatever?wait_ms=soon');
    expect(res.status).toBe(400);
    expect(res.json).toMatchObject({ ok: false, error: { code: 'FM_ERR_INVALID_REQUEST', message: expect.stringContaining('wait_ms') } });
  });

  it('api - a task result is still readable after it finished', async () => {
    const r = await c.gateway.client.toolCall({
      tool_name: 'pii_redact',
      tool_args: { text: 'Call 415-555-2671' },
      target: { kind: 'explicit', node_id: 'android:device_a' },
    });
    expect(r.ok).toBe(true);
    const res = await http(api, 'GET', `/v1/tasks/${encodeURIComponent(r.task_id)}`);
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ ok: true, task_id: r.task_id, status: 'succeeded', tool_name: 'pii_redact' });
    expect(res.json.result).toEqual(r);
  });

  it('api - POST /v1/tasks/{id}/cancel cancels a running task, and a second cancel is 409', async () => {
    const taskId = await c.gateway.client.submitTask({
      tool_name: 'slow_echo',
      tool_args: { ms: 10_000, value: 'never' },
      target: { kind: 'explicit', node_id: 'rpi:device_b' },
    });
    await waitFor('task running', async () => (await c.gateway.client.getTask(taskId)).status === 'running');
    await waitFor('rpi busy', async () => (await c.gateway.client.getNode('rpi:device_b')).load.in_flight > 0);

    const res = await post(api, `/v1/tasks/${encodeURIComponent(taskId)}/cancel`);
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({
      ok: true,
      task_id: taskId,
      status: 'cancelled',
      result: { ok: false, task_id: taskId, output: null, execution_path: ['rpi:device_b (failed)'], error: { code: 'FM_ERR_CANCELLED' } },
    });

    const stored = await c.gateway.client.getTask(taskId);
    expect(stored.status).toBe('cancelled');
    expect(stored.result?.error?.code).toBe('FM_ERR_CANCELLED');
    expect(stored.attempts.map((a) => [a.node_id, a.outcome, a.error?.code])).toEqual([['rpi:device_b', 'failed', 'FM_ERR_CANCELLED']]);

    const again = await post(api, `/v1/tasks/${encodeURIComponent(taskId)}/cancel`);
    expect(again.status).toBe(409);
    expect(again.json).toMatchObject({
      ok: false,
      error: { code: 'FM_ERR_TASK_FINISHED', details: { task_id: taskId, status: 'cancelled' } },
    });
    await expect(c.gateway.client.cancelTask(taskId)).rejects.toMatchObject({ code: 'FM_ERR_TASK_FINISHED', status: 409 });
  });

  it('api - unknown task ids are 404 FM_ERR_TASK_NOT_FOUND', async () => {
    for (const [method, path] of [
      ['GET', '/v1/tasks/task_does_not_exist'],
      ['GET', '/v1/tasks/task_does_not_exist?wait_ms=100'],
      ['POST', '/v1/tasks/task_does_not_exist/cancel'],
    ] as const) {
      const res = await http(api, method, path);
      expect(res.status, path).toBe(404);
      expect(res.json, path).toEqual({
        ok: false,
        error: {
          code: 'FM_ERR_TASK_NOT_FOUND',
          message: expect.stringContaining('task_does_not_exist'),
          retryable: false,
          details: { task_id: 'task_does_not_exist' },
        },
      });
    }
    await expect(c.gateway.client.getTask('task_does_not_exist')).rejects.toMatchObject({ code: 'FM_ERR_TASK_NOT_FOUND', status: 404 });
  });

  it('api - a tool past its timeout_ms fails with FM_ERR_TOOL_TIMEOUT reported by the node', async () => {
    const res = await post(api, '/v1/tool_call', {
      tool_name: 'slow_echo',
      tool_args: { ms: 3000 },
      target: { kind: 'explicit', node_id: 'android:device_a' },
      timeout_ms: 500,
    });
    expect(res.status).toBe(504);
    expect(res.json).toMatchObject({
      ok: false,
      node_id: 'android:device_a',
      execution_path: ['android:device_a (failed)'],
      error: { code: 'FM_ERR_TOOL_TIMEOUT' },
    });
    expect(res.json.error.message).toContain('500 ms');
    const task = await c.gateway.client.getTask(res.json.task_id);
    expect(task.status).toBe('failed');
    expect(task.attempts).toHaveLength(1);
    // The node killed the worker at the deadline and sent a signed, hashed outcome; the gateway's fallback timer would leave none.
    expect(task.attempts[0]).toMatchObject({ outcome: 'failed', verified: true, result_hash: expect.stringMatching(/^sha256:/) });
    // The node is still usable afterwards.
    const after = await c.gateway.client.toolCall({
      tool_name: 'slow_echo',
      tool_args: { ms: 0, value: 'ok' },
      target: { kind: 'explicit', node_id: 'android:device_a' },
    });
    expect(after).toMatchObject({ ok: true, output: { value: 'ok', node_id: 'android:device_a' } });
  });

  it('api - POST /v1/workflows/run runs the seed workflow across two nodes with a timeline', async () => {
    const res = await post(api, '/v1/workflows/run', { workflow: seedWorkflow });
    expect(res.status).toBe(200);
    const r = res.json;
    expect(keys(r)).toEqual(RUN_RESULT_KEYS);
    expect(r).toMatchObject({
      ok: true,
      workflow_id: 'offline_multinode_demo',
      status: 'succeeded',
      verified: true,
      degraded: false,
      execution_path: ['android:device_a', 'rpi:device_b'],
      outputs: {
        redact: { redacted_text: 'Email me at [EMAIL]', counts: { email: 1 } },
        convert: { value: 16.09344, unit: 'km' },
      },
    });
    expect(r.run_id).toMatch(/\S/);
    expect(r.duration_ms).toBeGreaterThanOrEqual(0);
    expect(r.timeline).toHaveLength(2);
    for (const t of r.timeline) {
      expect(keys(t)).toEqual(TIMELINE_KEYS);
      expect(isIsoTimestamp(t.timestamp), t.timestamp).toBe(true);
      expect(t.duration_ms).toBeGreaterThanOrEqual(0);
      expect(t.result_hash).toMatch(/^sha256:/);
    }
    expect(r.timeline[0]).toMatchObject({
      step: 'redact',
      node: 'Android Device A',
      node_id: 'android:device_a',
      verified: true,
      ok: true,
      attempts: 1,
    });
    expect(r.timeline[1]).toMatchObject({
      step: 'convert',
      node: 'Raspberry Pi B',
      node_id: 'rpi:device_b',
      verified: true,
      ok: true,
      attempts: 1,
    });
    // Each step is a task of its own, readable afterwards.
    const step = await c.gateway.client.getTask(r.timeline[1].task_id);
    expect(step).toMatchObject({ status: 'succeeded', tool_name: 'unit_convert', result: { output: { value: 16.09344, unit: 'km' } } });

    const run = await http(api, 'GET', `/v1/runs/${encodeURIComponent(r.run_id)}`);
    expect(run.status).toBe(200);
    expect(run.json).toMatchObject({
      ok: true,
      run_id: r.run_id,
      workflow_id: 'offline_multinode_demo',
      status: 'succeeded',
      workflow: seedWorkflow,
      steps: {
        redact: { status: 'succeeded', task_id: r.timeline[0].task_id },
        convert: { status: 'succeeded', task_id: r.timeline[1].task_id },
      },
    });
    expect(run.json.timeline).toEqual(r.timeline);
    expect(run.json.result).toEqual(r);
    expect(await c.gateway.client.getRun(r.run_id)).toMatchObject({ run_id: r.run_id, status: 'succeeded' });

    const typed = await c.gateway.client.runWorkflow(seedWorkflow);
    expect(typed).toMatchObject({
      ok: true,
      execution_path: ['android:device_a', 'rpi:device_b'],
      outputs: { convert: { value: 16.09344 } },
    });
    expect(typed.run_id).not.toBe(r.run_id);
  });

  it('api - a workflow whose second step fails answers 502 naming the step, and stops there', async () => {
    const workflow: Workflow = {
      workflow_id: 'fails_in_the_middle',
      steps: [
        seedWorkflow.steps[0]!,
        {
          step_id: 'read_gps',
          tool_name: 'fail_with',
          tool_args: { code: 'FM_ERR_EXECUTION', message: 'gps fix lost', retryable: false },
          target: { kind: 'explicit', node_id: 'rpi:device_b' },
        },
        seedWorkflow.steps[1]!,
      ],
    };
    const res = await post(api, '/v1/workflows/run', { workflow });
    expect(res.status).toBe(502);
    const r = res.json;
    expect(keys(r)).toEqual([...RUN_RESULT_KEYS, 'error'].sort());
    expect(r).toMatchObject({
      ok: false,
      status: 'failed',
      verified: false,
      execution_path: ['android:device_a', 'rpi:device_b (failed)'],
      outputs: { redact: { redacted_text: 'Email me at [EMAIL]' } },
      error: {
        code: 'FM_ERR_STEP_FAILED',
        message: expect.stringContaining('read_gps'),
        details: { step: 'read_gps', cause: { code: 'FM_ERR_EXECUTION', message: 'gps fix lost' } },
      },
    });
    expect(r.error.message).toContain('gps fix lost');
    expect(Object.keys(r.outputs)).toEqual(['redact']);
    expect(r.timeline.map((t: Record<string, unknown>) => [t.step, t.node, t.ok])).toEqual([
      ['redact', 'Android Device A', true],
      ['read_gps', 'Raspberry Pi B', false],
    ]);

    const run = await c.gateway.client.getRun(r.run_id);
    expect(run).toMatchObject({
      status: 'failed',
      steps: { redact: { status: 'succeeded' }, read_gps: { status: 'failed' }, convert: { status: 'skipped', task_id: null } },
    });

    const typed = await c.gateway.client.runWorkflow(workflow);
    expect(typed).toMatchObject({ ok: false, error: { code: 'FM_ERR_STEP_FAILED' } });
  });

  it('api - a workflow with duplicate step ids is refused with 400 FM_ERR_INVALID_WORKFLOW', async () => {
    const workflow: Workflow = { workflow_id: 'dupes', steps: [seedWorkflow.steps[0]!, { ...seedWorkflow.steps[1]!, step_id: 'redact' }] };
    const res = await post(api, '/v1/workflows/run', { workflow });
    expect(res.status).toBe(400);
    expect(res.json).toEqual({
      ok: false,
      error: {
        code: 'FM_ERR_INVALID_WORKFLOW',
        message: expect.stringContaining('"redact"'),
        retryable: false,
        details: { workflow_id: 'dupes', step_id: 'redact' },
      },
    });
    await expect(c.gateway.client.runWorkflow(workflow)).rejects.toMatchObject({ code: 'FM_ERR_INVALID_WORKFLOW', status: 400 });

    const noSteps = await post(api, '/v1/workflows/run', { workflow: { workflow_id: 'empty', steps: [] } });
    expect(noSteps.status).toBe(400);
    expect(noSteps.json).toMatchObject({ ok: false, error: { code: 'FM_ERR_INVALID_REQUEST' } });
  });

  it('api - a workflow step past its timeout_ms fails the run with FM_ERR_TOOL_TIMEOUT', async () => {
    const r = await c.gateway.client.runWorkflow({
      workflow_id: 'too_slow',
      steps: [
        {
          step_id: 'wait',
          tool_name: 'slow_echo',
          tool_args: { ms: 3000 },
          target: { kind: 'explicit', node_id: 'rpi:device_b' },
          timeout_ms: 500,
        },
      ],
    });
    expect(r).toMatchObject({
      ok: false,
      execution_path: ['rpi:device_b (failed)'],
      error: { code: 'FM_ERR_STEP_FAILED', details: { step: 'wait', cause: { code: 'FM_ERR_TOOL_TIMEOUT' } } },
    });
  });

  it('api - GET /v1/runs/{id} for an unknown run is 404 FM_ERR_RUN_NOT_FOUND', async () => {
    const res = await http(api, 'GET', '/v1/runs/run_does_not_exist');
    expect(res.status).toBe(404);
    expect(res.json).toMatchObject({ ok: false, error: { code: 'FM_ERR_RUN_NOT_FOUND', details: { run_id: 'run_does_not_exist' } } });
  });
});
