import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { fencedNote, INTENT_EXPIRY_MS, StatusWriter } from '../../../src/agent/status-writer.js';
import type {
  IsolationProof,
  NodeFence,
  NodeFenceStatus,
  VolumeReservation,
} from '../../../src/crd/types.js';
import type { JsonPatchOp } from '../../../src/agent/fence-record-patch.js';
import { KubeApiError, type RestClient } from '../../../src/kube/rest-client.js';
import { applyJsonPatch, PatchFailed } from './json-patch.js';

/** The resourceVersion a JSON patch tests (its first op), or '-'. */
const testedRv = (ops: readonly JsonPatchOp[]) =>
  (
    ops.find((o) => o.op === 'test' && o.path === '/metadata/resourceVersion') as
      { value?: string } | undefined
  )?.value ?? '-';

/**
 * A VolumeReservation whose resourceVersion another writer bumps `conflicts` times before
 * each status patch lands (the patch's test of the read resourceVersion then fails: 422).
 */
function fakeRest(conflicts: number) {
  let vr: VolumeReservation = {
    apiVersion: 'prfence.io/v1alpha1',
    kind: 'VolumeReservation',
    metadata: { name: 'pv1', resourceVersion: '1' },
    status: { fencedKeys: [{ key: '0000000100000009', at: '2026-01-01T00:00:00Z' }] },
  };
  const patches: string[] = [];
  const rest = {
    get: () => Promise.resolve(structuredClone(vr)),
    send: (r: { method: string; body: JsonPatchOp[] }) => {
      patches.push(testedRv(r.body));
      if (conflicts > 0) {
        conflicts--;
        // a peer's status write or the controller's desired state landed first
        vr = {
          ...vr,
          metadata: { ...vr.metadata, resourceVersion: String(Number(vr.metadata.resourceVersion) + 1) },
        };
      }
      try {
        vr = applyJsonPatch(vr, r.body);
      } catch (e) {
        if (e instanceof PatchFailed) return Promise.reject(new KubeApiError(422, { reason: 'Invalid' }));
        throw e;
      }
      return Promise.resolve(structuredClone(vr));
    },
  };
  return { rest: rest as unknown as RestClient, patches, status: () => vr.status };
}

const writer = (rest: RestClient) =>
  new StatusWriter({
    rest,
    node: 'node-b',
    key: 0x100000002n,
    nodeUid: 'uid',
    log: pino({ level: 'silent' }),
  });

/** The fence record of node-b's fence of node-a. */
const last = {
  victimNode: 'node-a',
  victimKey: '0000000100000001',
  by: 'node-b',
  at: 'now',
  result: 'Fenced' as const,
};

describe('fence record (StatusWriter.completeFence)', () => {
  it('a write that loses the race to another writer (its resourceVersion test fails, 422) -> read again and written with the new resourceVersion; lastFence and fencedKeys land', async () => {
    const f = fakeRest(2);
    await writer(f.rest).completeFence('pv1', last, [{ node: 'node-a', key: '0000000100000001', at: 'now' }]);
    expect(f.patches).toEqual(['1', '2', '3']);
    expect(f.status()).toEqual({
      lastFence: last,
      fencedKeys: [
        { key: '0000000100000009', at: '2026-01-01T00:00:00Z' },
        { node: 'node-a', key: '0000000100000001', at: 'now' },
      ],
    });
  });

  it('conflicts that never end -> gives up after 8 attempts with the 422 (the reconcile reports it)', async () => {
    const f = fakeRest(100);
    await expect(writer(f.rest).completeFence('pv1', last, [])).rejects.toMatchObject({ code: 422 });
    expect(f.patches).toHaveLength(8);
  });
});

/**
 * One VolumeReservation on a fake server: GETs, and status applies with the
 * resourceVersion precondition when one is sent. `fenceIntent` is one atomic field with an
 * owner, as server-side apply keeps it: an unforced apply of another value by another
 * manager is refused (409), and an apply without it by its owner removes it.
 */
function fakeServer() {
  let vr: VolumeReservation = {
    apiVersion: 'prfence.io/v1alpha1',
    kind: 'VolumeReservation',
    metadata: { name: 'pv1', resourceVersion: '1' },
    status: {},
  };
  let intentOwner: string | undefined;
  const calls: string[] = [];
  const bump = (status: VolumeReservation['status']) => {
    vr = {
      ...vr,
      metadata: { ...vr.metadata, resourceVersion: String(Number(vr.metadata.resourceVersion) + 1) },
      status: { ...vr.status, ...status },
    };
    return structuredClone(vr);
  };
  const rest = {
    get: () => (calls.push('GET'), Promise.resolve(structuredClone(vr))),
    apply: (_path: string, obj: VolumeReservation, fm: string, force = true) => {
      const rv = obj.metadata.resourceVersion;
      calls.push(`APPLY@${rv ?? '-'}${fm.endsWith('/intent') ? ' intent' : ''}`);
      if (rv !== undefined && rv !== vr.metadata.resourceVersion)
        return Promise.reject(new KubeApiError(409, { reason: 'Conflict' }));
      const next = obj.status?.fenceIntent;
      if (next) {
        const same = JSON.stringify(next) === JSON.stringify(vr.status?.fenceIntent);
        if (intentOwner !== undefined && intentOwner !== fm && !force && !same)
          return Promise.reject(new KubeApiError(409, { reason: 'Conflict' }));
        intentOwner = fm;
      } else if (intentOwner === fm) {
        intentOwner = undefined;
        const { fenceIntent: _dropped, ...rest } = vr.status ?? {};
        vr = { ...vr, status: rest };
      }
      return Promise.resolve(bump(obj.status));
    },
    // A JSON patch of the status (the fence record): all or nothing; a removed intent has no owner.
    send: (r: { method: string; body: JsonPatchOp[] }) => {
      calls.push(`PATCH@${testedRv(r.body)}`);
      let next: VolumeReservation;
      try {
        next = applyJsonPatch(vr, r.body);
      } catch (e) {
        if (e instanceof PatchFailed) return Promise.reject(new KubeApiError(422, { reason: 'Invalid' }));
        throw e;
      }
      if (!next.status?.fenceIntent) intentOwner = undefined;
      vr = next;
      return Promise.resolve(bump({}));
    },
  };
  return {
    rest: rest as unknown as RestClient,
    calls,
    /** Another writer (a peer's status, the controller's desired state) lands. */
    peerWrites: (status: VolumeReservation['status'] = {}) => bump(status),
    status: () => vr.status,
  };
}

describe('the writes of one fence (StatusWriter)', () => {
  const intent = { victimKey: '0000000100000001', victimNode: 'node-a', by: 'node-b', at: 'now', basis: 'b' };
  it("intent, volume record and fence record in a row -> no GET: the intent is one apply without precondition, each later write is made on the object the previous one returned; the record, the victim's entry and the intent's removal are one patch", async () => {
    const s = fakeServer();
    s.peerWrites({ registrants: [{ node: 'node-a', key: '0000000100000001', legitimate: false }] });
    const w = writer(s.rest);
    expect(await w.recordIntent('pv1', intent)).toBe(true);
    expect(s.status()?.fenceIntent?.by).toBe('node-b');
    await w.writeVolume('pv1', { generation: 3 });
    await w.completeFence('pv1', last, [{ node: 'node-a', key: '0000000100000001', at: 'now' }]);
    expect(s.calls).toEqual(['APPLY@- intent', 'APPLY@3', 'PATCH@4']);
    expect(s.status()).toMatchObject({ generation: 3, lastFence: last });
    expect(s.status()?.fenceIntent).toBeUndefined();
    expect(s.status()?.registrants).toEqual([]);
  });

  it('another writer landed between two writes of the fence -> the write on the returned object is refused (409 for the apply, 422 for the patch: its resourceVersion test) and made again on a GET; every write lands', async () => {
    const s = fakeServer();
    const w = writer(s.rest);
    expect(await w.recordIntent('pv1', intent)).toBe(true);
    s.peerWrites();
    await w.writeVolume('pv1', { generation: 3 });
    s.peerWrites();
    await w.completeFence('pv1', last, []);
    expect(s.calls).toEqual(['APPLY@- intent', 'APPLY@2', 'GET', 'APPLY@3', 'PATCH@4', 'GET', 'PATCH@5']);
    expect(s.status()).toMatchObject({ generation: 3, lastFence: last });
  });

  it('the record again on the object the last write returned, which shows it already -> "nothing to record" is decided on a GET: a peer dropped the entry meanwhile, so it is written again', async () => {
    const s = fakeServer();
    const w = writer(s.rest);
    const fenced = [{ node: 'node-a', key: '0000000100000001', at: 'now' }];
    await w.completeFence('pv1', last, fenced);
    s.peerWrites({ fencedKeys: undefined });
    s.calls.length = 0;
    await w.completeFence('pv1', last, fenced);
    expect(s.calls).toEqual(['GET', 'PATCH@3']);
    expect(s.status()?.fencedKeys).toEqual(fenced);
  });

  it("another node's open intent -> this node's unforced apply is refused (409, the field is that node's), a GET shows the intent, nothing is recorded", async () => {
    const s = fakeServer();
    const w = writer(s.rest);
    await w.writeVolume('pv1', { generation: 3 });
    const c = { ...intent, by: 'node-c', at: new Date().toISOString() };
    expect(await writer2(s.rest, 'node-c').recordIntent('pv1', c)).toBe(true);
    s.calls.length = 0;
    expect(await w.recordIntent('pv1', { ...intent, at: new Date().toISOString() })).toBe(false);
    expect(s.calls).toEqual(['APPLY@- intent', 'GET']);
    expect(s.status()?.fenceIntent).toEqual(c);
  });

  it("another node's intent older than INTENT_EXPIRY_MS -> taken over: forced, with the GET's resourceVersion as precondition", async () => {
    const s = fakeServer();
    const old = { ...intent, by: 'node-c', at: new Date(Date.now() - INTENT_EXPIRY_MS - 1000).toISOString() };
    expect(await writer2(s.rest, 'node-c').recordIntent('pv1', old)).toBe(true);
    s.calls.length = 0;
    const mine = { ...intent, at: new Date().toISOString() };
    expect(await writer(s.rest).recordIntent('pv1', mine)).toBe(true);
    expect(s.calls).toEqual(['APPLY@- intent', 'GET', 'APPLY@2 intent']);
    expect(s.status()?.fenceIntent).toEqual(mine);
  });

  it("a completed fence of this node whose intent another node took over since -> the other node's intent stays", async () => {
    const s = fakeServer();
    const old = { ...intent, at: new Date(Date.now() - INTENT_EXPIRY_MS - 1000).toISOString() };
    const w = writer(s.rest);
    expect(await w.recordIntent('pv1', old)).toBe(true);
    const c = { ...intent, by: 'node-c', at: new Date().toISOString() };
    expect(await writer2(s.rest, 'node-c').recordIntent('pv1', c)).toBe(true);
    await w.completeFence('pv1', last, []);
    expect(s.status()?.fenceIntent).toEqual(c);
  });
});

describe('the intent on a VolumeReservation that does not exist', () => {
  it('the apply is refused (404) -> the GET creates it, and the intent is applied on it', async () => {
    const calls: string[] = [];
    let exists = false;
    const vr = (): VolumeReservation => ({
      apiVersion: 'prfence.io/v1alpha1',
      kind: 'VolumeReservation',
      metadata: { name: 'pv1', resourceVersion: '1' },
    });
    const rest = {
      get: () => (
        calls.push('GET'),
        exists ? Promise.resolve(vr()) : Promise.reject(new KubeApiError(404, {}))
      ),
      send: (r: { method: string }) => (calls.push(r.method), (exists = true), Promise.resolve(vr())),
      apply: (_path: string, obj: VolumeReservation) => (
        calls.push(`APPLY@${obj.metadata.resourceVersion ?? '-'}`),
        exists ? Promise.resolve(obj) : Promise.reject(new KubeApiError(404, {}))
      ),
    } as unknown as RestClient;
    const w = writer(rest);
    const intent = {
      victimKey: '0000000100000001',
      victimNode: 'node-a',
      by: 'node-b',
      at: 'now',
      basis: 'b',
    };
    expect(await w.recordIntent('pv1', intent)).toBe(true);
    expect(calls).toEqual(['APPLY@-', 'GET', 'POST', 'APPLY@1']);
  });
});

const writer2 = (rest: RestClient, node: string) =>
  new StatusWriter({ rest, node, key: 0x100000003n, nodeUid: 'uid3', log: pino({ level: 'silent' }) });

/**
 * node-a's NodeFence on a fake server: GETs, and status applies with the resourceVersion
 * precondition (each apply's fields merged into the status, as this writer's managers own
 * disjoint fields). `gone`: deleted.
 */
function nfServer() {
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

const proof = (volume: string): IsolationProof => ({
  volume,
  victimKey: '0000000100000001',
  result: 'Fenced',
  by: 'node-b',
  at: new Date().toISOString(),
});

describe("writes to a fenced node's NodeFence (marks and proofs)", () => {
  it('proofs of three volumes one after the other -> one GET: each later write is made on the object the previous one returned; all three recorded', async () => {
    const s = nfServer();
    const w = writer(s.rest);
    for (const v of ['pv1', 'pv2', 'pv3']) await w.recordProof('node-a', proof(v));
    expect(s.calls).toEqual(['GET', 'APPLY@1', 'APPLY@2', 'APPLY@3']);
    expect(s.status()?.proofs?.map((p) => p.volume)).toEqual(['pv1', 'pv2', 'pv3']);
  });

  it("another writer landed between two proofs -> the write on the returned object is refused (409) and made again on a GET; the other writer's field and both proofs stay", async () => {
    const s = nfServer();
    const w = writer(s.rest);
    await w.recordProof('node-a', proof('pv1'));
    s.otherWrites({ isolation: { proven: 1, total: 2, complete: false } } as NodeFenceStatus);
    await w.recordProof('node-a', proof('pv2'));
    expect(s.calls).toEqual(['GET', 'APPLY@1', 'APPLY@2', 'GET', 'APPLY@3']);
    expect(s.status()?.proofs?.map((p) => p.volume)).toEqual(['pv1', 'pv2']);
    expect(s.status()?.isolation).toBeDefined();
  });

  it('the last write returned a mark that an unfence cleared since -> "already marked" is not decided on it: a GET shows no mark and the mark is written again', async () => {
    const s = nfServer();
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
    const s = nfServer();
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
