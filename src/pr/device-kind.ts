/**
 * Which command set a block device speaks, SCSI or NVMe, from sysfs. A device-mapper
 * device (dm-multipath, or any stacked map) speaks the command set of the devices under
 * it: its table's devices are its `slaves` in sysfs, and the PR ioctls and the read
 * pass-throughs go to them. A map whose devices are all NVMe namespaces is NVMe; any other
 * map, SCSI.
 */
import { readdir, readlink } from 'node:fs/promises';
import { basename, join } from 'node:path';

export type DeviceKind = 'scsi' | 'nvme';

/** Stacking deeper than this is taken as a loop in a (fake or broken) sysfs. */
const MAX_DEPTH = 8;

/**
 * The kind of the block device `dev` (a /dev path or a kernel name such as dm-3). Without
 * sysfs (containers without /sys), from the name: nvme* is NVMe, anything else SCSI.
 */
export async function deviceKind(dev: string, sysfs = '/sys'): Promise<DeviceKind> {
  return kindOf(basename(dev), sysfs, 0);
}

async function kindOf(name: string, sysfs: string, depth: number): Promise<DeviceKind> {
  const byName: DeviceKind = name.startsWith('nvme') ? 'nvme' : 'scsi';
  const entry = join(sysfs, 'class', 'block', name);
  let target: string;
  try {
    target = await readlink(entry);
  } catch {
    return byName;
  }
  // NVMe namespaces sit under .../nvme/nvmeX/ or, with native multipath, .../nvme-subsystem/.
  if (target.includes('/nvme')) return 'nvme';
  if (depth >= MAX_DEPTH) return 'scsi';
  const under = await readdir(join(entry, 'slaves')).catch(() => [] as string[]);
  if (under.length === 0) return 'scsi';
  const kinds = await Promise.all(under.map((n) => kindOf(n, sysfs, depth + 1)));
  return kinds.every((k) => k === 'nvme') ? 'nvme' : 'scsi';
}
