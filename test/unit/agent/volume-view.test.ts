/**
 * VolumeViewSource (src/agent/volume-view.ts) over a fake API: which objects a view of one
 * volume reads, and what it makes of them.
 */
import { describe, expect, it } from 'vitest';
import type { FreshView } from '../../../src/agent/fresh-view.js';
import { VolumeViewSource } from '../../../src/agent/volume-view.js';
import { KubeApiError, type RestClient, type RestRequest } from '../../../src/kube/rest-client.js';
import { formatKey } from '../../../src/pr/key.js';

const KA = 0xaaaa0000000000a1n;
const KC = 0xcccc0000000000c3n;

/** GETs answered from `objects` by path (404 otherwise); every path asked is recorded. */
function fakeRest(objects: Record<string, unknown>, delayMs = 0) {
  const asked: string[] = [];
  const rest = {
    send: async <T>(req: RestRequest): Promise<T> => {
      asked.push(req.path);
      if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
      const o = objects[req.path];
      if (o === undefined) throw new KubeApiError(404, { message: 'not found' });
      return o as T;
    },
  };
  return { rest: rest as unknown as RestClient, asked };
}

const va = (name: string, node: string, pv: string, deleting = false) => ({
  metadata: {
    name,
    resourceVersion: '5',
    ...(deleting ? { deletionTimestamp: '2026-01-01T00:00:00Z' } : {}),
  },
  spec: { attacher: 'x', nodeName: node, source: { persistentVolumeName: pv } },
});
const nf = (n: string, fenceState?: string) => ({
  metadata: { name: n, resourceVersion: '7' },
  ...(fenceState ? { spec: { fenceState } } : {}),
});
const node = (n: string) => ({ metadata: { name: n, uid: `uid-${n}`, resourceVersion: '9' } });
const VA = '/apis/storage.k8s.io/v1/volumeattachments/';
const NF = '/apis/prfence.io/v1alpha1/nodefences/';
const RK = '/apis/prfence.io/v1alpha1/reservationkeys/';

describe('VolumeViewSource', () => {
  it("reads the named attachments (gone, deleting or another PV's drop out), each device key's claim, and the NodeFence and Node of every node involved; nothing else", async () => {
    const { rest, asked } = fakeRest({
      [`${VA}va-b`]: va('va-b', 'b', 'pv-1'),
      [`${VA}va-d`]: va('va-d', 'd', 'pv-1', true),
      [`${VA}va-e`]: va('va-e', 'e', 'pv-2'),
      [`${RK}${formatKey(KA)}`]: { metadata: { name: formatKey(KA) }, spec: { node: 'a', nodeUID: 'uid-a' } },
      [`${NF}a`]: nf('a', 'Fenced'),
      [`${NF}b`]: nf('b'),
      '/api/v1/nodes/a': node('a'),
      '/api/v1/nodes/b': node('b'),
    });
    const view = await new VolumeViewSource({ rest, freshnessMs: 5000 }).read({
      pv: 'pv-1',
      self: 'b',
      attachments: ['va-b', 'va-gone', 'va-d', 'va-e'],
      deviceKeys: [KA, KC],
    });
    const c = await view.cachesFor('pv-1');
    expect({
      scope: view.scope,
      attached: c.vasOf('pv-1').map((x) => x.spec.nodeName),
      claims: view.keyClaims.map((k) => k.spec.node),
      fenceA: c.nodeFences('a')?.spec?.fenceState,
      nodeUidB: c.nodes('b')?.metadata?.uid,
      asked: [...asked].sort(),
    }).toEqual({
      scope: 'volume',
      attached: ['b'],
      claims: ['a'],
      fenceA: 'Fenced',
      nodeUidB: 'uid-b',
      asked: [
        '/api/v1/nodes/a',
        '/api/v1/nodes/b',
        `${NF}a`,
        `${NF}b`,
        `${RK}${formatKey(KA)}`,
        `${RK}${formatKey(KC)}`,
        `${VA}va-b`,
        `${VA}va-d`,
        `${VA}va-e`,
        `${VA}va-gone`,
      ].sort(),
    });
  });

  it('reads that take --freshness or longer -> no view (the caller sends nothing)', async () => {
    const { rest } = fakeRest({ [`${NF}b`]: nf('b'), '/api/v1/nodes/b': node('b') }, 30);
    await expect(
      new VolumeViewSource({ rest, freshnessMs: 20 }).read({
        pv: 'pv-1',
        self: 'b',
        attachments: [],
        deviceKeys: [],
      }),
    ).rejects.toThrow(/took over 20 ms/);
  });

  it('an API error other than 404 -> no view', async () => {
    const rest = {
      send: () => Promise.reject(new KubeApiError(503, { message: 'unavailable' })),
    } as unknown as RestClient;
    await expect(
      new VolumeViewSource({ rest, freshnessMs: 5000 }).read({
        pv: 'pv-1',
        self: 'b',
        attachments: ['va-b'],
        deviceKeys: [],
      }),
    ).rejects.toBeInstanceOf(KubeApiError);
  });

  it('a basis longer than the schema allows (many nodes) -> cut to 1024 characters', async () => {
    const objects: Record<string, unknown> = {};
    const names = Array.from({ length: 60 }, (_, i) => `node-with-a-long-name-${i}`);
    for (const n of names) {
      objects[`${VA}va-${n}`] = va(`va-${n}`, n, 'pv-1');
      objects[`${NF}${n}`] = nf(n);
      objects[`/api/v1/nodes/${n}`] = node(n);
    }
    const { rest } = fakeRest(objects);
    const view = await new VolumeViewSource({ rest, freshnessMs: 5000 }).read({
      pv: 'pv-1',
      self: names[0]!,
      attachments: names.map((n) => `va-${n}`),
      deviceKeys: [],
    });
    expect(view.basis.length).toBe(1024);
    expect(view.basis.endsWith('...')).toBe(true);
  });

  it('two views of volumes on one node at once -> the NodeFence and Node GETs are shared; a view that must be newer than a later device read reads them again', async () => {
    const { rest, asked } = fakeRest({ [`${NF}b`]: nf('b'), '/api/v1/nodes/b': node('b') }, 5);
    const source = new VolumeViewSource({ rest, freshnessMs: 5000 });
    const req = (pv: string) => ({ pv, self: 'b', attachments: [], deviceKeys: [] });
    const before = performance.now() - 1;
    await Promise.all([source.read(req('pv-1'), before), source.read(req('pv-2'), before)]);
    expect(asked).toHaveLength(2);
    const deviceReadAt = performance.now();
    const v3 = await source.read(req('pv-1'), deviceReadAt);
    expect(asked).toHaveLength(4);
    expect(v3.startedAt).toBeGreaterThan(deviceReadAt);
  });

  it('views that need newer reads than the GETs in flight -> they wait for them and share one next GET per object (2 per object, not one per view); every view is newer than its device read', async () => {
    const { rest, asked } = fakeRest({ [`${NF}b`]: nf('b'), '/api/v1/nodes/b': node('b') }, 20);
    const source = new VolumeViewSource({ rest, freshnessMs: 5000 });
    const req = (pv: string) => ({ pv, self: 'b', attachments: [], deviceKeys: [] });
    const first = source.read(req('pv-0'), performance.now() - 1);
    await new Promise((r) => setTimeout(r, 5)); // its GETs are in flight
    // Ten volumes' device reads, one after another, each after the GETs above were sent.
    const later: Promise<{ v: FreshView; deviceReadAt: number }>[] = [];
    for (let i = 1; i <= 10; i++) {
      const deviceReadAt = performance.now();
      later.push(source.read(req(`pv-${i}`), deviceReadAt).then((v) => ({ v, deviceReadAt })));
      await new Promise((r) => setImmediate(r));
    }
    await first;
    const views = await Promise.all(later);
    expect({
      gets: asked.length,
      newer: views.filter(({ v, deviceReadAt }) => v.startedAt > deviceReadAt).length,
    }).toEqual({ gets: 4, newer: 10 });
  });
});
