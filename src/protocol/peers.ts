/**
 * Listen mode: a node that waits for the gateway to dial it (static peers and
 * registered nodes). The TLS is mutual both ways: the node serves the
 * certificate pairing gave it, and the gateway presents a client certificate
 * from its own CA whose CN is {@link GATEWAY_CLIENT_CN}. That CN holds spaces,
 * which no node id may, so no node certificate can pass for the gateway's.
 */
import { isIP } from 'node:net';
import { FieldmeshError } from '../core/errors.js';

/** WebSocket path of the node protocol, on the gateway's listener and on a listen-mode node's. */
export const NODE_PROTOCOL_PATH = '/v1/connect';

/** Subject CN of the client certificate the gateway dials listen-mode nodes with. */
export const GATEWAY_CLIENT_CN = 'fieldmesh gateway client';

export interface PeerEndpoint {
  host: string;
  port: number;
  /** `host:port`, `[v6]:port` for IPv6. */
  text: string;
}

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** Why an endpoint is refused, or undefined when it is a valid one. */
function endpointProblem(value: string): { problem: string } | PeerEndpoint {
  // The original design's example gives a URL ("https://192.168.50.134:8000"): its scheme is dropped, nothing else may follow.
  const text = value.trim().replace(/^(?:https|wss):\/\//i, '');
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) return { problem: 'only https:// or wss:// may prefix it' };
  if (text.includes('/')) return { problem: 'a path is not allowed' };
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  if (!m) return { problem: 'expected HOST:PORT' };
  const host = m[1] ?? m[2] ?? '';
  const port = Number(m[3]);
  if (m[1] !== undefined && isIP(host) !== 6) return { problem: `"${host}" is not an IPv6 address` };
  if (m[2] !== undefined && isIP(host) === 0 && !HOSTNAME.test(host)) return { problem: `"${host}" is not a host name or IP address` };
  if (host === '0.0.0.0' || host === '::') return { problem: 'an unspecified address cannot be dialed' };
  if (port < 1 || port > 65535) return { problem: `port ${m[3]} is out of range (1-65535)` };
  return { host, port, text: host.includes(':') ? `[${host}]:${port}` : `${host}:${port}` };
}

/** Parses a peer endpoint `host:port` (or `https://host:port`); throws `code` naming `label` and the value. */
export function parsePeerEndpoint(
  label: string,
  value: unknown,
  code: 'FM_ERR_INVALID_OPTION' | 'FM_ERR_INVALID_REQUEST' = 'FM_ERR_INVALID_OPTION',
): PeerEndpoint {
  const parsed = typeof value === 'string' ? endpointProblem(value) : { problem: 'expected a string HOST:PORT' };
  if ('problem' in parsed) {
    throw new FieldmeshError(code, `${label}: ${JSON.stringify(value)} is not a valid endpoint (${parsed.problem})`, {
      details: { option: label, value: typeof value === 'string' ? value : String(value), allowed: 'HOST:PORT with port 1-65535' },
    });
  }
  return parsed;
}
