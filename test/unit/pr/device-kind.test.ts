/**
 * The command set of a block device from sysfs (src/pr/device-kind.ts), on fake sysfs trees
 * shaped as the kernel lays them out: SCSI disks, NVMe namespaces, device-mapper maps.
 */
import { describe, expect, it } from 'vitest';
import { deviceKind } from '../../../src/pr/device-kind.js';
import { blockTree } from './fake-sysfs.js';

const SD = (n: string) =>
  `sys/devices/pci0000:00/0000:00:04.0/host2/target2:0:0/2:0:0:${n.length}/block/${n}`;
const NVME = (n: string) => `sys/devices/pci0000:00/0000:00:05.0/nvme/nvme0/${n}`;
const DM = (n: string) => `sys/devices/virtual/block/${n}`;

/** sys/class/block/<name> links and each map's slaves, as the kernel has them. */
const tree = (devices: Record<string, string>, slaves: Record<string, string[]> = {}) =>
  blockTree(devices, slaves).sysfs;

describe('deviceKind', () => {
  it('a SCSI disk -> scsi; an NVMe namespace -> nvme', async () => {
    const sysfs = tree({ sdb: SD('sdb'), nvme0n1: NVME('nvme0n1') });
    expect(await deviceKind('/dev/sdb', sysfs)).toBe('scsi');
    expect(await deviceKind('/dev/nvme0n1', sysfs)).toBe('nvme');
  });

  it('a dm map over two NVMe namespaces (dm-multipath over NVMe) -> nvme, not scsi', async () => {
    const sysfs = tree(
      { 'dm-3': DM('dm-3'), nvme0n1: NVME('nvme0n1'), nvme1n1: NVME('nvme1n1') },
      { 'dm-3': ['nvme0n1', 'nvme1n1'] },
    );
    expect(await deviceKind('/dev/dm-3', sysfs)).toBe('nvme');
  });

  it('a dm map over SCSI paths -> scsi; a map over a map over NVMe -> nvme', async () => {
    const sysfs = tree(
      {
        'dm-0': DM('dm-0'),
        sdb: SD('sdb'),
        sdc: SD('sdc'),
        'dm-1': DM('dm-1'),
        'dm-2': DM('dm-2'),
        nvme0n1: NVME('nvme0n1'),
      },
      { 'dm-0': ['sdb', 'sdc'], 'dm-2': ['dm-1'], 'dm-1': ['nvme0n1'] },
    );
    expect(await deviceKind('/dev/dm-0', sysfs)).toBe('scsi');
    expect(await deviceKind('/dev/dm-2', sysfs)).toBe('nvme');
  });

  it('a map over one SCSI and one NVMe device, or with no devices under it -> scsi', async () => {
    const sysfs = tree(
      { 'dm-4': DM('dm-4'), 'dm-5': DM('dm-5'), sdb: SD('sdb'), nvme0n1: NVME('nvme0n1') },
      { 'dm-4': ['sdb', 'nvme0n1'] },
    );
    expect(await deviceKind('/dev/dm-4', sysfs)).toBe('scsi');
    expect(await deviceKind('/dev/dm-5', sysfs)).toBe('scsi');
  });

  it('no sysfs entry (a container without /sys) -> from the name', async () => {
    const sysfs = tree({});
    expect(await deviceKind('/dev/nvme2n1', sysfs)).toBe('nvme');
    expect(await deviceKind('/dev/dm-7', sysfs)).toBe('scsi');
  });
});
