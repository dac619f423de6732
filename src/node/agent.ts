// NodeAgent: the edge side of the mesh — pairs once, then registers with the gateway over WebSocket and mutual TLS,
// heartbeats, runs the tasks the gateway signed, signs their results and renews its certificate over the live connection.
import { execFile } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { availableParallelism, freemem, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { TLSSocket } from 'node:tls';
import WebSocket, { WebSocketServer } from 'ws';
import { formatHostPort, type HostPort } from '../core/address.js';
import { type ErrorBody, FieldmeshError, isErrorCode, toErrorBody } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { VERSION } from '../core/version.js';
import { MulticastAdvertiser } from '../discovery/multicast.js';
import { decodeFrame, encodeFrame } from '../protocol/codec.js';
import {
  type BatchedResult,
  type CancelFrame,
  type CertIssuedFrame,
  type DeployFrame,
  type FrameType,
  MAX_BATCH_RESULTS,
  NodeFeature,
  type NodePolicy,
  PROTOCOL_VERSION,
  PROTOCOL_VERSIONS,
  type StatePushFrame,
  type SyncResponseFrame,
  type TaskBatchFrame,
  type TaskFrame,
  type UndeployFrame,
  type WelcomeFrame,
} from '../protocol/frames.js';
import { GATEWAY_CLIENT_CN, NODE_PROTOCOL_PATH } from '../protocol/peers.js';
import { createNodeCsr, generateTlsKeyPem } from '../protocol/pki.js';
import {
  type BatchedResultFields,
  generateSigningKeys,
  loadSigningKeys,
  resultHash,
  type SignedTaskFields,
  type SigningKeys,
  signResult,
  signResultBatch,
  verifyTask,
  verifyTaskBatch,
  verifyUndeploy,
} from '../protocol/signing.js';
import type { StateDocument } from '../protocol/state.js';
import { discoverGateway } from './discover.js';
import { FunctionHost } from './functions.js';
import { type CompiledNodeOptions, compileNodeOptions, type NodeOptions } from './options.js';
import {
  checkIssuedCertificate,
  loadNodeIdentity,
  loadOrCreateTlsKey,
  type NodeIdentity,
  requestCertificate,
  saveNodeIdentity,
} from './pairing.js';
import { checkTaskPolicy, nodePolicy } from './policy.js';
import { type RunHandle, type RunOutcome, type StateHost, ToolRuntime } from './runtime.js';
import { SlotPool } from './slots.js';
import { NodeStateJournal } from './state.js';

export const NODE_CONNECT_PATH = NODE_PROTOCOL_PATH;
export const SIGNING_KEY_FILE = 'signing.key';
/** WebSocket close code of a gateway refusing this node's identity (revoked, or not the node its certificate names). */
export const CLOSE_IDENTITY_REFUSED = 4003;
/** WebSocket close code of a connection replaced by a newer one (listen mode: the gateway dialed again). */
export const CLOSE_REPLACED = 4009;

export type NodeAgentState = 'connecting' | 'listening' | 'registering' | 'ready' | 'backoff' | 'stopping' | 'stopped';

export interface NodeReadyInfo {
  node_id: string;
  gateway_id: string;
  protocol_version: number;
}

export interface NodeDisconnectedInfo {
  code: number;
  reason: string;
}

export interface NodeAgentEvents {
  ready: [info: NodeReadyInfo];
  disconnected: [info: NodeDisconnectedInfo];
  /** The gateway refused this node for good (revoked, or another identity): the agent stops. */
  fatal: [error: FieldmeshError];
  /** A renewed certificate was received and stored. */
  renewed: [info: { serial: string; not_after: string }];
}

interface Connection {
  ws: WebSocket;
  opened: boolean;
  welcomed: boolean;
  /** Set when the gateway refused this node for good; the close then stops the agent instead of reconnecting. */
  fatal: FieldmeshError | undefined;
  lastError: Error | undefined;
  /** When anything (frame or pong) last came from the gateway; silence past the limit means a dead link. */
  lastHeardMs: number;
  /** Listen mode: the address the gateway dialed from. */
  remote?: string;
  /** The gateway's WELCOME listed `result_batch`: results ready in one turn go under one signature. */
  resultBatch: boolean;
}

function newConnection(ws: WebSocket, remote?: string): Connection {
  return {
    ws,
    opened: false,
    welcomed: false,
    fatal: undefined,
    lastError: undefined,
    lastHeardMs: Date.now(),
    remote,
    resultBatch: false,
  };
}

/** A finished task whose result waits for the end of this turn of the event loop, to be signed with the others. */
interface ReadyResult {
  task: SignedTaskFields;
  outcome: RunOutcome;
  duration_ms: number;
}

/** Room in a RESULT_BATCH for everything but its results: envelope, timestamp and signature, with margin. */
const RESULT_ENVELOPE_BYTES = 512;

const resultKey = (task: { task_id: string; attempt: number }) => `${task.task_id}\u0000${task.attempt}`;

/** A result's fields as TASK_RESULT and RESULT_BATCH carry them, but the signature and its timestamp. */
function batchedResult(task: SignedTaskFields, outcome: RunOutcome, duration_ms: number): BatchedResult {
  return {
    task_id: task.task_id,
    attempt: task.attempt,
    ok: outcome.ok,
    ...(outcome.ok ? { output: outcome.output } : { error: outcome.error }),
    duration_ms,
    result_hash: resultHash(outcome.ok ? outcome.output : outcome.error),
  };
}

interface RunningTask {
  conn: Connection;
  handle: RunHandle;
}

/** Finished results remembered for redelivered TASK frames. */
const FINISHED_CACHE = 10_000;
/** Results kept while the gateway is unreachable; the oldest go first beyond this. */
const OUTBOX_LIMIT = 10_000;

/** Codes a gateway uses to close on purpose (policy, auth, duplicate node…); worth an error log, not a shrug. */
function isPolicyClose(code: number): boolean {
  return code === 1008 || (code >= 4001 && code <= 4099);
}

/** `nvidia-smi -L` lists one `GPU n: …` line per device and exits 0 only when a driver is present. */
function detectGpuCapabilities(): Promise<string[]> {
  return new Promise((resolve) => {
    execFile('nvidia-smi', ['-L'], { timeout: 2000, windowsHide: true }, (err, stdout) => {
      resolve(!err && /\bGPU \d+:/.test(String(stdout)) ? ['gpu:available', 'cuda'] : []);
    });
  });
}

function loadOrCreateKeys(dataDir: string): SigningKeys {
  const file = join(dataDir, SIGNING_KEY_FILE);
  if (!existsSync(file)) {
    try {
      // 'wx' so two agents racing on one data dir cannot overwrite each other's identity.
      writeFileSync(file, generateSigningKeys().privateKeyPem, { mode: 0o600, flag: 'wx' });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  try {
    return loadSigningKeys(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new FieldmeshError('FM_ERR_INVALID_OPTION', `node.dataDir: ${file} is not a readable Ed25519 private key PEM`, {
      details: { option: 'node.dataDir', file },
      cause: err,
    });
  }
}

function rawToBuffer(data: WebSocket.RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

export class NodeAgent extends EventEmitter<NodeAgentEvents> {
  readonly options: CompiledNodeOptions;
  readonly publicKeyPem: string;
  /** Given, `tool:*` of the built-in and custom tools, `platform:*` and detected capabilities. */
  private readonly baseCapabilities: readonly string[];
  /** The node's own policy, from its options only; advertised in REGISTER and enforced on every TASK. */
  readonly policy: NodePolicy;
  private readonly keys: SigningKeys;
  private readonly runtime: ToolRuntime;
  /** Functions deployed from the gateway, served as tools besides the runtime's. */
  private readonly functions: FunctionHost;
  /** DEPLOY and UNDEPLOY frames apply one at a time, in the order they came. */
  private deployChain: Promise<void> = Promise.resolve();
  /** The node's state documents and their durable journal. */
  readonly journal: NodeStateJournal;
  private readonly caPem: string | undefined;
  private identity: NodeIdentity;
  private readonly log: Logger;
  private readonly running = new Map<string, RunningTask>();
  /**
   * TASK_ACKs of this turn of the event loop, sent at its end (setImmediate); a task whose result is ready first
   * (an inline tool) needs none, its TASK_RESULT acknowledges it.
   */
  private readonly pendingAcks = new Map<string, { conn: Connection; task_id: string; attempt: number }>();
  private acksScheduled = false;
  /** Encoded results of recently finished attempts, so a redelivered TASK is answered, never run twice. */
  private readonly finishedResults = new Map<string, string | (() => string)>();
  /** Results finished in this turn of the event loop, signed together at its end (see flushResults). */
  private readyResults: ReadyResult[] = [];
  /** Results that finished while no connection was up; sent after the next WELCOME. */
  private readonly outbox: string[] = [];
  private conn: Connection | undefined;
  private state: NodeAgentState = 'connecting';
  private gatewayId: string | undefined;
  private heartbeatMs: number;
  private frameLimit: number;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private reconnectAttempt = 0;
  private renewTimer: NodeJS.Timeout | undefined;
  /** The fresh key of a CERT_RENEW sent and not yet answered. */
  private renewingKeyPem: string | undefined;
  private heartbeatSeq = 0;
  private stopping: Promise<void> | undefined;
  /** The gateway dialed: given, or found by discovery; undefined for a listen-mode node that never dials. */
  private gateway: HostPort | undefined;
  /** Multicast ADVERTISE sender (discover: multicast). */
  private advertiser: MulticastAdvertiser | undefined;
  /** Listen mode: the TLS server the gateway dials. */
  private server: HttpsServer | undefined;
  private wss: WebSocketServer | undefined;
  /** `host:port` the listen-mode server is bound to. */
  listenAddress: string | undefined;

  private constructor(
    options: CompiledNodeOptions,
    keys: SigningKeys,
    runtime: ToolRuntime,
    functions: FunctionHost,
    journal: NodeStateJournal,
    capabilities: string[],
    identity: NodeIdentity,
    caPem: string | undefined,
  ) {
    super();
    this.options = options;
    this.keys = keys;
    this.publicKeyPem = keys.publicKeyPem;
    this.runtime = runtime;
    this.functions = functions;
    this.journal = journal;
    this.baseCapabilities = capabilities;
    this.identity = identity;
    this.policy = nodePolicy(options);
    this.caPem = caPem;
    this.log = options.logger;
    this.heartbeatMs = options.heartbeatIntervalMs;
    this.frameLimit = options.maxFrameBytes;
  }

  /**
   * Prepares identity and tools, then starts connecting; resolves before the
   * gateway answers (listen for 'ready'). A node without a certificate pairs
   * first (with `pairingCode`, or by waiting for an operator with
   * `requestPairing`), which this awaits.
   */
  static async start(options: NodeOptions): Promise<NodeAgent> {
    const opts = compileNodeOptions(options);
    mkdirSync(opts.dataDir, { recursive: true, mode: 0o700 });
    const keys = loadOrCreateKeys(opts.dataDir);
    let caPem: string | undefined;
    if (opts.gatewayCaFile !== undefined) {
      try {
        caPem = readFileSync(opts.gatewayCaFile, 'utf8');
      } catch (err) {
        throw new FieldmeshError(
          'FM_ERR_INVALID_OPTION',
          `node.gatewayCaFile: cannot read "${opts.gatewayCaFile}": ${(err as Error).message}`,
          {
            details: { option: 'node.gatewayCaFile', value: opts.gatewayCaFile },
            cause: err,
          },
        );
      }
    }
    const journal = await NodeStateJournal.open(opts.dataDir, opts.logger);
    // Tools and functions reach the journal through the agent, which reports their writes; it exists only once the runtime does.
    let agentRef: NodeAgent | undefined;
    // What ADVERTISE carries is filled in as it becomes known: tools once the runtime is up, the bound listen port.
    const advertised = { capabilities: [...opts.capabilities, `platform:${opts.platform}`], listen: opts.advertiseAddress };
    if (!advertised.listen && opts.listen && opts.listen.port !== 0) advertised.listen = formatHostPort(opts.listen);
    let advertiser: MulticastAdvertiser | undefined;
    if (opts.discover === 'multicast') {
      advertiser = new MulticastAdvertiser({
        group: opts.multicast.group,
        port: opts.multicast.port,
        interfaceAddress: opts.multicast.interfaceAddress,
        intervalMs: opts.advertiseIntervalMs,
        privateKey: keys.privateKey,
        logger: opts.logger,
        node: () => ({
          node_id: opts.id,
          capabilities: advertised.capabilities,
          platform: opts.platform,
          location: opts.location,
          ...(advertised.listen ? { listen: advertised.listen } : {}),
        }),
      });
      await advertiser.start();
    }
    let gateway = opts.gateway;
    let identity: NodeIdentity;
    try {
      const existing = loadNodeIdentity(opts.dataDir);
      // A paired listen-mode node waits for the gateway; everyone else needs its address, to dial it or to pair.
      if (gateway === undefined && opts.discover !== 'static' && !(opts.listen && existing)) {
        gateway = (await discoverGateway(opts, existing, caPem, advertiser))?.address;
      }
      identity = await NodeAgent.pairIfNeeded(opts, keys, caPem, gateway);
    } catch (err) {
      await advertiser?.close();
      throw err;
    }
    const state: StateHost = {
      get: (doc) => journal.get(doc),
      set: (doc, data) => {
        if (!agentRef) throw new FieldmeshError('FM_ERR_SHUTTING_DOWN', 'Node agent is not running');
        return agentRef.setState(doc, data);
      },
    };
    // One pool of task slots: tools and deployed functions together run at most maxConcurrency calls at once.
    const slots = new SlotPool(opts.maxConcurrency);
    const [runtime, detected] = await Promise.all([
      ToolRuntime.create({
        toolModules: opts.toolModules,
        size: opts.maxConcurrency,
        slots,
        memoryMb: opts.workerMemoryMb,
        nodeId: opts.id,
        logger: opts.logger,
        state,
      }),
      detectGpuCapabilities(),
    ]);
    const capabilities = [
      ...new Set([...opts.capabilities, ...runtime.descriptors().map((t) => `tool:${t.name}`), `platform:${opts.platform}`, ...detected]),
    ];
    const functions = FunctionHost.open({
      dataDir: opts.dataDir,
      nodeId: opts.id,
      gatewayKeyPem: identity.gatewaySigningKeyPem,
      slots,
      state,
      enabled: opts.allowDeploy,
      logger: opts.logger,
    });
    const agent = new NodeAgent(opts, keys, runtime, functions, journal, capabilities, identity, caPem);
    agentRef = agent;
    agent.gateway = gateway;
    agent.advertiser = advertiser;
    advertised.capabilities = capabilities;
    opts.logger.info('node starting', {
      node_id: opts.id,
      gateway: gateway ? formatHostPort(gateway) : null,
      listen: opts.listen ? formatHostPort(opts.listen) : null,
      data_dir: opts.dataDir,
      state_docs: journal.docs().length,
    });
    if (opts.listen) {
      try {
        const bound = await agent.listen(opts.listen);
        if (!opts.advertiseAddress) advertised.listen = bound;
      } catch (err) {
        await agent.stop();
        throw err;
      }
    } else agent.connect();
    // Again now that tools and the listen port are known.
    advertiser?.advertise().catch((err: Error) => opts.logger.warn('could not advertise', { error: err.message }));
    return agent;
  }

  /** The identity in the data dir, or a new one from pairing; a code given to a node already paired is ignored. */
  private static async pairIfNeeded(
    opts: CompiledNodeOptions,
    keys: SigningKeys,
    caPem: string | undefined,
    gateway: HostPort | undefined,
  ): Promise<NodeIdentity> {
    const existing = loadNodeIdentity(opts.dataDir);
    if (existing) {
      if (existing.cert.commonName !== opts.id) {
        throw new FieldmeshError(
          'FM_ERR_INVALID_OPTION',
          `node.id: "${opts.id}" differs from "${existing.cert.commonName ?? ''}", the node ${opts.dataDir} was paired as`,
          { details: { option: 'node.id', value: opts.id } },
        );
      }
      if (opts.pairingCode !== undefined)
        opts.logger.info('already paired; the pairing code was not used', { serial: existing.cert.serial });
      return existing;
    }
    if (opts.pairingCode === undefined && !opts.requestPairing) {
      throw new FieldmeshError(
        'FM_ERR_NOT_PAIRED',
        `Node "${opts.id}" holds no certificate in ${join(opts.dataDir, 'tls')}: start it once with --pair CODE (from \`fieldmesh pair\`) or --request-pairing`,
      );
    }
    if (gateway === undefined) {
      throw new FieldmeshError(
        'FM_ERR_NOT_PAIRED',
        `Node "${opts.id}" must pair before it can listen: start it once with --gateway HOST:PORT (or --discover multicast|mdns) and --pair CODE`,
      );
    }
    const tlsKeyPem = loadOrCreateTlsKey(opts.dataDir);
    opts.logger.info(opts.pairingCode !== undefined ? 'pairing with a code' : 'requesting pairing', {
      gateway: formatHostPort(gateway),
    });
    const issued = await requestCertificate({
      gateway,
      nodeId: opts.id,
      name: opts.name,
      platform: opts.platform,
      ...(opts.pairingCode !== undefined ? { code: opts.pairingCode } : {}),
      ...(caPem !== undefined ? { caPem } : {}),
      tlsKeyPem,
      signingKeys: keys,
      logger: opts.logger,
      onPending: (fingerprint) =>
        opts.logger.info('pairing requested; waiting for an operator to approve', {
          node_id: opts.id,
          fingerprint,
          approve_with: `fieldmesh nodes approve ${opts.id}`,
        }),
    });
    const identity = saveNodeIdentity(opts.dataDir, {
      keyPem: tlsKeyPem,
      certPem: issued.certificate,
      caPem: issued.ca_certificate,
      gatewaySigningKeyPem: issued.gateway_signing_key,
    });
    opts.logger.info('paired', { node_id: opts.id, serial: issued.serial, not_after: issued.not_after });
    return identity;
  }

  /** Everything REGISTER advertises: given, `tool:*` of every tool and deployed function, `platform:*` and detected capabilities. */
  get capabilities(): readonly string[] {
    const fns = this.functions.list().map((f) => `tool:${f.name}`);
    return fns.length === 0 ? this.baseCapabilities : [...new Set([...this.baseCapabilities, ...fns])];
  }

  /** The tools REGISTER advertises: the runtime's and one per deployed function. */
  private tools() {
    return [...this.runtime.descriptors(), ...this.functions.descriptors()];
  }

  get status(): NodeAgentState {
    return this.state;
  }

  get nodeId(): string {
    return this.options.id;
  }

  /** Id the gateway gave in its last WELCOME. */
  get connectedGatewayId(): string | undefined {
    return this.gatewayId;
  }

  /**
   * Writes the node's copy of a state document (as tools do through
   * `ctx.state.set`): journaled durably, then reported to the gateway at once
   * if connected, or on the next connection.
   */
  async setState(doc: string, data: unknown): Promise<StateDocument> {
    const written = await this.journal.set(doc, data);
    const conn = this.conn;
    if (conn?.welcomed) this.sendSyncRequest(conn, doc);
    return written;
  }

  private sendSyncRequest(conn: Connection, doc: string, full = false): void {
    // Half a frame for pending changes leaves room for the full document and the envelope.
    this.send(conn, 'SYNC_REQUEST', this.journal.syncRequest(doc, Math.floor(this.frameLimit / 2), full));
  }

  /** Stops heartbeats and reconnects, closes the socket with 1000 and shuts the worker pool down. */
  stop(): Promise<void> {
    this.stopping ??= this.shutdown();
    return this.stopping;
  }

  private async shutdown(): Promise<void> {
    this.state = 'stopping';
    await this.advertiser?.close();
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    if (this.renewTimer) clearTimeout(this.renewTimer);
    this.stopHeartbeats();
    const conn = this.conn;
    if (conn && conn.ws.readyState !== WebSocket.CLOSED) {
      const closed = new Promise<void>((resolve) => conn.ws.once('close', () => resolve()));
      if (conn.ws.readyState === WebSocket.OPEN) conn.ws.close(1000, 'node stopping');
      else conn.ws.terminate();
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), 2000);
      });
      if (await Promise.race([closed.then(() => false), timedOut])) conn.ws.terminate();
      clearTimeout(timer);
    }
    this.functions.close();
    if (this.server) {
      const server = this.server;
      for (const ws of this.wss?.clients ?? []) ws.terminate();
      await new Promise<void>((resolve) => this.wss?.close(() => resolve()) ?? resolve());
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    }
    await this.runtime.close();
    this.state = 'stopped';
  }

  private get gatewayText(): string {
    return this.gateway ? formatHostPort(this.gateway) : (this.conn?.remote ?? 'the dialing gateway');
  }

  /**
   * Listen mode: serves the node protocol over TLS with this node's
   * certificate, and takes only a peer whose client certificate the gateway
   * CA issued to the gateway itself. Resolves with the bound `host:port`.
   */
  private async listen(at: HostPort): Promise<string> {
    const id = this.identity;
    const server = createHttpsServer({ ...this.tlsContext(id), requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' });
    server.on('request', (_req, res) => {
      res.writeHead(426, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          ok: false,
          error: { code: 'FM_ERR_INVALID_REQUEST', message: 'This port speaks the node protocol over WebSocket' },
        }),
      );
    });
    server.on('tlsClientError', (err, socket) => this.log.debug('tls client error', { error: err.message, remote: socket.remoteAddress }));
    const wss = new WebSocketServer({
      server,
      path: NODE_CONNECT_PATH,
      maxPayload: 4 * this.frameLimit,
      // Every node certificate is also from the gateway CA: only the gateway's own client certificate may dial.
      verifyClient: (info: { req: IncomingMessage }) => {
        const cn = (info.req.socket as TLSSocket).getPeerCertificate()?.subject?.CN;
        if (cn === GATEWAY_CLIENT_CN) return true;
        this.log.warn('refused a dial from a peer that is not the gateway', {
          cn: String(cn ?? ''),
          remote: info.req.socket.remoteAddress,
        });
        return false;
      },
    });
    wss.on('connection', (ws, req) => this.adopt(ws, req.socket.remoteAddress ?? 'unknown'));
    // ws repeats the server's errors; the server's own handlers below report them.
    wss.on('error', () => undefined);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(at.port, at.host, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      wss.close();
      throw new FieldmeshError('FM_ERR_INVALID_OPTION', `node.listen: cannot listen on ${formatHostPort(at)}: ${(err as Error).message}`, {
        details: { option: 'node.listen', value: formatHostPort(at) },
        cause: err,
      });
    }
    server.on('error', (err) => this.log.error('listen server error', { error: err.message }));
    this.server = server;
    this.wss = wss;
    const bound = server.address() as AddressInfo;
    this.listenAddress = formatHostPort({ host: bound.address, port: bound.port });
    this.state = 'listening';
    this.log.info('node listening', { node_id: this.options.id, listen: this.listenAddress });
    return this.listenAddress;
  }

  private tlsContext(id: NodeIdentity): { key: string; cert: string; ca: string } {
    return { key: id.keyPem, cert: id.certPem, ca: this.caPem ?? id.caPem };
  }

  /** A connection the gateway dialed: it replaces any earlier one, then runs as if this node had dialed. */
  private adopt(ws: WebSocket, remote: string): void {
    if (this.stopping) {
      ws.terminate();
      return;
    }
    const previous = this.conn;
    const conn = newConnection(ws, remote);
    this.conn = conn;
    if (previous) {
      this.stopHeartbeats();
      // The code tells a gateway dialing this node by two endpoints to stop taking turns.
      previous.ws.close(CLOSE_REPLACED, 'replaced by a newer connection');
      setTimeout(() => previous.ws.terminate(), 1000).unref();
    }
    this.log.info('gateway dialed in', { remote });
    this.wire(conn);
    this.onOpen(conn);
  }

  private connect(): void {
    if (this.stopping) return;
    this.state = 'connecting';
    const url = `wss://${this.gatewayText}${NODE_CONNECT_PATH}`;
    const id = this.identity;
    // Mutual TLS: the gateway is verified against the CA pairing returned (or the CA file); the gateway is often
    // reached by IP, so the chain is checked, not the name.
    const options: WebSocket.ClientOptions = {
      maxPayload: 4 * this.frameLimit,
      handshakeTimeout: 10_000,
      ca: this.caPem ?? id.caPem,
      cert: id.certPem,
      key: id.keyPem,
      // ws types this as returning boolean, but Node's tls treats any truthy return as a verification error.
      checkServerIdentity: (() => undefined) as unknown as WebSocket.ClientOptions['checkServerIdentity'],
    };
    const ws = new WebSocket(url, options);
    const conn = newConnection(ws);
    this.conn = conn;
    this.wire(conn);
    if (id.cert.notAfter.getTime() <= Date.now()) {
      conn.fatal = new FieldmeshError(
        'FM_ERR_NOT_PAIRED',
        `This node's certificate expired at ${id.cert.notAfter.toISOString()}; pair it again with --pair CODE`,
      );
      ws.terminate();
    }
    ws.on('unexpected-response', (_req, res) => this.onRefusedUpgrade(conn, res));
    ws.on('open', () => this.onOpen(conn));
  }

  private wire(conn: Connection): void {
    const ws = conn.ws;
    ws.on('message', (data) => {
      conn.lastHeardMs = Date.now();
      this.onMessage(conn, rawToBuffer(data));
    });
    ws.on('pong', () => {
      conn.lastHeardMs = Date.now();
    });
    ws.on('error', (err) => {
      conn.lastError = err;
    });
    ws.on('close', (code, reason) => this.onClose(conn, code, reason.toString('utf8')));
  }

  /** The gateway answered the upgrade with an error (a revoked certificate): read why, and stop if it is final. */
  private onRefusedUpgrade(conn: Connection, res: IncomingMessage): void {
    let body = '';
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      if (body.length < 16_384) body += chunk;
    });
    res.on('end', () => {
      let code: string | undefined;
      let message = `Gateway refused the connection with HTTP ${res.statusCode}`;
      try {
        const error = (JSON.parse(body) as { error?: { code?: unknown; message?: unknown } }).error;
        if (typeof error?.code === 'string') code = error.code;
        if (typeof error?.message === 'string') message = error.message;
      } catch {
        // not a fieldmesh answer
      }
      if (code === 'FM_ERR_CERT_REVOKED' || code === 'FM_ERR_CERT_UNKNOWN' || code === 'FM_ERR_CERT_EXPIRED') {
        conn.fatal = new FieldmeshError(code, message);
      } else conn.lastError = new Error(message);
      conn.ws.terminate();
    });
    res.on('error', () => conn.ws.terminate());
  }

  private onOpen(conn: Connection): void {
    if (conn !== this.conn || conn.fatal) return;
    conn.opened = true;
    this.state = 'registering';
    this.send(conn, 'REGISTER', {
      versions: [...PROTOCOL_VERSIONS],
      node_id: this.options.id,
      name: this.options.name,
      platform: this.options.platform,
      capabilities: this.capabilities,
      tools: this.tools(),
      location: this.options.location,
      public_key: this.publicKeyPem,
      agent_version: VERSION,
      max_concurrency: this.options.maxConcurrency,
      policy: this.policy,
      functions: this.functions.list(),
      features: [NodeFeature.TaskBatch, NodeFeature.ResultBatch],
    });
  }

  private onMessage(conn: Connection, raw: Buffer): void {
    if (conn !== this.conn) return;
    const decoded = decodeFrame(raw, this.frameLimit);
    if (!decoded.ok) {
      this.log.warn('malformed frame from gateway', { code: decoded.error.code, error: decoded.error.message, task_id: decoded.task_id });
      this.sendError(conn, decoded.error, decoded.task_id);
      return;
    }
    const frame = decoded.frame;
    switch (frame.type) {
      case 'WELCOME':
        this.onWelcome(conn, frame);
        return;
      case 'TASK':
        this.onTask(conn, frame);
        return;
      case 'TASK_BATCH':
        this.onTaskBatch(conn, frame);
        return;
      case 'CANCEL':
        this.onCancel(frame);
        return;
      case 'CERT_ISSUED':
        this.onCertIssued(conn, frame);
        return;
      case 'DEPLOY':
      case 'UNDEPLOY': {
        const apply = () => (frame.type === 'DEPLOY' ? this.onDeploy(conn, frame) : this.onUndeploy(conn, frame));
        this.deployChain = this.deployChain.then(apply, apply);
        return;
      }
      case 'STATE_PUSH':
        void this.onStatePush(conn, frame);
        return;
      case 'STATE_ACK':
        if (frame.side === 'reported') void this.journal.confirm(frame.doc, frame.version).catch(() => undefined);
        return;
      case 'SYNC_RESPONSE':
        void this.onSyncResponse(conn, frame);
        return;
      case 'ERROR':
        if (
          frame.code === 'FM_ERR_CERT_REVOKED' ||
          frame.code === 'FM_ERR_NODE_ID_MISMATCH' ||
          frame.code === 'FM_ERR_SIGNING_KEY_MISMATCH'
        ) {
          // The close that follows stops the agent; this says why.
          conn.fatal = new FieldmeshError(frame.code, frame.message);
        }
        this.log.warn('gateway reported an error', { code: frame.code, error: frame.message, task_id: frame.task_id });
        return;
      default: {
        const error = { code: 'FM_ERR_MALFORMED_FRAME', message: `Unexpected ${frame.type} frame from the gateway` };
        this.log.warn('unexpected frame from gateway', { type: frame.type });
        this.sendError(conn, error, 'task_id' in frame ? frame.task_id : undefined);
      }
    }
  }

  private onWelcome(conn: Connection, frame: WelcomeFrame): void {
    if (conn.welcomed) {
      this.log.warn('ignoring a second WELCOME on the same connection', { gateway_id: frame.gateway_id });
      return;
    }
    if (!(PROTOCOL_VERSIONS as readonly number[]).includes(frame.version)) {
      const message = `Gateway chose protocol version ${frame.version}; this node speaks ${PROTOCOL_VERSIONS.join(', ')}`;
      this.log.error('no common protocol version with the gateway', { code: 'FM_ERR_PROTOCOL_VERSION', version: frame.version });
      this.sendError(conn, { code: 'FM_ERR_PROTOCOL_VERSION', message });
      conn.ws.close(1002, 'unsupported protocol version');
      return;
    }
    if (frame.node_id !== this.options.id) {
      this.log.warn('WELCOME names another node id', { expected: this.options.id, got: frame.node_id });
    }
    conn.welcomed = true;
    conn.resultBatch = frame.features?.includes(NodeFeature.ResultBatch) ?? false;
    this.heartbeatMs = frame.heartbeat_interval_ms;
    this.frameLimit = frame.max_frame_bytes;
    this.gatewayId = frame.gateway_id;
    this.reconnectAttempt = 0;
    this.state = 'ready';
    // Every document's versions and pending changes first: the gateway keeps the node SYNCING until they are settled.
    for (const doc of this.journal.docs()) this.sendSyncRequest(conn, doc);
    this.send(conn, 'NODE_READY', { node_id: this.options.id });
    this.flushOutbox(conn);
    this.scheduleHeartbeat(conn);
    this.scheduleRenewal(conn);
    this.log.info('node ready', { node_id: this.options.id, gateway: this.gatewayText });
    this.emit('ready', { node_id: this.options.id, gateway_id: frame.gateway_id, protocol_version: frame.version });
  }

  /** Asks for a new certificate over the live connection at two thirds of the current one's life. */
  private scheduleRenewal(conn: Connection): void {
    if (this.renewTimer) clearTimeout(this.renewTimer);
    const { notBefore, notAfter } = this.identity.cert;
    const at = notBefore.getTime() + ((notAfter.getTime() - notBefore.getTime()) * 2) / 3;
    // setTimeout holds at most ~24.8 days; a longer wait is taken in steps.
    const delay = Math.min(Math.max(0, at - Date.now()), 2 ** 31 - 1);
    this.renewTimer = setTimeout(() => {
      this.renewTimer = undefined;
      if (conn !== this.conn || !conn.welcomed) return;
      if (Date.now() < at) return this.scheduleRenewal(conn);
      void this.renew(conn);
    }, delay);
    this.renewTimer.unref();
  }

  private async renew(conn: Connection): Promise<void> {
    const keyPem = generateTlsKeyPem();
    const csr = await createNodeCsr(this.options.id, keyPem);
    if (!this.send(conn, 'CERT_RENEW', { node_id: this.options.id, csr })) return;
    this.renewingKeyPem = keyPem;
    this.log.info('renewing the node certificate', { not_after: this.identity.cert.notAfter.toISOString() });
    // No answer (the gateway refused, or the connection went): try again a little later.
    this.renewTimer = setTimeout(() => {
      this.renewTimer = undefined;
      if (conn !== this.conn || !conn.welcomed) return;
      void this.renew(conn);
    }, 30_000);
    this.renewTimer.unref();
  }

  private onCertIssued(conn: Connection, frame: CertIssuedFrame): void {
    const keyPem = this.renewingKeyPem;
    if (!keyPem) {
      this.log.warn('ignoring a CERT_ISSUED this node did not ask for', { serial: frame.serial });
      return;
    }
    try {
      checkIssuedCertificate(frame.certificate, this.identity.caPem, this.options.id, keyPem);
      this.identity = saveNodeIdentity(this.options.dataDir, { keyPem, certPem: frame.certificate });
      // The next dial presents the renewed certificate.
      this.server?.setSecureContext(this.tlsContext(this.identity));
    } catch (err) {
      this.log.error('could not use the renewed certificate', { error: (err as Error).message, serial: frame.serial });
      return;
    }
    this.renewingKeyPem = undefined;
    this.log.info('node certificate renewed', { serial: frame.serial, not_after: frame.not_after });
    this.emit('renewed', { serial: frame.serial, not_after: frame.not_after });
    // The live connection keeps the session it has; the next one presents the new certificate.
    this.scheduleRenewal(conn);
  }

  private scheduleHeartbeat(conn: Connection): void {
    this.stopHeartbeats();
    // ±10% jitter keeps a fleet restarted together from heartbeating in lockstep.
    const delay = Math.max(1, Math.round(this.heartbeatMs * (0.9 + Math.random() * 0.2)));
    this.heartbeatTimer = setTimeout(() => {
      this.heartbeatTimer = undefined;
      if (conn !== this.conn || !conn.welcomed) return;
      // A link that black-holes traffic never closes by itself: silence from the gateway past the limit ends it.
      const silentMs = Date.now() - conn.lastHeardMs;
      if (silentMs > Math.max(3 * this.heartbeatMs, 1000)) {
        this.log.warn('gateway silent, reconnecting', { silent_ms: silentMs });
        conn.ws.terminate();
        return;
      }
      try {
        conn.ws.ping();
      } catch {
        // the close handler reconnects
      }
      this.send(conn, 'HEARTBEAT', {
        node_id: this.options.id,
        seq: this.heartbeatSeq++,
        load: this.load(),
        sent_at: new Date().toISOString(),
      });
      this.scheduleHeartbeat(conn);
    }, delay);
  }

  private stopHeartbeats(): void {
    if (this.heartbeatTimer) clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
  }

  private load(): { cpu: number; memory: number; in_flight: number } {
    const cpu = Math.max(0, (loadavg()[0] ?? 0) / Math.max(1, availableParallelism()));
    const memory = Math.min(1, Math.max(0, 1 - freemem() / totalmem()));
    return { cpu, memory, in_flight: this.runtime.inFlight() + this.functions.inFlight() };
  }

  private onTask(conn: Connection, frame: TaskFrame): void {
    if (!conn.welcomed) {
      this.sendError(conn, { code: 'FM_ERR_NOT_REGISTERED', message: 'TASK before WELCOME' }, frame.task_id);
      return;
    }
    const why = this.gatewayRefusal('TASK', frame.node_id, () =>
      verifyTask(this.identity.gatewaySigningKeyPem, frame, frame.gateway_signature),
    );
    if (why) {
      this.refuseTask(conn, frame, why);
      return;
    }
    this.runVerifiedTask(conn, frame);
  }

  /** Several tasks under one gateway signature: verified once, refused whole, or each run as a verified TASK. */
  private onTaskBatch(conn: Connection, frame: TaskBatchFrame): void {
    if (!conn.welcomed) {
      for (const t of frame.tasks) this.sendError(conn, { code: 'FM_ERR_NOT_REGISTERED', message: 'TASK before WELCOME' }, t.task_id);
      return;
    }
    const why = this.gatewayRefusal('TASK_BATCH', frame.node_id, () =>
      verifyTaskBatch(this.identity.gatewaySigningKeyPem, frame, frame.gateway_signature),
    );
    for (const t of frame.tasks) {
      const task: SignedTaskFields = {
        task_id: t.task_id,
        attempt: t.attempt,
        node_id: frame.node_id,
        tool_name: t.tool_name,
        tool_args: t.tool_args,
        timeout_ms: t.timeout_ms,
        issued_at: frame.issued_at,
      };
      if (why) this.refuseTask(conn, task, why);
      else this.runVerifiedTask(conn, task);
    }
  }

  /** Why a gateway-signed frame is refused: addressed to another node, or its signature does not verify; undefined when it is neither. */
  private gatewayRefusal(kind: 'TASK' | 'TASK_BATCH', nodeId: string, verify: () => boolean): string | undefined {
    if (nodeId !== this.options.id) return `${kind} is for node "${nodeId}", not "${this.options.id}"`;
    if (!verify()) return `${kind} gateway_signature does not verify with the gateway key this node paired with`;
    return undefined;
  }

  private refuseTask(conn: Connection, task: SignedTaskFields, why: string): void {
    this.log.warn('refused a TASK', { code: 'FM_ERR_TASK_SIGNATURE', task_id: task.task_id, attempt: task.attempt, reason: why });
    this.sendError(conn, { code: 'FM_ERR_TASK_SIGNATURE', message: why }, task.task_id);
  }

  /** A task whose gateway signature verified: answered again if it already ran, otherwise acknowledged and run. */
  private runVerifiedTask(conn: Connection, frame: SignedTaskFields): void {
    const key = resultKey(frame);
    const done = this.finishedResults.get(key);
    if (done !== undefined) {
      // Already ran: answer again with the signed result instead of running the tool a second time.
      this.send(conn, 'TASK_ACK', { task_id: frame.task_id, attempt: frame.attempt });
      // A result that went in a RESULT_BATCH is signed again on its own: the batch is never sent twice.
      const text = typeof done === 'string' ? done : done();
      if (typeof done !== 'string') this.remember(key, text);
      if (conn.ws.readyState === WebSocket.OPEN) conn.ws.send(text);
      return;
    }
    const existing = this.running.get(key);
    if (existing) {
      // A redelivery after a reconnect moves the result to the live connection; on the same one it is just a duplicate.
      if (existing.conn !== conn) {
        existing.conn = conn;
        this.send(conn, 'TASK_ACK', { task_id: frame.task_id, attempt: frame.attempt });
      }
      this.log.debug('ignoring duplicate TASK', { task_id: frame.task_id, attempt: frame.attempt });
      return;
    }
    this.queueAck(conn, frame, key);
    const started = performance.now();
    // The node's policy is its own final answer: a refused task never reaches a worker.
    const refused = checkTaskPolicy(this.policy, this.options.id, frame.tool_name, frame.tool_args);
    if (refused)
      this.log.warn('task refused by node policy', { task_id: frame.task_id, tool: frame.tool_name, rule: refused.details?.rule });
    const req = {
      task_id: frame.task_id,
      attempt: frame.attempt,
      tool_name: frame.tool_name,
      args: frame.tool_args,
      timeout_ms: frame.timeout_ms,
    };
    // A deployed function, or one undeployed since (FM_ERR_FUNCTION_NOT_FOUND), unless a tool has its name.
    const isFunction =
      !this.runtime.has(frame.tool_name) && (this.functions.has(frame.tool_name) || this.functions.wasRemoved(frame.tool_name));
    const handle: RunHandle = refused
      ? { promise: Promise.resolve({ ok: false, error: refused }), cancel: () => undefined }
      : isFunction
        ? this.functions.run(req)
        : this.runtime.run(req);
    const entry: RunningTask = { conn, handle };
    this.running.set(key, entry);
    void handle.promise.then((outcome) => {
      this.running.delete(key);
      this.sendResult(frame, outcome, performance.now() - started, key);
    });
  }

  private queueAck(conn: Connection, task: SignedTaskFields, key: string): void {
    this.pendingAcks.set(key, { conn, task_id: task.task_id, attempt: task.attempt });
    if (this.acksScheduled) return;
    this.acksScheduled = true;
    setImmediate(() => {
      this.acksScheduled = false;
      for (const ack of this.pendingAcks.values()) this.send(ack.conn, 'TASK_ACK', { task_id: ack.task_id, attempt: ack.attempt });
      this.pendingAcks.clear();
    });
  }

  /** A function from the gateway: verified, stored and advertised, or refused with the reason; either way answered. */
  private onDeploy(conn: Connection, frame: DeployFrame): void {
    let error: ErrorBody | undefined;
    try {
      if (this.runtime.has(frame.name)) {
        throw new FieldmeshError(
          'FM_ERR_INVALID_REQUEST',
          `"${frame.name}" is a tool of node "${this.options.id}"; a function may not replace it`,
        );
      }
      this.functions.deploy(frame);
      this.log.info('function deployed', { name: frame.name, bundle_sha256: frame.bundle_sha256, deploy_id: frame.deploy_id });
    } catch (err) {
      error = toErrorBody(err);
      this.log.warn('refused a DEPLOY', { name: frame.name, deploy_id: frame.deploy_id, code: error.code, error: error.message });
    }
    this.sendDeployResult(conn, frame, 'deploy', error);
  }

  private onUndeploy(conn: Connection, frame: UndeployFrame): void {
    let error: ErrorBody | undefined;
    if (frame.node_id !== this.options.id || !verifyUndeploy(this.identity.gatewaySigningKeyPem, frame, frame.gateway_signature)) {
      error = {
        code: 'FM_ERR_BAD_SIGNATURE',
        message: `UNDEPLOY of "${frame.name}" does not verify with the gateway key this node paired with`,
      };
      this.log.warn('refused an UNDEPLOY', { name: frame.name, deploy_id: frame.deploy_id, code: error.code });
    } else {
      try {
        const held = this.functions.undeploy(frame.name);
        this.log.info('function undeployed', { name: frame.name, held, deploy_id: frame.deploy_id });
      } catch (err) {
        error = toErrorBody(err);
      }
    }
    this.sendDeployResult(conn, frame, 'undeploy', error);
  }

  private sendDeployResult(
    conn: Connection,
    frame: DeployFrame | UndeployFrame,
    action: 'deploy' | 'undeploy',
    error: ErrorBody | undefined,
  ): void {
    this.send(conn, 'DEPLOY_RESULT', {
      deploy_id: frame.deploy_id,
      node_id: this.options.id,
      name: frame.name,
      action,
      ok: error === undefined,
      ...(error ? { error } : {}),
      tools: this.tools(),
      capabilities: this.capabilities,
      functions: this.functions.list(),
    });
  }

  /** Desired state from the gateway: journaled and adopted, reported if it changed the node's copy, then acknowledged. */
  private async onStatePush(conn: Connection, frame: StatePushFrame): Promise<void> {
    try {
      const outcome = await this.journal.applyDesired(frame.doc, frame.desired, frame.resync);
      if (!outcome.accepted) {
        this.log.warn('desired state does not match its checksum; ignored', { doc: frame.doc, version: frame.desired.version });
        this.sendError(conn, {
          code: 'FM_ERR_MALFORMED_FRAME',
          message: `STATE_PUSH for "${frame.doc}" version ${frame.desired.version} does not match its checksum`,
        });
        return;
      }
      if (outcome.adopted) {
        this.log.info('adopted desired state', { doc: frame.doc, desired_version: outcome.version, resync: frame.resync || undefined });
        this.sendSyncRequest(conn, frame.doc);
      }
      this.send(conn, 'STATE_ACK', { doc: frame.doc, side: 'desired', version: outcome.version });
    } catch (err) {
      // Not acknowledged: the gateway sends it again on the next connection.
      this.log.error('could not apply desired state', { doc: frame.doc, error: (err as Error).message });
    }
  }

  /** The gateway asks for a whole document (resync), or returns its newer copy of one this node lost. */
  private async onSyncResponse(conn: Connection, frame: SyncResponseFrame): Promise<void> {
    try {
      if (frame.reported && (await this.journal.restore(frame.doc, frame.reported))) {
        this.log.info('restored state from the gateway', { doc: frame.doc, version: frame.reported.version });
        this.sendSyncRequest(conn, frame.doc);
      }
      if (frame.resync) {
        this.log.info('gateway asked for a full resync', { doc: frame.doc });
        this.sendSyncRequest(conn, frame.doc, true);
      }
    } catch (err) {
      this.log.error('could not answer a state sync response', { doc: frame.doc, error: (err as Error).message });
    }
  }

  private onCancel(frame: CancelFrame): void {
    let matched = 0;
    for (const [key, entry] of this.running) {
      const [taskId, attempt] = key.split('\u0000');
      if (taskId !== frame.task_id || (frame.attempt !== undefined && Number(attempt) !== frame.attempt)) continue;
      matched++;
      entry.handle.cancel(frame.reason);
    }
    this.log.debug('CANCEL from gateway', { task_id: frame.task_id, attempt: frame.attempt, matched });
  }

  /**
   * A finished task's result. To a gateway that takes RESULT_BATCH, while
   * other tasks still run, it waits for the end of this turn of the event
   * loop (setImmediate: after every worker message of this poll phase), and
   * the results ready by then go under one signature. Otherwise (the last
   * task running, as at concurrency 1, or a gateway without the feature) it
   * goes at once as a TASK_RESULT signed on its own.
   */
  private sendResult(task: SignedTaskFields, outcome: RunOutcome, durationMs: number, key: string): void {
    // The result acknowledges the task: an ACK still waiting for the end of the turn is not needed.
    this.pendingAcks.delete(key);
    const duration_ms = Math.round(durationMs * 1000) / 1000;
    const live = this.conn;
    const alone = this.readyResults.length === 0 && this.running.size === 0;
    if (alone || !live?.resultBatch || !live.welcomed || live.ws.readyState !== WebSocket.OPEN) {
      this.sendSingleResult(task, outcome, duration_ms, key);
      return;
    }
    // A TASK redelivered before the batch leaves is answered from here rather than run again.
    this.remember(key, () => this.encodeResult(task, outcome, duration_ms).text);
    if (this.readyResults.push({ task, outcome, duration_ms }) === 1) setImmediate(() => this.flushResults());
  }

  /** The results ready in this turn: one alone goes as a TASK_RESULT, more as RESULT_BATCH frames under the frame limit. */
  private flushResults(): void {
    const ready = this.readyResults;
    this.readyResults = [];
    const live = this.conn;
    if (ready.length === 1 || !live?.resultBatch || !live.welcomed || live.ws.readyState !== WebSocket.OPEN) {
      for (const r of ready) this.sendSingleResult(r.task, r.outcome, r.duration_ms, resultKey(r.task));
      return;
    }
    let chunk: ReadyResult[] = [];
    let texts: string[] = [];
    let fields: BatchedResultFields[] = [];
    let bytes = RESULT_ENVELOPE_BYTES;
    const send = () => {
      if (chunk.length === 1) {
        const r = chunk[0] as ReadyResult;
        this.sendSingleResult(r.task, r.outcome, r.duration_ms, resultKey(r.task));
      } else if (chunk.length > 1) this.sendResultBatch(live, chunk, texts, fields);
      chunk = [];
      texts = [];
      fields = [];
      bytes = RESULT_ENVELOPE_BYTES;
    };
    for (const r of ready) {
      const entry = batchedResult(r.task, r.outcome, r.duration_ms);
      const text = JSON.stringify(entry);
      const size = Buffer.byteLength(text) + 1;
      if (size + RESULT_ENVELOPE_BYTES > this.frameLimit) {
        // Too large to share a frame: alone, it fits as a TASK_RESULT or becomes FM_ERR_RESULT_TOO_LARGE, as always.
        this.sendSingleResult(r.task, r.outcome, r.duration_ms, resultKey(r.task));
        continue;
      }
      if (chunk.length >= MAX_BATCH_RESULTS || (chunk.length > 0 && bytes + size > this.frameLimit)) send();
      chunk.push(r);
      texts.push(text);
      fields.push(entry);
      bytes += size;
    }
    send();
  }

  private sendResultBatch(conn: Connection, ready: ReadyResult[], texts: string[], fields: BatchedResultFields[]): void {
    const timestamp = new Date().toISOString();
    const signature = signResultBatch(this.keys.privateKey, { timestamp, results: fields });
    for (const r of ready) this.logFinished(r.task, r.outcome, r.duration_ms);
    // The results' JSON was made once, for sizing the batch; the frame is assembled around it.
    const head = JSON.stringify({ v: PROTOCOL_VERSION, type: 'RESULT_BATCH', timestamp, node_signature: signature });
    conn.ws.send(`${head.slice(0, -1)},"results":[${texts.join(',')}]}`);
  }

  /** A result as a TASK_RESULT signed on its own, sent now or kept in the outbox until the gateway is back. */
  private sendSingleResult(task: SignedTaskFields, outcome: RunOutcome, duration_ms: number, key: string): void {
    const signed = this.encodeResult(task, outcome, duration_ms);
    this.logFinished(task, signed.outcome, duration_ms);
    this.remember(key, signed.text);
    const live = this.conn;
    if (!live?.welcomed || live.ws.readyState !== WebSocket.OPEN) {
      // Kept for the next connection: the gateway decides whether the attempt is still wanted (attempt numbers fence it).
      this.outbox.push(signed.text);
      if (this.outbox.length > OUTBOX_LIMIT) this.outbox.shift();
      this.log.debug('result kept in the outbox until the gateway is back', { task_id: task.task_id, attempt: task.attempt });
      return;
    }
    live.ws.send(signed.text);
  }

  /** Remembers a finished result for a redelivered TASK, the oldest forgotten beyond FINISHED_CACHE. */
  private remember(key: string, result: string | (() => string)): void {
    this.finishedResults.delete(key);
    this.finishedResults.set(key, result);
    if (this.finishedResults.size > FINISHED_CACHE) this.finishedResults.delete(this.finishedResults.keys().next().value as string);
  }

  private logFinished(task: SignedTaskFields, outcome: RunOutcome, duration_ms: number): void {
    this.log.debug('task finished', {
      task_id: task.task_id,
      attempt: task.attempt,
      tool: task.tool_name,
      ok: outcome.ok,
      code: outcome.ok ? undefined : outcome.error.code,
      duration_ms,
    });
  }

  private flushOutbox(conn: Connection): void {
    const pending = this.outbox.splice(0);
    for (const text of pending) if (conn.ws.readyState === WebSocket.OPEN) conn.ws.send(text);
    if (pending.length > 0) this.log.info('sent results kept while offline', { count: pending.length });
  }

  /** A TASK_RESULT signed on its own; a result over the frame limit becomes FM_ERR_RESULT_TOO_LARGE. */
  private encodeResult(task: SignedTaskFields, outcome: RunOutcome, duration_ms: number): { text: string; outcome: RunOutcome } {
    let text = this.signedResultFrame(task, outcome, duration_ms);
    const size = Buffer.byteLength(text);
    if (size > this.frameLimit) {
      const error: ErrorBody = {
        code: 'FM_ERR_RESULT_TOO_LARGE',
        message: `Result of tool "${task.tool_name}" is ${size} bytes, over the frame limit of ${this.frameLimit} bytes`,
        retryable: false,
      };
      outcome = { ok: false, error };
      text = this.signedResultFrame(task, outcome, duration_ms);
    }
    return { text, outcome };
  }

  private signedResultFrame(task: SignedTaskFields, outcome: RunOutcome, duration_ms: number): string {
    const timestamp = new Date().toISOString();
    const entry = batchedResult(task, outcome, duration_ms);
    return encodeFrame('TASK_RESULT', {
      ...entry,
      node_signature: signResult(this.keys.privateKey, task.task_id, task.attempt, entry.result_hash, timestamp),
      timestamp,
    });
  }

  private send(conn: Connection, type: FrameType, body: Record<string, unknown>): boolean {
    if (conn !== this.conn || conn.ws.readyState !== WebSocket.OPEN) return false;
    conn.ws.send(encodeFrame(type, body));
    return true;
  }

  private sendError(conn: Connection, error: ErrorBody, taskId?: string): void {
    this.send(
      conn,
      'ERROR',
      taskId === undefined ? { code: error.code, message: error.message } : { code: error.code, message: error.message, task_id: taskId },
    );
  }

  /** One round of discovery; a gateway found at another address is dialed from now on. */
  private async rediscover(): Promise<void> {
    try {
      const found = await discoverGateway(this.options, this.identity, this.caPem, this.advertiser, () => this.stopping !== undefined, 1);
      if (!found) return;
      const text = formatHostPort(found.address);
      if (text !== this.gatewayText) this.log.info('the gateway answers at a new address', { previous: this.gatewayText, gateway: text });
      this.gateway = found.address;
    } catch (err) {
      this.log.warn('could not look for the gateway again', { error: (err as Error).message });
    }
  }

  private onClose(conn: Connection, code: number, reason: string): void {
    if (conn !== this.conn) return;
    this.conn = undefined;
    this.stopHeartbeats();
    this.renewingKeyPem = undefined;
    const gateway = this.gatewayText;
    if (code === CLOSE_IDENTITY_REFUSED && !conn.fatal) {
      const why = isErrorCode(reason) ? reason : 'FM_ERR_CERT_REVOKED';
      conn.fatal = new FieldmeshError(why, `The gateway refused this node (${reason || why})`);
    }
    if (conn.fatal && !this.stopping) {
      const err = conn.fatal;
      this.log.error('the gateway refused this node for good; stopping', { gateway, code: err.code, error: err.message });
      if (conn.opened) this.emit('disconnected', { code, reason });
      this.emit('fatal', err);
      void this.stop();
      return;
    }
    if (conn.opened) {
      if (isPolicyClose(code)) this.log.error('gateway closed the connection', { gateway, code, reason });
      else if (!this.stopping) this.log.warn('disconnected from gateway', { gateway, code, reason });
      this.emit('disconnected', { code, reason });
    } else if (!this.stopping) {
      this.log.warn('cannot reach gateway', { gateway, error: conn.lastError?.message ?? `closed with ${code}` });
    }
    if (this.stopping) return;
    if (this.server) {
      // Listen mode: the gateway dials again.
      this.state = 'listening';
      return;
    }
    this.state = 'backoff';
    // Full jitter: a random point below an exponentially growing ceiling spreads a fleet's reconnects out.
    const ceiling = Math.min(this.options.reconnectMaxMs, this.options.reconnectMinMs * 2 ** Math.min(this.reconnectAttempt, 30));
    const delay = Math.round(Math.random() * ceiling);
    this.reconnectAttempt++;
    this.log.debug('reconnecting', { in_ms: delay, attempt: this.reconnectAttempt });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      // A gateway found by discovery that stays unreachable may have moved: look again before dialing.
      if (this.options.gateway === undefined && this.options.discover !== 'static' && this.reconnectAttempt >= 2) {
        void this.rediscover().finally(() => this.connect());
      } else this.connect();
    }, delay);
  }
}
