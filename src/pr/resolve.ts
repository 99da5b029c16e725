/**
 * Device resolution: from a volume's device identity to this node's block device, by
 * reading sysfs and udev's /dev/disk/by-path (DESIGN.md "Device resolution"). The
 * identity strings (what `deviceIdentityOf` in src/agent/cluster-view.ts produces, or
 * what a PV annotation says):
 *
 *   /dev/...                          a device path, used as is
 *   wwid:<id>                         SCSI VPD 0x83 (sysfs device/wwid: naa./eui./t10.) or
 *                                     NVMe wwid (eui./uuid./nvme.); udev-style ids with a
 *                                     type digit (3600a098...) match too
 *   nguid:<hex>                       NVMe namespace NGUID (sysfs nguid)
 *   fc:<target wwn>/lun/<n>           in-tree FC: /dev/disk/by-path/*-fc-0x<wwn>-lun-<n>
 *   iscsi:<portal>/<iqn>/lun/<n>      in-tree iSCSI: /dev/disk/by-path/ip-<portal>-iscsi-<iqn>-lun-<n>
 *
 * Several paths to one logical unit under dm-multipath resolve to the multipath device
 * (the kernel passes PR commands to every path). Several paths without one are refused
 * as ambiguous: a registration through one path would not cover the others.
 * Asynchronous reads of sysfs and /dev links only (no device I/O, nothing on the event loop).
 */
import { access, readFile, readdir, realpath } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

export type ResolveFailure = 'bad-identity' | 'not-found' | 'ambiguous';

/** Why a device identity gave no single local device. `not-found` is retried with backoff. */
export class DeviceResolutionError extends Error {
  override readonly name = 'DeviceResolutionError';
  readonly reason: ResolveFailure;
  readonly identity: string;
  constructor(reason: ResolveFailure, identity: string, message: string) {
    super(message);
    this.reason = reason;
    this.identity = identity;
  }
}

export interface ResolveOptions {
  /** Default /sys (tests point it at a fake tree). */
  sysfs?: string;
  /** Default /dev. */
  dev?: string;
}

type Parsed =
  | { kind: 'path'; path: string }
  | { kind: 'wwid' | 'nguid'; value: string }
  | { kind: 'by-path'; suffix: string };

export function parseIdentity(identity: string): Parsed {
  const s = identity.trim();
  if (s.startsWith('/')) return { kind: 'path', path: s };
  const m = /^(wwid|wwn|nguid|fc|iscsi):(.+)$/i.exec(s);
  const bad = (why: string) =>
    new DeviceResolutionError('bad-identity', identity, `device identity "${identity}": ${why}`);
  if (!m) throw bad('expected a /dev path or wwid:, nguid:, fc:, iscsi:');
  const kind = m[1]!.toLowerCase();
  const rest = m[2]!;
  if (kind === 'wwid' || kind === 'wwn' || kind === 'nguid') {
    if (hexOf(rest).length < 16 && !/^(t10|nvme)\./i.test(rest))
      throw bad('too short to name a logical unit');
    if (/^0+$/.test(hexOf(rest))) throw bad('all zero: the device reports no identity of this kind');
    return { kind: kind === 'nguid' ? 'nguid' : 'wwid', value: rest };
  }
  if (kind === 'fc') {
    const f = /^(?:0x)?([0-9a-f]{16})\/lun\/(\d+)$/i.exec(rest);
    if (!f) throw bad('expected fc:<16 hex target WWN>/lun/<n>');
    return { kind: 'by-path', suffix: `-fc-0x${f[1]!.toLowerCase()}-lun-${f[2]}` };
  }
  const i = /^([^/]+)\/(iqn\.[^/]+|eui\.[^/]+|naa\.[^/]+)\/lun\/(\d+)$/i.exec(rest);
  if (!i) throw bad('expected iscsi:<portal>/<iqn>/lun/<n>');
  const portal = i[1]!.includes(':') && !i[1]!.endsWith(']') ? i[1]! : `${i[1]}:3260`;
  return { kind: 'by-path', suffix: `ip-${portal}-iscsi-${i[2]}-lun-${i[3]}` };
}

/** Hex digits of an id without its designator prefix (naa., eui., uuid.) and separators. */
function hexOf(id: string): string {
  return id
    .trim()
    .toLowerCase()
    .replace(/^(naa|eui|uuid)\./, '')
    .replace(/[^0-9a-f]/g, '');
}

function idMatches(want: string, have: string): boolean {
  const [w, h] = [want.trim().toLowerCase(), have.trim().toLowerCase()];
  if (w === h) return true;
  const [wx, hx] = [hexOf(w), hexOf(h)];
  if (hx.length < 16 || /^0+$/.test(hx) || /^(t10|nvme)\./.test(h)) return false;
  // udev's ID_SERIAL / FC PV wwids carry the designator type as a first digit (3: NAA, 2: EUI-64).
  return wx === hx || wx === `3${hx}` || wx === `2${hx}`;
}

async function read(path: string): Promise<string | undefined> {
  return readFile(path, 'utf8').then(
    (t) => t.trim(),
    () => undefined,
  );
}

async function list(dir: string): Promise<string[]> {
  return readdir(dir).catch(() => []);
}

/** The dm-multipath device over a path device, if any. */
async function multipathOf(sysfs: string, name: string): Promise<string | undefined> {
  for (const h of await list(join(sysfs, 'block', name, 'holders')))
    if ((await read(join(sysfs, 'block', h, 'dm', 'uuid')))?.startsWith('mpath-')) return h;
  return undefined;
}

/** Resolves an identity to one block device path of this node, or throws DeviceResolutionError. */
export async function resolveDevice(identity: string, opts: ResolveOptions = {}): Promise<string> {
  const sysfs = opts.sysfs ?? '/sys';
  const dev = opts.dev ?? '/dev';
  const p = parseIdentity(identity);
  if (p.kind === 'path') return p.path;
  let names: string[];
  if (p.kind === 'by-path') {
    const dir = join(dev, 'disk', 'by-path');
    const links = (await list(dir)).filter((l) => l.endsWith(p.suffix));
    const targets = await Promise.all(links.map((l) => realpath(join(dir, l)).catch(() => undefined)));
    names = targets.flatMap((t) => (t ? [basename(t)] : []));
  } else {
    const candidates = (await list(join(sysfs, 'block'))).filter(
      (n) => !/^(loop|ram|zram|dm-|md|sr)/.test(n),
    );
    const matches = await Promise.all(
      candidates.map(async (name) => {
        const b = join(sysfs, 'block', name);
        const ids =
          p.kind === 'nguid'
            ? [await read(join(b, 'nguid'))]
            : [await read(join(b, 'device', 'wwid')), await read(join(b, 'wwid'))];
        return ids.some((id) => id !== undefined && idMatches(p.value, id));
      }),
    );
    names = candidates.filter((_, i) => matches[i]);
  }
  const devices = [
    ...new Set(await Promise.all(names.map(async (n) => (await multipathOf(sysfs, n)) ?? n))),
  ].sort();
  if (devices.length === 0)
    throw new DeviceResolutionError('not-found', identity, `no local block device has identity ${identity}`);
  if (devices.length > 1)
    throw new DeviceResolutionError(
      'ambiguous',
      identity,
      `identity ${identity} matches ${devices.map((d) => join(dev, d)).join(', ')} without a multipath device over them`,
    );
  const path = join(dev, devices[0]!);
  if (
    p.kind !== 'by-path' &&
    !(await access(path).then(
      () => true,
      () => false,
    ))
  )
    throw new DeviceResolutionError(
      'not-found',
      identity,
      `${path} (identity ${identity}) has no device node`,
    );
  return path;
}

/** What sysfs says identifies one block device (no device I/O). */
export interface DeviceIdentity {
  /** The kernel name (sdb, nvme0n1, dm-3). */
  readonly name: string;
  /** SCSI VPD 0x83 (`device/wwid`), NVMe `wwid`, or the WWID of a dm-multipath map (`dm/uuid` mpath-...). */
  readonly wwid?: string;
  /** NVMe namespace NGUID (`nguid`). */
  readonly nguid?: string;
}

/** An id sysfs shows that names something: not empty, not all zero (a device without one shows zeros). */
function usableId(id: string | undefined): string | undefined {
  return id && !/^0*$/.test(hexOf(id)) ? id : undefined;
}

/**
 * Reads the WWID and NGUID of the block device at `path` from sysfs, with the same files
 * `resolveDevice` matches. Fields are absent when sysfs has none (LIO over iSCSI on 6.1 and
 * 7.x shows no WWID: ENXIO). Never throws for a missing file.
 */
export async function readIdentity(path: string, opts: ResolveOptions = {}): Promise<DeviceIdentity> {
  const b = join(opts.sysfs ?? '/sys', 'block');
  const name = basename(await realpath(path).catch(() => path));
  const dm = await read(join(b, name, 'dm', 'uuid'));
  const wwid = usableId(
    dm?.startsWith('mpath-')
      ? dm.slice('mpath-'.length)
      : ((await read(join(b, name, 'device', 'wwid'))) ?? (await read(join(b, name, 'wwid')))),
  );
  const nguid = usableId(await read(join(b, name, 'nguid')));
  return { name, ...(wwid ? { wwid } : {}), ...(nguid ? { nguid } : {}) };
}

/**
 * Whether two devices are paths to one logical unit, by their sysfs identities: `same`
 * when every identity both show matches (at least one), `different` when one does not,
 * `unknown` when they show no identity of a common kind.
 */
export function sameLogicalUnit(a: DeviceIdentity, b: DeviceIdentity): 'same' | 'different' | 'unknown' {
  const pairs = (['wwid', 'nguid'] as const).flatMap((k) => {
    const [x, y] = [a[k], b[k]];
    return x && y ? [[x, y] as const] : [];
  });
  if (pairs.length === 0) return 'unknown';
  return pairs.every(([x, y]) => idMatches(x, y) || idMatches(y, x)) ? 'same' : 'different';
}

/**
 * If `path` is a partition (sysfs `class/block/<name>/partition`, or without sysfs the
 * name: sda1, nvme0n1p1, mmcblk0p2), the whole device it is part of, when it can be
 * derived; undefined for a whole device. Persistent Reservations are per logical unit:
 * Linux refuses PR ioctls on a partition with EPERM (block/ioctl.c blkdev_pr_allowed).
 */
export async function partitionOf(
  path: string,
  opts: ResolveOptions = {},
): Promise<{ whole: string | undefined } | undefined> {
  const dev = opts.dev ?? '/dev';
  const name = basename(await realpath(path).catch(() => path));
  const entry = join(opts.sysfs ?? '/sys', 'class', 'block', name);
  const inSysfs = await access(entry).then(
    () => true,
    () => false,
  );
  if (inSysfs) {
    if ((await read(join(entry, 'partition'))) === undefined) return undefined;
    // class/block/sda1 -> .../block/sda/sda1: the parent directory is the whole device.
    const parent = await realpath(entry).then(
      (p) => basename(dirname(p)),
      () => undefined,
    );
    return { whole: parent ? join(dev, parent) : undefined };
  }
  const m =
    /^((?:nvme\d+n\d+)|(?:mmcblk\d+)|(?:nbd\d+)|(?:loop\d+))p\d+$/.exec(name) ??
    /^((?:s|v|h|xv)d[a-z]+)\d+$/.exec(name);
  return m ? { whole: join(dev, m[1]!) } : undefined;
}
