import { CoreV1Api, type V1Node, type V1PersistentVolume } from '@kubernetes/client-node';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { startInformer } from '../../src/kube/informer.js';
import { RestClient, type RestRequest, type WatchEvent } from '../../src/kube/rest-client.js';
import { startControlPlane } from '../envtest/control-plane.js';
import { FaultProxy, kubeConfigVia } from '../envtest/fault-proxy.js';
import { adminKubeConfig, eventually, uniqueName } from '../envtest/kube.js';

/** A RestClient that records every request the informer makes. */
class CountingRest extends RestClient {
  readonly sent: RestRequest[] = [];
  readonly watched: Record<string, string>[] = [];
  override send<T = unknown>(req: RestRequest): Promise<T> {
    this.sent.push(req);
    return super.send<T>(req);
  }
  override watch<T>(
    path: string,
    query: Record<string, string>,
    onEvent: (e: WatchEvent<T>) => void,
    signal?: AbortSignal,
  ): Promise<void> {
    this.watched.push(query);
    return super.watch(path, query, onEvent, signal);
  }
}

const pvBody = (name: string) => ({
  metadata: { name },
  spec: { capacity: { storage: '1Gi' }, accessModes: ['ReadWriteOnce'], hostPath: { path: '/tmp' } },
});

describe('resilient informer', () => {
  it('kube-apiserver restarts under a watch -> the informer re-lists and sees later changes', async () => {
    const cp = await startControlPlane();
    try {
      const kc = cp.adminKubeConfig();
      const core = kc.makeApiClient(CoreV1Api);
      const seen: string[] = [];
      const deleted: string[] = [];
      const rest = new CountingRest(kc);
      const inf = startInformer<V1PersistentVolume>({
        rest,
        log: pino({ level: 'silent' }),
        path: '/api/v1/persistentvolumes',
        pageSize: 1, // a LIST, if one were made, would be paged
        transform: (o) => ({
          metadata: { name: o.metadata?.name, resourceVersion: o.metadata?.resourceVersion },
          spec: { hostPath: { path: o.spec?.hostPath?.path ?? '' } },
        }),
        indexes: { byPath: (o) => (o.spec?.hostPath ? [o.spec.hostPath.path] : []) },
        handlers: {
          onAdd: (o) => seen.push(o.metadata?.name ?? ''),
          onDelete: (o) => deleted.push(o.metadata?.name ?? ''),
        },
        maxBackoffMs: 500,
      });
      await inf.synced;
      const pv = (name: string) => ({
        metadata: { name },
        spec: { capacity: { storage: '1Gi' }, accessModes: ['ReadWriteOnce'], hostPath: { path: '/tmp' } },
      });
      await core.createPersistentVolume({ body: pv('before') });
      await eventually(() => seen.includes('before'));
      // The cache holds the transformed object only.
      expect(inf.get('before')).toEqual({
        metadata: { name: 'before', resourceVersion: expect.any(String) as string },
        spec: { hostPath: { path: '/tmp' } },
      });
      expect(inf.byIndex('byPath', '/tmp').map((p) => p.metadata?.name)).toEqual(['before']);
      await cp.restartApiServer(); // every watch connection breaks
      await core.createPersistentVolume({ body: pv('after') });
      await eventually(() => seen.includes('after'), { timeoutMs: 30_000 });
      expect(inf.get('after')?.metadata?.name).toBe('after');
      expect(
        inf
          .list()
          .map((p) => p.metadata?.name)
          .sort(),
      ).toEqual(['after', 'before']);
      expect(deleted).toEqual([]);
      expect(inf.byIndex('byPath', '/tmp')).toHaveLength(2);
      // No controller-manager here: drop the pv-protection finalizer, or the delete only
      // marks the PV (a MODIFIED event) and never removes it.
      await rest.send({
        method: 'PATCH',
        path: '/api/v1/persistentvolumes/before',
        contentType: 'application/merge-patch+json',
        body: { metadata: { finalizers: null } },
      });
      await core.deletePersistentVolume({ name: 'before' });
      await eventually(() => deleted.includes('before'), { timeoutMs: 30_000 });
      expect(inf.get('before')).toBeUndefined();
      expect(inf.byIndex('byPath', '/tmp').map((p) => p.metadata?.name)).toEqual(['after']);
      // All of it in streaming mode (the default): listed by a streaming list, never a LIST.
      expect(rest.watched[0]?.sendInitialEvents).toBe('true');
      expect(rest.sent.filter((r) => r.method === 'GET')).toEqual([]);
      await inf.stop();
      rest.close();
    } finally {
      await cp.stop();
    }
  });

  it('A2: a watch that goes silent (server-to-client blackholed) -> reported dead within its idle timeout, restarted, and sees changes after healing', async () => {
    const kc = adminKubeConfig();
    const proxy = await FaultProxy.start({ target: kc.getCurrentCluster()!.server });
    const rest = new RestClient(kubeConfigVia(kc, proxy));
    const seen: string[] = [];
    const inf = startInformer<V1PersistentVolume>({
      rest,
      log: pino({ level: 'silent' }),
      path: '/api/v1/persistentvolumes',
      handlers: { onAdd: (o) => seen.push(o.metadata?.name ?? '') },
      idleTimeoutMs: 3000,
      maxBackoffMs: 500,
    });
    try {
      await inf.synced;
      expect(inf.problem()).toBeUndefined();
      proxy.blackhole('server-to-client'); // the connection stays open; nothing arrives
      const t0 = Date.now();
      const why = await eventually(() => inf.problem() ?? false, { timeoutMs: 30_000 });
      expect(why).toMatch(/no event or bookmark in 3000 ms|silent|timeout/);
      expect(Date.now() - t0).toBeLessThan(20_000);
      await proxy.heal();
      const name = uniqueName('pv-after-heal');
      await kc.makeApiClient(CoreV1Api).createPersistentVolume({
        body: {
          metadata: { name },
          spec: { capacity: { storage: '1Gi' }, accessModes: ['ReadWriteOnce'], hostPath: { path: '/tmp' } },
        },
      });
      await eventually(() => seen.includes(name), { timeoutMs: 30_000 });
      await eventually(() => inf.problem() === undefined, { timeoutMs: 30_000 });
    } finally {
      await inf.stop();
      rest.close();
      await proxy.close();
    }
  });

  it("fieldSelector metadata.name=X (the agent's own Node) -> the cache holds X only; X's changes are seen, another Node's are not delivered", async () => {
    const kc = adminKubeConfig();
    const core = kc.makeApiClient(CoreV1Api);
    const [x, y] = [uniqueName('sel-x'), uniqueName('sel-y')];
    await core.createNode({ body: { metadata: { name: x } } });
    await core.createNode({ body: { metadata: { name: y } } });
    const events: string[] = [];
    const inf = startInformer<V1Node>({
      rest: new RestClient(kc),
      log: pino({ level: 'silent' }),
      path: '/api/v1/nodes',
      fieldSelector: `metadata.name=${x}`,
      handlers: {
        onAdd: (n) => events.push(`add ${n.metadata?.name}`),
        onUpdate: (n) => events.push(`update ${n.metadata?.name}`),
      },
    });
    try {
      await inf.synced;
      const label = (n: string, v: string) =>
        core.patchNode({ name: n, body: [{ op: 'add', path: '/metadata/labels', value: { t: v } }] });
      await label(y, '1'); // not delivered
      await label(x, '1');
      await eventually(() => events.includes(`update ${x}`));
      expect({ cached: inf.list().map((n) => n.metadata?.name), events }).toEqual({
        cached: [x],
        events: [`add ${x}`, `update ${x}`],
      });
    } finally {
      await inf.stop();
    }
  });

  it('streaming list (kube-apiserver 1.36 serves WatchList by default) -> synced from ONE watch request with sendInitialEvents=true and no LIST; the cache equals the PVs created; a later change arrives on that watch; streamingList: false lists the same with one LIST', async () => {
    const cp = await startControlPlane(); // its own: the cache must equal exactly the PVs made here
    try {
      const kc = cp.adminKubeConfig();
      const core = kc.makeApiClient(CoreV1Api);
      const names = ['wl-a', 'wl-b', 'wl-c'];
      for (const n of names) await core.createPersistentVolume({ body: pvBody(n) });
      const rest = new CountingRest(kc);
      const updated: string[] = [];
      const inf = startInformer<V1PersistentVolume>({
        rest,
        log: pino({ level: 'silent' }),
        path: '/api/v1/persistentvolumes',
        handlers: { onUpdate: (o) => updated.push(o.metadata?.name ?? '') },
      });
      const listed = (i: { list(): readonly V1PersistentVolume[] }) =>
        i
          .list()
          .map((p) => p.metadata?.name)
          .sort();
      try {
        await inf.synced;
        expect(listed(inf)).toEqual(names);
        expect(rest.watched).toEqual([
          {
            sendInitialEvents: 'true',
            resourceVersionMatch: 'NotOlderThan',
            allowWatchBookmarks: 'true',
            timeoutSeconds: expect.any(String) as string,
          },
        ]);
        expect(rest.sent).toEqual([]); // no LIST
        await core.patchPersistentVolume({
          name: 'wl-b',
          body: [{ op: 'add', path: '/metadata/labels', value: { changed: 'yes' } }],
        });
        await eventually(() => updated.includes('wl-b'));
        expect(inf.get('wl-b')?.metadata?.labels).toEqual({ changed: 'yes' });
        expect({ watches: rest.watched.length, sends: rest.sent.length }).toEqual({ watches: 1, sends: 0 });
      } finally {
        await inf.stop();
        rest.close();
      }

      // The same with streaming lists turned off: one LIST (resourceVersion=0), then a plain watch.
      const rest2 = new CountingRest(kc);
      const inf2 = startInformer<V1PersistentVolume>({
        rest: rest2,
        log: pino({ level: 'silent' }),
        path: '/api/v1/persistentvolumes',
        handlers: {},
        streamingList: false,
      });
      try {
        await inf2.synced;
        expect(listed(inf2)).toEqual(names);
        expect(rest2.sent.map((r) => [r.method, r.path, r.query?.resourceVersion])).toEqual([
          ['GET', '/api/v1/persistentvolumes', '0'],
        ]);
        await eventually(() => rest2.watched.length === 1);
        expect(rest2.watched[0]?.sendInitialEvents).toBeUndefined();
      } finally {
        await inf2.stop();
        rest2.close();
      }
    } finally {
      await cp.stop();
    }
  });
});
