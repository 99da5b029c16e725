/**
 * The `prfence` process: every command on the process's stdout and stderr, then the exit
 * (main.ts only starts it). Its own module so that tests run the same path in a child
 * process with a device that hangs (test/unit/cli/hung-device-exit.test.ts).
 */
import { defaultNativeExecutor, type NativeExecutor } from '../pr/koffi/executor.js';
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

const flushed = (s: NodeJS.WriteStream) => new Promise<void>((resolve) => s.write('', () => resolve()));

/**
 * Ends the process with `code`: sets process.exitCode and lets the event loop end, or,
 * while a thread of `executor` is still inside a native call (a call past its time limit
 * on a hung device: the command already reported it, exit 5), flushes stdout and stderr
 * and exits at once (`exitNow`): Node's exit would wait for that thread, that is for the
 * kernel, however long the device takes.
 */
export async function endProcess(code: number, executor: NativeExecutor): Promise<void> {
  process.exitCode = code;
  const { stuck, busy } = executor.stats();
  if (stuck === 0 && busy === 0) return;
  await Promise.all([flushed(process.stdout), flushed(process.stderr)]);
  const { exitNow } = await import('../pr/koffi/libc.js');
  exitNow(code);
}
