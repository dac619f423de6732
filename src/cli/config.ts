/** `fieldmesh config check|print`: validate a configuration file; show the configuration a role would run with. */
import { type Command, Option } from 'commander';
import {
  CONFIG_FILE_ENV,
  type ConfigFile,
  deepOverlay,
  envLayer,
  formatToml,
  inSchemaOrder,
  type LoadedConfig,
  loadConfigFile,
  maskSecrets,
} from '../core/config.js';
import { FieldmeshError, isFieldmeshError } from '../core/errors.js';
import { silentLogger } from '../core/logger.js';
import { compileGatewayOptions } from '../gateway/options.js';
import { checkToolModuleFiles, compileNodeOptions } from '../node/options.js';
import { effectiveConfig, gatewayOptionsFromConfig, nodeOptionsFromConfig, type Role } from './config-options.js';
import { printJson } from './format.js';

/** The `--config` option of `fieldmesh gateway` and `fieldmesh node`, as arguments of commander's `.option()`. */
export function configFileOption(sections: string): [string, string] {
  return [
    '--config <file>',
    `TOML configuration file (${sections}; default $${CONFIG_FILE_ENV}); FIELDMESH_* variables and flags override it`,
  ];
}

/** The file `--config` names, else $FIELDMESH_CONFIG, read and checked; undefined when there is none. */
export function loadConfigOption(path: string | undefined, env: NodeJS.ProcessEnv = process.env): LoadedConfig<ConfigFile> | undefined {
  const file = path ?? (env[CONFIG_FILE_ENV] || undefined);
  return file === undefined ? undefined : loadConfigFile(file);
}

/** The roles a file configures: a controller's or `[gateway]`/`[security]` → gateway; `[node]` without mode "controller" → node. */
function rolesOf(config: ConfigFile): Role[] {
  const mode = config.node?.mode;
  const roles: Role[] = [];
  if (mode === 'controller' || ((config.gateway || config.security) && mode !== 'node')) roles.push('gateway');
  if (config.node && mode !== 'controller') roles.push('node');
  return roles;
}

/** Errors of the options checks (which name options, not files) with the file in front. */
function inFile<T>(file: string, check: () => T): T {
  try {
    return check();
  } catch (err) {
    if (!isFieldmeshError(err) || err.message.startsWith(`${file}: `)) throw err;
    throw new FieldmeshError(err.code, `${file}: ${err.message}`, { details: { ...err.details, file } });
  }
}

function gatewaySummary(loaded: LoadedConfig<ConfigFile>): string {
  const options = gatewayOptionsFromConfig(effectiveConfig('gateway', {}, loaded).doc);
  const compiled = inFile(loaded.file, () => compileGatewayOptions({ ...options, dataDir: options.dataDir!, logger: silentLogger }));
  const discovery = [
    ...(options.peers?.length ? [`${options.peers.length} static peer${options.peers.length === 1 ? '' : 's'}`] : []),
    ...(options.discovery?.multicast ? [`multicast ${options.discovery.multicast.group}:${options.discovery.multicast.port}`] : []),
    ...(options.discovery?.mdns ? [`mDNS ${options.discovery.mdns.serviceName}`] : []),
  ];
  const tools = Object.keys(compiled.toolPolicy.tools).length;
  return (
    `gateway "${compiled.gatewayId}": api ${options.api}, node listener ${options.listen}` +
    `${discovery.length ? `, discovery ${discovery.join(' + ')}` : ''}, tool policy default ${compiled.toolPolicy.default}` +
    `${tools ? ` with ${tools} tool${tools === 1 ? '' : 's'} named` : ''}`
  );
}

function nodeSummary(loaded: LoadedConfig<ConfigFile>): string {
  const options = nodeOptionsFromConfig(effectiveConfig('node', {}, loaded).doc);
  // Values a flag may still give are stood in for, so the rest is checked as the node would check it.
  const compiled = inFile(loaded.file, () =>
    compileNodeOptions({
      ...options,
      id: options.id ?? 'unset',
      gateway: options.gateway ?? '127.0.0.1:1',
      dataDir: options.dataDir ?? '.',
      logger: silentLogger,
    }),
  );
  inFile(loaded.file, () => checkToolModuleFiles(options.toolModules));
  const via = options.listen
    ? `listening on ${options.listen}`
    : options.discover
      ? `finding its gateway by ${options.discover}`
      : options.gateway
        ? `gateway ${options.gateway}`
        : undefined;
  const missing = [
    ...(options.id === undefined ? ['--id (node_id)'] : []),
    ...(via === undefined ? ['--gateway (controller), --listen or --discover'] : []),
    ...(options.dataDir === undefined ? ['--data-dir (data_dir)'] : []),
  ];
  const tools = compiled.allowedTools === null ? 'every tool' : `${compiled.allowedTools.length} allowed tools`;
  return (
    `node${options.id === undefined ? '' : ` "${options.id}"`}: ${via ?? 'no gateway'}, ${tools}, ` +
    `max_concurrent_tasks ${compiled.maxConcurrency}${missing.length ? `; give at start: ${missing.join(', ')}` : ''}`
  );
}

/** Checks a file for every role it configures, as `fieldmesh gateway` / `fieldmesh node` would at start (without flags or variables). */
export function checkConfigFile(path: string): string[] {
  const loaded = loadConfigFile(path);
  const roles = rolesOf(loaded.config);
  const lines = [`ok: ${loaded.file}`];
  for (const role of roles) lines.push(`  ${role === 'gateway' ? gatewaySummary(loaded) : nodeSummary(loaded)}`);
  if (roles.length === 0) lines.push('  no settings: every value takes its default');
  return lines;
}

export function configCommand(program: Command): void {
  const config = program.command('config').description('check a configuration file, or print the configuration in effect');
  config
    .command('check')
    .description('validate a TOML configuration file: exit 0 with a summary, or 1 with the first error')
    .argument('<file>', 'the file, e.g. fieldmesh.toml')
    .action((file: string) => {
      process.stdout.write(`${checkConfigFile(file).join('\n')}\n`);
    });
  config
    .command('print')
    .description('print the configuration a role would run with: defaults, then --config, then FIELDMESH_* variables; secrets masked')
    .option('--config <file>', `TOML configuration file (default $${CONFIG_FILE_ENV})`)
    .addOption(
      new Option('--role <role>', 'gateway or node (default: what the file and variables configure, else gateway)').choices([
        'gateway',
        'node',
      ]),
    )
    .option('--json', 'print JSON: { role, file, config, sources }')
    .action((o: { config?: string; role?: Role; json?: boolean }) => {
      const loaded = loadConfigOption(o.config);
      // The role the file and variables configure, a variable's mode over the file's.
      const role = o.role ?? rolesOf(deepOverlay(loaded?.config ?? {}, envLayer(process.env).doc))[0] ?? 'gateway';
      const effective = effectiveConfig(role, process.env, loaded);
      const masked = maskSecrets(inSchemaOrder(effective.doc));
      if (o.json) {
        printJson({ role, file: effective.file ?? null, config: masked, sources: effective.sources });
        return;
      }
      process.stdout.write(
        `# fieldmesh ${role}: the configuration in effect before flags; after each key, where it comes from\n` +
          `# (precedence: flags > FIELDMESH_* variables > ${effective.file ?? 'configuration file (none)'} > defaults)\n\n` +
          formatToml(masked, Object.fromEntries(Object.entries(effective.sources).map(([k, v]) => [k, v === effective.file ? 'file' : v]))),
      );
    });
}
