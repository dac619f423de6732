#!/usr/bin/env node
/** The `fieldmesh` binary: one program, both roles (gateway and node), and the client commands. */
import { Command } from 'commander';
import { VERSION } from '../core/version.js';
import { approvalsCommand } from './approvals.js';
import { configCommand } from './config.js';
import { demoCommand } from './demo.js';
import { deployCommand } from './deploy.js';
import { reportError } from './format.js';
import { gatewayCommand } from './gateway.js';
import { nodeCommand } from './node.js';
import { nodesCommand } from './nodes.js';
import { pairCommand } from './pair.js';
import { runCommand } from './run.js';
import { stateCommand } from './state.js';
import { taskCommand } from './task.js';
import { tokensCommand } from './tokens.js';

// A reader that stops early (`fieldmesh nodes list | head -3`) closes the pipe: the rest of the output is not
// wanted. It is dropped and the command finishes as it would (the demo still stops its processes and removes
// its directory), instead of failing with a stack trace.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE') throw err;
  process.stdout.write = () => true;
});

const program = new Command('fieldmesh').version(VERSION).description('Run tool calls and workflows across a fleet of edge nodes.');
// Root options only before the command, so a command may have its own --version (`state set … --version N`).
program.enablePositionalOptions();
gatewayCommand(program);
nodeCommand(program);
configCommand(program);
nodesCommand(program);
pairCommand(program);
taskCommand(program);
runCommand(program);
tokensCommand(program);
approvalsCommand(program);
stateCommand(program);
deployCommand(program);
demoCommand(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  reportError(err);
  process.exitCode = 1;
});
