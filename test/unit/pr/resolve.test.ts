import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  DeviceResolutionError,
  partitionOf,
  readIdentity,
  resolveDevice,
  sameLogicalUnit,
} from '../../../src/pr/resolve.js';
import { fakeRoot } from './fake-sysfs.js';

const LIO = 'naa.6001405f7b1a2c3d4e5f60718293a4b5';
const NGUID = '6f1a2b3c-4d5e-6f70-8192-a3b4c5d6e7f8';

async function reason(f: () => Promise<unknown>): Promise<string | undefined> {
  try {
    await f();
    return undefined;
  } catch (e) {
    return e instanceof DeviceResolutionError ? e.reason : `other: ${String(e)}`;
  }
}

describe('device resolution (sysfs, by-path)', () => {
  const tree = fakeRoot(
    {
      'sys/block/sda/device/wwid': LIO,
      'sys/block/sdb/device/wwid': 'naa.600140500000000000000000000000bb',
      'sys/block/nvme0n1/wwid': 'eui.0011223344556677',
      'sys/block/nvme0n1/nguid': NGUID,
      'sys/block/loop0/wwid': LIO, // never a candidate
      'dev/sda': '',
      'dev/sdb': '',
      'dev/nvme0n1': '',
    },
    { 'dev/disk/by-path/pci-0000:05:00.0-fc-0x500a0981891b8dc5-lun-3': 'dev/sdb' },
  );

  it('a path -> used as is', async () => {
    expect(await resolveDevice('/dev/mapper/x', tree)).toBe('/dev/mapper/x');
  });

  it('wwid: SCSI VPD 0x83 in any spelling (naa. prefix, udev type digit, upper case) -> the one device', async () => {
    for (const id of [`wwid:${LIO}`, 'wwid:36001405f7b1a2c3d4e5f60718293a4b5', `wwn:${LIO.toUpperCase()}`])
      expect(await resolveDevice(id, tree)).toBe(join(tree.dev, 'sda'));
  });

  it('NVMe wwid and NGUID (with or without dashes) -> the namespace', async () => {
    expect(await resolveDevice('wwid:eui.0011223344556677', tree)).toBe(join(tree.dev, 'nvme0n1'));
    expect(await resolveDevice(`nguid:${NGUID.replace(/-/g, '')}`, tree)).toBe(join(tree.dev, 'nvme0n1'));
    // An NGUID is not matched against SCSI WWIDs and the other way round.
    expect(await reason(() => resolveDevice(`nguid:${LIO.slice(4)}`, tree))).toBe('not-found');
  });

  it('in-tree FC target WWN + LUN -> the by-path link target', async () => {
    expect(await resolveDevice('fc:500a0981891b8dc5/lun/3', tree)).toBe(join(tree.dev, 'sdb'));
    expect(await reason(() => resolveDevice('fc:500a0981891b8dc5/lun/4', tree))).toBe('not-found');
  });

  it('in-tree iSCSI portal (default port 3260) + IQN + LUN -> the by-path link target', async () => {
    const t = fakeRoot(
      { 'dev/sdc': '' },
      { 'dev/disk/by-path/ip-10.0.0.5:3260-iscsi-iqn.2003-01.org.linux-iscsi.t:sn.1-lun-0': 'dev/sdc' },
    );
    expect(await resolveDevice('iscsi:10.0.0.5/iqn.2003-01.org.linux-iscsi.t:sn.1/lun/0', t)).toBe(
      join(t.dev, 'sdc'),
    );
  });

  it('two paths under dm-multipath -> the multipath device; two paths without one -> ambiguous', async () => {
    const mp = fakeRoot({
      'sys/block/sdc/device/wwid': LIO,
      'sys/block/sdd/device/wwid': LIO,
      'sys/block/sdc/holders/dm-2': '',
      'sys/block/sdd/holders/dm-2': '',
      'sys/block/dm-2/dm/uuid': 'mpath-36001405f7b1a2c3d4e5f60718293a4b5',
      'dev/dm-2': '',
    });
    expect(await resolveDevice(`wwid:${LIO}`, mp)).toBe(join(mp.dev, 'dm-2'));
    const two = fakeRoot({ 'sys/block/sdc/device/wwid': LIO, 'sys/block/sdd/device/wwid': LIO });
    expect(await reason(() => resolveDevice(`wwid:${LIO}`, two))).toBe('ambiguous');
  });

  it('a holder that is not multipath (e.g. LVM) -> the path device itself', async () => {
    const lvm = fakeRoot({
      'sys/block/sde/device/wwid': LIO,
      'sys/block/sde/holders/dm-0': '',
      'sys/block/dm-0/dm/uuid': 'LVM-abc',
      'dev/sde': '',
    });
    expect(await resolveDevice(`wwid:${LIO}`, lvm)).toBe(join(lvm.dev, 'sde'));
  });

  it.each([
    'sda',
    'wwid:1234',
    'nguid:00000000-0000-0000-0000-000000000000',
    'fc:nothex/lun/1',
    'iscsi:10.0.0.1/lun/0',
    'serial:ABC',
  ])('malformed identity %s -> bad-identity', async (id) => {
    expect(await reason(() => resolveDevice(id, tree))).toBe('bad-identity');
  });
});

describe('identity of one device, partitions (sysfs)', () => {
  const t = fakeRoot(
    {
      'sys/block/sda/device/wwid': LIO,
      'sys/block/sdb/device/wwid': LIO,
      'sys/block/sdc/device/wwid': 'naa.600140500000000000000000000000cc',
      'sys/block/dm-1/dm/uuid': 'mpath-36001405f7b1a2c3d4e5f60718293a4b5',
      'sys/block/nvme0n1/wwid': 'eui.0011223344556677',
      'sys/block/nvme0n1/nguid': NGUID,
      'sys/block/nvme1n1/wwid': 'eui.0011223344556677',
      'sys/block/nvme1n1/nguid': NGUID,
      'sys/block/nvme2n1/nguid': '00000000-0000-0000-0000-000000000000',
      'sys/devices/virtual/block/sda/sda1/partition': '1',
      'sys/devices/virtual/block/sda/dev': '8:0',
      'dev/sda': '',
    },
    {
      'sys/class/block/sda1': 'sys/devices/virtual/block/sda/sda1',
      'sys/class/block/sda': 'sys/devices/virtual/block/sda',
    },
  );

  it('SCSI paths, a multipath map, NVMe namespaces -> their WWID / NGUID; zeros and missing files -> none', async () => {
    expect(await readIdentity('/dev/sda', t)).toEqual({ name: 'sda', wwid: LIO });
    expect(await readIdentity('/dev/dm-1', t)).toEqual({
      name: 'dm-1',
      wwid: '36001405f7b1a2c3d4e5f60718293a4b5',
    });
    expect(await readIdentity('/dev/nvme0n1', t)).toEqual({
      name: 'nvme0n1',
      wwid: 'eui.0011223344556677',
      nguid: NGUID,
    });
    expect(await readIdentity('/dev/nvme2n1', t)).toEqual({ name: 'nvme2n1' });
    expect(await readIdentity('/dev/sdz', t)).toEqual({ name: 'sdz' });
  });

  it('two paths of one LU -> same (SCSI, multipath spelling, NVMe); another LU -> different; no identity -> unknown', async () => {
    const id = (n: string) => readIdentity(`/dev/${n}`, t);
    expect(sameLogicalUnit(await id('sda'), await id('sdb'))).toBe('same');
    expect(sameLogicalUnit(await id('sda'), await id('dm-1'))).toBe('same');
    expect(sameLogicalUnit(await id('nvme0n1'), await id('nvme1n1'))).toBe('same');
    expect(sameLogicalUnit(await id('sda'), await id('sdc'))).toBe('different');
    expect(sameLogicalUnit(await id('sda'), await id('nvme0n1'))).toBe('different');
    expect(sameLogicalUnit(await id('sda'), await id('sdz'))).toBe('unknown');
    expect(sameLogicalUnit(await id('nvme2n1'), await id('nvme0n1'))).toBe('unknown');
  });

  it('a partition -> its whole device (sysfs parent, else the name); a whole device -> undefined', async () => {
    expect(await partitionOf('/dev/sda1', t)).toEqual({ whole: join(t.dev, 'sda') });
    expect(await partitionOf('/dev/sda', t)).toBeUndefined();
    // Not in this sysfs: by name.
    expect(await partitionOf('/dev/nvme0n1p2', t)).toEqual({ whole: join(t.dev, 'nvme0n1') });
    expect(await partitionOf('/dev/sdab12', t)).toEqual({ whole: join(t.dev, 'sdab') });
    expect(await partitionOf('/dev/mmcblk0p1', t)).toEqual({ whole: join(t.dev, 'mmcblk0') });
    expect(await partitionOf('/dev/nvme0n1', t)).toBeUndefined();
    expect(await partitionOf('/dev/dm-1', t)).toBeUndefined();
  });
});
