#!/usr/bin/env node
/** Entry point: wires the CLI to the process. All logic lives in program.ts and the commands. */
import { runCli } from './program.js';
import { registerDemoCommand } from './demo-command.js';
import { registerAgentCommand } from './agent-command.js';
import { registerClusterCommands } from './cluster-command.js';

const code = await runCli(
  process.argv.slice(2),
  { stdout: (l) => process.stdout.write(`${l}\n`), stderr: (l) => process.stderr.write(`${l}\n`) },
  [registerDemoCommand, registerAgentCommand, registerClusterCommands],
);
process.exitCode = code;
