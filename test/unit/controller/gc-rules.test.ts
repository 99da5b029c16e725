import type { V1Node } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import type { NodeFence, VolumeReservation } from '../../../src/crd/types.js';
import {
  nodeFenceKeepReason,
  volumeReservationKeepReason,
  volumesHoldingNode,
} from '../../../src/controller/garbage-collector.js';
import { outOfServiceTaint } from '../../../src/controller/taint-fence.js';

const vr = (name: string, status: VolumeReservation['status'] = {}): VolumeReservation => ({
  apiVersion: 'prfence.io/v1alpha1',
  kind: 'VolumeReservation',
  metadata: { name },
  status,
});
const nf = (spec: NodeFence['spec'] = {}, status: NodeFence['status'] = {}): NodeFence => ({
  apiVersion: 'prfence.io/v1alpha1',
  kind: 'NodeFence',
  metadata: { name: 'n1' },
  spec,
  status,
});

describe('garbage collection rules', () => {
  it('VolumeReservation without registrants, holder or intent -> may go', () => {
    expect(volumeReservationKeepReason(vr('pv', { registrants: [], foreignKeys: 2 }))).toBeUndefined();
    expect(volumeReservationKeepReason(vr('pv'))).toBeUndefined();
  });

  it('VolumeReservation with registrants -> kept, the reason names node and key', () => {
    const why = volumeReservationKeepReason(
      vr('pv', { registrants: [{ node: 'a', key: 'abcdef0000000001' }] }),
    );
    expect(why).toMatch(/1 key\(s\) still registered on the device: a abcdef0000000001/);
  });

  it('VolumeReservation with a holder or an open fence intent -> kept', () => {
    expect(volumeReservationKeepReason(vr('pv', { holder: { node: 'a', key: '1' } }))).toMatch(/holder/);
    expect(
      volumeReservationKeepReason(vr('pv', { fenceIntent: { victimKey: '1', by: 'a', at: 'x' } })),
    ).toMatch(/fence .* in progress/);
  });

  it('NodeFence asked to be fenced or marked fenced -> kept; unfenced -> may go', () => {
    expect(nodeFenceKeepReason(nf({ fenceState: 'Fenced', reason: 'r' }))).toMatch(/asked to be fenced/);
    expect(nodeFenceKeepReason(nf({ fenceState: 'Unfenced' }, { phase: 'Fenced', fencedBy: 'b' }))).toMatch(
      /marked fenced .* by b/,
    );
    expect(nodeFenceKeepReason(nf({ fenceState: 'Unfenced' }, { phase: 'Registered' }))).toBeUndefined();
    expect(nodeFenceKeepReason(nf())).toBeUndefined();
  });

  it('volumes still naming the node or its key (registrant or holder)', () => {
    const vrs = [
      vr('by-node', { registrants: [{ node: 'n1', key: 'k-other' }] }),
      vr('by-key', { registrants: [{ node: 'renamed', key: 'k1' }] }),
      vr('holder', { holder: { node: 'n1', key: 'k1' } }),
      vr('other', { registrants: [{ node: 'n2', key: 'k2' }] }),
      vr('empty'),
    ];
    expect(volumesHoldingNode(vrs, 'n1', 'k1')).toEqual(['by-node', 'by-key', 'holder']);
    expect(volumesHoldingNode(vrs, 'n1', undefined)).toEqual(['by-node', 'holder']);
  });

  it('out-of-service taint with any effect is found; other taints are not', () => {
    const node = (taints: { key: string; effect: string }[]): V1Node => ({ spec: { taints } });
    expect(
      outOfServiceTaint(node([{ key: 'node.kubernetes.io/out-of-service', effect: 'NoSchedule' }])),
    ).toEqual({
      effect: 'NoSchedule',
    });
    expect(
      outOfServiceTaint(node([{ key: 'node.kubernetes.io/unreachable', effect: 'NoExecute' }])),
    ).toBeUndefined();
    expect(outOfServiceTaint(undefined)).toBeUndefined();
  });
});
