#!/usr/bin/env node
// Adds package-lock entries for platform-specific optional packages (rollup, biome, esbuild builds for
// other systems) that a registry mirror without them leaves out. npm 11's `npm ci` checks that every
// optional dependency is in the lockfile; entries carrying os/cpu/libc are skipped on other platforms
// without being fetched. Run after `npm install` changes the lockfile.
import { readFileSync, writeFileSync } from 'node:fs';

const file = new URL('../package-lock.json', import.meta.url);
const lock = JSON.parse(readFileSync(file, 'utf8'));
const packages = lock.packages;

const OS = ['android', 'darwin', 'freebsd', 'linux', 'openbsd', 'openharmony', 'win32', 'netbsd', 'sunos', 'aix'];
const CPU = {
  arm64: 'arm64',
  x64: 'x64',
  ia32: 'ia32',
  arm: 'arm',
  loong64: 'loong64',
  ppc64: 'ppc64',
  riscv64: 'riscv64',
  s390x: 's390x',
};

function platformOf(name) {
  const parts = name.split('/').pop().split('-');
  const osIndex = parts.findIndex((p) => OS.includes(p));
  if (osIndex < 0) return undefined;
  const os = parts[osIndex];
  const cpu = CPU[parts[osIndex + 1]];
  if (!cpu) return undefined;
  const rest = parts.slice(osIndex + 2).join('-');
  const out = { os: [os], cpu: [cpu] };
  if (os === 'linux') out.libc = [/musl/.test(rest) ? 'musl' : 'glibc'];
  return out;
}

let added = 0;
for (const [path, pkg] of Object.entries(packages)) {
  for (const [dep, range] of Object.entries(pkg.optionalDependencies ?? {})) {
    const where = `${path ? `${path}/` : ''}node_modules/${dep}`;
    const hoisted = `node_modules/${dep}`;
    if (packages[where] || packages[hoisted]) continue;
    const platform = platformOf(dep);
    if (!platform) continue;
    packages[hoisted] = { version: range.replace(/^[\^~=]/, ''), ...platform, dev: pkg.dev === true ? true : undefined, optional: true };
    added++;
  }
}
const sorted = Object.fromEntries(Object.entries(packages).sort(([a], [b]) => (a === '' ? -1 : b === '' ? 1 : a.localeCompare(b))));
lock.packages = sorted;
writeFileSync(file, `${JSON.stringify(lock, null, 2)}\n`);
process.stdout.write(`added ${added} platform entries\n`);
