/**
 * mDNS / DNS-SD (RFC 6762, RFC 6763) discovery of gateways, through
 * `bonjour-service`: the gateway publishes `_fieldmesh._tcp.local.` with its
 * node listener port in SRV and `ca` (CA fingerprint), `v` (protocol version),
 * `id` (gateway id) and `version` (release) in TXT; a node browses for it.
 * `bonjour-service` is loaded only when mDNS is used.
 *
 * The TXT record is not signed: it tells a node where to dial and which CA
 * fingerprint to expect, and pairing then checks that the gateway really holds
 * that CA.
 */
import type { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import type { Bonjour as BonjourInstance, Service } from 'bonjour-service';
import { FieldmeshError } from '../core/errors.js';
import { type Logger, silentLogger } from '../core/logger.js';
import { VERSION } from '../core/version.js';
import { PROTOCOL_VERSION } from '../protocol/frames.js';
import { intOption, invalidOption } from './options.js';

/** The service type of the original config's `service_name`. */
export const DEFAULT_MDNS_SERVICE = '_fieldmesh._tcp.local.';
const MDNS_GROUP = '224.0.0.251';
const FINGERPRINT = /^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){31}$/;

export interface MdnsOptions {
  /** DNS-SD service type (`[node.discovery] service_name`). @default "_fieldmesh._tcp.local." */
  serviceName?: string;
  /** IPv4 address of the one interface to use; unset uses every interface, as mDNS responders do. */
  interfaceAddress?: string;
  /** UDP port; mDNS is 5353, another port makes a private test network. @default 5353 */
  port?: number;
  logger?: Logger;
}

/** A DNS-SD service type split into what `bonjour-service` takes. */
export interface ServiceType {
  name: string;
  protocol: 'tcp' | 'udp';
}

/** Parses `_name._tcp.local.` (the `.local.` part may be left out). */
export function parseServiceName(serviceName: string): ServiceType {
  const m = /^_([A-Za-z0-9](?:[A-Za-z0-9-]{0,13}[A-Za-z0-9])?)\._(tcp|udp)(?:\.local\.?)?$/.exec(serviceName);
  if (!m) throw invalidOption('discovery.service_name', serviceName, 'a DNS-SD service type such as "_fieldmesh._tcp.local."');
  return { name: m[1]!, protocol: m[2] as 'tcp' | 'udp' };
}

interface CompiledMdns {
  type: ServiceType;
  config: { port: number; interface?: string; bind?: string };
  logger: Logger;
  where: string;
}

function compileMdns(options: MdnsOptions): CompiledMdns {
  const type = parseServiceName(options.serviceName ?? DEFAULT_MDNS_SERVICE);
  const port = intOption('discovery.mdns_port', options.port, 5353, 1, 65535);
  const iface = options.interfaceAddress;
  if (iface !== undefined && !/^\d{1,3}(\.\d{1,3}){3}$/.test(iface)) {
    throw invalidOption('discovery.interface', iface, 'the IPv4 address of a local network interface');
  }
  // multicast-dns binds to the interface address when given one, and a socket bound to a unicast
  // address hears no multicast on Linux: bind to the group instead (Windows only binds local addresses).
  const config = iface ? { port, interface: iface, bind: process.platform === 'win32' ? '0.0.0.0' : MDNS_GROUP } : { port };
  return {
    type,
    config,
    logger: options.logger ?? silentLogger,
    where: `_${type.name}._${type.protocol}.local on ${MDNS_GROUP}:${port}${iface ? ` via ${iface}` : ''}`,
  };
}

/** The responder socket of a Bonjour instance, to see its bind errors (`bonjour-service` does not expose it). */
function responder(bonjour: BonjourInstance): EventEmitter {
  return (bonjour as unknown as { server: { mdns: EventEmitter } }).server.mdns;
}

async function openBonjour(compiled: CompiledMdns): Promise<BonjourInstance> {
  const { Bonjour } = await import('bonjour-service');
  const bonjour = new Bonjour(compiled.config, (err: Error) => compiled.logger.warn('mDNS send failed', { err: err.message }));
  const mdns = responder(bonjour);
  mdns.on('warning', (err: Error) => compiled.logger.debug('mDNS warning', { err: err.message }));
  try {
    await new Promise<void>((resolve, reject) => {
      mdns.once('ready', resolve);
      mdns.once('error', reject);
    });
  } catch (err) {
    await destroy(bonjour);
    throw new FieldmeshError('FM_ERR_DISCOVERY_UNAVAILABLE', `Cannot open mDNS ${compiled.where}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  mdns.on('error', (err: Error) => compiled.logger.warn('mDNS socket error', { err: err.message }));
  return bonjour;
}

function destroy(bonjour: BonjourInstance): Promise<void> {
  return new Promise((resolve) => bonjour.destroy(() => resolve()));
}

/** What the gateway publishes. */
export interface MdnsGatewayInfo {
  gateway_id: string;
  /** Port of the node listener. */
  port: number;
  /** SHA-256 fingerprint of the gateway CA (`AA:BB:…`). */
  ca_fingerprint: string;
  /** @default PROTOCOL_VERSION */
  protocol_version?: number;
  /** @default VERSION */
  version?: string;
  /** DNS-SD instance name. @default the gateway id */
  instance_name?: string;
  /** Host name in the SRV record. @default this machine's host name */
  host?: string;
}

export interface AdvertiseMdnsOptions extends MdnsOptions {
  /** Probe first for another responder using the same instance name (RFC 6762 §8.1). @default true */
  probe?: boolean;
  /** Give up when the service is not announced within this time. @default 5000 */
  startTimeoutMs?: number;
}

export interface MdnsAdvertisement {
  /** The full service instance name, e.g. `gateway:main._fieldmesh._tcp.local`. */
  readonly fqdn: string;
  /** Sends the goodbye (TTL 0) records and closes the socket. */
  close(): Promise<void>;
}

/**
 * Publishes the gateway over mDNS. Resolves once the service has been
 * announced; rejects with FM_ERR_DISCOVERY_UNAVAILABLE when the socket cannot
 * open or another responder holds the same instance name.
 */
export async function advertiseGatewayMdns(info: MdnsGatewayInfo, options: AdvertiseMdnsOptions = {}): Promise<MdnsAdvertisement> {
  const compiled = compileMdns(options);
  const port = intOption('gateway.listen port', info.port, 0, 1, 65535);
  if (!FINGERPRINT.test(info.ca_fingerprint)) {
    throw invalidOption('ca_fingerprint', info.ca_fingerprint, 'a SHA-256 fingerprint, 32 hex bytes separated by ":"');
  }
  const startTimeoutMs = intOption('discovery.start_timeout_ms', options.startTimeoutMs, 5000, 1, 600_000);
  const name = (info.instance_name ?? info.gateway_id).slice(0, 63);
  const bonjour = await openBonjour(compiled);
  const service = bonjour.publish({
    name,
    type: compiled.type.name,
    protocol: compiled.type.protocol,
    port,
    host: info.host ?? hostname(),
    probe: options.probe !== false,
    txt: {
      ca: info.ca_fingerprint.toUpperCase(),
      v: String(info.protocol_version ?? PROTOCOL_VERSION),
      id: info.gateway_id,
      version: info.version ?? VERSION,
    },
  });
  // bonjour-service stops a service whose probe found the name taken, and only logs it: catch that stop.
  // Marking it inactive first keeps bonjour-service from sending goodbyes for the name the other responder holds.
  const stop = service.stop.bind(service) as (cb?: () => void) => void;
  let conflict: (() => void) | undefined;
  service.stop = (cb?: () => void) => {
    if (!service.published) {
      service.activated = false;
      conflict?.();
    }
    return stop(cb);
  };
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new FieldmeshError(
              'FM_ERR_DISCOVERY_UNAVAILABLE',
              `mDNS service ${service.fqdn} was not announced within ${startTimeoutMs} ms`,
            ),
          ),
        startTimeoutMs,
      );
      conflict = () => {
        clearTimeout(timer);
        reject(
          new FieldmeshError('FM_ERR_DISCOVERY_UNAVAILABLE', `mDNS service name ${service.fqdn} is already in use on the network`, {
            details: { fqdn: service.fqdn },
          }),
        );
      };
      service.once('up', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  } catch (err) {
    await destroy(bonjour);
    throw err;
  } finally {
    conflict = undefined;
  }
  compiled.logger.info('mDNS service published', { fqdn: service.fqdn, port });
  let closing: Promise<void> | undefined;
  return {
    fqdn: service.fqdn,
    close() {
      closing ??= new Promise<void>((resolve) => stop(() => resolve())).then(() => destroy(bonjour));
      return closing;
    },
  };
}

/** A gateway found over mDNS. */
export interface MdnsGateway {
  /** Service instance name. */
  name: string;
  /** Address to dial: the one its mDNS answer came from. */
  host: string;
  port: number;
  /** `host:port` of the node listener. */
  node_listen: string;
  /** Host name from the SRV record. */
  hostname: string;
  /** Addresses from its A/AAAA records. */
  addresses: string[];
  /** From TXT `ca`, upper case. */
  ca_fingerprint: string;
  /** From TXT `id`. */
  gateway_id: string;
  /** From TXT `v`. */
  protocol_version: number | null;
  /** From TXT `version`. */
  version: string | null;
}

export interface BrowseGatewaysOptions extends MdnsOptions {
  /** How long to listen. @default 3000 */
  timeoutMs?: number;
  /** Stop as soon as this many gateways are found. */
  limit?: number;
  /** Keep only gateways whose TXT `ca` is this fingerprint. */
  caFingerprint?: string;
  /** The query is repeated at this interval, since datagrams get lost. @default 1000 */
  requeryIntervalMs?: number;
}

function toGateway(service: Service): MdnsGateway | undefined {
  const txt = (service.txt ?? {}) as Record<string, unknown>;
  const ca = typeof txt.ca === 'string' ? txt.ca : '';
  const id = typeof txt.id === 'string' ? txt.id : '';
  if (!FINGERPRINT.test(ca) || id === '' || !service.port) return undefined;
  const addresses = [...(service.addresses ?? [])];
  const host = service.referer?.address ?? addresses.find((a) => !a.includes(':')) ?? addresses[0] ?? service.host;
  const v = Number(txt.v);
  return {
    name: service.name,
    host,
    port: service.port,
    node_listen: host.includes(':') ? `[${host}]:${service.port}` : `${host}:${service.port}`,
    hostname: service.host,
    addresses,
    ca_fingerprint: ca.toUpperCase(),
    gateway_id: id,
    protocol_version: Number.isInteger(v) && v > 0 ? v : null,
    version: typeof txt.version === 'string' ? txt.version : null,
  };
}

/** Browses for gateways for `timeoutMs` (or until `limit` are found); services without a valid `ca`/`id` are skipped. */
export async function browseGateways(options: BrowseGatewaysOptions = {}): Promise<MdnsGateway[]> {
  const compiled = compileMdns(options);
  const timeoutMs = intOption('discovery.timeout_ms', options.timeoutMs, 3000, 1, 3_600_000);
  const requeryMs = intOption('discovery.retry_interval_ms', options.requeryIntervalMs, 1000, 10, 3_600_000);
  const limit = options.limit === undefined ? Number.POSITIVE_INFINITY : intOption('discovery.limit', options.limit, 1, 1, 1_000_000);
  const ca = options.caFingerprint?.toUpperCase();
  const bonjour = await openBonjour(compiled);
  const found = new Map<string, MdnsGateway>();
  try {
    await new Promise<void>((resolve) => {
      const browser = bonjour.find({ type: compiled.type.name, protocol: compiled.type.protocol });
      const requery = setInterval(() => browser.update(), requeryMs);
      const done = () => {
        clearInterval(requery);
        clearTimeout(timer);
        browser.stop();
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      const seen = (service: Service) => {
        const gateway = toGateway(service);
        if (!gateway) {
          compiled.logger.debug('mDNS service without a valid ca/id skipped', { name: service.name });
          return;
        }
        if (ca !== undefined && gateway.ca_fingerprint !== ca) return;
        found.set(service.fqdn, gateway);
        if (found.size >= limit) done();
      };
      browser.on('up', seen);
      browser.on('txt-update', seen);
      browser.on('srv-update', seen);
      browser.on('down', (service: Service) => found.delete(service.fqdn));
    });
  } finally {
    await destroy(bonjour);
  }
  return [...found.values()];
}

/** The first gateway mDNS finds; rejects with FM_ERR_NO_GATEWAY_FOUND after `timeoutMs`. */
export async function findGatewayMdns(options: Omit<BrowseGatewaysOptions, 'limit'> = {}): Promise<MdnsGateway> {
  const [gateway] = await browseGateways({ ...options, limit: 1 });
  if (gateway) return gateway;
  const compiled = compileMdns(options);
  throw new FieldmeshError(
    'FM_ERR_NO_GATEWAY_FOUND',
    `No gateway answered mDNS for ${compiled.where} within ${options.timeoutMs ?? 3000} ms`,
    { details: { service_name: options.serviceName ?? DEFAULT_MDNS_SERVICE } },
  );
}
