import type { V1PersistentVolume } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { DEVICE_ANNOTATION, deviceOf, slim } from '../../../src/agent/cluster-view.js';

const pv = (spec: V1PersistentVolume['spec'], annotations?: Record<string, string>): V1PersistentVolume => ({
  metadata: { name: 'p', resourceVersion: '7', ...(annotations ? { annotations } : {}) },
  spec,
});

describe('a PV -> its device identity (DESIGN.md order)', () => {
  it.each<[string, V1PersistentVolume, string | undefined]>([
    [
      'annotation wins over everything',
      pv({ fc: { wwids: ['3600a0980'] } }, { [DEVICE_ANNOTATION]: '/dev/sdz' }),
      '/dev/sdz',
    ],
    [
      'CSI volumeAttributes prfence.io/device',
      pv({ csi: { driver: 'd', volumeHandle: 'h', volumeAttributes: { [DEVICE_ANNOTATION]: 'nguid:ab' } } }),
      'nguid:ab',
    ],
    [
      'CSI volumeAttributes WWN (any case)',
      pv({ csi: { driver: 'd', volumeHandle: 'h', volumeAttributes: { WWN: '600a0980383' } } }),
      'wwid:600a0980383',
    ],
    [
      'CSI volumeAttributes nguid',
      pv({ csi: { driver: 'd', volumeHandle: 'h', volumeAttributes: { nguid: 'ffee' } } }),
      'nguid:ffee',
    ],
    ['in-tree FC wwids', pv({ fc: { wwids: ['3600508b400105e21'] } }), 'wwid:3600508b400105e21'],
    [
      'in-tree FC target WWN + LUN',
      pv({ fc: { targetWWNs: ['500a0981891b8dc5'], lun: 2 } }),
      'fc:500a0981891b8dc5/lun/2',
    ],
    [
      'in-tree iSCSI',
      pv({ iscsi: { targetPortal: '10.0.0.5', iqn: 'iqn.2003-01.org.x:t', lun: 1 } }),
      'iscsi:10.0.0.5/iqn.2003-01.org.x:t/lun/1',
    ],
    ['a CSI volume with nothing prfence can use', pv({ csi: { driver: 'd', volumeHandle: 'h' } }), undefined],
  ])('%s', (_what, p, want) => {
    expect(deviceOf(p)).toBe(want);
    // The cached, slimmed PV keeps exactly the identity.
    expect(deviceOf(slim.persistentVolume(p))).toBe(want);
  });
});
