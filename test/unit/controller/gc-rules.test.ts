import type { V1Node } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import type { NodeFence, VolumeReservation } from '../../../src/crd/types.js';
import type { Acting } from '../../../src/controller/acting.js';
import {
  nodeFenceKeepReason,
  releaseVolumeReservation,
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

describe("release of a VolumeReservation being deleted (the controller's finalizer)", () => {
  const deleting = (
    status: VolumeReservation['status'] = {},
    finalizers = ['prfence.io/reservation-protection'],
  ) => ({
    ...vr('pv', status),
    metadata: { name: 'pv', resourceVersion: '7', deletionTimestamp: '2026-12-02T03:00:00Z', finalizers },
  });
  /** An Acting whose API server holds `stored`; records each request. */
  const acting = (stored: VolumeReservation | undefined) => {
    const sent: { method: string; body?: unknown }[] = [];
    const events: string[] = [];
    const a = {
      rest: {
        send: (r: { method: string; body?: unknown }) => {
          sent.push({ method: r.method, ...(r.body ? { body: r.body } : {}) });
          return Promise.resolve(r.method === 'GET' ? stored : {});
        },
      } as never,
      log: { info: () => undefined } as never,
      metrics: undefined,
      write: <T>(_a: unknown, fn: () => Promise<T>) => fn(),
      event: (e: { note: string }) => (events.push(e.note), Promise.resolve()),
    } as Acting;
    return { a, sent, events };
  };

  it('the cached record names a key -> kept, with an event naming it, and no request but the event', async () => {
    const held = deleting({ registrants: [{ node: 'a', key: 'abcdef0000000001' }] });
    const { a, sent, events } = acting(held);
    expect(await releaseVolumeReservation(a, held)).toBe('kept');
    expect({ sent, events }).toEqual({
      sent: [],
      events: [expect.stringMatching(/being deleted but is kept .*a abcdef0000000001/)],
    });
  });

  it('the cache says empty but the fresh read names a holder -> kept, nothing patched', async () => {
    const { a, sent } = acting(deleting({ holder: { node: 'a', key: 'abcdef0000000001' } }));
    expect(await releaseVolumeReservation(a, deleting())).toBe('kept');
    expect(sent.map((s) => s.method)).toEqual(['GET']);
  });

  it("empty on the fresh read -> only the controller's finalizer removed, with that read's resourceVersion", async () => {
    const stored = deleting({ foreignKeys: 1 }, ['example.com/other', 'prfence.io/reservation-protection']);
    const { a, sent } = acting(stored);
    expect(await releaseVolumeReservation(a, deleting())).toBe('deleted');
    expect(sent).toEqual([
      { method: 'GET' },
      {
        method: 'PATCH',
        body: { metadata: { finalizers: ['example.com/other'], resourceVersion: '7' } },
      },
    ]);
  });

  it('not being deleted, or without the finalizer, on the fresh read -> nothing patched', async () => {
    const notDeleting = { ...vr('pv'), metadata: { name: 'pv', resourceVersion: '8' } };
    for (const stored of [notDeleting, deleting({}, ['example.com/other']), undefined]) {
      const { a, sent } = acting(stored);
      expect(await releaseVolumeReservation(a, deleting())).toBe('gone');
      expect(sent.map((s) => s.method)).toEqual(['GET']);
    }
  });
});
