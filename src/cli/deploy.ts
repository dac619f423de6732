/** `fieldmesh deploy`, `fieldmesh functions list`, `fieldmesh undeploy`: functions bundled here, signed by the gateway, run on nodes. */
import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import type { FunctionDeployBody, FunctionNodeOutcome } from '../protocol/api.js';
import { apiOption, clientFrom } from './client.js';
import { collect, intOption, parseJsonOption, printJson, table } from './format.js';

/**
 * One ES module from the entry file and everything it imports (node built-ins
 * stay imports); its default export stays the handler. CommonJS packages
 * bundled into ESM call `require`, which the banner provides.
 */
export async function bundleFunction(file: string): Promise<string> {
  const stat = statSync(file, { throwIfNoEntry: false });
  if (!stat) throw new Error(`cannot bundle ${file}: no such file`);
  if (!stat.isFile()) throw new Error(`cannot bundle ${file}: not a file`);
  const esbuild = await import('esbuild');
  let result: Awaited<ReturnType<typeof esbuild.build>>;
  try {
    result = await esbuild.build({
      entryPoints: [resolve(file)],
      metafile: true,
      bundle: true,
      format: 'esm',
      platform: 'node',
      target: 'node20',
      write: false,
      logLevel: 'silent',
      banner: {
        js: "import { createRequire as __fmCreateRequire } from 'node:module'; const require = __fmCreateRequire(import.meta.url);",
      },
    });
  } catch (err) {
    const errors = (err as { errors?: { text: string; location?: { file: string; line: number } | null }[] }).errors ?? [];
    const first = errors[0];
    const where = first?.location ? ` (${first.location.file}:${first.location.line})` : '';
    throw new Error(`cannot bundle ${file}: ${first ? `${first.text}${where}` : (err as Error).message}`);
  }
  const out = result.outputFiles?.[0];
  if (!out) throw new Error(`cannot bundle ${file}: esbuild produced no output`);
  const exports = Object.values(result.metafile?.outputs ?? {})[0]?.exports ?? [];
  if (!exports.includes('default'))
    throw new Error(`${file} has no default export; a function module's default export is its handler, \`async (args, ctx) => output\``);
  return out.text;
}

function parseEnv(pairs: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of pairs) {
    const i = pair.indexOf('=');
    if (i <= 0) throw new Error(`--env: "${pair}" is not KEY=VALUE`);
    env[pair.slice(0, i)] = pair.slice(i + 1);
  }
  return env;
}

function printOutcomes(nodes: FunctionNodeOutcome[]): void {
  if (nodes.length === 0) return;
  process.stdout.write(
    `${table(
      ['NODE', 'OUTCOME', 'ERROR'],
      nodes.map((n) => [n.node_id, n.status, n.error ? `${n.error.code}: ${n.error.message}` : '']),
    )}\n`,
  );
}

export function deployCommand(program: Command): void {
  apiOption(
    program
      .command('deploy <file>')
      .description('bundle a function module (its default export is `async (args, ctx) => output`) and deploy it to the nodes of a target')
      .requiredOption('--name <name>', 'function name, also the tool name it is called by')
      .option('--memory <mb>', 'heap limit of each call, in MB', intOption, 128)
      .option(
        '--timeout <seconds>',
        'time limit of each call, in seconds',
        (v) => {
          const n = Number(v);
          if (!Number.isFinite(n) || n <= 0) throw new Error(`--timeout: "${v}" is not a positive number of seconds`);
          return n;
        },
        30,
      )
      .option('--env <KEY=VALUE>', 'an environment variable of the function (repeatable); it sees no other', collect, [])
      .option(
        '--target <json>',
        'target as JSON, e.g. {"kind":"capability","required_capabilities":["gpu:available"]} (default: every node)',
      ),
  ).action(async (file: string, o) => {
    const body: FunctionDeployBody = {
      name: o.name,
      bundle: await bundleFunction(file),
      memory_mb: o.memory,
      timeout_seconds: o.timeout,
      env: parseEnv(o.env),
    };
    const target = parseJsonOption('--target', o.target);
    if (target !== undefined) body.target = target as FunctionDeployBody['target'];
    const r = await clientFrom(o).deployFunction(body);
    if (o.json) printJson(r);
    else {
      process.stdout.write(
        `${r.function.name} version ${r.function.version} (${r.function.bundle_bytes} bytes, ${r.function.bundle_sha256}): ` +
          `deployed to ${r.deployed} of ${r.matched} node(s) in the target\n`,
      );
      printOutcomes(r.nodes);
    }
    if (r.nodes.some((n) => n.status === 'failed')) process.exitCode = 1;
  });

  const functions = program.command('functions').description('deployed functions');
  apiOption(
    functions.command('list').description('deployed functions and where they run').option('--node <id>', 'only the functions of this node'),
  ).action(async (o) => {
    const list = await clientFrom(o).listFunctions(o.node);
    if (o.json) return printJson({ functions: list });
    if (list.length === 0) {
      process.stdout.write('no functions\n');
      return;
    }
    process.stdout.write(
      `${table(
        ['NAME', 'VERSION', 'MEMORY', 'TIMEOUT', 'ENV', 'NODES', 'UPDATED'],
        list.map((f) => [
          f.name,
          f.version,
          `${f.memory_mb} MB`,
          `${f.timeout_seconds} s`,
          f.env_keys.join(',') || '-',
          f.nodes.map((n) => `${n.node_id}:${n.status}`).join(' ') || '-',
          f.updated_at,
        ]),
      )}\n`,
    );
  });

  apiOption(
    program
      .command('undeploy <name>')
      .description('remove a function from every node, or from one')
      .option('--node <id>', 'only from this node'),
  ).action(async (name: string, o) => {
    const r = await clientFrom(o).undeployFunction(name, o.node);
    if (o.json) printJson(r);
    else {
      process.stdout.write(`${r.name}: removed from ${r.undeployed} node(s)\n`);
      printOutcomes(r.nodes);
    }
    if (r.nodes.some((n) => n.status === 'failed')) process.exitCode = 1;
  });
}
