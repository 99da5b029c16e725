/**
 * The prfence command line, as a testable function: argv in, exit code out. Unknown
 * commands and options are usage errors (exit 2); every failure is one line on stderr, or,
 * for `device` commands with --json, one JSON object on stdout:
 * `{"error": {"kind": ErrorKind, "message": "..."}, "exitCode": N}`.
 */
import { Command, CommanderError } from 'commander';
import { KoffiPrDevice } from '../pr/koffi/koffi-pr-device.js';
import { isPrError } from '../pr/errors.js';
import type { ResolveOptions } from '../pr/resolve.js';
import { registerDeviceCommand, type DeviceOpener } from './device-command.js';
import { errorKindFor, EXIT, exitCodeFor, type ErrorKind } from './exit-codes.js';
import { packageVersion } from './version.js';

export interface CliIo {
  stdout: (line: string) => void;
  stderr: (line: string) => void;
  /** How `device` subcommands open a path; default KoffiPrDevice. */
  openDevice?: DeviceOpener;
  /** Where device identities and partitions are looked up; default /sys and /dev (tests: a fake tree). */
  resolve?: ResolveOptions;
}

/** Extra subcommands (demo, agent, ...) register here so main stays small. */
export type CommandRegistrar = (program: Command, io: CliIo) => void;

/** Runs the CLI; resolves with the exit code. Never throws. */
export async function runCli(
  argv: readonly string[],
  io: CliIo,
  extra: readonly CommandRegistrar[] = [],
): Promise<number> {
  // Errors as JSON on stdout: a `device` command with --json (before any `--`), also when
  // the command line itself is wrong, so a script reads one JSON object whatever happened.
  const end = argv.indexOf('--');
  const json = argv[0] === 'device' && (end < 0 ? argv : argv.slice(0, end)).includes('--json');
  const jsonError = (kind: ErrorKind, message: string, exitCode: number) =>
    io.stdout(JSON.stringify({ error: { kind, message }, exitCode }));
  let parseError: string | undefined;
  const program = new Command('prfence')
    .description('Kubernetes fencing of shared block storage with SCSI-3 / NVMe Persistent Reservations')
    .exitOverride()
    .showHelpAfterError(false)
    .configureOutput({
      writeOut: (s) => io.stdout(s.trimEnd()),
      writeErr: (s) => io.stderr(s.trimEnd()),
      outputError: (s, write) => {
        if (json) parseError = s.trim().replace(/^error: /, '');
        else write(s.replace(/^error: /, 'prfence: '));
      },
    });
  program.version(packageVersion(), '--version', 'print the version and exit');
  program.allowExcessArguments(false);
  registerDeviceCommand(program, {
    open: io.openDevice ?? ((p, o) => KoffiPrDevice.open(p, { timeoutMs: o.timeoutMs })),
    stdout: io.stdout,
    ...(io.resolve ? { resolve: io.resolve } : {}),
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
    return EXIT.ok;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (
        e.code === 'commander.helpDisplayed' ||
        e.code === 'commander.help' ||
        e.code === 'commander.version'
      )
        return EXIT.ok;
      if (json) jsonError('usage', parseError ?? e.message.replace(/^error: /, ''), EXIT.usage);
      return EXIT.usage;
    }
    const code = exitCodeFor(e);
    const msg = isPrError(e) ? e.message : e instanceof Error ? e.message : String(e);
    if (json) jsonError(errorKindFor(e), msg, code);
    else io.stderr(`prfence: ${msg}`);
    return code;
  }
}
