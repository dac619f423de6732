/** The gateway process: store, TLS identity, registry, scheduler, dispatcher, workflows, node listener and HTTP API. */
import { mkdirSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { formatHostPort, type HostPort } from '../core/address.js';
import { FieldmeshError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { openSqliteStore } from '../store/sqlite/index.js';
import type { Store } from '../store/types.js';
import { ClientSockets, registerClientSocketRoute } from './api/client-ws.js';
import { registerDiscoveryRoutes } from './api/discovery-routes.js';
import { Router } from './api/http.js';
import { registerRoutes } from './api/routes.js';
import { registerTokenRoutes } from './api/token-routes.js';
import { GatewayDiscovery } from './discovery.js';
import { Dispatcher } from './dispatcher.js';
import { FunctionService } from './functions.js';
import { GatewayMetrics } from './metrics.js';
import { NodeListener } from './node-listener.js';
import { type CompiledGatewayOptions, compileGatewayOptions, type GatewayOptions } from './options.js';
import { PairingService } from './pairing.js';
import { Registry } from './registry.js';
import { Scheduler } from './scheduler.js';
import { StateSync } from './state-sync.js';
import { type GatewayIdentity, loadOrCreateGatewayIdentity } from './tls.js';
import { ApiTokens } from './tokens.js';
import { WorkflowEngine } from './workflows.js';

export class Gateway {
  readonly options: CompiledGatewayOptions;
  readonly store: Store;
  readonly registry: Registry;
  readonly dispatcher: Dispatcher;
  readonly workflows: WorkflowEngine;
  readonly metrics: GatewayMetrics;
  readonly state: StateSync;
  readonly functions: FunctionService;
  readonly pairing: PairingService;
  readonly tokens: ApiTokens;
  readonly discovery: GatewayDiscovery;
  /** `http://host:port` (or `https://` with apiTls) of the API once started. */
  apiUrl = '';
  /** `host:port` of the node listener once started. */
  listenAddress = '';
  caFingerprint = '';
  readonly #logger: Logger;
  readonly #listener: NodeListener;
  readonly #http: Server | HttpsServer;
  readonly #clientSockets: ClientSockets;
  #stopped = false;
  #pruneTimer: NodeJS.Timeout | undefined;

  private constructor(options: CompiledGatewayOptions, store: Store, identity: GatewayIdentity, listener: (g: Gateway) => NodeListener) {
    this.options = options;
    this.caFingerprint = identity.caFingerprint;
    this.store = store;
    this.#logger = options.logger;
    this.registry = new Registry(store, {
      heartbeatIntervalMs: options.heartbeatIntervalMs,
      degradedAfterMissed: options.degradedAfterMissed,
      offlineAfterMs: options.offlineAfterMs,
      logger: options.logger,
    });
    const scheduler = new Scheduler(this.registry);
    this.dispatcher = new Dispatcher(store, this.registry, scheduler, {
      defaultTimeoutMs: options.defaultTimeoutMs,
      toolTimeoutMs: (tool) => this.functions.defaultTimeoutMs(tool),
      maxAttempts: options.maxAttempts,
      resultGraceMs: options.resultGraceMs,
      placementTimeoutMs: options.placementTimeoutMs,
      toolPolicy: options.toolPolicy,
      logger: options.logger,
      taskSigningKey: identity.signingKey,
      maxFrameBytes: options.maxFrameBytes,
      onAttempt: (task, a) =>
        this.metrics.record({
          tool: task.tool_name,
          function_id: this.functions.isFunction(task.tool_name) ? task.tool_name : null,
          node_id: a.node_id,
          task_id: task.task_id,
          attempt: a.attempt,
          duration_ms: a.duration_ms ?? 0,
          success: a.outcome === 'success',
          timestamp: a.finished_at ?? new Date().toISOString(),
          error: a.error?.code ?? '',
        }),
    });
    this.metrics = new GatewayMetrics(
      store,
      this.registry,
      () => ({ in_flight: this.dispatcher.inFlight, running_tasks: this.dispatcher.activeTasks }),
      options.logger,
      () => this.dispatcher.outbox.batches,
      () => this.dispatcher.resultBatches,
    );
    this.workflows = new WorkflowEngine(store, this.dispatcher, this.registry, {
      logger: options.logger,
      envAllow: options.envAllow,
      egressTools: options.egressTools,
    });
    this.pairing = new PairingService(store, identity, { nodeCertTtlMs: options.nodeCertTtlMs, logger: options.logger });
    this.state = new StateSync(store, this.registry, { logger: options.logger });
    this.functions = new FunctionService(store, this.registry, scheduler, {
      signingKey: identity.signingKey,
      maxFrameBytes: options.maxFrameBytes,
      logger: options.logger,
    });
    this.#listener = listener(this);
    this.discovery = new GatewayDiscovery(options, store, this.pairing);
    this.tokens = new ApiTokens(store, options.logger);
    const router = new Router(options.maxBodyBytes, options.logger, this.tokens);
    registerRoutes(router, {
      store,
      registry: this.registry,
      dispatcher: this.dispatcher,
      workflows: this.workflows,
      metrics: this.metrics,
      pairing: this.pairing,
      state: this.state,
      functions: this.functions,
      stats: () => ({
        frames_rejected: this.#listener.stats.frames_rejected,
        stale_results: this.dispatcher.staleResults,
        task_batches: this.dispatcher.outbox.batches,
        batched_tasks: this.dispatcher.outbox.batchedTasks,
        result_batches: this.dispatcher.resultBatches,
        batched_results: this.dispatcher.batchedResults,
        client_sockets: this.#clientSockets.connections,
      }),
    });
    registerTokenRoutes(router, this.tokens);
    registerDiscoveryRoutes(router, this.discovery);
    registerClientSocketRoute(router);
    this.#clientSockets = new ClientSockets(router, this.tokens, options.logger, options.maxBodyBytes);
    const onRequest = (req: IncomingMessage, res: ServerResponse) => {
      router.handle(req, res).catch((err: unknown) => {
        this.#logger.error('unhandled API error', { error: String(err) });
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ ok: false, error: { code: 'FM_ERR_INTERNAL', message: 'Internal error' } }));
      });
    };
    this.#http = options.apiTls
      ? createHttpsServer({ cert: identity.certChainPem, key: identity.keyPem }, onRequest)
      : createServer(onRequest);
    this.#http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.#clientSockets.upgrade(req, socket, head));
    this.#http.on('clientError', (_err, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n');
    });
  }

  static async start(input: GatewayOptions): Promise<Gateway> {
    const options = compileGatewayOptions(input);
    mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
    const store = await openSqliteStore(join(options.dataDir, 'fieldmesh.db'));
    const apiNames = options.apiTls ? certificateNames(options.api.host) : [];
    const identity = await loadOrCreateGatewayIdentity(options.dataDir, [options.listen.host, ...apiNames]);
    const gateway = new Gateway(
      options,
      store,
      identity,
      (g) =>
        new NodeListener(identity, g.registry, g.dispatcher, g.pairing, g.state, g.functions, {
          host: options.listen.host,
          port: options.listen.port,
          maxFrameBytes: options.maxFrameBytes,
          heartbeatIntervalMs: options.heartbeatIntervalMs,
          gatewayId: options.gatewayId,
          logger: options.logger,
        }),
    );
    let adminTokenFile: string;
    try {
      adminTokenFile = await gateway.tokens.ensureAdminToken(options.dataDir);
      await gateway.registry.load();
      await gateway.pairing.load();
      await gateway.functions.load();
      const listen = await gateway.#listener.listen().catch((err) => {
        throw cannotListen('gateway.listen', options.listen, err);
      });
      gateway.listenAddress = formatHostPort({ host: listen.address, port: listen.port });
      await gateway.discovery.start(identity, gateway.#listener, { host: listen.address, port: listen.port });
      await new Promise<void>((resolve, reject) => {
        gateway.#http.once('error', (err) => reject(cannotListen('gateway.api', options.api, err)));
        gateway.#http.listen(options.api.port, options.api.host, () => resolve());
      });
      const api = gateway.#http.address() as AddressInfo;
      gateway.apiUrl = `${options.apiTls ? 'https' : 'http'}://${formatHostPort({ host: api.address, port: api.port })}`;
      gateway.registry.startSweeps();
      const resumed = await gateway.dispatcher.resumeUnfinished();
      if (resumed > 0) options.logger.info('resuming unfinished tasks', { count: resumed });
      await gateway.workflows.resumeRunning();
      await gateway.#prune();
      gateway.#pruneTimer = setInterval(() => void gateway.#prune(), Math.min(3600_000, options.runRetentionMs));
      gateway.#pruneTimer.unref();
    } catch (err) {
      await gateway.stop();
      throw err;
    }
    options.logger.info('gateway ready', {
      api: gateway.apiUrl,
      listen: gateway.listenAddress,
      data_dir: options.dataDir,
      admin_token_file: adminTokenFile,
      ca_fingerprint: identity.caFingerprint,
    });
    return gateway;
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.registry.stopSweeps();
    if (this.#pruneTimer) clearInterval(this.#pruneTimer);
    this.dispatcher.stop();
    await this.discovery.stop();
    await this.#clientSockets.close();
    await new Promise<void>((resolve) => {
      this.#http.close(() => resolve());
      this.#http.closeIdleConnections();
      setTimeout(() => this.#http.closeAllConnections(), 1000).unref();
    });
    await this.#listener.close();
    await this.metrics.flush();
    await this.store.close();
    this.#logger.info('gateway stopped');
  }

  /** Drops finished runs past the retention age, with their tasks and audit entries, and pairing codes expired a day ago. */
  async #prune(): Promise<void> {
    try {
      await this.store.pruneExpiredPairingCodes(new Date(Date.now() - 86_400_000).toISOString());
      const n = await this.store.pruneRuns(new Date(Date.now() - this.options.runRetentionMs).toISOString());
      if (n > 0) this.#logger.info('pruned old workflow runs', { count: n });
    } catch (err) {
      this.#logger.error('could not prune workflow runs', { error: String(err) });
    }
  }
}

/** Names the API certificate must carry for a bind host; a wildcard bind is reached at any local address. */
function certificateNames(host: string): string[] {
  if (host !== '0.0.0.0' && host !== '::') return [host];
  const names: string[] = [];
  for (const addrs of Object.values(networkInterfaces())) for (const a of addrs ?? []) names.push(a.address.replace(/%.*$/, ''));
  return names;
}

/** A listener that could not bind (address in use, not on this host, no permission), named by its option. */
function cannotListen(option: string, at: HostPort, err: unknown): FieldmeshError {
  return new FieldmeshError('FM_ERR_INVALID_OPTION', `${option}: cannot listen on ${formatHostPort(at)}: ${(err as Error).message}`, {
    details: { option, value: formatHostPort(at) },
    cause: err,
  });
}
