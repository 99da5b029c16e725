/**
 * `prfence device ...`: Persistent Reservation commands on one block device, for people
 * and scripts (DESIGN.md "The prfence command"). Every outcome maps to an exit code:
 * 0 ok, 2 usage, 3 reservation conflict, 4 unsupported, 5 I/O error or outcome unknown.
 */
import { Command, InvalidArgumentError as CommanderArgError, Option } from 'commander';
import { formatKey, parseKey, parseNonZeroKey, type PrKey } from '../pr/key.js';
import type { PrDevice } from '../pr/pr-device.js';
import { parseReservationType, RESERVATION_TYPES, type ReservationType } from '../pr/reservation-type.js';
import { InvalidArgumentError } from '../pr/errors.js';

/** Opens a device path as a PrDevice (KoffiPrDevice in production, a model in tests). */
export type DeviceOpener = (path: string) => Promise<PrDevice>;

export interface DeviceCommandIo {
  open: DeviceOpener;
  stdout: (line: string) => void;
  /** Receives the action's result code; the CLI's main sets process.exitCode from it. */
  setExit: (code: number) => void;
}

const keyArg = (v: string) => wrap(() => parseNonZeroKey(v));
const keyOrZeroArg = (v: string) => wrap(() => parseKey(v));
const typeArg = (v: string) => wrap(() => parseReservationType(v));

function wrap<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw new CommanderArgError(e instanceof Error ? e.message : String(e));
  }
}

interface OutOpts {
  key?: PrKey;
  oldKey?: PrKey;
  victim?: PrKey;
  type?: ReservationType;
  ignoreKey?: boolean;
}

function need<T>(v: T | undefined, flag: string, action: string): T {
  if (v === undefined) throw new InvalidArgumentError(`${action} needs ${flag}`);
  return v;
}

/** Adds `device` and its subcommands to a commander program. */
export function registerDeviceCommand(program: Command, io: DeviceCommandIo): void {
  const device = program.command('device').description('Persistent Reservation commands on one block device');

  const withDevice = async (path: string, f: (d: PrDevice) => Promise<void>) => {
    const d = await io.open(path);
    try {
      await f(d);
    } finally {
      await d.close();
    }
  };

  device
    .command('keys <device>')
    .description('list the registered keys')
    .option('--json', 'print JSON')
    .action(async (path: string, o: { json?: boolean }) => {
      await withDevice(path, async (d) => {
        const k = await d.readKeys();
        if (o.json) io.stdout(JSON.stringify({ generation: k.generation, keys: k.keys.map(formatKey) }));
        else {
          io.stdout(`generation ${k.generation}, ${k.keys.length} key(s)`);
          for (const key of k.keys) io.stdout(`  ${formatKey(key)}`);
        }
      });
    });

  device
    .command('reservation <device>')
    .description('show the reservation holder and type')
    .option('--json', 'print JSON')
    .action(async (path: string, o: { json?: boolean }) => {
      await withDevice(path, async (d) => {
        const r = await d.readReservation();
        const key = r.key === null ? null : formatKey(r.key);
        if (o.json) io.stdout(JSON.stringify({ generation: r.generation, key, type: r.type }));
        else
          io.stdout(
            r.type === null
              ? `generation ${r.generation}, no reservation`
              : `generation ${r.generation}, holder ${key}, type ${r.type}`,
          );
      });
    });

  device
    .command('capabilities <device>')
    .description('device kind, read method, supported types')
    .option('--json', 'print JSON')
    .action(async (path: string, o: { json?: boolean }) => {
      await withDevice(path, async (d) => {
        const c = await d.capabilities();
        if (o.json) io.stdout(JSON.stringify(c));
        else io.stdout(`kind ${c.kind}, reads via ${c.readMethod}, types ${c.types.join(' ')}`);
      });
    });

  const outCommand = (name: string, description: string, run: (d: PrDevice, o: OutOpts) => Promise<void>) =>
    device
      .command(`${name} <device>`)
      .description(description)
      .addOption(
        new Option('--key <hex>', "this initiator's key (hex, with or without 0x)").argParser(
          name === 'register' ? keyOrZeroArg : keyArg,
        ),
      )
      .addOption(
        new Option('--old-key <hex>', 'the currently registered key (register)').argParser(keyOrZeroArg),
      )
      .addOption(new Option('--victim <hex>', 'the key to preempt').argParser(keyOrZeroArg))
      .addOption(
        new Option('--type <type>', `reservation type: ${RESERVATION_TYPES.join(', ')}`).argParser(typeArg),
      )
      .option('--ignore-key', 'register: REGISTER AND IGNORE EXISTING KEY')
      .action(async (path: string, o: OutOpts) => {
        await withDevice(path, (d) => run(d, o));
      });

  outCommand(
    'register',
    'register --key (0 = unregister); --old-key or --ignore-key to change a key',
    async (d, o) => {
      const key = need(o.key, '--key', 'register');
      if (o.ignoreKey) await d.registerAndIgnore(key);
      else await d.register(o.oldKey ?? 0n, key);
    },
  );
  outCommand('reserve', 'reserve with --key and --type', async (d, o) => {
    await d.reserve(need(o.key, '--key', 'reserve'), need(o.type, '--type', 'reserve'));
  });
  outCommand('release', 'release the reservation held with --key and --type', async (d, o) => {
    await d.release(need(o.key, '--key', 'release'), need(o.type, '--type', 'release'));
  });
  outCommand(
    'preempt',
    "remove --victim's registration using own --key (and take its reservation)",
    async (d, o) => {
      await d.preempt(
        need(o.key, '--key', 'preempt'),
        need(o.victim, '--victim', 'preempt'),
        need(o.type, '--type', 'preempt'),
      );
    },
  );
  outCommand('preempt-abort', "as preempt, and abort the victim's outstanding commands", async (d, o) => {
    await d.preemptAndAbort(
      need(o.key, '--key', 'preempt-abort'),
      need(o.victim, '--victim', 'preempt-abort'),
      need(o.type, '--type', 'preempt-abort'),
    );
  });
  outCommand('clear', 'remove every registration and the reservation (needs own --key)', async (d, o) => {
    await d.clear(need(o.key, '--key', 'clear'));
  });
}
