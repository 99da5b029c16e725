import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { fencedNote, StatusWriter } from '../../../src/agent/status-writer.js';
import type { IsolationProof, NodeFence, NodeFenceStatus } from '../../../src/crd/types.js';
import { KubeApiError, type RestClient } from '../../../src/kube/rest-client.js';

/**
 * node-a's NodeFence on a fake server: GETs, and status applies with the resourceVersion
 * precondition (each apply's fields merged into the status, as this writer's managers own
 * disjoint fields). `gone`: deleted.
 */
function fakeServer() {
  let nf: NodeFence | undefined = {
    apiVersion: 'prfence.io/v1alpha1',
    kind: 'NodeFence',
    metadata: { name: 'node-a', resourceVersion: '1' },
    spec: { fenceState: 'Fenced' },
    status: { key: '0000000100000001' },
  };
  const calls: string[] = [];
  const write = (status: NodeFenceStatus, replace = false) => {
    nf = {
      ...nf!,
      metadata: { ...nf!.metadata, resourceVersion: String(Number(nf!.metadata.resourceVersion) + 1) },
      status: replace ? status : { ...nf!.status, ...status },
    };
    return structuredClone(nf);
  };
  const rest = {
    get: () => {
      calls.push('GET');
      return nf ? Promise.resolve(structuredClone(nf)) : Promise.reject(new KubeApiError(404, {}));
    },
    apply: (_path: string, obj: NodeFence) => {
      const rv = obj.metadata.resourceVersion;
      calls.push(`APPLY@${rv}`);
      if (!nf) return Promise.reject(new KubeApiError(404, {}));
      if (rv !== nf.metadata.resourceVersion)
        return Promise.reject(new KubeApiError(409, { reason: 'Conflict' }));
      return Promise.resolve(write(obj.status ?? {}));
    },
  };
  return {
    rest: rest as unknown as RestClient,
    calls,
    status: () => nf?.status,
    /** Another writer (the controller's isolation summary, an unfence) lands. */
    otherWrites: (status: NodeFenceStatus, replace = false) => void write(status, replace),
    remove: () => void (nf = undefined),
  };
}

const writer = (rest: RestClient) =>
  new StatusWriter({
    rest,
    node: 'node-b',
    key: 0x100000002n,
    nodeUid: 'uid',
    log: pino({ level: 'silent' }),
  });

const proof = (volume: string): IsolationProof => ({
  volume,
  victimKey: '0000000100000001',
  result: 'Fenced',
  by: 'node-b',
  at: new Date().toISOString(),
});

describe("writes to a fenced node's NodeFence (marks and proofs)", () => {
  it('proofs of three volumes one after the other -> one GET: each later write is made on the object the previous one returned; all three recorded', async () => {
    const s = fakeServer();
    const w = writer(s.rest);
    for (const v of ['pv1', 'pv2', 'pv3']) await w.recordProof('node-a', proof(v));
    expect(s.calls).toEqual(['GET', 'APPLY@1', 'APPLY@2', 'APPLY@3']);
    expect(s.status()?.proofs?.map((p) => p.volume)).toEqual(['pv1', 'pv2', 'pv3']);
  });

  it("another writer landed between two proofs -> the write on the returned object is refused (409) and made again on a GET; the other writer's field and both proofs stay", async () => {
    const s = fakeServer();
    const w = writer(s.rest);
    await w.recordProof('node-a', proof('pv1'));
    s.otherWrites({ isolation: { proven: 1, total: 2, complete: false } } as NodeFenceStatus);
    await w.recordProof('node-a', proof('pv2'));
    expect(s.calls).toEqual(['GET', 'APPLY@1', 'APPLY@2', 'GET', 'APPLY@3']);
    expect(s.status()?.proofs?.map((p) => p.volume)).toEqual(['pv1', 'pv2']);
    expect(s.status()?.isolation).toBeDefined();
  });

  it('the last write returned a mark that an unfence cleared since -> "already marked" is not decided on it: a GET shows no mark and the mark is written again', async () => {
    const s = fakeServer();
    const w = writer(s.rest);
    await w.markFenced('node-a', '2026-12-02T00:00:00Z');
    expect(s.status()?.phase).toBe('Fenced');
    s.otherWrites({ key: '0000000100000001' }, true); // prfence unfence cleared the mark
    await w.markFenced('node-a', '2026-12-02T00:00:01Z');
    expect(s.calls).toEqual(['GET', 'APPLY@1', 'GET', 'APPLY@3']);
    expect(s.status()).toMatchObject({
      phase: 'Fenced',
      fencedBy: 'node-b',
      fencedAt: '2026-12-02T00:00:01Z',
    });
  });

  it('the NodeFence was deleted after the last write -> the write on its base is refused (404) and nothing is written, without an error', async () => {
    const s = fakeServer();
    const w = writer(s.rest);
    await w.recordProof('node-a', proof('pv1'));
    s.remove();
    await expect(w.recordProof('node-a', proof('pv2'))).resolves.toBeUndefined();
    expect(s.calls).toEqual(['GET', 'APPLY@1', 'APPLY@2']);
  });
});

describe('Fenced events', () => {
  /** Records the events sent; each POST answers when `release` is called. */
  function eventRest() {
    const sent: { note: string; related?: { name: string } }[] = [];
    const waiting: (() => void)[] = [];
    const rest = {
      send: (r: { method: string; body: { note: string; related?: { name: string } } }) => {
        sent.push(r.body);
        return new Promise<unknown>((res) => waiting.push(() => res(r.body)));
      },
    } as unknown as RestClient;
    return { rest, sent, release: () => waiting.splice(0).forEach((f) => f()) };
  }

  it('three fences of node-a while its first event is being written -> two events: the first of pv1 (related pv1), the next of pv2 and pv3 together (no related PV)', async () => {
    const e = eventRest();
    const w = writer(e.rest);
    const key = 0x100000001n;
    const first = w.fencedEvent('pv1', 'node-a', key);
    const rest = [w.fencedEvent('pv2', 'node-a', key), w.fencedEvent('pv3', 'node-a', key)];
    await new Promise((r) => setImmediate(r));
    e.release();
    await first;
    await new Promise((r) => setImmediate(r));
    e.release();
    await Promise.all(rest);
    expect(e.sent.map((s) => [s.note, s.related?.name])).toEqual([
      ['removed key 0000000100000001 of node-a from pv1 (by node-b)', 'pv1'],
      ['removed key 0000000100000001 of node-a from 2 volumes (by node-b): pv2, pv3', undefined],
    ]);
  });

  it('volumes fenced under two keys of one node (an earlier incarnation) -> the note names the key beside each volume', () => {
    expect(
      fencedNote('node-a', 'node-b', [
        { pv: 'pv1', key: 0x1n },
        { pv: 'pv2', key: 0x2n },
      ]),
    ).toBe(
      'removed keys of node-a from 2 volumes (by node-b): pv1 (0000000000000001), pv2 (0000000000000002)',
    );
  });
});
