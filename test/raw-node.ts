/**
 * Hand-driven node peers for tests: pair with a real code over the real
 * pairing exchange, then speak node frames over mutual TLS one by one, or
 * connect with whatever credentials a test wants to see refused.
 */
import type { KeyObject } from 'node:crypto';
import WebSocket from 'ws';
import type { FieldmeshClient } from '../src/client/index.js';
import { parseHostPort } from '../src/core/address.js';
import { silentLogger } from '../src/core/logger.js';
import { requestCertificate } from '../src/node/pairing.js';
import { generateTlsKeyPem } from '../src/protocol/pki.js';
import { generateSigningKeys, loadSigningKeys, resultHash, signResult, signResultBatch } from '../src/protocol/signing.js';
import { waitFor } from './harness.js';

// biome-ignore lint/suspicious/noExplicitAny: frames off the wire are checked by the assertions, not by types
export type Json = Record<string, any>;

/** What a client certificate connection needs. */
export interface TlsCredentials {
  keyPem: string;
  certPem: string;
  /** The CA the gateway's server certificate is checked against. */
  caPem: string;
}

export interface RawIdentity {
  nodeId: string;
  /** Ed25519 key results are signed with. */
  privateKey: KeyObject;
  publicKeyPem: string;
  tls: TlsCredentials;
  serial: string;
  /** The gateway's key TASK frames are signed with. */
  gatewaySigningKeyPem: string;
  /** A REGISTER as a node agent would send it, offering `raw_tool`. */
  register: Json;
}

export function registerFrame(nodeId: string, publicKeyPem: string): Json {
  return {
    v: 1,
    type: 'REGISTER',
    versions: [1],
    node_id: nodeId,
    name: nodeId,
    platform: 'test',
    capabilities: ['tool:raw_tool'],
    tools: [{ name: 'raw_tool', description: 'answered by the test', input_schema: { type: 'object' }, output_schema: { type: 'object' } }],
    location: null,
    public_key: publicKeyPem,
    agent_version: 'test',
    max_concurrency: 1,
  };
}

/** Pairs a new raw node with a fresh code from the API. */
export async function pairRawNode(gateway: { client: FieldmeshClient; listen: string }, nodeId: string): Promise<RawIdentity> {
  const { code } = await gateway.client.createPairingCode({ node_id: nodeId });
  return pairWithCode(gateway.listen, nodeId, code);
}

/** Runs the real pairing exchange with a given code; rejects with the gateway's FieldmeshError when refused. */
export async function pairWithCode(listen: string, nodeId: string, code: string): Promise<RawIdentity> {
  const keys = loadSigningKeys(generateSigningKeys().privateKeyPem);
  const tlsKeyPem = generateTlsKeyPem();
  const issued = await requestCertificate({
    gateway: parseHostPort('gateway', listen),
    nodeId,
    code,
    tlsKeyPem,
    signingKeys: keys,
    logger: silentLogger,
  });
  return {
    nodeId,
    privateKey: keys.privateKey,
    publicKeyPem: keys.publicKeyPem,
    tls: { keyPem: tlsKeyPem, certPem: issued.certificate, caPem: issued.ca_certificate },
    serial: issued.serial,
    gatewaySigningKeyPem: issued.gateway_signing_key,
    register: registerFrame(nodeId, keys.publicKeyPem),
  };
}

export function heartbeat(nodeId: string, cpu = 0.1): Json {
  return { v: 1, type: 'HEARTBEAT', node_id: nodeId, seq: 0, load: { cpu, memory: 0.5, in_flight: 0 }, sent_at: new Date().toISOString() };
}

function signedResult(key: KeyObject, taskId: string, attempt: number, ok: boolean, body: Json): Json {
  const timestamp = new Date().toISOString();
  const hash = resultHash(body);
  return {
    v: 1,
    type: 'TASK_RESULT',
    task_id: taskId,
    attempt,
    ok,
    ...(ok ? { output: body } : { error: body }),
    duration_ms: 1,
    result_hash: hash,
    node_signature: signResult(key, taskId, attempt, hash, timestamp),
    timestamp,
  };
}

/** A TASK_RESULT signed with `key` (the node's own unless a test forges one). */
export function taskResult(key: KeyObject, taskId: string, attempt: number, output: Json): Json {
  return signedResult(key, taskId, attempt, true, output);
}

/** A failed TASK_RESULT, signed over its error as a node signs a failure. */
export function taskFailure(key: KeyObject, taskId: string, attempt: number, error: Json): Json {
  return signedResult(key, taskId, attempt, false, error);
}

/** One result of a RESULT_BATCH, as a test writes it. */
export interface RawBatchedResult {
  task_id: string;
  attempt: number;
  output: Json;
}

/** A RESULT_BATCH over these results, signed once with `key` (the node's own unless a test forges one). */
export function resultBatch(key: KeyObject, results: RawBatchedResult[]): Json {
  const timestamp = new Date().toISOString();
  const entries = results.map((r) => ({
    task_id: r.task_id,
    attempt: r.attempt,
    ok: true,
    output: r.output,
    duration_ms: 1,
    result_hash: resultHash(r.output),
  }));
  return {
    v: 1,
    type: 'RESULT_BATCH',
    results: entries,
    node_signature: signResultBatch(key, { timestamp, results: entries }),
    timestamp,
  };
}

/** A hand-driven node connection: sends whatever the test says and keeps every frame the gateway sends back. */
export class RawPeer {
  readonly frames: Json[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  #read = 0;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => this.frames.push(JSON.parse(String(data)) as Json));
    this.closed = new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  }

  /** Opens the node protocol with these credentials (none: no client certificate at all). */
  static async open(listen: string, creds?: TlsCredentials): Promise<RawPeer> {
    const ws = new WebSocket(`wss://${listen}/v1/connect`, RawPeer.options(creds));
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    return new RawPeer(ws);
  }

  /**
   * Tries to open the node protocol and says how it ended: `open`, an HTTP
   * refusal of the upgrade with its body, or a failed handshake.
   */
  static async attempt(
    listen: string,
    creds?: TlsCredentials,
  ): Promise<
    { outcome: 'open'; peer: RawPeer } | { outcome: 'refused'; status: number; body: Json } | { outcome: 'failed'; error: string }
  > {
    const ws = new WebSocket(`wss://${listen}/v1/connect`, RawPeer.options(creds));
    return new Promise((resolve) => {
      ws.once('open', () => resolve({ outcome: 'open', peer: new RawPeer(ws) }));
      ws.once('unexpected-response', (_req, res) => {
        let text = '';
        res.on('data', (d: Buffer) => {
          text += d.toString();
        });
        res.on('end', () => {
          ws.terminate();
          resolve({ outcome: 'refused', status: res.statusCode ?? 0, body: JSON.parse(text) as Json });
        });
      });
      ws.once('error', (err) => resolve({ outcome: 'failed', error: err.message }));
    });
  }

  static options(creds?: TlsCredentials): WebSocket.ClientOptions {
    // The gateway is reached by IP here; the chain is what matters, not the name.
    const noName = (() => undefined) as unknown as WebSocket.ClientOptions['checkServerIdentity'];
    if (!creds) return { rejectUnauthorized: false };
    return { ca: creds.caPem, cert: creds.certPem, key: creds.keyPem, checkServerIdentity: noName };
  }

  send(data: string | Json | Buffer): void {
    this.ws.send(typeof data === 'string' || Buffer.isBuffer(data) ? data : JSON.stringify(data));
  }

  /** The next frame the gateway sent that this test has not read yet. */
  next(what = 'a frame'): Promise<Json> {
    return waitFor(what, () => {
      const frame = this.frames[this.#read];
      if (frame) this.#read += 1;
      return frame;
    });
  }

  get open(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  close(): void {
    this.ws.terminate();
  }
}

/** Opens a raw peer for a paired identity, registers it and waits until the gateway lists it ONLINE. */
export async function registerRaw(listen: string, client: FieldmeshClient, id: RawIdentity): Promise<RawPeer> {
  const p = await RawPeer.open(listen, id.tls);
  p.send(id.register);
  const welcome = await p.next('WELCOME');
  if (welcome.type !== 'WELCOME') throw new Error(`expected WELCOME, got ${JSON.stringify(welcome)}`);
  p.send({ v: 1, type: 'NODE_READY', node_id: id.nodeId });
  await waitFor(`${id.nodeId} ONLINE`, async () => (await client.getNode(id.nodeId)).status === 'ONLINE');
  return p;
}
