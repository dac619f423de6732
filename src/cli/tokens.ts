/** `fieldmesh tokens create|list|revoke`: API tokens (admin scope). */
import { type Command, InvalidArgumentError } from 'commander';
import { apiOption, clientFrom } from './client.js';
import { printJson, table } from './format.js';

const scopes = ['read', 'submit', 'admin'] as const;

function scopeOption(value: string): (typeof scopes)[number] {
  if (!(scopes as readonly string[]).includes(value)) throw new InvalidArgumentError(`"${value}" is not one of ${scopes.join(', ')}`);
  return value as (typeof scopes)[number];
}

export function tokensCommand(program: Command): void {
  const tokens = program.command('tokens').description('API tokens: create, list, revoke (needs an admin token)');

  apiOption(
    tokens
      .command('create')
      .description('issue a token and print it (it is shown only once)')
      .requiredOption('--scope <scope>', 'read | submit | admin', scopeOption)
      .option('--name <name>', 'a label for the token'),
  ).action(async (o) => {
    const t = await clientFrom(o).createToken(o.scope, o.name);
    if (o.json) return printJson(t);
    process.stdout.write(`${t.token}\n`);
    process.stderr.write(`token ${t.token_id} (scope ${t.scope}) created; keep it now, it is not shown again\n`);
  });

  apiOption(tokens.command('list').description('tokens, without their secrets')).action(async (o) => {
    const list = await clientFrom(o).listTokens();
    if (o.json) return printJson({ tokens: list });
    process.stdout.write(
      `${table(
        ['TOKEN', 'NAME', 'SCOPE', 'CREATED', 'LAST USED', 'REVOKED'],
        list.map((t) => [t.token_id, t.name, t.scope, t.created_at, t.last_used_at, t.revoked_at]),
      )}\n`,
    );
  });

  apiOption(tokens.command('revoke <token_id>').description('revoke a token; its next request is refused')).action(
    async (id: string, o) => {
      const t = await clientFrom(o).revokeToken(id);
      if (o.json) return printJson(t);
      process.stdout.write(`token ${t.token_id} revoked at ${t.revoked_at}\n`);
    },
  );
}
