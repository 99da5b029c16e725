import { describe, expect, it } from 'vitest';
import { fenceRecordPatch, type FenceRecord } from '../../../src/agent/fence-record-patch.js';
import type { VolumeReservation, VolumeReservationStatus } from '../../../src/crd/types.js';
import { applyJsonPatch, PatchFailed } from './json-patch.js';

const A = '0000000100000001';
const A_EARLIER = '0000000100000011';
const B = '0000000100000002';
const last = { victimNode: 'node-a', victimKey: A, by: 'node-b', at: 't1', result: 'Fenced' as const };
const fencedA = { node: 'node-a', key: A, at: 't1' };

const vr = (status?: VolumeReservationStatus): VolumeReservation => ({
  apiVersion: 'prfence.io/v1alpha1',
  kind: 'VolumeReservation',
  metadata: { name: 'pv1', resourceVersion: '7' },
  ...(status ? { status } : {}),
});

const record = (r: Partial<FenceRecord> = {}): FenceRecord => ({
  lastFence: last,
  fencedKeys: [fencedA],
  removed: [fencedA],
  closeIntent: true,
  ...r,
});

/** The status after node-b's patch, computed from and applied to `before`. */
const patched = (before: VolumeReservation, r: FenceRecord) =>
  applyJsonPatch(before, fenceRecordPatch('7', before.status, 'node-b', r)).status;

describe('the fence record as one JSON patch (fenceRecordPatch)', () => {
  it("node-b fenced node-a -> lastFence and fencedKeys recorded, node-a's entry with the removed key gone, node-b's entry kept, node-b's intent removed", () => {
    const before = vr({
      registrants: [
        { node: 'node-a', key: A, legitimate: false },
        { node: 'node-b', key: B, legitimate: true },
      ],
      fenceIntent: { victimKey: A, victimNode: 'node-a', by: 'node-b', at: 't0', basis: 'b' },
    });
    expect(patched(before, record())).toEqual({
      registrants: [{ node: 'node-b', key: B, legitimate: true }],
      lastFence: last,
      fencedKeys: [fencedA],
    });
  });

  it('an entry of the victim node with another key (a new incarnation) -> stays; an entry of the removed key under another node name -> stays', () => {
    const before = vr({
      registrants: [
        { node: 'node-a', key: A_EARLIER, legitimate: false },
        { node: 'node-c', key: A, legitimate: false },
      ],
    });
    expect(patched(before, record())?.registrants).toEqual(before.status!.registrants);
  });

  it('two removed keys of two nodes -> both entries gone, the entry between them kept (removed from the end, the indexes hold)', () => {
    const fencedC = { node: 'node-c', key: '0000000100000003', at: 't1' };
    const before = vr({
      registrants: [
        { node: 'node-a', key: A, legitimate: false },
        { node: 'node-b', key: B, legitimate: true },
        { node: 'node-c', key: fencedC.key, legitimate: false },
      ],
    });
    const r = record({ fencedKeys: [fencedA, fencedC], removed: [fencedA, fencedC] });
    expect(patched(before, r)?.registrants).toEqual([{ node: 'node-b', key: B, legitimate: true }]);
  });

  it("another node's intent -> stays; closeIntent false -> this node's intent stays", () => {
    const theirs = { victimKey: A, victimNode: 'node-a', by: 'node-c', at: 't0', basis: 'c' };
    expect(patched(vr({ fenceIntent: theirs }), record())?.fenceIntent).toEqual(theirs);
    const mine = { ...theirs, by: 'node-b' };
    expect(patched(vr({ fenceIntent: mine }), record({ closeIntent: false }))?.fenceIntent).toEqual(mine);
  });

  it('no fenced key left -> fencedKeys removed; no lastFence given -> the recorded one stays', () => {
    const before = vr({ lastFence: last, fencedKeys: [fencedA] });
    expect(patched(before, record({ lastFence: undefined, fencedKeys: [], removed: [] }))).toEqual({
      lastFence: last,
    });
  });

  it('a VolumeReservation without status -> the status is added and the record lands', () => {
    expect(patched(vr(), record())).toEqual({ lastFence: last, fencedKeys: [fencedA] });
  });

  it('nothing to change -> no patch; a patch starts with the test of the read resourceVersion and is refused on another', () => {
    const done = vr({ lastFence: last, fencedKeys: [fencedA] });
    expect(fenceRecordPatch('7', done.status, 'node-b', record())).toEqual([]);
    const ops = fenceRecordPatch('7', vr({}).status, 'node-b', record());
    expect(ops[0]).toEqual({ op: 'test', path: '/metadata/resourceVersion', value: '7' });
    const newer = { ...vr({}), metadata: { name: 'pv1', resourceVersion: '8' } };
    expect(() => applyJsonPatch(newer, ops)).toThrow(PatchFailed);
  });
});
