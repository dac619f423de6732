/**
 * TLS memory: what one idle connection costs a bare `node:https` + `ws`
 * server configured as the gateway's node listener (mutual TLS, certificates
 * from a gateway CA, no session tickets), without anything else of fieldmesh.
 * A server process and a client process (`--connections` WebSockets over
 * loopback); the server's RSS and `process.memoryUsage()` before and after,
 * each after two forced GCs, per connection. Variants: `plain` (no TLS),
 * `mtls` (as the listener), `mtls-router` (behind the ALPN router the
 * listener uses, tls-router.ts); `--server-env` and `--server-flags` as in
 * the scale bench. It shows where the gateway's memory per node goes; see
 * BENCHMARKS.md, "scale".
 */
import { type ChildProcess, fork } from 'node:child_process';
import { createPublicKey } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadOrCreateGatewayIdentity, signNodeCertificate } from '../src/gateway/tls.js';
import { generateTlsKeyPem } from '../src/protocol/pki.js';
import { type BenchArgs, num, processSettings, saveResult } from './index.js';
import { sleep } from './procs.js';
import { type Material, type Usage, VARIANTS, type Variant } from './tls-memory-peer.js';

const peerScript = join(dirname(fileURLToPath(import.meta.url)), 'tls-memory-peer.js');

function ask<T>(child: ChildProcess, key: string, message?: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMessage = (msg: Record<string, unknown>) => {
      if (msg[key] === undefined) return;
      child.off('message', onMessage);
      resolve(msg[key] as T);
    };
    child.on('message', onMessage);
    child.once('exit', (code) => reject(new Error(`process exited (${code}) before answering ${key}`)));
    if (message !== undefined) child.send(message);
  });
}

async function makeMaterial(dir: string): Promise<Material> {
  const identity = await loadOrCreateGatewayIdentity(dir);
  const clientKeyPem = generateTlsKeyPem();
  const clientCertPem = await signNodeCertificate({
    caCertPem: identity.caCertPem,
    caKeyPem: identity.caKeyPem,
    nodeId: 'bench-node',
    publicKey: createPublicKey(clientKeyPem).export({ type: 'spki', format: 'der' }),
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 86_400_000),
  });
  return { caPem: identity.caCertPem, serverKeyPem: identity.keyPem, serverCertPem: identity.certChainPem, clientKeyPem, clientCertPem };
}

async function measure(variant: Variant, count: number, m: Material, env: Record<string, string>, flags: string[]) {
  const payload = JSON.stringify({ variant, m });
  const server = fork(peerScript, ['server'], { env: { ...process.env, ...env, FM_TLS_MEMORY: payload }, execArgv: flags });
  const client: ChildProcess[] = [];
  try {
    const port = await ask<number>(server, 'port');
    const before = await ask<Usage>(server, 'usage', 'usage');
    const c = fork(peerScript, ['client', String(port), String(count)], { env: { ...process.env, FM_TLS_MEMORY: payload } });
    client.push(c);
    const failed = await ask<number>(c, 'failed');
    if (failed > 0) throw new Error(`${variant}: ${failed} of ${count} connections failed`);
    await sleep(3000);
    const after = await ask<Usage>(server, 'usage', 'usage');
    const per = (k: 'vmRss' | 'heapUsed' | 'heapTotal' | 'external' | 'arrayBuffers') =>
      Math.round(((after[k] - before[k]) / Math.max(1, after.connections) / 1024) * 10) / 10;
    return {
      variant,
      connections: after.connections,
      failed,
      rss_kib: per('vmRss'),
      heap_used_kib: per('heapUsed'),
      heap_total_kib: per('heapTotal'),
      external_kib: per('external'),
      array_buffers_kib: per('arrayBuffers'),
    };
  } finally {
    for (const p of client) p.kill();
    const exited = new Promise((resolve) => server.once('exit', resolve));
    if (server.connected) server.send('exit');
    await Promise.race([exited, sleep(5000)]);
    server.kill();
  }
}

export async function tlsMemoryBench(a: BenchArgs): Promise<void> {
  const count = num(a, 'connections', a.flags.has('smoke') ? 100 : 2000);
  const variants = (a.flags.get('variants') ?? VARIANTS.join(',')).split(',') as Variant[];
  for (const v of variants) if (!VARIANTS.includes(v)) throw new Error(`--variants: "${v}" is not one of ${VARIANTS.join(', ')}`);
  const { env, flags } = processSettings(a, 'server');
  const dir = mkdtempSync(join(tmpdir(), 'fm-bench-tls-memory-'));
  try {
    const m = await makeMaterial(dir);
    const results = [];
    for (const v of variants) {
      const r = await measure(v, count, m, env, flags);
      results.push(r);
      if (!a.json) {
        process.stdout.write(
          `${v.padEnd(12)} ${r.connections} connections (${r.failed} failed): RSS ${r.rss_kib} KiB each; ` +
            `heap used ${r.heap_used_kib}, heap total ${r.heap_total_kib}, external ${r.external_kib}, array buffers ${r.array_buffers_kib} KiB\n`,
        );
      }
    }
    const file = a.flags.has('smoke')
      ? '(smoke run, not saved)'
      : saveResult('tls-memory', { connections: count, server_env: env, server_flags: flags, results });
    if (a.json) process.stdout.write(`${JSON.stringify(results)}\n`);
    else process.stdout.write(`→ ${file}\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
