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
import { basename, join } from 'node:path';

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
