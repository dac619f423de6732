/**
 * Simulated nodes for the scale bench: many per process, each speaking the
 * real node protocol over its own mutual-TLS WebSocket with its own keys.
 * Each first pairs with a one-time code from the API, as a real node does;
 * then REGISTER (advertising the built-in tools) → WELCOME → NODE_READY, a
 * ping and a HEARTBEAT every interval (±10%, as the agent does), and every
 * TASK answered with TASK_ACK and a signed TASK_RESULT.
 *
 * `node scale-sim.js <gateway host:port> <first index> <count> <parallel connects> <local address> <api url>`
 * Prints `sim ready` once every node is paired, starts connecting on a `go`
 * line on stdin, and prints `sim status` every second. SIGTERM closes every socket.
 */
import { createInterface } from 'node:readline';
import WebSocket from 'ws';
import { FieldmeshClient } from '../src/client/index.js';
import { parseHostPort } from '../src/core/address.js';
import { silentLogger } from '../src/core/logger.js';
import { VERSION } from '../src/core/version.js';
import { requestCertificate } from '../src/node/pairing.js';
import { builtinTools } from '../src/node/tools/index.js';
import { describeTool } from '../src/node/tools/types.js';
import { convertUnits, type UnitConvertArgs } from '../src/node/tools/unit-convert.js';
import { decodeFrame, encodeFrame } from '../src/protocol/codec.js';
import type { TaskFrame } from '../src/protocol/frames.js';
import { generateTlsKeyPem } from '../src/protocol/pki.js';
import { generateSigningKeys, loadSigningKeys, resultHash, type SigningKeys, signResult } from '../src/protocol/signing.js';

/**
 * The capabilities of simulated node `g`: one of 100 zones, GPS on 10% and a GPU on about 1%, drawn so that
 * the three do not line up (a zone holds both nodes with GPS and without).
 */
export function simCapabilities(g: number): string[] {
  const caps = [`zone:z${g % 100}`, 'platform:linux', ...builtinTools.map((t) => `tool:${t.name}`)];
  if (Math.floor(g / 100) % 10 === 0) caps.push('hardware:gps');
  if (g % 97 === 0) caps.push('gpu:available');
  return caps;
}

export const simNodeId = (g: number) => `sim:n${String(g).padStart(6, '0')}`;

const MAX_FRAME = 1_048_576;

interface Sim {
  g: number;
  id: string;
  keys: SigningKeys;
  /** Client certificate, key and CA from pairing. */
  tls?: { cert: string; key: string; ca: string };
  ws?: WebSocket;
  welcomed: boolean;
  timer?: NodeJS.Timeout;
  seq: number;
}

async function main(): Promise<void> {
  const [gateway, first, count, parallel, localAddress, api] = process.argv.slice(2);
  if (!gateway || first === undefined || !count || !parallel || !localAddress || !api) {
    process.stderr.write('usage: scale-sim <gateway> <first> <count> <parallel> <local address> <api url>\n');
    process.exit(2);
  }
  const tools = builtinTools.map(describeTool);
  const sims: Sim[] = [];
  for (let k = 0; k < Number(count); k++) {
    const g = Number(first) + k;
    sims.push({ g, id: simNodeId(g), keys: loadSigningKeys(generateSigningKeys().privateKeyPem), welcomed: false, seq: 0 });
  }
  const stats = { connecting: 0, welcomed: 0, closed: 0, errors: 0, heartbeats: 0, tasks: 0, last_error: '' };
  const say = (msg: string, fields: Record<string, unknown> = {}) => process.stdout.write(`${JSON.stringify({ msg, ...fields })}\n`);
  await pairAll(
    sims,
    gateway,
    new FieldmeshClient({ baseUrl: api, token: process.env.FIELDMESH_TOKEN, timeoutMs: 60_000 }),
    Number(parallel),
  );
  say('sim ready', { count: sims.length });

  let next = 0;
  let heartbeatMs = 1000;
  const connectMore = () => {
    while (stats.connecting < Number(parallel) && next < sims.length) connect(sims[next++]!);
  };
  const send = (sim: Sim, type: Parameters<typeof encodeFrame>[0], body: Record<string, unknown>) => {
    if (sim.ws?.readyState === WebSocket.OPEN) sim.ws.send(encodeFrame(type, body));
  };
  const heartbeat = (sim: Sim) => {
    sim.timer = setTimeout(
      () => {
        if (sim.ws?.readyState !== WebSocket.OPEN) return;
        sim.ws.ping();
        send(sim, 'HEARTBEAT', {
          node_id: sim.id,
          seq: sim.seq++,
          load: { cpu: 0.1 + (sim.g % 7) / 10, memory: 0.3, in_flight: 0 },
          sent_at: new Date().toISOString(),
        });
        stats.heartbeats += 1;
        heartbeat(sim);
      },
      Math.round(heartbeatMs * (0.9 + Math.random() * 0.2)),
    );
    sim.timer.unref();
  };
  const onTask = (sim: Sim, task: TaskFrame) => {
    send(sim, 'TASK_ACK', { task_id: task.task_id, attempt: task.attempt });
    stats.tasks += 1;
    let outcome: { ok: true; output: unknown } | { ok: false; error: { code: string; message: string } };
    try {
      if (task.tool_name !== 'unit_convert') throw new Error(`simulated nodes run unit_convert only, not ${task.tool_name}`);
      const a = task.tool_args as UnitConvertArgs;
      outcome = { ok: true, output: convertUnits(a.value, a.from_unit, a.to_unit) };
    } catch (err) {
      outcome = { ok: false, error: { code: 'FM_ERR_EXECUTION', message: (err as Error).message } };
    }
    const timestamp = new Date().toISOString();
    const hash = resultHash(outcome.ok ? outcome.output : outcome.error);
    send(sim, 'TASK_RESULT', {
      task_id: task.task_id,
      attempt: task.attempt,
      ok: outcome.ok,
      ...(outcome.ok ? { output: outcome.output } : { error: outcome.error }),
      duration_ms: 0,
      result_hash: hash,
      node_signature: signResult(sim.keys.privateKey, task.task_id, task.attempt, hash, timestamp),
      timestamp,
    });
  };
  const connect = (sim: Sim) => {
    stats.connecting += 1;
    let counted = true;
    const settle = () => {
      if (!counted) return;
      counted = false;
      stats.connecting -= 1;
      connectMore();
    };
    const ws = new WebSocket(`wss://${gateway}/v1/connect`, {
      ...sim.tls,
      // Reached by IP: the chain is checked against the CA from pairing, not the name.
      checkServerIdentity: (() => undefined) as unknown as WebSocket.ClientOptions['checkServerIdentity'],
      localAddress,
      maxPayload: 4 * MAX_FRAME,
      handshakeTimeout: 30_000,
    });
    sim.ws = ws;
    ws.on('open', () => {
      const g = sim.g;
      send(sim, 'REGISTER', {
        versions: [1],
        node_id: sim.id,
        name: `Simulated node ${g}`,
        platform: 'linux',
        capabilities: simCapabilities(g),
        tools,
        location: { lat: 37 + (g % 100) / 100, lon: -122 + Math.floor(g / 100) / 100 },
        public_key: sim.keys.publicKeyPem,
        agent_version: VERSION,
        max_concurrency: 2,
      });
    });
    ws.on('message', (data: Buffer) => {
      const decoded = decodeFrame(data, MAX_FRAME);
      if (!decoded.ok) {
        stats.errors += 1;
        stats.last_error = decoded.error.message;
        return;
      }
      const frame = decoded.frame;
      if (frame.type === 'WELCOME') {
        heartbeatMs = frame.heartbeat_interval_ms;
        sim.welcomed = true;
        stats.welcomed += 1;
        send(sim, 'NODE_READY', { node_id: sim.id });
        heartbeat(sim);
        settle();
      } else if (frame.type === 'TASK') {
        onTask(sim, frame);
      } else if (frame.type === 'ERROR') {
        stats.errors += 1;
        stats.last_error = `${frame.code}: ${frame.message}`;
      }
    });
    ws.on('error', (err) => {
      stats.errors += 1;
      stats.last_error = err.message;
    });
    ws.on('close', () => {
      if (sim.timer) clearTimeout(sim.timer);
      if (sim.welcomed) stats.welcomed -= 1;
      sim.welcomed = false;
      stats.closed += 1;
      settle();
    });
  };

  const status = setInterval(() => say('sim status', { ...stats, at: Date.now() }), 1000);
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    if (line.trim() === 'go') connectMore();
  });
  const stop = () => {
    clearInterval(status);
    lines.close();
    for (const sim of sims) {
      if (sim.timer) clearTimeout(sim.timer);
      sim.ws?.terminate();
    }
    say('sim stopped', { ...stats });
    process.exit(0);
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

/**
 * A loaded gateway may close a kept-alive API connection just as the next
 * request goes out on it twice in a row (the client retries once); a new code
 * is harmless, so the request is made again.
 */
async function withRetries<T>(call: () => Promise<T>, attempts = 5): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await call();
    } catch (err) {
      if (i >= attempts || (err as { code?: string }).code !== 'FM_ERR_UNAVAILABLE') throw err;
      await new Promise((r) => setTimeout(r, 100 * i));
    }
  }
}

/** Pairs every simulated node with its own code, `parallel` at a time. */
async function pairAll(sims: Sim[], gateway: string, client: FieldmeshClient, parallel: number): Promise<void> {
  let next = 0;
  const address = parseHostPort('gateway', gateway);
  const worker = async () => {
    while (next < sims.length) {
      const sim = sims[next++]!;
      const { code } = await withRetries(() => client.createPairingCode({ node_id: sim.id }));
      const key = generateTlsKeyPem();
      const issued = await requestCertificate({
        gateway: address,
        nodeId: sim.id,
        code,
        tlsKeyPem: key,
        signingKeys: sim.keys,
        logger: silentLogger,
      });
      sim.tls = { cert: issued.certificate, key, ca: issued.ca_certificate };
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(parallel, sims.length)) }, worker));
}

// Imported by the scale bench for simCapabilities; runs only as a script.
if (process.argv[1]?.endsWith('scale-sim.js')) void main();
