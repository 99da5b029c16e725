import type { V1PersistentVolume, V1StorageClass } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { DEVICE_ANNOTATION, deviceOf, slim, storageClassOf } from '../../../src/agent/cluster-view.js';
import { enqueueRules, shouldEnqueuePvChange } from '../../../src/agent/enqueue.js';
import type { VolumeReservation } from '../../../src/crd/types.js';
import {
  FENCING_ANNOTATION,
  RESERVATION_TYPE_ANNOTATION,
  resolveVolumePolicy,
  type PolicyInputs,
} from '../../../src/fence/volume-policy.js';

const F = FENCING_ANNOTATION;
const T = RESERVATION_TYPE_ANNOTATION;
const defaults = { fencing: 'enabled', reservationType: 'write-exclusive-reg-only' } as const;
const inputs = (
  pv: Record<string, string> | undefined,
  sc?: Record<string, string>,
  d: PolicyInputs['defaults'] = defaults,
): PolicyInputs => ({
  pv: { name: 'pv-1', annotations: pv },
  ...(sc ? { storageClass: { name: 'gold', annotations: sc } } : {}),
  defaults: d,
});

describe('resolveVolumePolicy: PV annotation > StorageClass annotation > agent default', () => {
  it('no annotation anywhere -> fenced with the agent default type', () => {
    expect(resolveVolumePolicy(inputs(undefined))).toEqual({
      kind: 'fenced',
      reservationType: 'write-exclusive-reg-only',
      fencingFrom: { from: 'default' },
      typeFrom: { from: 'default' },
    });
  });

  it('StorageClass type and no PV type -> the StorageClass type', () => {
    expect(resolveVolumePolicy(inputs({}, { [T]: 'exclusive-access-reg-only' }))).toMatchObject({
      kind: 'fenced',
      reservationType: 'exclusive-access-reg-only',
      typeFrom: { from: 'storageclass', name: 'gold' },
    });
  });

  it('PV type and a different StorageClass type -> the PV type wins', () => {
    expect(
      resolveVolumePolicy(inputs({ [T]: 'write-exclusive-all-regs' }, { [T]: 'exclusive-access-reg-only' })),
    ).toMatchObject({
      kind: 'fenced',
      reservationType: 'write-exclusive-all-regs',
      typeFrom: { from: 'pv', name: 'pv-1' },
    });
  });

  it('fencingDefault disabled, no annotation -> opted out; StorageClass enabled -> fenced; PV disabled over StorageClass enabled -> opted out', () => {
    const off = { ...defaults, fencing: 'disabled' } as const;
    expect(resolveVolumePolicy(inputs(undefined, undefined, off))).toEqual({
      kind: 'opted-out',
      fencingFrom: { from: 'default' },
    });
    expect(resolveVolumePolicy(inputs(undefined, { [F]: 'enabled' }, off))).toMatchObject({
      kind: 'fenced',
      fencingFrom: { from: 'storageclass', name: 'gold' },
    });
    expect(resolveVolumePolicy(inputs({ [F]: 'disabled' }, { [F]: 'enabled' }))).toEqual({
      kind: 'opted-out',
      fencingFrom: { from: 'pv', name: 'pv-1' },
    });
    expect(resolveVolumePolicy(inputs({ [F]: 'enabled' }, { [F]: 'disabled' }))).toMatchObject({
      kind: 'fenced',
      fencingFrom: { from: 'pv', name: 'pv-1' },
    });
  });

  it('StorageClass disabled, PV without annotation -> opted out', () => {
    expect(resolveVolumePolicy(inputs({}, { [F]: 'disabled' }))).toMatchObject({ kind: 'opted-out' });
  });

  it.each([
    ['PV fencing "off"', { [F]: 'off' }, undefined, 'InvalidFencing', /"off" on PersistentVolume pv-1/],
    ['PV fencing "" (empty)', { [F]: '' }, undefined, 'InvalidFencing', /"" on PersistentVolume pv-1/],
    ['PV fencing "Enabled" (case)', { [F]: 'Enabled' }, undefined, 'InvalidFencing', /"Enabled"/],
    ['StorageClass fencing "no"', {}, { [F]: 'no' }, 'InvalidFencing', /"no" on StorageClass gold/],
    [
      'PV type "shared"',
      { [T]: 'shared' },
      undefined,
      'InvalidReservationType',
      /"shared" on PersistentVolume/,
    ],
    [
      'StorageClass type "we"',
      undefined,
      { [T]: 'we' },
      'InvalidReservationType',
      /"we" on StorageClass gold/,
    ],
  ])('%s -> invalid (no fallback to another level or the default)', (_n, pv, sc, reason, msg) => {
    const p = resolveVolumePolicy(inputs(pv, sc));
    expect(p).toMatchObject({ kind: 'invalid', reason });
    expect(p.kind === 'invalid' && p.message).toMatch(msg);
  });

  it('an invalid StorageClass type under a valid PV type -> the PV type (the PV level decides)', () => {
    expect(resolveVolumePolicy(inputs({ [T]: 'write-exclusive' }, { [T]: 'nonsense' }))).toMatchObject({
      kind: 'fenced',
      reservationType: 'write-exclusive',
    });
  });

  it('opted out with an invalid type -> opted out (nothing is reserved, the type is not read)', () => {
    expect(resolveVolumePolicy(inputs({ [F]: 'disabled', [T]: 'nonsense' }))).toMatchObject({
      kind: 'opted-out',
    });
  });
});

describe('informer transforms keep the policy inputs', () => {
  const pv: V1PersistentVolume = {
    metadata: {
      name: 'pv-1',
      resourceVersion: '7',
      annotations: { [F]: 'disabled', [T]: 'write-exclusive', 'other.io/x': 'y' },
      managedFields: [{ manager: 'x' }],
    },
    spec: {
      storageClassName: 'gold',
      csi: { driver: 'd', volumeHandle: 'h', volumeAttributes: { wwn: '600a' } },
    },
  };

  it('slim PV -> device identity, the two policy annotations and the StorageClass name; nothing else', () => {
    const s = slim.persistentVolume(pv);
    expect(s).toEqual({
      metadata: {
        name: 'pv-1',
        resourceVersion: '7',
        annotations: { [F]: 'disabled', [T]: 'write-exclusive', [DEVICE_ANNOTATION]: 'wwid:600a' },
      },
      spec: { storageClassName: 'gold' },
    });
    expect(deviceOf(s)).toBe('wwid:600a');
    expect(storageClassOf(s)).toBe('gold');
  });

  it('slim StorageClass -> only the policy annotations', () => {
    const sc: V1StorageClass = {
      metadata: { name: 'gold', resourceVersion: '3', annotations: { [T]: 'write-exclusive', a: 'b' } },
      provisioner: 'csi.example.com',
      parameters: { wwn: 'x' },
    };
    expect(slim.storageClass(sc)).toEqual({
      metadata: { name: 'gold', resourceVersion: '3', annotations: { [T]: 'write-exclusive' } },
      provisioner: '',
    });
  });

  it('PV change of a policy annotation or the StorageClass -> enqueued; of another annotation -> not', () => {
    const s = slim.persistentVolume(pv);
    const withAnn = (a: Record<string, string>) => ({ ...s, metadata: { ...s.metadata, annotations: a } });
    expect(shouldEnqueuePvChange(withAnn({ ...s.metadata!.annotations, [F]: 'enabled' }), s)).toBe(true);
    expect(shouldEnqueuePvChange({ ...s, spec: { storageClassName: 'silver' } }, s)).toBe(true);
    expect(shouldEnqueuePvChange(slim.persistentVolume({ ...pv, metadata: { ...pv.metadata } }), s)).toBe(
      false,
    );
  });

  it("StorageClass annotation change -> this node's volumes of that class are enqueued, no others", () => {
    const triggered: string[] = [];
    const rules = enqueueRules({
      node: 'n1',
      pvsOf: (n) => (n === 'n1' ? ['pv-gold', 'pv-silver'] : ['pv-other-node']),
      touched: () => ['pv-gold-left'],
      trigger: (p) => triggered.push(p),
      onOwnNodeFenceDeleted: () => undefined,
      storageClassOf: (p) => (p.startsWith('pv-gold') ? 'gold' : 'silver'),
    });
    const sc = (a: Record<string, string>): V1StorageClass => ({
      metadata: { name: 'gold', annotations: a },
      provisioner: '',
    });
    rules.storageClass.onUpdate!(sc({ a: 'b' }), sc({}));
    expect(triggered).toEqual([]);
    rules.storageClass.onUpdate!(sc({ [F]: 'disabled' }), sc({}));
    expect(triggered.sort()).toEqual(['pv-gold', 'pv-gold-left']);
  });

  it('a VolumeReservation created, deleted, or seen with a new uid (created again while the watch was down) -> its record is treated as replaced and the PV enqueued; a status-only change -> neither', () => {
    const triggered: string[] = [];
    const replaced: string[] = [];
    const rules = enqueueRules({
      node: 'n1',
      pvsOf: () => [],
      touched: () => [],
      trigger: (p) => triggered.push(p),
      onOwnNodeFenceDeleted: () => undefined,
      onRecordReplaced: (p) => replaced.push(p),
      storageClassOf: () => undefined,
    });
    const vr = (name: string, uid: string): VolumeReservation => ({
      apiVersion: 'prfence.io/v1alpha1',
      kind: 'VolumeReservation',
      metadata: { name, uid },
      spec: { device: 'wwn-x' },
    });
    const h = rules.volumeReservation;
    h.onAdd!(vr('pv-a', '1'));
    h.onDelete!(vr('pv-b', '2'));
    h.onUpdate!(vr('pv-c', '4'), vr('pv-c', '3'));
    h.onUpdate!(vr('pv-d', '5'), vr('pv-d', '5'));
    expect({ replaced, triggered }).toEqual({
      replaced: ['pv-a', 'pv-b', 'pv-c'],
      triggered: ['pv-a', 'pv-b', 'pv-c'],
    });
  });
});
