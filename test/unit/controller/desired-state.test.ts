import type { V1PersistentVolume, V1StorageClass, V1VolumeAttachment } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import {
  changesDesiredState,
  desiredVolume,
  reconcileDesiredState,
  type DesiredStateCaches,
} from '../../../src/controller/desired-state.js';
import { NotLeaderError, type Acting } from '../../../src/controller/acting.js';
import { nodeLabel } from '../../../src/crd/node-label.js';
import type { VolumeReservation } from '../../../src/crd/types.js';
import { attachmentsOf, rememberDeleted, slimDesired } from '../../../src/agent/desired-volumes.js';
import { slimPersistentVolume } from '../../../src/fence/persistent-volume.js';
import { legitimateNodes } from '../../../src/agent/cluster-view.js';

const pv = (name: string, extra: Partial<V1PersistentVolume> = {}): V1PersistentVolume =>
  slimPersistentVolume({
    metadata: { name, annotations: { 'prfence.io/fencing': 'enabled', unrelated: 'x' } },
    spec: {
      csi: { driver: 'd', volumeHandle: 'h', volumeAttributes: { wwn: '6001405abc' } },
      storageClassName: 'gold',
    },
    ...extra,
  });
const va = (name: string, node: string, pvName: string, deleting = false): V1VolumeAttachment => ({
  metadata: { name, ...(deleting ? { deletionTimestamp: new Date() } : {}) },
  spec: { attacher: 'd', nodeName: node, source: { persistentVolumeName: pvName } },
});
const vr = (name: string, extra: Partial<VolumeReservation> = {}): VolumeReservation => ({
  apiVersion: 'prfence.io/v1alpha1',
  kind: 'VolumeReservation',
  metadata: { name },
  ...extra,
});

function caches(o: {
  pvs?: V1PersistentVolume[];
  vas?: V1VolumeAttachment[];
  scs?: V1StorageClass[];
  vrs?: VolumeReservation[];
}): DesiredStateCaches {
  return {
    pv: (n) => o.pvs?.find((p) => p.metadata?.name === n),
    vasOfPv: (p) => (o.vas ?? []).filter((v) => v.spec.source.persistentVolumeName === p),
    storageClass: (n) => o.scs?.find((s) => s.metadata?.name === n),
    volumeReservation: (n) => o.vrs?.find((v) => v.metadata.name === n),
  };
}

describe('desired state of a volume (controller)', () => {
  it('attachments, device, policy annotations of PV and StorageClass -> spec; every attached node and every recorded registrant or holder -> a node label', () => {
    const d = desiredVolume(
      'pv1',
      caches({
        pvs: [pv('pv1')],
        vas: [va('va-b', 'node-b', 'pv1', true), va('va-a', 'node-a', 'pv1'), va('va-x', 'node-x', 'other')],
        scs: [
          {
            metadata: {
              name: 'gold',
              annotations: { 'prfence.io/reservation-type': 'write-exclusive', z: 'y' },
            },
            provisioner: 'd',
          },
        ],
        vrs: [
          vr('pv1', {
            status: {
              registrants: [{ node: 'node-c', key: '0000000100000001' }],
              holder: { node: 'node-d', key: '0000000100000002' },
            },
          }),
        ],
      }),
    );
    expect(d).toEqual({
      spec: {
        device: 'wwid:6001405abc',
        annotations: { 'prfence.io/fencing': 'enabled' },
        storageClass: { name: 'gold', annotations: { 'prfence.io/reservation-type': 'write-exclusive' } },
        attachments: [
          { node: 'node-a', name: 'va-a' },
          { node: 'node-b', name: 'va-b', deleting: true },
        ],
      },
      labels: {
        'node.prfence.io/node-a': 'true',
        'node.prfence.io/node-b': 'true',
        'node.prfence.io/node-c': 'true',
        'node.prfence.io/node-d': 'true',
      },
    });
  });

  it('no PV, no device identity, or neither an attachment nor a VolumeReservation -> no desired state (nothing written)', () => {
    const noDevice = slimPersistentVolume({ metadata: { name: 'pv1' }, spec: {} });
    expect(desiredVolume('pv1', caches({ vas: [va('a', 'n', 'pv1')] }))).toBeUndefined();
    expect(desiredVolume('pv1', caches({ pvs: [noDevice], vas: [va('a', 'n', 'pv1')] }))).toBeUndefined();
    expect(desiredVolume('pv1', caches({ pvs: [pv('pv1')] }))).toBeUndefined();
    // A VolumeReservation whose nodes all left: the desired state says so (no attachment, no label).
    expect(desiredVolume('pv1', caches({ pvs: [pv('pv1')], vrs: [vr('pv1')] }))).toEqual({
      spec: {
        device: 'wwid:6001405abc',
        annotations: { 'prfence.io/fencing': 'enabled' },
        storageClass: { name: 'gold' },
        attachments: [],
      },
      labels: {},
    });
  });

  it('node label: a name that fits a label name is used as is; a longer one is hashed, distinct and stable', () => {
    const long = `n${'x'.repeat(80)}.example.com`;
    expect(nodeLabel('ip-10-0-0-1.ec2.internal')).toBe('node.prfence.io/ip-10-0-0-1.ec2.internal');
    expect(nodeLabel(long)).toMatch(/^node\.prfence\.io\/h_[0-9a-f]{40}$/);
    expect(nodeLabel(long)).toBe(nodeLabel(long));
    expect(nodeLabel(long)).not.toBe(nodeLabel(`${long}x`));
  });

  it('what the controller writes, read back by a node agent -> the same legitimate nodes as from the VolumeAttachments', () => {
    const c = caches({
      pvs: [pv('pv1')],
      vas: [va('va-a', 'node-a', 'pv1'), va('va-b', 'node-b', 'pv1', true)],
    });
    const d = desiredVolume('pv1', c)!;
    const seen = slimDesired(vr('pv1', { spec: d.spec, metadata: { name: 'pv1', labels: d.labels } }));
    const nf = (name: string, key: string) => ({
      apiVersion: 'prfence.io/v1alpha1' as const,
      kind: 'NodeFence' as const,
      metadata: { name },
      status: { key },
    });
    const nfs = [nf('node-a', '0000000100000001'), nf('node-b', '0000000100000002')];
    const rule = (vasOf: (p: string) => readonly V1VolumeAttachment[]) =>
      legitimateNodes('pv1', {
        vasOf,
        nodeFences: (n) => nfs.find((x) => x.metadata.name === n),
        allNodeFences: nfs,
        nodes: () => undefined,
      });
    // node-b's attachment is being deleted: not legitimate either way.
    expect(rule(() => attachmentsOf(seen))).toEqual(rule((p) => c.vasOfPv(p)));
    expect(rule(() => attachmentsOf(seen)).map((n) => n.node)).toEqual(['node-a']);
  });
});

describe('VolumeReservation updates the controller looks at for the desired state', () => {
  const base = vr('pv-1', {
    metadata: { name: 'pv-1', labels: { [nodeLabel('node-a')]: 'true' } },
    spec: { device: 'wwid:1', attachments: [{ node: 'node-a', name: 'va-a' }] },
    status: {
      registrants: [{ node: 'node-a', key: '0000000100000001', legitimate: true }],
      holder: { node: 'node-a', key: '0000000100000001' },
      generation: 4,
    },
  });
  const withStatus = (status: VolumeReservation['status']) => ({
    ...base,
    status: { ...base.status, ...status },
  });
  it('a status write that changes neither the registrant nor the holder nodes (generation, conditions, legitimacy) -> not looked at', () => {
    expect(
      changesDesiredState(
        withStatus({
          generation: 5,
          registrants: [{ node: 'node-a', key: '0000000100000001', legitimate: false }],
        }),
        base,
      ),
    ).toBe(false);
  });
  it('a registrant node added or removed, the holder changed, the spec or a node label changed (by hand) -> looked at', () => {
    const more = withStatus({
      registrants: [
        ...base.status!.registrants!,
        { node: 'node-b', key: '0000000100000002', legitimate: true },
      ],
    });
    expect([
      changesDesiredState(more, base),
      changesDesiredState(base, more),
      changesDesiredState(withStatus({ holder: { node: 'node-b', key: '0000000100000002' } }), base),
      changesDesiredState({ ...base, spec: { ...base.spec!, attachments: [] } }, base),
      changesDesiredState({ ...base, metadata: { name: 'pv-1' } }, base),
    ]).toEqual([true, true, true, true, true]);
  });
  it('the finalizer taken off, or the VolumeReservation being deleted -> looked at', () => {
    const protectedVr = {
      ...base,
      metadata: { ...base.metadata, finalizers: ['prfence.io/reservation-protection'] },
    };
    expect([
      changesDesiredState(base, protectedVr),
      changesDesiredState(
        { ...protectedVr, metadata: { ...protectedVr.metadata, deletionTimestamp: '2026-12-02T03:00:00Z' } },
        protectedVr,
      ),
      changesDesiredState(protectedVr, protectedVr),
    ]).toEqual([true, true, false]);
  });
});

describe('desired state written (controller)', () => {
  const acting = (sent: unknown[]): Acting => ({
    rest: {
      apply: (path: string, obj: unknown) => (sent.push({ path, obj }), Promise.resolve(obj)),
    } as never,
    log: undefined as never,
    metrics: undefined,
    write: (_a, fn) => fn(),
    event: () => Promise.resolve(),
  });

  it("differs from the cached VolumeReservation -> one server-side apply of spec, node labels and the controller's finalizer; equal (other labels aside) -> nothing sent", async () => {
    const sent: unknown[] = [];
    const c = caches({ pvs: [pv('pv1')], vas: [va('va-a', 'node-a', 'pv1')] });
    expect(await reconcileDesiredState(acting(sent), c, 'pv1')).toBe('written');
    expect(sent).toEqual([
      {
        path: '/apis/prfence.io/v1alpha1/volumereservations/pv1',
        obj: expect.objectContaining({
          metadata: {
            name: 'pv1',
            labels: { 'node.prfence.io/node-a': 'true' },
            finalizers: ['prfence.io/reservation-protection'],
          },
          spec: expect.objectContaining({ attachments: [{ node: 'node-a', name: 'va-a' }] }),
        }),
      },
    ]);
    const written = (sent[0] as { obj: VolumeReservation }).obj;
    const cached = vr('pv1', {
      metadata: {
        name: 'pv1',
        labels: { ...written.metadata.labels, 'team.example.com/owner': 'db' },
        finalizers: ['example.com/other', ...written.metadata.finalizers!],
      },
      spec: written.spec!,
    });
    const again: unknown[] = [];
    const c2 = { ...c, volumeReservation: () => cached };
    expect(await reconcileDesiredState(acting(again), c2, 'pv1')).toBe('unchanged');
    expect(again).toEqual([]);
  });

  it('the finalizer: missing (taken off by hand, or a VolumeReservation an agent created) -> written again; on one being deleted, kept while it has it and never added to one without it', async () => {
    const c = caches({ pvs: [pv('pv1')], vas: [va('va-a', 'node-a', 'pv1')] });
    const first: { obj: VolumeReservation }[] = [];
    await reconcileDesiredState(acting(first), c, 'pv1');
    const written = first[0]!.obj;
    const cachedAs = (metadata: Partial<VolumeReservation['metadata']>) => ({
      ...c,
      volumeReservation: () =>
        vr('pv1', { metadata: { ...written.metadata, ...metadata }, spec: written.spec! }),
    });
    const finalizersSent = async (metadata: Partial<VolumeReservation['metadata']>) => {
      const sent: { obj: VolumeReservation }[] = [];
      const out = await reconcileDesiredState(acting(sent), cachedAs(metadata), 'pv1');
      return out === 'unchanged' ? 'unchanged' : (sent[0]!.obj.metadata.finalizers ?? 'none');
    };
    const deleting = '2026-12-02T03:00:00Z';
    expect({
      removedByHand: await finalizersSent({ finalizers: [] }),
      deletingWithIt: await finalizersSent({ deletionTimestamp: deleting }),
      deletingWithout: await finalizersSent({
        deletionTimestamp: deleting,
        finalizers: ['example.com/other'],
      }),
    }).toEqual({
      removedByHand: ['prfence.io/reservation-protection'],
      deletingWithIt: 'unchanged',
      deletingWithout: 'unchanged',
    });
    // Being deleted without it, its spec changed: written without a finalizer.
    const sent: { obj: VolumeReservation }[] = [];
    await reconcileDesiredState(
      acting(sent),
      { ...cachedAs({ deletionTimestamp: deleting, finalizers: [] }), vasOfPv: () => [] },
      'pv1',
    );
    expect(sent[0]!.obj.metadata).toEqual({ name: 'pv1', labels: {} });
  });

  it('not the leader -> the write is refused and nothing is sent', async () => {
    const sent: unknown[] = [];
    const a = {
      ...acting(sent),
      write: () => Promise.reject(new NotLeaderError('not the leader')),
    } as Acting;
    await expect(
      reconcileDesiredState(a, caches({ pvs: [pv('pv1')], vas: [va('va-a', 'node-a', 'pv1')] }), 'pv1'),
    ).rejects.toBeInstanceOf(NotLeaderError);
    expect(sent).toEqual([]);
  });
});

describe('desired state of volumes no longer labelled for the node (agent)', () => {
  it('deleted from the cache -> remembered (newest last, at most max) until added again; every event still reaches the agent', () => {
    const seen: string[] = [];
    const r = rememberDeleted<VolumeReservation>(
      {
        onAdd: (v) => seen.push(`add ${v.metadata.name}`),
        onUpdate: (v) => seen.push(`update ${v.metadata.name}`),
        onDelete: (v) => seen.push(`delete ${v.metadata.name}`),
      },
      2,
    );
    const h = r.handlers;
    h.onDelete!(vr('pv1', { spec: { device: 'wwid:1' } }));
    h.onDelete!(vr('pv2'));
    expect(r.gone.get('pv1')?.spec?.device).toBe('wwid:1');
    h.onDelete!(vr('pv3'));
    expect([...r.gone.keys()]).toEqual(['pv2', 'pv3']);
    h.onAdd!(vr('pv2'));
    h.onUpdate!(vr('pv3'), vr('pv3'));
    expect([...r.gone.keys()]).toEqual([]);
    expect(seen).toEqual(['delete pv1', 'delete pv2', 'delete pv3', 'add pv2', 'update pv3']);
  });
});
