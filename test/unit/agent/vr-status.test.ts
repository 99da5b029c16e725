import { describe, expect, it } from 'vitest';
import {
  hasSharedFields,
  keepingOwnRecord,
  orphanedConditions,
  vrStatusToWrite,
} from '../../../src/agent/vr-status.js';
import type { VolumeReservation, VolumeReservationStatus } from '../../../src/crd/types.js';

const reserved = (at: string, status: 'True' | 'False' = 'True') => ({
  type: 'Reserved' as const,
  status,
  reason: status === 'True' ? 'Reserved' : 'NotReserved',
  message: 'x',
  lastTransitionTime: at,
});

describe('vrStatusToWrite', () => {
  const newer: VolumeReservationStatus = {
    registrants: [{ node: 'b', key: '00000000000000b2', legitimate: true }],
    generation: 7,
    holder: { node: 'b', key: '00000000000000b2' },
    conditions: [reserved('2026-01-01T00:00:02Z')],
  };

  it('an observation older than the record (lower PR generation) keeps only the own registrants entry', () => {
    const late: VolumeReservationStatus = {
      registrants: [{ node: 'a', key: '00000000000000a1', legitimate: true }],
      generation: 5,
      holder: { node: 'a', key: '00000000000000a1' },
      conditions: [reserved('2026-01-01T00:00:03Z')],
    };
    const w = vrStatusToWrite(late, newer);
    expect(w.stale).toBe(true);
    expect(w.status).toEqual({ registrants: late.registrants });
    expect(hasSharedFields(w.status)).toBe(false);
  });

  it('an equal or newer observation is written whole', () => {
    const same = { ...newer, holder: { node: 'b', key: '00000000000000b2' } };
    expect(vrStatusToWrite(same, newer).stale).toBe(false);
    const next = { ...newer, generation: 8, conditions: undefined };
    expect(vrStatusToWrite(next, newer)).toEqual({ status: next, stale: false });
    expect(vrStatusToWrite(next, undefined).status).toBe(next);
  });

  it('a condition keeps its lastTransitionTime while its status is unchanged, and takes the new one on a change', () => {
    const obs = { ...newer, conditions: [reserved('2026-01-01T00:09:00Z')] };
    expect(vrStatusToWrite(obs, newer).status.conditions?.[0]?.lastTransitionTime).toBe(
      '2026-01-01T00:00:02Z',
    );
    const flipped = { ...newer, conditions: [reserved('2026-01-01T00:09:00Z', 'False')] };
    expect(vrStatusToWrite(flipped, newer).status.conditions?.[0]?.lastTransitionTime).toBe(
      '2026-01-01T00:09:00Z',
    );
  });
});

const ready = (status: 'True' | 'False', reason: string) => ({
  type: 'Ready' as const,
  status,
  reason,
  message: 'x',
  lastTransitionTime: '2026-01-01T00:00:00Z',
});

describe('vrStatusToWrite: a fallback Ready (a node that cannot read the device)', () => {
  const missing: VolumeReservationStatus = {
    registrants: [],
    conditions: [
      { ...ready('False', 'DeviceNotFound'), type: 'DeviceFound' },
      ready('False', 'DeviceNotFound'),
    ],
  };

  it('nothing recorded, or another fallback recorded -> written', () => {
    expect(vrStatusToWrite(missing, undefined, { fallback: true })).toEqual({
      status: missing,
      stale: false,
    });
    const w = vrStatusToWrite(
      missing,
      { conditions: [ready('False', 'RegistrationBlocked')] },
      { fallback: true },
    );
    expect(w.yielded).toBeUndefined();
    expect(w.status.conditions?.map((c) => `${c.type}=${c.reason}`)).toEqual([
      'DeviceFound=DeviceNotFound',
      'Ready=DeviceNotFound',
    ]);
  });

  it('a node that read the device recorded Ready -> the fallback yields (its other conditions stay)', () => {
    const w = vrStatusToWrite(missing, { conditions: [ready('True', 'Reserved')] }, { fallback: true });
    expect(w.yielded).toBe(true);
    expect(w.status.conditions?.map((c) => c.type)).toEqual(['DeviceFound']);
  });

  it('not a fallback (the node that records the device) -> its Ready replaces any', () => {
    const actor: VolumeReservationStatus = { registrants: [], conditions: [ready('True', 'Reserved')] };
    const w = vrStatusToWrite(actor, { conditions: [ready('False', 'DeviceNotFound')] });
    expect(w.yielded).toBeUndefined();
    expect(w.status.conditions).toEqual(actor.conditions);
  });
});

describe('orphanedConditions', () => {
  const ALL = ['status', 'reason', 'message', 'lastTransitionTime'];
  /** Per condition type: true (every field), false (the key only), or the fields owned. */
  const fields = (types: Record<string, boolean | string[]>) => ({
    'f:status': {
      'f:conditions': Object.fromEntries(
        Object.entries(types).map(([t, owned]) => [
          `k:{"type":"${t}"}`,
          Object.fromEntries(
            ['.', 'type', ...(owned === true ? ALL : owned === false ? [] : owned)].map((f) => [
              f === '.' ? f : `f:${f}`,
              {},
            ]),
          ),
        ]),
      ),
    },
  });
  const vr = (managed: [string, Record<string, boolean | string[]>][]): VolumeReservation => ({
    apiVersion: 'prfence.io/v1alpha1',
    kind: 'VolumeReservation',
    metadata: {
      name: 'pv',
      managedFields: managed.map(([manager, t]) => ({ manager, subresource: 'status', fieldsV1: fields(t) })),
    },
    status: {
      conditions: [ready('False', 'DeviceNotFound'), { ...ready('True', 'Reserved'), type: 'Reserved' }],
    },
  });

  it('values owned only by this manager, the key also by another, and omitted now -> orphaned', () => {
    const v = vr([
      ['prfence-agent/a', { Ready: true, Reserved: true }],
      ['prfence-agent/b', { Ready: false }],
    ]);
    expect(orphanedConditions(v, 'prfence-agent/a', { registrants: [] })).toEqual(['Ready']);
  });

  it('a required field owned only by this manager, others owning the rest of the entry (a forced apply took the message) -> orphaned', () => {
    const v = vr([
      ['prfence-agent/a', { Ready: ['status', 'reason', 'lastTransitionTime'] }],
      ['prfence-agent/b', { Ready: ['status', 'reason', 'message'] }],
    ]);
    expect(orphanedConditions(v, 'prfence-agent/a', {})).toEqual(['Ready']);
    // Every required field co-owned by b: the entry stays whole without a.
    const whole = vr([
      ['prfence-agent/a', { Ready: ['status', 'reason', 'lastTransitionTime'] }],
      ['prfence-agent/b', { Ready: true }],
    ]);
    expect(orphanedConditions(whole, 'prfence-agent/a', {})).toEqual([]);
  });

  it('still written, owned by nobody else, or values co-owned -> not orphaned', () => {
    const v = vr([
      ['prfence-agent/a', { Ready: true }],
      ['prfence-agent/b', { Ready: false }],
    ]);
    expect(orphanedConditions(v, 'prfence-agent/a', { conditions: [ready('False', 'NotReserved')] })).toEqual(
      [],
    );
    expect(orphanedConditions(vr([['prfence-agent/a', { Ready: true }]]), 'prfence-agent/a', {})).toEqual([]);
    const shared = vr([
      ['prfence-agent/a', { Ready: true }],
      ['prfence-agent/b', { Ready: true }],
    ]);
    expect(orphanedConditions(shared, 'prfence-agent/a', {})).toEqual([]);
    expect(orphanedConditions(v, 'prfence-agent/b', {})).toEqual([]);
  });
});

describe('keepingOwnRecord (the device could not be read on this node)', () => {
  const missing: VolumeReservationStatus = {
    conditions: [{ ...reserved('2026-01-01T00:00:04Z', 'False'), type: 'Reserved' as const }],
  };
  const recorded: VolumeReservationStatus = {
    registrants: [
      { node: 'a', key: '00000000000000a1', legitimate: true },
      { node: 'b', key: '00000000000000b2', legitimate: true },
    ],
    generation: 7,
    reservationType: 'write-exclusive-reg-only',
    holder: { node: 'b', key: '00000000000000b2' },
    foreignKeys: 0,
    device: { identity: 'wwn-x', kind: 'scsi' },
  };

  it("the recorded holder -> its registrant entry, the holder and the device's fields stay; other nodes' entries are not its to write", () => {
    expect(keepingOwnRecord(missing, recorded, 'b')).toEqual({
      ...missing,
      registrants: [{ node: 'b', key: '00000000000000b2', legitimate: true }],
      holder: recorded.holder,
      generation: 7,
      reservationType: 'write-exclusive-reg-only',
      foreignKeys: 0,
      device: recorded.device,
    });
  });

  it('a registrant that does not hold -> only its registrant entry stays; nothing recorded -> none', () => {
    expect(keepingOwnRecord(missing, recorded, 'a')).toEqual({
      ...missing,
      registrants: [{ node: 'a', key: '00000000000000a1', legitimate: true }],
    });
    expect(keepingOwnRecord(missing, undefined, 'a')).toEqual({ ...missing, registrants: [] });
  });
});
