import { AuthorizationV1Api, CoreV1Api, VersionApi } from '@kubernetes/client-node';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { adminKubeConfig } from '../envtest/kube.js';

describe('envtest control plane', () => {
  it('real kube-apiserver -> /version reports the version built by setup.sh', async () => {
    const want = /KUBE_VERSION=(\S+)/.exec(readFileSync('test/envtest/versions.env', 'utf8'))?.[1];
    const v = await adminKubeConfig().makeApiClient(VersionApi).getCode();
    expect(v.gitVersion).toBe(`v${want}`);
  });

  it('RBAC on -> a service account without bindings may not list nodes', async () => {
    const api = adminKubeConfig().makeApiClient(AuthorizationV1Api);
    const review = await api.createSubjectAccessReview({
      body: {
        spec: {
          user: 'system:serviceaccount:default:nobody',
          resourceAttributes: { verb: 'list', resource: 'nodes' },
        },
      },
    });
    expect(review.status?.allowed).toBe(false);
  });

  it('admin client -> namespace default exists', async () => {
    const ns = await adminKubeConfig().makeApiClient(CoreV1Api).readNamespace({ name: 'default' });
    expect(ns.metadata?.name).toBe('default');
  });
});

describe('envtest restart', () => {
  it('a second control plane restarts its kube-apiserver -> data in etcd survives', async () => {
    const { startControlPlane } = await import('../envtest/control-plane.js');
    const cp = await startControlPlane();
    try {
      const core = () => cp.adminKubeConfig().makeApiClient(CoreV1Api);
      await core().createNamespace({ body: { metadata: { name: 'survives-restart' } } });
      await cp.restartApiServer();
      const ns = await core().readNamespace({ name: 'survives-restart' });
      expect(ns.metadata?.name).toBe('survives-restart');
    } finally {
      await cp.stop();
    }
  });
});
