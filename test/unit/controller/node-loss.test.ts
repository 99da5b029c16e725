import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { Acting, ControllerAction } from '../../../src/controller/acting.js';
import {
  NodeLossTracker,
  reconcileNodeLoss,
  type LeaseRecord,
  type NodeLease,
} from '../../../src/controller/node-loss.js';
import type { NodeFence } from '../../../src/crd/types.js';
import { KubeApiError, type RestClient } from '../../../src/kube/rest-client.js';

const WINDOW = 40_000;

function tracker(enabled = true) {
  const clock = { t: 1_000_000 };
  const t = new NodeLossTracker({ enabled, nodeLostAfterMs: WINDOW, now: () => clock.t });
  t.start();
  return { t, clock };
}

const rec = (renewTime: string, resourceVersion: string): LeaseRecord => ({ renewTime, resourceVersion });

describe('NodeLossTracker (fake clock)', () => {
  it('lost only after nodeLostAfter without a change observed locally, not 1 ms before', () => {
    const { t, clock } = tracker();
    t.observe('a', rec('2026-01-01T00:00:00.000000Z', '1'));
    clock.t += WINDOW - 1;
    expect([t.isLost('a'), t.lostIn('a')]).toEqual([false, 1]);
    clock.t += 1;
    expect([t.isLost('a'), t.lostNodes()]).toEqual([true, ['a']]);
  });

  it('a renewTime far in the past at startup is not enough: a full window is observed first', () => {
    const { t, clock } = tracker();
    t.observe('a', rec('1970-01-01T00:00:00.000000Z', '1'));
    clock.t += WINDOW / 2;
    expect(t.isLost('a')).toBe(false);
    clock.t += WINDOW / 2;
    expect(t.isLost('a')).toBe(true);
  });

  it('a restart of observation (new leader) forgets everything and waits a full window again', () => {
    const { t, clock } = tracker();
    t.observe('a', rec('r1', '1'));
    clock.t += WINDOW;
    expect(t.isLost('a')).toBe(true);
    t.stop();
    expect(t.isLost('a')).toBe(false);
    t.start();
    t.observe('a', rec('r1', '1'));
    clock.t += WINDOW - 1;
    expect(t.isLost('a')).toBe(false);
    clock.t += 1;
    expect(t.isLost('a')).toBe(true);
  });

  it('a renewed lease (renewTime or resourceVersion changed) restarts the window', () => {
    const { t, clock } = tracker();
    t.observe('a', rec('r1', '1'));
    clock.t += WINDOW - 1000;
    expect(t.observe('a', rec('r2', '2'))).toBe(true);
    clock.t += WINDOW - 1;
    expect(t.isLost('a')).toBe(false);
    // Only the resourceVersion changed: counted as a renew too (the safe side).
    expect(t.observe('a', rec('r2', '3'))).toBe(true);
    clock.t += WINDOW - 1;
    expect(t.isLost('a')).toBe(false);
    // The same record seen again (informer resync / relist) is no renew.
    expect(t.observe('a', rec('r2', '3'))).toBe(false);
    clock.t += 1;
    expect(t.isLost('a')).toBe(true);
  });

  it('autoFence off -> never lost, however long nothing changes', () => {
    const { t, clock } = tracker(false);
    t.observe('a', rec('r1', '1'));
    clock.t += WINDOW * 100;
    expect([t.isLost('a'), t.lostNodes(), t.lostIn('a')]).toEqual([false, [], undefined]);
  });

  it.each([
    ['far in the future (kubelet clock ahead)', '2099-01-01T00:00:00.000000Z'],
    ['far in the past (kubelet clock behind)', '2001-01-01T00:00:00.000000Z'],
  ])('skewed renewTime %s does not matter: lost exactly after a local window, not before', (_, renewTime) => {
    const { t, clock } = tracker();
    t.observe('a', rec(renewTime, '1'));
    clock.t += WINDOW - 1;
    expect(t.isLost('a')).toBe(false);
    clock.t += 1;
    expect(t.isLost('a')).toBe(true);
  });

  it('a deleted Lease (or a node never seen) is never lost', () => {
    const { t, clock } = tracker();
    t.observe('a', rec('r1', '1'));
    t.forget('a');
    clock.t += WINDOW * 10;
    expect([t.isLost('a'), t.isLost('never-seen')]).toEqual([false, false]);
  });
});

/** Acting over a fake API: GETs answered from `objects` (a missing path is 404, an Error is thrown). */
function fakeActing(objects: Record<string, unknown>) {
  const writes: ControllerAction[] = [];
  const applies: { path: string; body: unknown }[] = [];
  const events: string[] = [];
  const rest = {
    send: async ({ path }: { path: string }) => {
      const o = objects[path];
      if (o instanceof Error) throw o;
      if (o === undefined) throw new KubeApiError(404, { reason: 'NotFound', message: 'not found' });
      return o;
    },
    apply: async (path: string, body: unknown) => {
      applies.push({ path, body });
      return body;
    },
  } as unknown as RestClient;
  const a: Acting = {
    rest,
    log: pino({ level: 'silent' }),
    metrics: undefined,
    write: async (x, fn) => {
      writes.push(x);
      return fn();
    },
    event: async (e) => void events.push(e.reason),
  };
  return { a, writes, applies, events };
}

describe('reconcileNodeLoss (freshness gate)', () => {
  const leasePath = '/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/a';
  const nodePath = '/api/v1/nodes/a';
  const nfPath = '/apis/prfence.io/v1alpha1/nodefences/a';
  const lease = (renewTime: string, rv: string): NodeLease => ({
    metadata: { name: 'a', resourceVersion: rv },
    spec: { renewTime },
  });
  const nf = (fenceState: 'Fenced' | 'Unfenced'): NodeFence =>
    ({ metadata: { name: 'a', resourceVersion: '77' }, spec: { fenceState } }) as NodeFence;
  const noCache = { nodeFence: () => undefined };

  function lostTracker() {
    const x = tracker();
    x.t.observe('a', rec('r1', '1'));
    x.clock.t += WINDOW;
    return x;
  }

  it('lost, fresh Lease unchanged, Node and NodeFence exist -> apply Fenced/NodeLost/prfence-controller with the read resourceVersion, event', async () => {
    const { t } = lostTracker();
    const f = fakeActing({
      [leasePath]: lease('r1', '1'),
      [nodePath]: { metadata: { name: 'a' } },
      [nfPath]: nf('Unfenced'),
    });
    expect(await reconcileNodeLoss(f.a, t, noCache, 'a')).toBe('fence-requested');
    expect({ applies: f.applies, events: f.events }).toEqual({
      applies: [
        {
          path: nfPath,
          body: {
            apiVersion: 'prfence.io/v1alpha1',
            kind: 'NodeFence',
            metadata: { name: 'a', resourceVersion: '77' },
            spec: { fenceState: 'Fenced', reason: 'NodeLost', requestedBy: 'prfence-controller' },
          },
        },
      ],
      events: ['NodeLost'],
    });
  });

  it('fresh GET shows the Lease renewed since the stale observation -> no fence, and the window restarts', async () => {
    const { t } = lostTracker();
    const f = fakeActing({ [leasePath]: lease('r2', '2'), [nodePath]: {}, [nfPath]: nf('Unfenced') });
    expect(await reconcileNodeLoss(f.a, t, noCache, 'a')).toBe('renewed');
    expect([f.applies.length, t.isLost('a')]).toEqual([0, false]);
  });

  it.each([
    ['Lease 404', { [nodePath]: {}, [nfPath]: nf('Unfenced') }, 'no-lease'],
    ['Node 404', { [leasePath]: lease('r1', '1'), [nfPath]: nf('Unfenced') }, 'no-node'],
    ['NodeFence 404', { [leasePath]: lease('r1', '1'), [nodePath]: {} }, 'no-nodefence'],
    [
      'already Fenced',
      { [leasePath]: lease('r1', '1'), [nodePath]: {}, [nfPath]: nf('Fenced') },
      'already-fenced',
    ],
  ])('%s -> no fence (%s)', async (_, objects, outcome) => {
    const { t } = lostTracker();
    const f = fakeActing(objects);
    expect(await reconcileNodeLoss(f.a, t, noCache, 'a')).toBe(outcome);
    expect(f.applies).toEqual([]);
  });

  it.each([
    ['Node 404', { [leasePath]: lease('r1', '1'), [nfPath]: nf('Unfenced') }],
    ['NodeFence 404', { [leasePath]: lease('r1', '1'), [nodePath]: {} }],
  ])('%s -> looked at again only after another full window', async (_, objects) => {
    const { t, clock } = lostTracker();
    await reconcileNodeLoss(fakeActing(objects).a, t, noCache, 'a');
    clock.t += WINDOW - 1;
    expect(t.isLost('a')).toBe(false);
    clock.t += 1;
    expect(t.isLost('a')).toBe(true);
  });

  it('unreadable Lease (500) -> throws, no fence', async () => {
    const { t } = lostTracker();
    const f = fakeActing({
      [leasePath]: new KubeApiError(500, { reason: 'InternalError', message: 'boom' }),
      [nodePath]: {},
      [nfPath]: nf('Unfenced'),
    });
    await expect(reconcileNodeLoss(f.a, t, noCache, 'a')).rejects.toThrow();
    expect(f.applies).toEqual([]);
  });

  it('not lost yet, or autoFence off -> no API read at all, no fence', async () => {
    const x = tracker();
    x.t.observe('a', rec('r1', '1'));
    x.clock.t += WINDOW - 1;
    const f = fakeActing({ [leasePath]: lease('r1', '1'), [nodePath]: {}, [nfPath]: nf('Unfenced') });
    expect(await reconcileNodeLoss(f.a, x.t, noCache, 'a')).toBe('not-lost');
    const off = tracker(false);
    off.t.observe('a', rec('r1', '1'));
    off.clock.t += WINDOW * 10;
    expect(await reconcileNodeLoss(f.a, off.t, noCache, 'a')).toBe('disabled');
    expect(f.applies).toEqual([]);
  });
});
