import { CoreV1Api, type V1ConfigMap } from '@kubernetes/client-node';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { startInformer } from '../../src/kube/informer.js';
import { startControlPlane } from '../envtest/control-plane.js';
import { eventually } from '../envtest/kube.js';

describe('resilient informer', () => {
  it('kube-apiserver restarts under a watch -> the informer re-lists and sees later changes', async () => {
    const cp = await startControlPlane();
    try {
      const kc = cp.adminKubeConfig();
      const core = kc.makeApiClient(CoreV1Api);
      const seen: string[] = [];
      const deleted: string[] = [];
      const inf = startInformer<V1ConfigMap>({
        kc,
        log: pino({ level: 'silent' }),
        path: '/api/v1/namespaces/default/configmaps',
        list: () => core.listNamespacedConfigMap({ namespace: 'default' }),
        handlers: {
          onAdd: (o) => seen.push(o.metadata?.name ?? ''),
          onDelete: (o) => deleted.push(o.metadata?.name ?? ''),
        },
        maxBackoffMs: 500,
      });
      await inf.synced;
      await core.createNamespacedConfigMap({ namespace: 'default', body: { metadata: { name: 'before' } } });
      await eventually(() => seen.includes('before'));
      await cp.restartApiServer(); // every watch connection breaks
      await core.createNamespacedConfigMap({ namespace: 'default', body: { metadata: { name: 'after' } } });
      await core.deleteNamespacedConfigMap({ namespace: 'default', name: 'before' });
      await eventually(() => seen.includes('after') && deleted.includes('before'), { timeoutMs: 30_000 });
      expect(inf.get('after')).toBeDefined();
      expect(inf.get('before')).toBeUndefined();
      await inf.stop();
    } finally {
      await cp.stop();
    }
  });
});
