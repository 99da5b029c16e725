/**
 * `prfence device release-all --key KEY [DEVICE...] --yes`: takes one node's key off every
 * device it is registered on, for uninstall (docs/operations.md "Uninstall"). Run on that
 * node once its agent is gone, on purpose only: it is the one command that lets a node's
 * own protection go.
 *
 * Per device path (an I_T nexus for SCSI, a controller for NVMe):
 * 1. READ KEYS: the key is not there -> nothing is sent.
 * 2. READ RESERVATION: held with the key -> RELEASE with the held type (a release through
 *    a path that does not hold it is a no-op, SPC-4 5.13.11.2.2).
 * 3. REGISTER key -> 0 (unregister this path). A reservation conflict means the key is
 *    registered through another path of this host, not this one: reported, not an error.
 * 4. Read back: the key is gone from every device it was found on, or the command fails
 *    (exit 3) naming the devices that still show it.
 *
 * Without DEVICE, the node's block devices are scanned in sysfs: SCSI disks (sd*), NVMe
 * namespaces (nvme*n*) and dm-multipath maps; a path that belongs to a multipath map is
 * left to the map (the kernel passes PR commands to every path). Devices without PR
 * support are skipped.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ConflictError, UnsupportedError } from '../pr/errors.js';
import { formatKey, type PrKey } from '../pr/key.js';
import type { PrDevice } from '../pr/pr-device.js';
import type { ResolveOptions } from '../pr/resolve.js';

export type ReleaseResult =
  /** The key was not registered there: nothing sent. */
  | 'not-registered'
  /** Unregistered through this path (after releasing the reservation it held). */
  | 'unregistered'
  /** Listed, but registered through another path of this host (REGISTER conflicted). */
  | 'other-path'
  /** No PR support (scan only): nothing sent. */
  | 'skipped';

export interface ReleaseOutcome {
  device: string;
  result: ReleaseResult;
  /** The reservation was held with the key and released. */
  released?: string;
  /** Why skipped. */
  reason?: string;
}

/** One device path, shown as `device`: release and unregister `key` there (steps 1-3 of the module doc). */
export async function releaseKeyOn(
  d: PrDevice,
  device: string,
  key: PrKey,
  skipUnsupported: boolean,
): Promise<ReleaseOutcome> {
  let keys: readonly PrKey[];
  try {
    keys = (await d.readKeys()).keys;
  } catch (e) {
    if (skipUnsupported && e instanceof UnsupportedError)
      return { device, result: 'skipped', reason: e.message };
    throw e;
  }
  if (!keys.includes(key)) return { device, result: 'not-registered' };
  const r = await d.readReservation();
  let released: string | undefined;
  if (r.key === key && r.type) {
    await d.release(key, r.type);
    released = r.type;
  }
  try {
    await d.register(key, 0n);
  } catch (e) {
    if (e instanceof ConflictError)
      return { device, result: 'other-path', ...(released ? { released } : {}) };
    throw e;
  }
  return { device, result: 'unregistered', ...(released ? { released } : {}) };
}

const SCANNED = /^(sd[a-z]+|nvme\d+n\d+|dm-\d+)$/;

/**
 * The node's block devices that can carry a reservation, as /dev paths: SCSI disks, NVMe
 * namespaces, dm-multipath maps; paths of a map (sysfs holders) and other dm targets left out.
 */
export async function scanBlockDevices(where: ResolveOptions = {}): Promise<string[]> {
  const block = join(where.sysfs ?? '/sys', 'block');
  const dev = where.dev ?? '/dev';
  const out: string[] = [];
  for (const name of (await readdir(block)).sort()) {
    if (!SCANNED.test(name)) continue;
    const holders = await readdir(join(block, name, 'holders')).catch(() => []);
    if (holders.length > 0) continue;
    if (name.startsWith('dm-')) {
      const uuid = await readFile(join(block, name, 'dm', 'uuid'), 'utf8').catch(() => '');
      if (!uuid.startsWith('mpath-')) continue;
    }
    out.push(join(dev, name));
  }
  return out;
}

/** The devices (by path) that still list `key` on read back (step 4). */
export async function stillRegistered(devices: ReadonlyMap<string, PrDevice>, key: PrKey): Promise<string[]> {
  const left: string[] = [];
  for (const [path, d] of devices) if ((await d.readKeys()).keys.includes(key)) left.push(path);
  return left;
}

/** One line per device for people. */
export function describeOutcome(o: ReleaseOutcome, key: PrKey): string {
  const k = formatKey(key);
  switch (o.result) {
    case 'not-registered':
      return `${o.device}: key ${k} not registered; nothing sent`;
    case 'unregistered':
      return `${o.device}: ${o.released ? `released the ${o.released} reservation, ` : ''}unregistered key ${k}`;
    case 'other-path':
      return `${o.device}: key ${k} is registered through another path of this host, not this one`;
    case 'skipped':
      return `${o.device}: skipped (${o.reason})`;
  }
}
