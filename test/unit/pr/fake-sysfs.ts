import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

/**
 * A fake /sys and /dev for device resolution tests: `files` are paths relative to the root
 * with their contents, `links` symlinks to paths relative to the root.
 */
export function fakeRoot(files: Record<string, string>, links: Record<string, string> = {}) {
  const root = mkdtempSync(join(tmpdir(), 'prfence-sysfs-'));
  for (const [p, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, p)), { recursive: true });
    writeFileSync(join(root, p), `${text}\n`);
  }
  for (const [p, target] of Object.entries(links)) {
    mkdirSync(dirname(join(root, p)), { recursive: true });
    symlinkSync(join(root, target), join(root, p));
  }
  return { sysfs: join(root, 'sys'), dev: join(root, 'dev') };
}

/**
 * A fake sysfs of block devices as the kernel lays it out: `devices` maps each kernel name
 * to its device directory (sys/class/block/<name> links there, with a size file and a
 * /dev node), and `slaves` each map's devices under it.
 */
export function blockTree(devices: Record<string, string>, slaves: Record<string, string[]> = {}) {
  const files: Record<string, string> = {};
  const links: Record<string, string> = {};
  for (const [name, dir] of Object.entries(devices)) {
    files[`${dir}/size`] = '2048';
    files[`dev/${name}`] = '';
    links[`sys/class/block/${name}`] = dir;
  }
  for (const [map, under] of Object.entries(slaves))
    for (const u of under) links[`${devices[map]}/slaves/${u}`] = devices[u]!;
  return fakeRoot(files, links);
}
