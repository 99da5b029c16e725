/**
 * The `prfence` process: every command on the process's stdout and stderr, then the exit
 * (main.ts only starts it). Its own module so that tests run the same path in a child
 * process with a device that hangs (test/unit/cli/hung-device-exit.test.ts).
 */
import { defaultNativeExecutor } from '../pr/koffi/executor.js';
import { endProcess } from './end-process.js';
import { registerAgentCommand } from './agent-command.js';
import { registerClusterCommands } from './cluster-command.js';
import { registerControllerCommand } from './controller-command.js';
import { registerCrdsCommand } from './crds-command.js';
import { registerDemoCommand } from './demo-command.js';
import { runCli, type CliIo } from './program.js';

/** Runs the CLI on `argv`, then ends the process with its exit code (`endProcess`). `openDevice`: tests. */
export async function runProcess(argv: readonly string[], io: Pick<CliIo, 'openDevice'> = {}): Promise<void> {
  const code = await runCli(
    argv,
    {
      stdout: (l) => process.stdout.write(`${l}\n`),
      stderr: (l) => process.stderr.write(`${l}\n`),
      ...io,
    },
    [
      registerDemoCommand,
      registerAgentCommand,
      registerClusterCommands,
      registerCrdsCommand,
      registerControllerCommand,
    ],
  );
  await endProcess(code, defaultNativeExecutor());
}
