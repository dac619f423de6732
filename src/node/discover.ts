/**
 * A node started without `--gateway` finds one on the local network: by
 * multicast DISCOVER (answered by a signed GATEWAY) or by mDNS. What is found
 * must match what the node already trusts: the CA it paired with (or the
 * `--gateway-ca` file), the gateway signing key it paired with, or the CA
 * fingerprint prefix its pairing code carries. With none of these (a first
 * start that asks an operator to approve) the first gateway found is used and
 * pairing logs the CA it trusts on first use.
 */
import { X509Certificate } from 'node:crypto';
import { type HostPort, parseHostPort } from '../core/address.js';
import { isFieldmeshError } from '../core/errors.js';
import { browseGateways } from '../discovery/mdns.js';
import type { MulticastAdvertiser } from '../discovery/multicast.js';
import { discoveryPublicKeyPem } from '../protocol/discovery.js';
import { codeMatchesFingerprint, parsePairingCode } from '../protocol/pairing.js';
import { fingerprintHex } from '../protocol/pki.js';
import type { CompiledNodeOptions } from './options.js';
import type { NodeIdentity } from './pairing.js';

export interface DiscoveredGateway {
  address: HostPort;
  gateway_id: string;
  ca_fingerprint: string;
}

/** How long one round of discovery listens before it is logged and tried again. */
const ROUND_MS = 5000;

/**
 * Looks for the gateway until one that matches is found (each round that
 * finds none is logged), `stopped()` turns true or `maxRounds` rounds found
 * none (resolves undefined).
 */
export async function discoverGateway(
  opts: CompiledNodeOptions,
  identity: NodeIdentity | undefined,
  caPem: string | undefined,
  advertiser: MulticastAdvertiser | undefined,
  stopped: () => boolean = () => false,
  maxRounds = Number.POSITIVE_INFINITY,
): Promise<DiscoveredGateway | undefined> {
  const pinnedCa = caPem ?? identity?.caPem;
  const expectedCa = pinnedCa === undefined ? undefined : fingerprintHex(new X509Certificate(pinnedCa).fingerprint256);
  const code = opts.pairingCode === undefined ? undefined : parsePairingCode(opts.pairingCode);
  const signingKey = identity ? discoveryPublicKeyPem(identity.gatewaySigningKeyPem) : undefined;
  const caMatches = (fingerprint: string) =>
    expectedCa !== undefined ? fingerprintHex(fingerprint) === expectedCa : code ? codeMatchesFingerprint(code, fingerprint) : true;
  const log = opts.logger;
  for (let round = 1; round <= maxRounds && !stopped(); round++) {
    try {
      if (opts.discover === 'mdns') {
        const found = await browseGateways({
          serviceName: opts.serviceName,
          interfaceAddress: opts.multicast.interfaceAddress,
          port: opts.mdnsPort,
          timeoutMs: ROUND_MS,
          ...(expectedCa !== undefined ? { caFingerprint: pinnedFingerprint(pinnedCa!), limit: 1 } : {}),
        });
        const gateway = found.find((g) => caMatches(g.ca_fingerprint));
        if (gateway) {
          log.info('gateway found by mDNS', { gateway_id: gateway.gateway_id, address: gateway.node_listen });
          return {
            address: parseHostPort('gateway', gateway.node_listen),
            gateway_id: gateway.gateway_id,
            ca_fingerprint: gateway.ca_fingerprint,
          };
        }
      } else if (advertiser) {
        const gateway = await advertiser.findGateway({
          timeoutMs: ROUND_MS,
          // A paired node also knows the gateway's signing key: a GATEWAY signed by another key is someone else's.
          accept: (g) => caMatches(g.ca_fingerprint) && (signingKey === undefined || g.public_key === signingKey),
        });
        log.info('gateway found by multicast', { gateway_id: gateway.gateway_id, address: gateway.node_listen });
        return {
          address: parseHostPort('gateway', gateway.node_listen),
          gateway_id: gateway.gateway_id,
          ca_fingerprint: gateway.ca_fingerprint,
        };
      }
    } catch (err) {
      if (!isFieldmeshError(err) || err.code !== 'FM_ERR_NO_GATEWAY_FOUND') throw err;
    }
    if (!stopped()) {
      log.warn('no gateway found yet; still looking', {
        method: opts.discover,
        round,
        expected_ca: expectedCa ?? (code ? `${code.caFingerprintPrefix}…` : null),
      });
    }
  }
  return undefined;
}

function pinnedFingerprint(pem: string): string {
  return new X509Certificate(pem).fingerprint256.toUpperCase();
}
