/**
 * The paths under a device-mapper device from sysfs (src/pr/dm-paths.ts), on fake sysfs
 * trees laid out as the kernel has them: /sys/class/block/<name> links, a map's `slaves`.
 */
import { mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { addedPaths, devicePaths, devicePathsOf } from '../../../src/pr/dm-paths.js';
import { blockTree } from './fake-sysfs.js';

const SD = (n: string) => `sys/devices/platform/host2/session1/target2:0:0/2:0:0:0/block/${n}`;
const DM = (n: string) => `sys/devices/virtual/block/${n}`;

const tree = blockTree;

describe('devicePaths', () => {
  it('a multipath map over two SCSI paths -> both, sorted; a third path linked under it later -> three, and addedPaths names the new one', async () => {
    const root = tree(
      { 'dm-0': DM('dm-0'), sdc: SD('sdc'), sdb: SD('sdb'), sdd: SD('sdd') },
      { 'dm-0': ['sdc', 'sdb'] },
    );
    const before = await devicePaths(join(root.dev, 'dm-0'), root.sysfs);
    expect(before).toEqual(['sdb', 'sdc']);
    symlinkSync(join(root.sysfs, '..', SD('sdd')), join(root.sysfs, '..', DM('dm-0'), 'slaves', 'sdd'));
    const after = await devicePaths(join(root.dev, 'dm-0'), root.sysfs);
    expect(after).toEqual(['sdb', 'sdc', 'sdd']);
    expect(addedPaths(before!, after!)).toEqual(['sdd']);
    expect(addedPaths(after!, before!)).toEqual([]); // a path gone is no new path
  });

  it('/dev/mapper/<name> (a link to the dm-N node) -> the paths of dm-N', async () => {
    const root = tree({ 'dm-3': DM('dm-3'), sdb: SD('sdb'), sdc: SD('sdc') }, { 'dm-3': ['sdb', 'sdc'] });
    symlinkSync(join(root.dev, 'dm-3'), join(root.dev, 'mpatha'));
    expect(await devicePaths(join(root.dev, 'mpatha'), root.sysfs)).toEqual(['sdb', 'sdc']);
  });

  it('a map stacked on a multipath map -> the paths at the bottom', async () => {
    const root = tree(
      { 'dm-2': DM('dm-2'), 'dm-1': DM('dm-1'), sdb: SD('sdb'), sdc: SD('sdc') },
      { 'dm-2': ['dm-1'], 'dm-1': ['sdb', 'sdc'] },
    );
    expect(await devicePaths(join(root.dev, 'dm-2'), root.sysfs)).toEqual(['sdb', 'sdc']);
  });

  it('a plain disk, a map with nothing under it, or no sysfs entry -> undefined', async () => {
    const root = tree({ sdb: SD('sdb'), 'dm-5': DM('dm-5') });
    expect(await devicePaths(join(root.dev, 'sdb'), root.sysfs)).toBeUndefined();
    expect(await devicePaths(join(root.dev, 'dm-5'), root.sysfs)).toBeUndefined();
    expect(await devicePaths('/dev/nvme9n9', root.sysfs)).toBeUndefined();
  });
});

describe('devicePathsOf (the agent asks on every reconcile)', () => {
  it('a dm-N map -> its paths on every call, a path added later included', async () => {
    const root = tree({ 'dm-0': DM('dm-0'), sdb: SD('sdb'), sdc: SD('sdc') }, { 'dm-0': ['sdb'] });
    const pathsOf = devicePathsOf(root.sysfs);
    const map = { id: join(root.dev, 'dm-0') };
    expect(await pathsOf(map)).toEqual(['sdb']);
    symlinkSync(join(root.sysfs, '..', SD('sdc')), join(root.sysfs, '..', DM('dm-0'), 'slaves', 'sdc'));
    expect(await pathsOf(map)).toEqual(['sdb', 'sdc']);
  });

  it('a device whose node is not dm-N -> undefined: its slaves are not read (an entry there, which devicePaths reports, is not looked at)', async () => {
    const root = tree({ sdb: SD('sdb'), sdc: SD('sdc') });
    const pathsOf = devicePathsOf(root.sysfs);
    const sd = { id: join(root.dev, 'sdb') };
    mkdirSync(join(root.sysfs, '..', SD('sdb'), 'slaves'));
    symlinkSync(join(root.sysfs, '..', SD('sdc')), join(root.sysfs, '..', SD('sdb'), 'slaves', 'sdc'));
    expect(await devicePaths(sd.id, root.sysfs)).toEqual(['sdc']);
    expect(await pathsOf(sd)).toBeUndefined();
  });
});
