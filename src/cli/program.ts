/**
 * The prfence command line, as a testable function: argv in, exit code out. Unknown
 * commands and options are usage errors (exit 2); every failure is one line on stderr.
 */
import { Command, CommanderError } from 'commander';
import { KoffiPrDevice } from '../pr/koffi/koffi-pr-device.js';
import { isPrError } from '../pr/errors.js';
import { registerDeviceCommand, type DeviceOpener } from './device-command.js';
import { EXIT, exitCodeFor } from './exit-codes.js';
import { packageVersion } from './version.js';

export interface CliIo {
  stdout: (line: string) => void;
  stderr: (line: string) => void;
  /** How `device` subcommands open a path; default KoffiPrDevice. */
  openDevice?: DeviceOpener;
}

/** Extra subcommands (demo, agent, ...) register here so main stays small. */
export type CommandRegistrar = (program: Command, io: CliIo) => void;

/** Runs the CLI; resolves with the exit code. Never throws. */
export async function runCli(
  argv: readonly string[],
  io: CliIo,
  extra: readonly CommandRegistrar[] = [],
): Promise<number> {
  let exit: number = EXIT.ok;
  const program = new Command('prfence')
    .description('Kubernetes fencing of shared block storage with SCSI-3 / NVMe Persistent Reservations')
    .exitOverride()
    .showHelpAfterError(false)
    .configureOutput({
      writeOut: (s) => io.stdout(s.trimEnd()),
      writeErr: (s) => io.stderr(s.trimEnd()),
      outputError: (s, write) => write(s.replace(/^error: /, 'prfence: ')),
    });
  program.version(packageVersion(), '--version', 'print the version and exit');
  program.allowExcessArguments(false);
  registerDeviceCommand(program, {
    open: io.openDevice ?? ((p) => KoffiPrDevice.open(p)),
    stdout: io.stdout,
    setExit: (c) => (exit = c),
  });
  for (const r of extra) r(program, io);
  for (const c of program.commands) {
    c.exitOverride();
    c.allowExcessArguments(false);
    for (const s of c.commands) {
      s.exitOverride();
      s.allowExcessArguments(false);
    }
  }
  try {
    await program.parseAsync(argv as string[], { from: 'user' });
    return exit;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (
        e.code === 'commander.helpDisplayed' ||
        e.code === 'commander.help' ||
        e.code === 'commander.version'
      )
        return EXIT.ok;
      return EXIT.usage;
    }
    const code = exitCodeFor(e);
    const msg = isPrError(e) ? e.message : e instanceof Error ? e.message : String(e);
    io.stderr(`prfence: ${msg}`);
    return code;
  }
}
