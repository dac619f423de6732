/**
 * Discovery datagrams of the mesh transport (UDP multicast, the original
 * design's `DISCOVER`/`ADVERTISE` on port 37020), and the gateway's answer
 * `GATEWAY`. Each datagram is one JSON object `{ v, type, ... }`.
 *
 * `ADVERTISE` and `GATEWAY` are signed: `signature` is Ed25519 over the
 * canonical JSON (sorted keys, no spaces, see signing.ts) of every other field,
 * with the key in `public_key` (SPKI PEM, or base64 of the SPKI DER). The
 * signature binds the fields to that key; whether the key is one the receiver
 * trusts (a paired node, a pinned CA) is the receiver's decision.
 * `DISCOVER` is unsigned: it only asks others to announce themselves.
 *
 * This module decodes and checks one datagram (size, JSON, version, schema)
 * and its signature; freshness and replay depend on state and live in
 * src/discovery.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { type Static, type TSchema, Type } from '@sinclair/typebox';
import { type TypeCheck, TypeCompiler } from '@sinclair/typebox/compiler';
import { describeSchemaError } from './codec.js';
import { ed25519Sign, ed25519Verify } from './ed25519.js';
import { LocationSchema } from './frames.js';
import { canonicalJson } from './signing.js';

/** Version of the discovery datagram format. */
export const DISCOVERY_VERSION = 1;

export const DiscoveryMessageType = {
  Advertise: 'ADVERTISE',
  Discover: 'DISCOVER',
  Gateway: 'GATEWAY',
} as const;
export type DiscoveryMessageType = (typeof DiscoveryMessageType)[keyof typeof DiscoveryMessageType];

/** What a `DISCOVER` asks for: node advertisements (sent by gateways) or gateway announcements (sent by nodes). */
export const DiscoverSeek = { Nodes: 'nodes', Gateways: 'gateways' } as const;
export type DiscoverSeek = (typeof DiscoverSeek)[keyof typeof DiscoverSeek];

const NodeId = Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9][A-Za-z0-9:._@/-]*$' });
/** `host:port` or `[v6]:port`; an unspecified host (`0.0.0.0`, `::`) means "the address this datagram came from". */
const HostPortText = Type.String({ minLength: 3, maxLength: 262, pattern: '^(\\[[0-9A-Fa-f:.]+\\]|[A-Za-z0-9._-]+):[0-9]{1,5}$' });
const Nonce = Type.String({ minLength: 16, maxLength: 64, pattern: '^[A-Za-z0-9_-]+$' });
const Timestamp = Type.String({ maxLength: 40, pattern: '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?Z$' });
const PublicKeyText = Type.String({ minLength: 40, maxLength: 1024 });
const SignatureText = Type.String({ minLength: 86, maxLength: 90, pattern: '^[A-Za-z0-9+/]+={0,2}$' });
const Version = Type.String({ minLength: 1, maxLength: 64 });
/** SHA-256 certificate fingerprint, `AA:BB:…` as Node prints it. */
export const CaFingerprintSchema = Type.String({ pattern: '^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){31}$' });

export const AdvertiseMessage = Type.Object({
  v: Type.Integer({ minimum: 1 }),
  type: Type.Literal('ADVERTISE'),
  node_id: NodeId,
  capabilities: Type.Array(Type.String({ minLength: 1, maxLength: 256 }), { maxItems: 4096 }),
  platform: Type.String({ minLength: 1, maxLength: 64 }),
  location: Type.Optional(Type.Union([LocationSchema, Type.Null()])),
  /** fieldmesh release of the node. */
  version: Version,
  /** Where the node accepts a gateway's dial, if it does. */
  listen: Type.Optional(HostPortText),
  public_key: PublicKeyText,
  sent_at: Timestamp,
  nonce: Nonce,
  signature: SignatureText,
});
export type AdvertiseMessage = Static<typeof AdvertiseMessage>;

export const DiscoverMessage = Type.Object({
  v: Type.Integer({ minimum: 1 }),
  type: Type.Literal('DISCOVER'),
  seek: Type.Union([Type.Literal('nodes'), Type.Literal('gateways')]),
  /** node or gateway id of the sender, for logs. */
  sender_id: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
  nonce: Nonce,
});
export type DiscoverMessage = Static<typeof DiscoverMessage>;

export const GatewayMessage = Type.Object({
  v: Type.Integer({ minimum: 1 }),
  type: Type.Literal('GATEWAY'),
  gateway_id: Type.String({ minLength: 1, maxLength: 128 }),
  /** Where nodes dial the gateway's node listener. */
  node_listen: HostPortText,
  /** SHA-256 fingerprint of the gateway CA, for a node to pin when it pairs. */
  ca_fingerprint: CaFingerprintSchema,
  /** fieldmesh release of the gateway. */
  version: Version,
  /** Wire protocol versions the gateway speaks. */
  protocols: Type.Array(Type.Integer({ minimum: 1 }), { minItems: 1, maxItems: 16 }),
  /** HTTP API address, if the gateway publishes it. */
  api: Type.Optional(HostPortText),
  public_key: PublicKeyText,
  sent_at: Timestamp,
  nonce: Nonce,
  signature: SignatureText,
});
export type GatewayMessage = Static<typeof GatewayMessage>;

export type DiscoveryMessage = AdvertiseMessage | DiscoverMessage | GatewayMessage;
export type SignedDiscoveryMessage = AdvertiseMessage | GatewayMessage;

/** `GET /v1/discovery`: what the gateway's multicast listener has seen. Discovered is not trusted. */
export const DiscoveryViewNodeSchema = Type.Object({
  node_id: NodeId,
  /** Source address of the node's last advertisement. */
  address: Type.String(),
  /** Where the node accepts a dial (`host:port`), or null for a node that only dials out. */
  listen: Type.Union([Type.String(), Type.Null()]),
  capabilities: Type.Array(Type.String()),
  platform: Type.String(),
  location: Type.Union([LocationSchema, Type.Null()]),
  version: Type.String(),
  last_seen: Type.String({ description: 'ISO 8601 time of the last valid advertisement' }),
  /** The gateway holds a pairing for this node id. */
  paired: Type.Boolean(),
  /** Paired, and the advertisement was signed by the paired key. */
  trusted: Type.Boolean(),
});
export type DiscoveryViewNode = Static<typeof DiscoveryViewNodeSchema>;
export const DiscoveryViewSchema = Type.Object({ nodes: Type.Array(DiscoveryViewNodeSchema) });
export type DiscoveryView = Static<typeof DiscoveryViewSchema>;

/** Why a datagram was dropped; counted per reason by the listeners. */
export const DropReason = {
  Oversized: 'oversized',
  Malformed: 'malformed',
  Version: 'version',
  Schema: 'schema',
  Signature: 'signature',
  Stale: 'stale',
  Replay: 'replay',
  KeyConflict: 'key_conflict',
  CacheFull: 'cache_full',
} as const;
export type DropReason = (typeof DropReason)[keyof typeof DropReason];

const checkers: Record<DiscoveryMessageType, TypeCheck<TSchema>> = {
  ADVERTISE: TypeCompiler.Compile(AdvertiseMessage),
  DISCOVER: TypeCompiler.Compile(DiscoverMessage),
  GATEWAY: TypeCompiler.Compile(GatewayMessage),
};

export type DecodeDiscoveryResult = { ok: true; message: DiscoveryMessage } | { ok: false; reason: DropReason; detail: string };

/**
 * Checks one datagram's size, JSON, version and schema. Never throws. The
 * signature of `ADVERTISE` and `GATEWAY` is checked separately
 * ({@link verifyDiscoverySignature}), so a listener spends no verification on
 * messages it ignores.
 */
export function decodeDiscoveryDatagram(raw: Buffer, maxBytes: number): DecodeDiscoveryResult {
  if (raw.length > maxBytes) return { ok: false, reason: 'oversized', detail: `${raw.length} bytes exceeds the limit of ${maxBytes}` };
  let value: unknown;
  try {
    value = JSON.parse(raw.toString('utf8'));
  } catch {
    return { ok: false, reason: 'malformed', detail: 'not valid JSON' };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, reason: 'malformed', detail: 'not a JSON object' };
  }
  const obj = value as { v?: unknown; type?: unknown };
  if (typeof obj.type !== 'string' || !Object.hasOwn(checkers, obj.type)) {
    return { ok: false, reason: 'schema', detail: `unknown type ${JSON.stringify(String(obj.type).slice(0, 32))}` };
  }
  if (obj.v !== DISCOVERY_VERSION)
    return { ok: false, reason: 'version', detail: `version ${String(obj.v).slice(0, 16)} is not supported` };
  const check = checkers[obj.type as DiscoveryMessageType];
  if (!check.Check(value)) return { ok: false, reason: 'schema', detail: `${obj.type} is invalid at ${describeSchemaError(check, value)}` };
  return { ok: true, message: value as DiscoveryMessage };
}

/** Checks a discovery message against its schema; the first violation as `path: message`, or undefined when it is valid. */
export function discoverySchemaError(message: Record<string, unknown> & { type: DiscoveryMessageType }): string | undefined {
  const check = checkers[message.type];
  return check.Check(message) ? undefined : describeSchemaError(check, message);
}

/** The bytes a discovery signature covers: canonical JSON of every field but `signature`. */
export function discoverySigningPayload(message: Record<string, unknown>): Buffer {
  const { signature: _ignored, ...rest } = message;
  return Buffer.from(canonicalJson(rest), 'utf8');
}

/** Signs an `ADVERTISE` or `GATEWAY` body (everything but `signature`) with an Ed25519 key. */
export function signDiscoveryMessage<T extends Record<string, unknown>>(body: T, privateKey: KeyObject): T & { signature: string } {
  return { ...body, signature: ed25519Sign(discoverySigningPayload(body), privateKey).toString('base64') };
}

const keyCache = new Map<string, KeyObject>();

/** Parses an Ed25519 public key given as SPKI PEM or base64 SPKI DER; undefined for anything else. */
export function parseDiscoveryPublicKey(text: string): KeyObject | undefined {
  const cached = keyCache.get(text);
  if (cached) return cached;
  let key: KeyObject;
  try {
    key = text.includes('-----BEGIN')
      ? createPublicKey(text)
      : createPublicKey({ key: Buffer.from(text, 'base64'), format: 'der', type: 'spki' });
  } catch {
    return undefined;
  }
  if (key.asymmetricKeyType !== 'ed25519') return undefined;
  if (keyCache.size >= 4096) keyCache.clear();
  keyCache.set(text, key);
  return key;
}

/** The SPKI PEM form of a discovery public key, so keys compare equal whatever form they came in. */
export function discoveryPublicKeyPem(text: string): string | undefined {
  const key = parseDiscoveryPublicKey(text);
  return key?.export({ type: 'spki', format: 'pem' }).toString();
}

/** Checks the Ed25519 signature of a signed discovery message; false for a malformed key or signature. */
export function verifyDiscoverySignature(message: SignedDiscoveryMessage): boolean {
  const key = parseDiscoveryPublicKey(message.public_key);
  if (!key) return false;
  try {
    return ed25519Verify(discoverySigningPayload(message), key, Buffer.from(message.signature, 'base64'));
  } catch {
    return false;
  }
}
