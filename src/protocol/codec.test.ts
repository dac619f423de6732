// Tests for the frame codec: every frame type decodes, and every kind of bad frame becomes the error an ERROR frame reports.
import { describe, expect, it } from 'vitest';
import { type DecodeResult, decodeFrame, encodeFrame, negotiateVersion } from './codec.js';
import { type FrameType, PROTOCOL_VERSION, PROTOCOL_VERSIONS } from './frames.js';

const LIMIT = 1024 * 1024;
const hash = `sha256:${'ab'.repeat(32)}`;

const valid: Record<FrameType, Record<string, unknown>> = {
  REGISTER: {
    v: 1,
    type: 'REGISTER',
    versions: [1],
    node_id: 'rpi:device_b',
    name: 'Raspberry Pi B',
    platform: 'linux',
    capabilities: ['hardware:gps', 'tool:echo'],
    tools: [{ name: 'echo', description: 'Echoes', input_schema: { type: 'object' }, output_schema: { type: 'object' }, network: false }],
    location: { lat: 37.7749, lon: -122.4194 },
    public_key: '-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n',
    agent_version: '0.1.0',
    max_concurrency: 4,
    features: ['task_batch', 'result_batch'],
  },
  WELCOME: {
    v: 1,
    type: 'WELCOME',
    version: 1,
    gateway_id: 'gateway:main',
    node_id: 'rpi:device_b',
    leader_id: 'gateway:main',
    peers: [],
    heartbeat_interval_ms: 1000,
    max_frame_bytes: 1048576,
    features: ['result_batch'],
  },
  NODE_READY: { v: 1, type: 'NODE_READY', node_id: 'rpi:device_b' },
  HEARTBEAT: {
    v: 1,
    type: 'HEARTBEAT',
    node_id: 'rpi:device_b',
    seq: 7,
    load: { cpu: 0.25, memory: 0.5, in_flight: 1 },
    sent_at: '2025-01-01T00:00:00.000Z',
  },
  TASK: {
    v: 1,
    type: 'TASK',
    task_id: 'task_1',
    attempt: 1,
    tool_name: 'echo',
    tool_args: { text: 'hi' },
    timeout_ms: 30000,
    node_id: 'rpi:device_b',
    issued_at: '2025-01-01T00:00:00.000Z',
    gateway_signature: 'c2lnbmF0dXJl',
  },
  TASK_BATCH: {
    v: 1,
    type: 'TASK_BATCH',
    node_id: 'rpi:device_b',
    issued_at: '2025-01-01T00:00:00.000Z',
    tasks: [
      { task_id: 'task_1', attempt: 1, tool_name: 'echo', tool_args: { text: 'hi' }, timeout_ms: 30000 },
      { task_id: 'task_2', attempt: 2, tool_name: 'echo', tool_args: null, timeout_ms: 1000 },
    ],
    gateway_signature: 'c2lnbmF0dXJl',
  },
  TASK_ACK: { v: 1, type: 'TASK_ACK', task_id: 'task_1', attempt: 1 },
  TASK_RESULT: {
    v: 1,
    type: 'TASK_RESULT',
    task_id: 'task_1',
    attempt: 1,
    ok: true,
    output: { text: 'hi' },
    duration_ms: 12.5,
    result_hash: hash,
    node_signature: 'c2lnbmF0dXJl',
    timestamp: '2025-01-01T00:00:00.000Z',
  },
  RESULT_BATCH: {
    v: 1,
    type: 'RESULT_BATCH',
    results: [
      { task_id: 'task_1', attempt: 1, ok: true, output: { text: 'hi' }, duration_ms: 12.5, result_hash: hash },
      { task_id: 'task_2', attempt: 3, ok: false, error: { code: 'FM_ERR_EXECUTION', message: 'no' }, duration_ms: 1, result_hash: hash },
    ],
    node_signature: 'c2lnbmF0dXJl',
    timestamp: '2025-01-01T00:00:00.000Z',
  },
  CANCEL: { v: 1, type: 'CANCEL', task_id: 'task_1', attempt: 2, reason: 'cancelled by user' },
  SYNC_REQUEST: {
    v: 1,
    type: 'SYNC_REQUEST',
    doc: 'config',
    reported: { version: 3, checksum: hash },
    desired: null,
    pending: [
      { version: 3, data: { mode: 'eco' }, checksum: hash, updated_at: '2025-01-01T00:00:00.000Z', origin: 'local', base_desired: 0 },
    ],
  },
  SYNC_RESPONSE: { v: 1, type: 'SYNC_RESPONSE', doc: 'config', resync: true },
  STATE_PUSH: {
    v: 1,
    type: 'STATE_PUSH',
    doc: 'config',
    desired: { version: 2, data: { mode: 'eco' }, checksum: hash, updated_at: '2025-01-01T00:00:00.000Z' },
    resync: false,
  },
  STATE_ACK: { v: 1, type: 'STATE_ACK', doc: 'config', side: 'reported', version: 3 },
  ERROR: { v: 1, type: 'ERROR', code: 'FM_ERR_MALFORMED_FRAME', message: 'bad', task_id: 'task_1' },
  CERT_RENEW: {
    v: 1,
    type: 'CERT_RENEW',
    node_id: 'rpi:device_b',
    csr: '-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n',
  },
  CERT_ISSUED: {
    v: 1,
    type: 'CERT_ISSUED',
    node_id: 'rpi:device_b',
    certificate: '-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n',
    serial: '1A2B',
    not_after: '2025-04-01T00:00:00.000Z',
  },
  DEPLOY: {
    v: 1,
    type: 'DEPLOY',
    deploy_id: 'dep_1',
    node_id: 'rpi:device_b',
    name: 'process-image',
    bundle: 'export default async (args) => args;',
    bundle_sha256: `sha256:${'c'.repeat(64)}`,
    memory_mb: 128,
    timeout_seconds: 30,
    env: { MODE: 'fast' },
    issued_at: '2025-01-01T00:00:00.000Z',
    gateway_signature: 'c2lnbmF0dXJl',
  },
  UNDEPLOY: {
    v: 1,
    type: 'UNDEPLOY',
    deploy_id: 'dep_2',
    node_id: 'rpi:device_b',
    name: 'process-image',
    issued_at: '2025-01-01T00:00:00.000Z',
    gateway_signature: 'c2lnbmF0dXJl',
  },
  DEPLOY_RESULT: {
    v: 1,
    type: 'DEPLOY_RESULT',
    deploy_id: 'dep_1',
    node_id: 'rpi:device_b',
    name: 'process-image',
    action: 'deploy',
    ok: true,
    tools: [{ name: 'process-image', description: 'Deployed function', input_schema: {}, output_schema: {} }],
    capabilities: ['tool:process-image'],
    functions: [{ name: 'process-image', bundle_sha256: `sha256:${'c'.repeat(64)}` }],
  },
};

const decode = (value: unknown, limit = LIMIT) => decodeFrame(JSON.stringify(value), limit);

function failure(result: DecodeResult): { code: string; message: string; task_id?: string } {
  if (result.ok) throw new Error(`expected a decode failure, got a ${result.frame.type} frame`);
  return { ...result.error, ...(result.task_id === undefined ? {} : { task_id: result.task_id }) };
}

describe('codec - valid frames', () => {
  it.each(Object.keys(valid) as FrameType[])('codec - decodes a valid %s frame', (type) => {
    const result = decode(valid[type]);
    expect(result).toEqual({ ok: true, frame: valid[type] });
  });

  it('codec - decodes from a Buffer as from a string', () => {
    const result = decodeFrame(Buffer.from(JSON.stringify(valid.HEARTBEAT)), LIMIT);
    expect(result).toEqual({ ok: true, frame: valid.HEARTBEAT });
  });

  it('codec - decodes optional fields when absent', () => {
    const { location: _l, ...register } = valid.REGISTER;
    const result: Record<string, unknown> = { ...valid.TASK_RESULT, ok: false, error: { code: 'FM_ERR_EXECUTION', message: 'boom' } };
    delete result.output;
    const cancel = { v: 1, type: 'CANCEL', task_id: 'task_1' };
    const error = { v: 1, type: 'ERROR', code: 'FM_ERR_INTERNAL', message: 'x' };
    for (const frame of [register, result, cancel, error, { ...valid.REGISTER, location: null }]) expect(decode(frame).ok).toBe(true);
  });

  it('codec - encodeFrame output decodes back to the same frame', () => {
    const { v: _v, type: _t, ...body } = valid.TASK;
    const text = encodeFrame('TASK', body);
    expect(JSON.parse(text)).toMatchObject({ v: PROTOCOL_VERSION, type: 'TASK' });
    expect(decodeFrame(text, LIMIT)).toEqual({ ok: true, frame: valid.TASK });
  });
});

describe('codec - malformed frames', () => {
  it('codec - text that is not JSON is FM_ERR_MALFORMED_FRAME', () => {
    for (const raw of ['not json', '{"type":', '', '\u0000\u0001']) {
      expect(failure(decodeFrame(raw, LIMIT))).toEqual({ code: 'FM_ERR_MALFORMED_FRAME', message: 'Frame is not valid JSON' });
    }
  });

  it('codec - JSON that is not an object is FM_ERR_MALFORMED_FRAME', () => {
    for (const value of [[valid.HEARTBEAT], 42, 'HEARTBEAT', null, true]) {
      expect(failure(decode(value))).toEqual({ code: 'FM_ERR_MALFORMED_FRAME', message: 'Frame must be a JSON object' });
    }
  });

  it('codec - a frame without a string type is FM_ERR_MALFORMED_FRAME', () => {
    const { type: _t, ...untyped } = valid.HEARTBEAT;
    for (const frame of [untyped, { ...valid.HEARTBEAT, type: 7 }]) {
      expect(failure(decode(frame))).toMatchObject({ code: 'FM_ERR_MALFORMED_FRAME', message: 'Frame has no "type"' });
    }
  });

  it('codec - an unknown type is FM_ERR_MALFORMED_FRAME naming the type', () => {
    expect(failure(decode({ v: 1, type: 'SELF_DESTRUCT' }))).toEqual({
      code: 'FM_ERR_MALFORMED_FRAME',
      message: 'Unknown frame type "SELF_DESTRUCT"',
    });
    // Type names are matched exactly.
    expect(failure(decode({ ...valid.HEARTBEAT, type: 'heartbeat' })).code).toBe('FM_ERR_MALFORMED_FRAME');
  });

  it('codec - a very long unknown type is cut short in the message', () => {
    const { message } = failure(decode({ v: 1, type: 'X'.repeat(10_000) }));
    expect(message.length).toBeLessThan(200);
  });

  it.each([
    ['HEARTBEAT', 'load'],
    ['HEARTBEAT', 'seq'],
    ['TASK', 'tool_name'],
    ['TASK', 'timeout_ms'],
    ['TASK_RESULT', 'result_hash'],
    ['TASK_RESULT', 'node_signature'],
    ['REGISTER', 'public_key'],
    ['REGISTER', 'versions'],
    ['NODE_READY', 'node_id'],
    ['ERROR', 'code'],
  ] as const)('codec - a %s frame missing %s is FM_ERR_MALFORMED_FRAME naming the field', (type, field) => {
    const frame: Record<string, unknown> = { ...valid[type] };
    delete frame[field];
    const { code, message } = failure(decode(frame));
    expect(code).toBe('FM_ERR_MALFORMED_FRAME');
    expect(message).toContain(type);
    expect(message).toContain(`/${field}`);
  });

  it.each([
    ['TASK', 'attempt', 'one'],
    ['TASK', 'attempt', 0],
    ['TASK', 'attempt', 1.5],
    ['HEARTBEAT', 'load', { cpu: 'high', memory: 0, in_flight: 0 }],
    ['HEARTBEAT', 'load', { cpu: 0.1, memory: 2, in_flight: 0 }],
    ['TASK_RESULT', 'ok', 'yes'],
    ['TASK_RESULT', 'result_hash', 'md5:abc'],
    ['TASK_RESULT', 'result_hash', `sha256:${'AB'.repeat(32)}`],
    ['REGISTER', 'versions', []],
    ['REGISTER', 'versions', ['1']],
    ['REGISTER', 'node_id', 'has space'],
    ['REGISTER', 'node_id', ''],
    ['REGISTER', 'max_concurrency', 0],
    ['REGISTER', 'capabilities', 'hardware:gps'],
    ['REGISTER', 'location', { lat: 91, lon: 0 }],
    ['REGISTER', 'tools', [{ name: 'bad name!', description: '', input_schema: {}, output_schema: {} }]],
    ['SYNC_REQUEST', 'doc', '../etc/passwd'],
    ['SYNC_REQUEST', 'reported', { version: -1, checksum: hash }],
    ['STATE_PUSH', 'desired', { version: 1, data: [], checksum: hash, updated_at: 'now' }],
    ['STATE_ACK', 'side', 'both'],
  ] as const)('codec - a %s frame with a bad %s (%j) is FM_ERR_MALFORMED_FRAME naming the field', (type, field, value) => {
    const { code, message } = failure(decode({ ...valid[type], [field]: value }));
    expect(code).toBe('FM_ERR_MALFORMED_FRAME');
    expect(message).toContain(`/${field}`);
  });

  it('codec - a frame over the size limit is FM_ERR_FRAME_TOO_LARGE before it is parsed', () => {
    const text = JSON.stringify({ ...valid.HEARTBEAT, sent_at: 'x'.repeat(2000) });
    expect(failure(decodeFrame(text, 1024))).toEqual({
      code: 'FM_ERR_FRAME_TOO_LARGE',
      message: `Frame of ${Buffer.byteLength(text)} bytes exceeds the limit of 1024 bytes`,
    });
    // Even garbage over the limit is refused for its size, not parsed.
    expect(failure(decodeFrame('x'.repeat(2000), 1024)).code).toBe('FM_ERR_FRAME_TOO_LARGE');
  });

  it('codec - the size limit counts bytes, not characters, and is inclusive', () => {
    const base = JSON.stringify({ ...valid.HEARTBEAT, sent_at: '' });
    const limit = Buffer.byteLength(base) + 10;
    const fits = JSON.stringify({ ...valid.HEARTBEAT, sent_at: 'é'.repeat(5) });
    const over = JSON.stringify({ ...valid.HEARTBEAT, sent_at: 'é'.repeat(6) });
    expect(Buffer.byteLength(fits)).toBe(limit);
    expect(over.length).toBeLessThan(limit);
    expect(decodeFrame(fits, limit).ok).toBe(true);
    expect(decodeFrame(Buffer.from(fits), limit).ok).toBe(true);
    expect(failure(decodeFrame(over, limit)).code).toBe('FM_ERR_FRAME_TOO_LARGE');
  });
});

describe('codec - versions', () => {
  it('codec - a frame with another envelope version is FM_ERR_PROTOCOL_VERSION', () => {
    for (const v of [2, 0, '1', undefined]) {
      const { code, message } = failure(decode({ ...valid.HEARTBEAT, v }));
      expect(code).toBe('FM_ERR_PROTOCOL_VERSION');
      expect(message).toContain(String(v));
    }
  });

  it('codec - REGISTER may use any envelope version, since it negotiates one', () => {
    expect(decode({ ...valid.REGISTER, v: 7, versions: [7, 1] }).ok).toBe(true);
    expect(failure(decode({ ...valid.REGISTER, v: 'one' })).code).toBe('FM_ERR_MALFORMED_FRAME');
  });

  it('codec - negotiateVersion picks the highest version both sides speak', () => {
    expect(negotiateVersion([1, 2, 3], [1, 2])).toBe(2);
    expect(negotiateVersion([3, 1, 2], [2, 3, 1])).toBe(3);
    expect(negotiateVersion([1], PROTOCOL_VERSIONS)).toBe(1);
  });

  it('codec - negotiateVersion is undefined without a common version', () => {
    expect(negotiateVersion([99], [1])).toBeUndefined();
    expect(negotiateVersion([], [1])).toBeUndefined();
    expect(negotiateVersion([1], [])).toBeUndefined();
  });
});

describe('codec - task ids in errors', () => {
  it('codec - a bad frame that names a task has its task_id echoed', () => {
    const bad = { ...valid.TASK_RESULT, task_id: 'task_42', ok: 'maybe' };
    expect(failure(decode(bad))).toMatchObject({ code: 'FM_ERR_MALFORMED_FRAME', task_id: 'task_42' });
    expect(failure(decode({ ...valid.TASK_ACK, task_id: 'task_42', v: 9 }))).toMatchObject({
      code: 'FM_ERR_PROTOCOL_VERSION',
      task_id: 'task_42',
    });
    expect(failure(decode({ v: 1, type: 'NOPE', task_id: 'task_42' }))).toMatchObject({ task_id: 'task_42' });
    expect(failure(decode({ v: 1, task_id: 'task_42' }))).toMatchObject({ task_id: 'task_42' });
  });

  it('codec - no task_id is echoed when the frame names none or a non-string one', () => {
    expect(failure(decode({ ...valid.HEARTBEAT, seq: -1 }))).not.toHaveProperty('task_id');
    expect(failure(decode({ ...valid.TASK_ACK, task_id: 42 }))).not.toHaveProperty('task_id');
    const result = decode({ ...valid.TASK_ACK, task_id: 42 });
    expect(result.ok).toBe(false);
    expect(result).not.toHaveProperty('task_id');
  });
});
