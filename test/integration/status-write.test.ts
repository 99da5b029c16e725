/**
 * The API-server behaviour the agent's status writes rely on (src/agent/agent.ts #applyVr):
 * a server-side apply that carries metadata.resourceVersion is refused with 409 when the
 * object changed since, so a node that decided on an old read cannot overwrite a newer one.
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { cond, StatusWriter, vrPath } from '../../src/agent/status-writer.js';
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
  it("a node omits a condition whose message it took from another node's entry (a forced apply) -> its write is accepted, not refused for an entry without a message (422), and no incomplete entry is left", async () => {
    const rest = new RestClient(adminKubeConfig());
    const log = pino({ level: 'silent' });
    const pv = uniqueName('pv');
    const writer = (node: string) => new StatusWriter({ rest, node, key: 1n, nodeUid: `uid-${node}`, log });
    const [a, b] = [writer('node-a'), writer('node-b')];
    await b.writeVolume(pv, { conditions: [cond('Ready', 'False', 'NotReserved', 'seen by node-b')] });
    // Same status, reason and transition time (co-owned); node-a's message wins and is its alone.
    await a.writeVolume(pv, { conditions: [cond('Ready', 'False', 'NotReserved', 'seen by node-a')] });
    const written = await a.writeVolume(pv, { registrants: [] }).then(
      (v) => v,
      (e: unknown) => e,
    );
    expect(written).not.toBeInstanceOf(Error);
    const conditions = (await rest.get<VolumeReservation>(vrPath(pv))).status?.conditions ?? [];
    expect(conditions.filter((c) => !c.status || !c.reason || !c.message || !c.lastTransitionTime)).toEqual(
      [],
    );
    rest.close();
  });
});
