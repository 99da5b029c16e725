import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { StatusWriter } from '../../../src/agent/status-writer.js';
import type { VolumeReservation } from '../../../src/crd/types.js';
import { KubeApiError, type RestClient } from '../../../src/kube/rest-client.js';

/** A VolumeReservation whose resourceVersion another writer bumps `conflicts` times before each apply lands. */
function fakeRest(conflicts: number) {
  let rv = 1;
  const applied: { rv: string | undefined; status: unknown }[] = [];
  const rest = {
    get: () =>
      Promise.resolve<VolumeReservation>({
        apiVersion: 'prfence.io/v1alpha1',
        kind: 'VolumeReservation',
        metadata: { name: 'pv1', resourceVersion: String(rv) },
        status: { fencedKeys: [{ key: '0000000100000009', at: '2026-01-01T00:00:00Z' }] },
      }),
    apply: (_path: string, obj: VolumeReservation) => {
      applied.push({ rv: obj.metadata.resourceVersion, status: obj.status });
      if (obj.metadata.resourceVersion !== String(rv)) return Promise.reject(new KubeApiError(409, {}));
      if (conflicts > 0) {
        conflicts--;
        rv++; // a peer's status write or the controller's desired state landed first
        return Promise.reject(new KubeApiError(409, { reason: 'Conflict' }));
      }
      return Promise.resolve(obj);
    },
  };
  return { rest: rest as unknown as RestClient, applied };
}

const writer = (rest: RestClient) =>
  new StatusWriter({
    rest,
    node: 'node-b',
    key: 0x100000002n,
    nodeUid: 'uid',
    log: pino({ level: 'silent' }),
  });

describe('fence record (StatusWriter.completeFence)', () => {
  it('a write that loses the race to another writer (409) -> read again and written with the new resourceVersion; lastFence and fencedKeys land', async () => {
    const { rest, applied } = fakeRest(2);
    const last = {
      victimNode: 'node-a',
      victimKey: '0000000100000001',
      by: 'node-b',
      at: 'now',
      result: 'Fenced' as const,
    };
    await writer(rest).completeFence('pv1', last, [{ node: 'node-a', key: '0000000100000001', at: 'now' }]);
    expect(applied.map((a) => a.rv)).toEqual(['1', '2', '3']);
    expect(applied.at(-1)!.status).toEqual({
      lastFence: last,
      fencedKeys: [
        { key: '0000000100000009', at: '2026-01-01T00:00:00Z' },
        { node: 'node-a', key: '0000000100000001', at: 'now' },
      ],
    });
  });

  it('conflicts that never end -> gives up after 8 attempts with the 409 (the reconcile reports it)', async () => {
    const { rest, applied } = fakeRest(100);
    await expect(writer(rest).completeFence('pv1', undefined, [])).rejects.toMatchObject({ code: 409 });
    expect(applied).toHaveLength(8);
  });
});
