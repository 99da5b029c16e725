/**
 * `prfence device ...`: Persistent Reservation commands on one block device, for people
 * and scripts (README "The prfence command"), in the manner of sg_persist and blkpr.
 *
 * - DEVICE is a path, or an identity (`wwid:...`, `nguid:...`, `fc:...`, `iscsi:...`)
 *   resolved to this node's block device by src/pr/resolve.ts, as the agent does.
 * - Each subcommand takes only the options it uses: any other is refused (exit 2).
 * - `clear`, `preempt-abort`, `release-all`, `scsi2-reserve` and `scsi2-takeover` need `--yes`: without it they print what
 *   they would do to which device and send nothing (exit 2).
 * - `release-all` takes one node's key off every device (uninstall; release-all.ts).
 * - `status`: every registration with its initiator and the reservation from one read
 *   (READ FULL STATUS / NVMe Reservation Report), as `sg_persist --read-full-status`.
 * - `scsi2-reserve`, `scsi2-release`, `scsi2-status`, `scsi2-takeover`: SCSI-2 RESERVE(6) /
 *   RELEASE(6) / TEST UNIT READY / LU reset then RESERVE(6) (src/pr/scsi2.ts, illumos mhd
 *   MHIOCQRESERVE / MHIOCRELEASE / MHIOCSTATUS / MHIOCTKOWN), for legacy arrays without PR
 *   and single-writer volumes; SCSI only (an NVMe device is unsupported, exit 4);
 *   `scsi2-reserve` and `scsi2-takeover` need `--yes`.
 * - `--json` prints JSON on stdout, errors included (runCli prints those).
 * Every outcome maps to an exit code: 0 ok, 2 usage, 3 reservation conflict,
 * 4 unsupported, 5 I/O error or outcome unknown.
 */
import { Command, InvalidArgumentError as CommanderArgError, Option } from 'commander';
import { parseDurationMs } from '../config/config.js';
import { isPrError, UnsupportedError } from '../pr/errors.js';
import { isScsi2Device, type Scsi2Device } from '../pr/scsi2.js';
import { formatKey, parseKey, parseNonZeroKey, type PrKey } from '../pr/key.js';
import { ERRNO } from '../pr/koffi/classify.js';
import type { FullStatus, PrCapabilities, PrDevice } from '../pr/pr-device.js';
import { describeInitiator } from '../pr/initiator.js';
import {
  isAllRegistrantsType,
  parseReservationType,
  RESERVATION_TYPES,
  type ReservationType,
} from '../pr/reservation-type.js';
import { partitionOf, resolveDevice, type ResolveOptions } from '../pr/resolve.js';
import { ConflictError } from '../pr/errors.js';
import { UsageError } from './exit-codes.js';
import {
  describeOutcome,
  releaseKeyOn,
  scanBlockDevices,
  stillRegistered,
  type ReleaseOutcome,
} from './release-all.js';

/** Opens a device path as a PrDevice (KoffiPrDevice in production, a model in tests). */
export type DeviceOpener = (path: string, opts: { timeoutMs: number }) => Promise<PrDevice>;

export interface DeviceCommandIo {
  open: DeviceOpener;
  stdout: (line: string) => void;
  /** Where identities and partitions are looked up; default /sys and /dev (tests: a fake tree). */
  resolve?: ResolveOptions;
}

const DEFAULT_TIMEOUT_MS = 10_000;

function wrap<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw new CommanderArgError(e instanceof Error ? e.message : String(e));
  }
}

const keyArg = (v: string) => wrap(() => parseNonZeroKey(v));
const keyOrZeroArg = (v: string) => wrap(() => parseKey(v));
const typeArg = (v: string) => wrap(() => parseReservationType(v));
const durationArg = (v: string) =>
  wrap(() => {
    const ms = parseDurationMs(v, '--timeout');
    if (ms <= 0) throw new Error('--timeout must be above 0');
    return ms;
  });

/** An identity scheme (`wwid:`, `nguid:`, ...) rather than a path. */
const IDENTITY = /^[a-z]+:/i;

interface Common {
  json?: boolean;
  timeout: number;
}
interface OutOpts extends Common {
  key: PrKey;
  oldKey?: PrKey;
  ignoreKey?: boolean;
  victim: PrKey;
  type: ReservationType;
  yes?: boolean;
}

/**
 * Rewrites a permission error on a partition: Linux refuses PR ioctls there with EPERM
 * (block/ioctl.c blkdev_pr_allowed), which reads as a missing capability.
 */
async function explainPermission(e: unknown, path: string, where: ResolveOptions | undefined) {
  if (!isPrError(e) || (e.errno !== ERRNO.EPERM && e.errno !== ERRNO.EACCES)) return e;
  const p = await partitionOf(path, where);
  if (!p) return e;
  return new UnsupportedError(
    `${e.op ?? 'open'}: permission denied: ${path} is a partition; Persistent Reservations ` +
      `belong to the whole device${p.whole ? `: use ${p.whole}` : ''}`,
    { op: e.op, device: e.device, errno: e.errno, cause: e },
  );
}

/** `device status` for people: a header line, then one row per registration. */
export function formatFullStatus(f: FullStatus): string[] {
  const r = f.reservation;
  const reservation =
    r === null
      ? 'no reservation'
      : isAllRegistrantsType(r.type)
        ? `reservation ${r.type}, every registrant holds`
        : `reservation ${r.type}, holder ${formatKey(r.key)}`;
  const lines = [`generation ${f.generation}, ${reservation}, ${f.registrants.length} registration(s)`];
  if (f.registrants.length === 0) return lines;
  lines.push(`${'KEY'.padEnd(16)}  HOLDER  INITIATOR`);
  for (const x of f.registrants)
    lines.push(
      `${formatKey(x.key)}  ${(x.holder ? 'yes' : 'no').padEnd(6)}  ${describeInitiator(x.initiator)}`,
    );
  return lines;
}

/** Adds `device` and its subcommands to a commander program. */
export function registerDeviceCommand(program: Command, io: DeviceCommandIo): void {
  const device = program.command('device').description('Persistent Reservation commands on one block device');

  const sub = (name: string, description: string) =>
    device
      .command(`${name} <device>`)
      .description(`${description}; DEVICE is a path, wwid:ID or nguid:ID`)
      .option('--json', 'print JSON on stdout, errors included')
      .addOption(
        new Option('--timeout <duration>', 'time limit per device call (500ms, 10s)')
          .default(DEFAULT_TIMEOUT_MS, '10s')
          .argParser(durationArg),
      );
  const keyOpt = (help: string, zeroOk = false) =>
    new Option('--key <hex>', help).argParser(zeroOk ? keyOrZeroArg : keyArg).makeOptionMandatory();
  const typeOpt = () =>
    new Option('--type <type>', `reservation type: ${RESERVATION_TYPES.join(', ')}`)
      .argParser(typeArg)
      .makeOptionMandatory();
  const victimOpt = () =>
    new Option('--victim <hex>', 'the key to remove').argParser(keyOrZeroArg).makeOptionMandatory();
  const yesOpt = (what: string) => new Option('--yes', `do it: ${what}`);

  /**
   * Resolves DEVICE, refuses without --yes when `confirm` says what would be done, opens,
   * runs, closes. Nothing is sent before the refusal or a resolution error.
   */
  const withDevice = async (
    name: string,
    o: Common & { yes?: boolean },
    f: (d: PrDevice, path: string) => Promise<void>,
    confirm?: { op: string; would: string },
  ) => {
    const path = IDENTITY.test(name) ? await resolveDevice(name, io.resolve) : name;
    const shown = path === name ? path : `${path} (${name})`;
    if (confirm && !o.yes)
      throw new UsageError(
        `${confirm.op}: refused without --yes: it would ${confirm.would} on ${shown}; nothing sent`,
      );
    let d: PrDevice;
    try {
      d = await io.open(path, { timeoutMs: o.timeout });
    } catch (e) {
      throw await explainPermission(e, path, io.resolve);
    }
    try {
      await f(d, path);
    } catch (e) {
      throw await explainPermission(e, path, io.resolve);
    } finally {
      await d.close();
    }
  };
  /** A PR OUT command: prints nothing on success, or its JSON with --json. */
  const out =
    (op: string, f: (d: PrDevice, o: OutOpts) => Promise<void>, confirm?: (o: OutOpts) => string) =>
    (name: string, o: OutOpts) =>
      withDevice(
        name,
        o,
        async (d, path) => {
          await f(d, o);
          if (o.json) io.stdout(JSON.stringify({ op, device: path, exitCode: 0 }));
        },
        confirm && { op, would: confirm(o) },
      );

  sub('keys', 'list the registered keys').action((name: string, o: Common) =>
    withDevice(name, o, async (d) => {
      const k = await d.readKeys();
      if (o.json) io.stdout(JSON.stringify({ generation: k.generation, keys: k.keys.map(formatKey) }));
      else {
        io.stdout(`generation ${k.generation}, ${k.keys.length} key(s)`);
        for (const key of k.keys) io.stdout(`  ${formatKey(key)}`);
      }
    }),
  );

  sub('reservation', 'show the reservation holder and type').action((name: string, o: Common) =>
    withDevice(name, o, async (d) => {
      const r = await d.readReservation();
      const key = r.key === null ? null : formatKey(r.key);
      if (o.json) io.stdout(JSON.stringify({ generation: r.generation, key, type: r.type }));
      else
        io.stdout(
          r.type === null
            ? `generation ${r.generation}, no reservation`
            : `generation ${r.generation}, holder ${key}, type ${r.type}`,
        );
    }),
  );

  sub(
    'status',
    'every registration with its initiator, and the reservation, from one read (READ FULL STATUS / NVMe Reservation Report)',
  ).action((name: string, o: Common) =>
    withDevice(name, o, async (d) => {
      const f = await d.readFullStatus();
      if (o.json)
        io.stdout(
          JSON.stringify({
            generation: f.generation,
            reservation: f.reservation && { key: formatKey(f.reservation.key), type: f.reservation.type },
            registrants: f.registrants.map((x) => ({
              key: formatKey(x.key),
              holder: x.holder,
              initiator: x.initiator,
            })),
          }),
        );
      else for (const line of formatFullStatus(f)) io.stdout(line);
    }),
  );

  sub(
    'capabilities',
    'device kind, read method, supported types and PTPL/ATP/SIP flags (from the device, or assumed)',
  ).action((name: string, o: Common) =>
    withDevice(name, o, async (d) => {
      const c = await d.capabilities();
      if (o.json) io.stdout(JSON.stringify(c));
      else for (const line of formatCapabilities(c)) io.stdout(line);
    }),
  );

  sub('register', 'register --key (0 = unregister); --old-key or --ignore-key to change a key')
    .addOption(keyOpt("this initiator's new key (hex, with or without 0x; 0 unregisters)", true))
    .addOption(new Option('--old-key <hex>', 'the currently registered key').argParser(keyOrZeroArg))
    .addOption(
      new Option('--ignore-key', 'REGISTER AND IGNORE EXISTING KEY: whatever is registered').conflicts(
        'oldKey',
      ),
    )
    .action(
      out('register', (d, o) =>
        o.ignoreKey ? d.registerAndIgnore(o.key) : d.register(o.oldKey ?? 0n, o.key),
      ),
    );

  sub('reserve', 'reserve with --key and --type')
    .addOption(keyOpt("this initiator's registered key"))
    .addOption(typeOpt())
    .action(out('reserve', (d, o) => d.reserve(o.key, o.type)));

  sub('release', 'release the reservation held with --key and --type')
    .addOption(keyOpt("this initiator's registered key"))
    .addOption(typeOpt())
    .action(out('release', (d, o) => d.release(o.key, o.type)));

  sub('preempt', "remove --victim's registrations using own --key (and take its reservation)")
    .addOption(keyOpt("this initiator's registered key"))
    .addOption(victimOpt())
    .addOption(typeOpt())
    .action(out('preempt', (d, o) => d.preempt(o.key, o.victim, o.type)));

  sub('preempt-abort', "as preempt, and abort the victim's outstanding commands (needs --yes)")
    .addOption(keyOpt("this initiator's registered key"))
    .addOption(victimOpt())
    .addOption(typeOpt())
    .addOption(yesOpt("remove the victim's registrations and abort its commands"))
    .action(
      out(
        'preempt-abort',
        (d, o) => d.preemptAndAbort(o.key, o.victim, o.type),
        (o) =>
          `remove the registrations of key ${formatKey(o.victim)}, take its reservation as ${o.type} ` +
          'and abort its outstanding commands',
      ),
    );

  /** The SCSI-2 commands of a device, or UnsupportedError (a device with none: NVMe, a fake). */
  const scsi2Of = (d: PrDevice, op: string): Scsi2Device => {
    if (isScsi2Device(d)) return d;
    throw new UnsupportedError(`${op}: SCSI-2 reservations are SCSI only; ${d.id} has none`, {
      op,
      device: d.id,
    });
  };

  sub(
    'scsi2-reserve',
    'SCSI-2 RESERVE(6): this host alone may access the device until released (legacy arrays without PR; needs --yes)',
  )
    .addOption(yesOpt("reserve the device: every other host's I/O to it fails"))
    .action(
      out(
        'scsi2-reserve',
        (d) => scsi2Of(d, 'scsi2-reserve').scsi2Reserve(),
        () =>
          'reserve the device for this host with a SCSI-2 RESERVE(6): every other host would get ' +
          'RESERVATION CONFLICT on any I/O until this host releases it',
      ),
    );

  sub(
    'scsi2-takeover',
    "SCSI-2 forced takeover (mhd MHIOCTKOWN): reset the LU to break another host's SCSI-2 reservation, then RESERVE(6) (needs --yes)",
  )
    .addOption(yesOpt("reset the LU and reserve it: every host's commands in flight are aborted"))
    .action(
      out(
        'scsi2-takeover',
        (d) => scsi2Of(d, 'scsi2-takeover').scsi2Takeover(),
        () =>
          "reset the LU (a LOGICAL UNIT RESET: every host's commands in flight to it are aborted, " +
          "and any host's SCSI-2 reservation is dropped), then reserve it for this host with a " +
          'SCSI-2 RESERVE(6)',
      ),
    );

  sub(
    'scsi2-release',
    "SCSI-2 RELEASE(6): free this host's SCSI-2 reservation (no effect if it holds none)",
  ).action(out('scsi2-release', (d) => scsi2Of(d, 'scsi2-release').scsi2Release()));

  sub(
    'scsi2-status',
    'whether another host holds a SCSI-2 reservation (TEST UNIT READY; mhd MHIOCSTATUS: 1 reserved, 0 not)',
  ).action((name: string, o: Common) =>
    withDevice(name, o, async (d, path) => {
      const status = await scsi2Of(d, 'scsi2-status').scsi2Status();
      const reservedByOther = status === 'reserved-by-other';
      if (o.json)
        io.stdout(
          JSON.stringify({ device: path, status, reservedByOther, mhioStatus: reservedByOther ? 1 : 0 }),
        );
      else
        io.stdout(
          reservedByOther
            ? `${path}: reserved by another initiator (1)`
            : `${path}: not reserved by another initiator (0)`,
        );
    }),
  );

  sub('clear', 'remove every registration and the reservation with own --key (needs --yes)')
    .addOption(keyOpt("this initiator's registered key"))
    .addOption(yesOpt('remove every registration and the reservation'))
    .action(
      out(
        'clear',
        (d, o) => d.clear(o.key),
        () => "remove every host's registration and the reservation",
      ),
    );

  device
    .command('release-all [devices...]')
    .description(
      'uninstall: release and unregister --key on every device it is registered on ' +
        '(DEVICEs, else the SCSI, NVMe and multipath devices of this node); needs --yes',
    )
    .option('--json', 'print JSON on stdout, errors included')
    .addOption(
      new Option('--timeout <duration>', 'time limit per device call (500ms, 10s)')
        .default(DEFAULT_TIMEOUT_MS, '10s')
        .argParser(durationArg),
    )
    .addOption(keyOpt("this node's key (kubectl get nf NODE -o jsonpath='{.status.key}')"))
    .addOption(yesOpt('release and unregister the key on every device'))
    .action(async (names: string[], o: Common & { key: PrKey; yes?: boolean }) => {
      const scan = names.length === 0;
      const paths = scan
        ? await scanBlockDevices(io.resolve)
        : await Promise.all(names.map((n) => (IDENTITY.test(n) ? resolveDevice(n, io.resolve) : n)));
      if (!o.yes)
        throw new UsageError(
          `release-all: refused without --yes: it would release and unregister key ${formatKey(o.key)} on ` +
            `${paths.length ? paths.join(', ') : 'no device'}${scan ? ' (every device found)' : ''}; nothing sent`,
        );
      const outcomes: ReleaseOutcome[] = [];
      // People see each device's outcome as it comes (what was done stays said if a later
      // device fails); --json gets one document at the end.
      const done = (x: ReleaseOutcome) => {
        outcomes.push(x);
        if (!o.json) io.stdout(describeOutcome(x, o.key));
      };
      const found = new Map<string, PrDevice>();
      const opened: PrDevice[] = [];
      try {
        for (const path of paths) {
          let d: PrDevice;
          try {
            d = await io.open(path, { timeoutMs: o.timeout });
          } catch (e) {
            if (scan && isPrError(e) && e.kind === 'unsupported') {
              done({ device: path, result: 'skipped', reason: e.message });
              continue;
            }
            if (!o.json) io.stdout(`${path}: failed (below); the devices after it were not touched`);
            throw await explainPermission(e, path, io.resolve);
          }
          opened.push(d);
          let r: ReleaseOutcome;
          try {
            r = await releaseKeyOn(d, path, o.key, scan);
          } catch (e) {
            if (!o.json) io.stdout(`${path}: failed (below); the devices after it were not touched`);
            throw e;
          }
          done(r);
          if (r.result === 'unregistered' || r.result === 'other-path') found.set(path, d);
        }
        const left = await stillRegistered(found, o.key);
        // With --json one document: the outcomes, or (runCli) the error naming what is left.
        if (o.json && !left.length)
          io.stdout(
            JSON.stringify({ op: 'release-all', key: formatKey(o.key), devices: outcomes, exitCode: 0 }),
          );
        if (left.length)
          throw new ConflictError(
            `release-all: key ${formatKey(o.key)} is still registered on ${left.join(', ')}: ` +
              'unregister it through the path that registered it (give that device)',
            { op: 'release-all', device: left.join(',') },
          );
      } finally {
        await Promise.all(opened.map((d) => d.close()));
      }
    });
}

/**
 * `capabilities` as text: kind, read method and types on the first line (with where the
 * types came from), then the flags the device reported, then PREEMPT AND ABORT.
 */
export function formatCapabilities(c: PrCapabilities): string[] {
  const from = c.source === 'device' ? 'from the device' : `assumed: ${c.assumedBecause ?? 'not reported'}`;
  const lines = [`kind ${c.kind}, reads via ${c.readMethod}, types ${c.types.join(' ')} (${from})`];
  const f = c.flags;
  const yn = (b: boolean | undefined) => (b ? 'yes' : 'no');
  const shown: string[] = [];
  if (f.ptplCapable !== undefined) shown.push(`PTPL_C ${yn(f.ptplCapable)}`);
  if (f.ptplActive !== undefined) shown.push(`PTPL_A ${yn(f.ptplActive)}`);
  if (f.allTargetPorts !== undefined) shown.push(`ATP_C ${yn(f.allTargetPorts)}`);
  if (f.specifyInitiatorPorts !== undefined) shown.push(`SIP_C ${yn(f.specifyInitiatorPorts)}`);
  if (f.compatibleReservationHandling !== undefined) shown.push(`CRH ${yn(f.compatibleReservationHandling)}`);
  if (f.allowCommands !== undefined) shown.push(`ALLOW_COMMANDS ${f.allowCommands}`);
  if (f.ignoreExistingKey !== undefined) shown.push(`IEKEY ${yn(f.ignoreExistingKey)}`);
  lines.push(`flags ${shown.length ? shown.join(', ') : 'none reported'}`);
  lines.push(`preempt-and-abort ${c.preemptAbort ? 'yes' : 'no (refused by the device: PREEMPT is used)'}`);
  return lines;
}
