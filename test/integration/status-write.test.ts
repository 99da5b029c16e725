/**
 * The API-server behaviour the agent's status writes rely on (src/agent/agent.ts #applyVr):
 * a server-side apply that carries metadata.resourceVersion is refused with 409 when the
 * object changed since, so a node that decided on an old read cannot overwrite a newer one.
 */
import { describe, expect, it } from 'vitest';
import { API_VERSION, GROUP, VERSION, type VolumeReservation } from '../../src/crd/types.js';
import { clusterObjectPath, KubeApiError, RestClient } from '../../src/kube/rest-client.js';
import { adminKubeConfig, uniqueName } from '../envtest/kube.js';

describe('status writes', () => {
  it('apply with a stale resourceVersion -> 409, the newer status stays', async () => {
    const rest = new RestClient(adminKubeConfig());
    const name = uniqueName('pv');
    const path = clusterObjectPath(GROUP, VERSION, 'volumereservations', name);
    const body = (status: object, rv?: string) => ({
      apiVersion: API_VERSION,
      kind: 'VolumeReservation',
      metadata: { name, ...(rv ? { resourceVersion: rv } : {}) },
      status,
    });
    await rest.apply(
      path,
      { apiVersion: API_VERSION, kind: 'VolumeReservation', metadata: { name } },
      'test',
    );
    const old = await rest.get<VolumeReservation>(path);
    await rest.apply(`${path}/status`, body({ generation: 5 }), 'prfence-agent/node-b');
    const stale = await rest
      .apply(`${path}/status`, body({ generation: 3 }, old.metadata?.resourceVersion), 'prfence-agent/node-a')
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(stale).toBeInstanceOf(KubeApiError);
    expect((stale as KubeApiError).code).toBe(409);
    expect((await rest.get<VolumeReservation>(path)).status?.generation).toBe(5);
    rest.close();
  });
});
