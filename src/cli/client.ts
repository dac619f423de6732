/**
 * How every client command reaches the API: the address, the API token and,
 * for an https gateway, the CA to trust. One place, so all commands agree.
 */
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { FieldmeshClient } from '../client/index.js';
import { ADMIN_TOKEN_FILE } from '../gateway/tokens.js';

/** The gateway's data dir when `--data-dir` is not given. */
export function defaultDataDir(): string {
  return join(homedir(), '.fieldmesh', 'gateway');
}

/** Adds the options every command that calls the API takes. */
export function apiOption(cmd: Command): Command {
  return cmd
    .option('--api <url>', 'gateway API', process.env.FIELDMESH_API ?? 'http://127.0.0.1:8787')
    .option('--token <token>', 'API token (default $FIELDMESH_TOKEN, else <data-dir>/admin-token)')
    .option('--data-dir <dir>', 'data dir of the local gateway, for its admin token and CA', defaultDataDir())
    .option('--ca <file>', 'CA certificate of an https API (default <data-dir>/tls/ca.crt)')
    .option('--json', 'print the raw JSON answer');
}

export interface ApiCommandOptions {
  api: string;
  token?: string;
  dataDir: string;
  ca?: string;
}

function readFile(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`cannot read the ${what} ${file}: ${(err as Error).message}`);
  }
}

/** The admin token a local gateway wrote to its data dir. */
export function readAdminToken(dataDir: string): string {
  const file = join(dataDir, ADMIN_TOKEN_FILE);
  if (!existsSync(file)) {
    throw new Error(
      `no API token: pass --token, set FIELDMESH_TOKEN, or point --data-dir at the gateway's data dir (no ${file}); ` +
        'create tokens with "fieldmesh tokens create" on the gateway machine',
    );
  }
  const token = readFile(file, 'admin token').trim();
  if (token === '') throw new Error(`the admin token file ${file} is empty`);
  return token;
}

/** The token a command sends: `--token`, else $FIELDMESH_TOKEN, else the local gateway's admin token. */
export function resolveToken(o: { token?: string; dataDir: string }): string {
  return o.token || process.env.FIELDMESH_TOKEN || readAdminToken(o.dataDir);
}

/** The client for a command's options. */
export function clientFrom(o: ApiCommandOptions): FieldmeshClient {
  const token = resolveToken(o);
  let ca: string | undefined;
  if (o.ca) ca = readFile(o.ca, 'CA certificate');
  else if (/^https:/i.test(o.api)) {
    const local = join(o.dataDir, 'tls', 'ca.crt');
    if (existsSync(local)) ca = readFile(local, 'CA certificate');
  }
  return new FieldmeshClient({ baseUrl: o.api, token, ...(ca === undefined ? {} : { ca }) });
}
