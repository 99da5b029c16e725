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

describe('NodeFences as the agent caches them', () => {
  const full = (name: string) => ({
    apiVersion: 'prfence.io/v1alpha1' as const,
    kind: 'NodeFence' as const,
    metadata: { name, resourceVersion: '9', managedFields: [{ manager: 'm' }] },
    spec: {
      fenceState: 'Fenced' as const,
      reason: 'lost',
      requestedBy: 'prfence-controller',
      unfencedAt: 't0',
    },
    status: {
      key: '0000000100000001',
      nodeUID: 'u',
      phase: 'Fenced' as const,
      fencedBy: 'node-b',
      volumes: 3,
      handingOver: ['pv1'],
      proofs: [
        { volume: 'pv1', victimKey: '0000000100000001', result: 'Fenced' as const, by: 'node-b', at: 't1' },
      ],
      isolation: { proven: 1, total: 1 },
      conditions: [
        {
          type: 'Ready' as const,
          status: 'False' as const,
          reason: 'Fenced',
          message: '',
          lastTransitionTime: 't',
        },
      ],
    },
  });

  it("another node's -> only what the fence and enqueue rules read (key, mark, request, unfence, handover); proofs, conditions, isolation dropped", () => {
    expect(slim.nodeFence(full('node-a'), 'node-b')).toEqual({
      apiVersion: 'prfence.io/v1alpha1',
      kind: 'NodeFence',
      metadata: { name: 'node-a', resourceVersion: '9' },
      spec: { fenceState: 'Fenced', unfencedAt: 't0' },
      status: { key: '0000000100000001', phase: 'Fenced', fencedBy: 'node-b', handingOver: ['pv1'] },
    });
  });

  it('its own -> everything but managedFields (its status write keeps the conditions)', () => {
    const own = full('node-b');
    const { managedFields: _m, ...meta } = own.metadata;
    expect(slim.nodeFence(own, 'node-b')).toEqual({ ...own, metadata: meta });
  });
});
