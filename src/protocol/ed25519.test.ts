// The Ed25519 backend: whichever implementation runs, its signatures are standard RFC 8032 ones that node:crypto
// checks, it accepts node:crypto's, and it refuses what node:crypto refuses.
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, sign, verify } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Ed25519Backend, ed25519Backend, ed25519Sign, ed25519Verify } from './ed25519.js';

const { privateKey, publicKey } = generateKeyPairSync('ed25519');
const other = generateKeyPairSync('ed25519');
const message = Buffer.from('fieldmesh-task-v1\n{"attempt":1,"task_id":"t-1"}');

describe('ed25519 - backend', () => {
  it('ed25519 - libsodium signs and checks where its prebuilt binary exists (linux x64 and arm64)', () => {
    if (process.platform === 'linux' && (process.arch === 'x64' || process.arch === 'arm64')) {
      expect(ed25519Backend).toBe(Ed25519Backend.Libsodium);
    } else {
      expect(Object.values(Ed25519Backend)).toContain(ed25519Backend);
    }
  });

  it('ed25519 - FIELDMESH_ED25519=node keeps node:crypto, and both backends accept each other', () => {
    // The built module (npm test builds first), in a process of its own so the variable is read at load.
    const moduleUrl = new URL('../../dist/protocol/ed25519.js', import.meta.url).href;
    const script = `
      const { ed25519Backend, ed25519Sign } = await import(${JSON.stringify(moduleUrl)});
      const { createPrivateKey } = await import('node:crypto');
      const key = createPrivateKey(process.env.KEY);
      console.log(JSON.stringify({ backend: ed25519Backend, sig: ed25519Sign(Buffer.from(process.env.MSG), key).toString('base64') }));`;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], {
      env: {
        ...process.env,
        FIELDMESH_ED25519: 'node',
        KEY: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
        MSG: message.toString(),
      },
      encoding: 'utf8',
    });
    const { backend, sig } = JSON.parse(out.trim().split('\n').pop() ?? '{}');
    expect(backend).toBe(Ed25519Backend.NodeCrypto);
    // Ed25519 is deterministic: the other process's node:crypto signature equals this process's, whatever its backend.
    expect(sig).toBe(ed25519Sign(message, privateKey).toString('base64'));
    expect(ed25519Verify(message, publicKey, Buffer.from(sig, 'base64'))).toBe(true);
  });
});

describe('ed25519 - sign and verify', () => {
  it('ed25519 - a signature made here checks out in node:crypto, and one made by node:crypto checks out here', () => {
    const mine = ed25519Sign(message, privateKey);
    expect(mine).toHaveLength(64);
    expect(verify(null, message, publicKey, mine)).toBe(true);
    expect(ed25519Verify(message, publicKey, sign(null, message, privateKey))).toBe(true);
    const pem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
    expect(ed25519Verify(message, pem, mine)).toBe(true);
  });

  it('ed25519 - altered data, another key, a flipped bit and a wrong length are refused, not thrown', () => {
    const sig = ed25519Sign(message, privateKey);
    expect(ed25519Verify(Buffer.concat([message, Buffer.from('x')]), publicKey, sig)).toBe(false);
    expect(ed25519Verify(message, other.publicKey, sig)).toBe(false);
    const flipped = Buffer.from(sig);
    flipped.writeUInt8(flipped.readUInt8(10) ^ 1, 10);
    expect(ed25519Verify(message, publicKey, flipped)).toBe(false);
    expect(ed25519Verify(message, publicKey, sig.subarray(0, 63))).toBe(false);
    expect(ed25519Verify(message, publicKey, Buffer.alloc(0))).toBe(false);
    expect(ed25519Verify(message, publicKey, Buffer.alloc(64))).toBe(false);
  });

  it('ed25519 - each key signs with its own secret: two keys, two different signatures, each only under its own key', () => {
    const a = ed25519Sign(message, privateKey);
    const b = ed25519Sign(message, other.privateKey);
    expect(a.equals(b)).toBe(false);
    expect(ed25519Verify(message, other.publicKey, b)).toBe(true);
    expect(ed25519Verify(message, publicKey, b)).toBe(false);
  });
});
