#!/usr/bin/env node
/** Entry point: wires the CLI to the process. All logic lives in program.ts and the commands. */
import { defaultNativeExecutor } from '../pr/koffi/executor.js';

// Device commands need a native executor thread (a worker loading Node and koffi): start
// it first, so its start-up overlaps loading the rest of the CLI.
if (process.argv[2] === 'device' || process.argv[2] === 'demo')
  defaultNativeExecutor()
    .warm()
    .catch(() => {});

const [
  { runCli },
  { registerDemoCommand },
  { registerAgentCommand },
  { registerClusterCommands },
  { registerCrdsCommand },
  { registerControllerCommand },
] = await Promise.all([
  import('./program.js'),
  import('./demo-command.js'),
  import('./agent-command.js'),
  import('./cluster-command.js'),
  import('./crds-command.js'),
  import('./controller-command.js'),
]);
const code = await runCli(
  process.argv.slice(2),
  { stdout: (l) => process.stdout.write(`${l}\n`), stderr: (l) => process.stderr.write(`${l}\n`) },
  [
    registerDemoCommand,
    registerAgentCommand,
    registerClusterCommands,
    registerCrdsCommand,
    registerControllerCommand,
  ],
);
process.exitCode = code;
