import { describe, expect, it } from 'vitest';
import type { NodeFence, VolumeReservation } from '../../../src/crd/types.js';
import { evaluateProof, registrationOnRecord } from '../../../src/controller/isolation-proof.js';

const vr = (status: VolumeReservation['status']): VolumeReservation => ({
  apiVersion: 'prfence.io/v1alpha1',
  kind: 'VolumeReservation',
  metadata: { name: 'pv' },
  status,
});
const KEY = { x: 'abcdef0000000001', y: 'abcdef0000000002', z: 'abcdef0000000003' };
const intent = { victimKey: KEY.y, victimNode: 'y', by: 'z', at: '2026-12-01T00:00:00Z' };

describe('registration on record (proof of isolation)', () => {
  it('an open intent names the node as its victim or as an earlier victim (a second fence of the fencer) -> not isolated yet: a fence is under way', () => {
    expect({
      victim: registrationOnRecord(vr({ fenceIntent: intent }), 'y', KEY.y),
      earlierByNode: registrationOnRecord(
        vr({ fenceIntent: { ...intent, earlierVictims: [{ victimKey: KEY.x, victimNode: 'x' }] } }),
        'x',
        undefined,
      ),
      earlierByKey: registrationOnRecord(
        vr({ fenceIntent: { ...intent, earlierVictims: [{ victimKey: KEY.x }] } }),
        'x',
        KEY.x,
      ),
    }).toEqual({
      victim: 'a fence is under way (intent by z)',
      earlierByNode: 'a fence is under way (intent by z)',
      earlierByKey: 'a fence is under way (intent by z)',
    });
  });

  it('an open intent that names other nodes only, and no registrant or holder entry -> nothing on record', () => {
    const s = { fenceIntent: { ...intent, earlierVictims: [{ victimKey: KEY.z, victimNode: 'z' }] } };
    expect(registrationOnRecord(vr(s), 'x', KEY.x)).toBeUndefined();
  });
});

describe('evaluateProof', () => {
  const proofOf = (victimKey: string) => ({
    volume: 'pv',
    victimKey,
    result: 'Fenced' as const,
    by: 'z',
    at: '2026-12-01T00:00:00Z',
  });
  const nf = (key: string, proofKey: string): NodeFence => ({
    apiVersion: 'prfence.io/v1alpha1',
    kind: 'NodeFence',
    metadata: { name: 'x' },
    spec: { fenceState: 'Fenced' },
    status: { key, proofs: [proofOf(proofKey)] },
  });
  const recorded = vr({ registrants: [{ node: 'x', key: KEY.y }] });

  it("a proof of the node's current key -> the volume is proven; of an earlier incarnation's key (the node back with a new key, recorded there) -> still pending", () => {
    expect({
      current: evaluateProof(nf(KEY.y, KEY.y), [recorded]),
      earlier: evaluateProof(nf(KEY.y, KEY.x), [recorded]).pending.map((p) => p.volume),
    }).toEqual({
      current: { proven: 1, total: 1, pending: [], complete: true },
      earlier: ['pv'],
    });
  });
});
