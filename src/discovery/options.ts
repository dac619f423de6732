/** Options shared by the multicast discovery endpoints, checked and defaulted in one place. */
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { isIPv4 } from 'node:net';
import { FieldmeshError } from '../core/errors.js';
import { type Logger, silentLogger } from '../core/logger.js';

/** The original design's mesh transport group and port. */
export const DEFAULT_MULTICAST_GROUP = '239.255.70.77';
export const DEFAULT_MULTICAST_PORT = 37020;

export interface MulticastOptions {
  /** IPv4 multicast group (224.0.0.0/4). @default "239.255.70.77" */
  group?: string;
  /** UDP port of the group. @default 37020 */
  port?: number;
  /** IPv4 address of the interface to join the group on and send from; unset lets the system pick its default interface. */
  interfaceAddress?: string;
  /** Multicast TTL; 1 keeps datagrams on the local network segment. @default 1 */
  ttl?: number;
  /** Largest datagram accepted or sent, in bytes. @default 8192 */
  maxDatagramBytes?: number;
  /** How far the `sent_at` of a signed message may be from this machine's clock, in ms. @default 300000 */
  maxClockSkewMs?: number;
  /** Random delay before answering a DISCOVER, so a whole segment does not answer at once. @default 250 */
  answerJitterMs?: number;
  /** Least time between two answers to DISCOVER, whatever the number of requests. @default 1000 */
  minAnswerIntervalMs?: number;
  logger?: Logger;
}

export interface CompiledMulticastOptions {
  group: string;
  port: number;
  interfaceAddress: string | undefined;
  ttl: number;
  maxDatagramBytes: number;
  maxClockSkewMs: number;
  answerJitterMs: number;
  minAnswerIntervalMs: number;
  logger: Logger;
}

export function invalidOption(label: string, value: unknown, allowed: string): FieldmeshError {
  const shown = typeof value === 'string' ? `"${value}"` : String(value);
  return new FieldmeshError('FM_ERR_INVALID_OPTION', `${label}: ${shown} is not valid (${allowed})`, {
    details: { option: label, value: typeof value === 'object' ? String(value) : value, allowed },
  });
}

/** An integer option within [min, max], or its default when unset. */
export function intOption(label: string, value: number | undefined, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalidOption(label, value, `an integer from ${min} to ${max}`);
  }
  return value;
}

export function isIPv4Multicast(address: string): boolean {
  if (!isIPv4(address)) return false;
  const first = Number(address.split('.')[0]);
  return first >= 224 && first <= 239;
}

export function compileMulticastOptions(options: MulticastOptions, prefix = 'discovery'): CompiledMulticastOptions {
  const group = options.group ?? DEFAULT_MULTICAST_GROUP;
  if (!isIPv4Multicast(group)) throw invalidOption(`${prefix}.group`, group, 'an IPv4 multicast address, 224.0.0.0 to 239.255.255.255');
  const interfaceAddress = options.interfaceAddress;
  if (interfaceAddress !== undefined && (!isIPv4(interfaceAddress) || isIPv4Multicast(interfaceAddress))) {
    throw invalidOption(`${prefix}.interface`, interfaceAddress, 'the IPv4 address of a local network interface');
  }
  return {
    group,
    port: intOption(`${prefix}.port`, options.port, DEFAULT_MULTICAST_PORT, 1, 65535),
    interfaceAddress,
    ttl: intOption(`${prefix}.ttl`, options.ttl, 1, 1, 255),
    maxDatagramBytes: intOption(`${prefix}.max_datagram_bytes`, options.maxDatagramBytes, 8192, 512, 65507),
    maxClockSkewMs: intOption(`${prefix}.max_clock_skew_ms`, options.maxClockSkewMs, 300_000, 1000, 7 * 24 * 3600_000),
    answerJitterMs: intOption(`${prefix}.answer_jitter_ms`, options.answerJitterMs, 250, 0, 10_000),
    minAnswerIntervalMs: intOption(`${prefix}.min_answer_interval_ms`, options.minAnswerIntervalMs, 1000, 0, 600_000),
    logger: options.logger ?? silentLogger,
  };
}

export interface Ed25519Keys {
  privateKey: KeyObject;
  publicKeyPem: string;
}

/** Loads an Ed25519 private key (PKCS#8 PEM or KeyObject) and derives the public key that messages carry. */
export function loadEd25519Key(label: string, key: KeyObject | string | undefined): Ed25519Keys {
  let privateKey: KeyObject;
  try {
    if (key === undefined) throw new Error('missing');
    privateKey = typeof key === 'string' ? createPrivateKey(key) : key;
  } catch {
    throw invalidOption(label, key === undefined ? 'undefined' : '<key>', 'an Ed25519 private key in PKCS#8 PEM');
  }
  if (privateKey.type !== 'private' || privateKey.asymmetricKeyType !== 'ed25519') {
    throw invalidOption(label, `<${privateKey.type} ${privateKey.asymmetricKeyType ?? 'secret'} key>`, 'an Ed25519 private key');
  }
  return { privateKey, publicKeyPem: createPublicKey(privateKey).export({ type: 'spki', format: 'pem' }).toString() };
}
