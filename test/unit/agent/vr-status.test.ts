import { describe, expect, it } from 'vitest';
import { hasSharedFields, vrStatusToWrite } from '../../../src/agent/vr-status.js';
import type { VolumeReservationStatus } from '../../../src/crd/types.js';

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
