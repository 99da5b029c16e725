/**
 * The paths under a device-mapper device (dm-multipath), from sysfs: the block devices at
 * the bottom of its `slaves` tree (/sys/class/block/<dm-N>/slaves, followed through
 * stacked maps). A PR command sent to the map goes to every path the map has at that
 * moment (the kernel's dm_pr_register walks them); a path added to the map later carries
 * no registration until the key is registered again through the map. The agent compares
 * the path set with the one its key was last registered through (docs/design.md
 * "Multipath"). A property of the Linux device, not of the PR port (pr-device.ts).
 * Asynchronous reads of sysfs only (fs/promises), nothing on the event loop.
 */
import { readdir, realpath } from 'node:fs/promises';
import { basename, join } from 'node:path';

/** Stacking deeper than this is taken as a loop in a (fake or broken) sysfs. */
const MAX_DEPTH = 8;

/**
 * The kernel names (sdb, nvme0n1) of the paths under the device at `dev` (a /dev path,
 * /dev/mapper/<name>, or a kernel name such as dm-3), sorted; undefined for a device with
 * nothing under it (not a map, or no sysfs).
 */
export async function devicePaths(dev: string, sysfs = '/sys'): Promise<string[] | undefined> {
  return pathsUnder(basename(await realpath(dev).catch(() => dev)), sysfs);
}

async function pathsUnder(name: string, sysfs: string): Promise<string[] | undefined> {
  const leaves = new Set<string>();
  await collect(name, sysfs, 0, leaves);
  // The device itself as its only leaf: nothing under it.
  if (leaves.size === 0 || (leaves.size === 1 && leaves.has(name))) return undefined;
  return [...leaves].sort();
}

async function collect(name: string, sysfs: string, depth: number, out: Set<string>): Promise<void> {
  const under =
    depth >= MAX_DEPTH
      ? []
      : await readdir(join(sysfs, 'class', 'block', name, 'slaves')).catch(() => [] as string[]);
  if (under.length === 0) {
    out.add(name);
    return;
  }
  await Promise.all(under.map((n) => collect(n, sysfs, depth + 1, out)));
}

/**
 * `devicePaths` for the agent's devices, which asks it on every reconcile: a device whose
 * kernel name is not a device-mapper one (dm-N) has no paths under it, and is looked at
 * once (one realpath), not on every call. The device's node does not change while it is
 * open.
 */
export function devicePathsOf(
  sysfs = '/sys',
): (device: { readonly id: string }) => Promise<string[] | undefined> {
  const notMaps = new WeakSet<object>();
  return async (device) => {
    if (notMaps.has(device)) return undefined;
    const name = basename(await realpath(device.id).catch(() => device.id));
    if (!name.startsWith('dm-')) {
      notMaps.add(device);
      return undefined;
    }
    return pathsUnder(name, sysfs);
  };
}

/** The paths in `now` that are not in `known` (sorted as `now`). */
export function addedPaths(known: readonly string[], now: readonly string[]): string[] {
  return now.filter((p) => !known.includes(p));
}
