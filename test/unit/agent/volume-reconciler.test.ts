/**
 * The freshness gate of the VolumeReconciler, with the caches and the fresh view as
 * plain data and the device as a memory LU: what the caches alone would do is held back
 * until a fresh view agrees (S1, S2, S9). The API writes go to an in-memory recorder.
 */
import type { V1Node, V1VolumeAttachment } from '@kubernetes/client-node';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { ClusterCaches } from '../../../src/agent/cluster-view.js';
import { DeviceRegistry } from '../../../src/agent/device-registry.js';
import { FenceMemory } from '../../../src/agent/fence-memory.js';
import type { FreshView, FreshViewSource } from '../../../src/agent/fresh-view.js';
import type { StatusWriter } from '../../../src/agent/status-writer.js';
import { VolumeReconciler } from '../../../src/agent/volume-reconciler.js';
import type { VolumeViewRequest, VolumeViewSource } from '../../../src/agent/volume-view.js';
import { intentVictims } from '../../../src/crd/fence-intent.js';
import {
  type FenceIntent,
  type FencedKey,
  type NodeFence,
  type ReservationKey,
  type VolumeReservationStatus,
} from '../../../src/crd/types.js';
import type { VolumePolicy } from '../../../src/fence/volume-policy.js';
import { clusterTag, makeKey } from '../../../src/fence/keys.js';
import { formatKey } from '../../../src/pr/key.js';
import { MemoryLogicalUnit } from '../../../src/pr/memory/index.js';
import type { PrDevice } from '../../../src/pr/pr-device.js';

const log = pino({ level: 'silent' });
const TAG = clusterTag('unit');
const K = { a: makeKey(TAG, 1), b: makeKey(TAG, 2), c: makeKey(TAG, 3) };
const PV = 'pv-1';

interface World {
  vas: string[]; // nodes attached to PV
  fenced?: string[]; // nodes with the Fenced mark
  fenceRequested?: string[]; // nodes with NodeFence spec.fenceState Fenced
  unfencedAt?: string; // NodeFence spec.unfencedAt of every node
}

function caches(w: World): ClusterCaches {
  const nfs = (['a', 'b', 'c'] as const).map((n): NodeFence => ({
    apiVersion: 'prfence.io/v1alpha1',
    kind: 'NodeFence',
    metadata: { name: n },
    ...(w.unfencedAt || w.fenceRequested?.includes(n)
      ? {
          spec: {
            ...(w.unfencedAt ? { unfencedAt: w.unfencedAt } : {}),
            ...(w.fenceRequested?.includes(n) ? { fenceState: 'Fenced' as const } : {}),
          },
        }
      : {}),
    status: { key: formatKey(K[n]), ...(w.fenced?.includes(n) ? { phase: 'Fenced' as const } : {}) },
  }));
  const vas = w.vas.map((n): V1VolumeAttachment => ({
    metadata: { name: `va-${n}` },
    spec: { attacher: 'x', nodeName: n, source: { persistentVolumeName: PV } },
  }));
  return {
    vasOf: (pv) => (pv === PV ? vas : []),
    nodeFences: (n) => nfs.find((x) => x.metadata.name === n),
    allNodeFences: nfs,
    nodes: (n): V1Node => ({ metadata: { name: n, uid: `uid-${n}` } }),
  };
}

/**
 * A FreshViewSource over a world that the test changes; `down` makes every read fail.
 * `shared`: a view is reused (as within --freshness) unless the caller asks for one newer
 * than a time.
 */
function freshOf(get: () => World, opts: { down?: () => boolean; shared?: boolean } = {}) {
  let reads = 0;
  let last: FreshView | undefined;
  const source = {
    reads: () => reads,
    now: () => performance.now(),
    isFresh: () => true,
    problem: () => undefined,
    get: (newerThan?: number): Promise<FreshView> => {
      if (opts.shared && last && (newerThan === undefined || last.startedAt > newerThan))
        return Promise.resolve(last);
      reads += 1;
      if (opts.down?.()) return Promise.reject(new Error('API server unreachable'));
      const c = caches(get());
      return Promise.resolve(
        (last = {
          startedAt: performance.now(),
          basis: 'test',
          nodeFences: new Map(c.allNodeFences.map((n) => [n.metadata.name, n])),
          keyClaims: [],
          cachesFor: () => Promise.resolve(c),
        }),
      );
    },
  };
  return source;
}

/**
 * A VolumeViewSource over the API's world: it sees the attachments the caller names
 * (those in its caches) as the world has them, and the key claims of the keys named
 * (`claims`: who claimed each key; default the owner by name).
 */
function volumeViewOf(get: () => World, claims: Partial<Record<'a' | 'b' | 'c', string>> = {}) {
  let reads = 0;
  return {
    reads: () => reads,
    read: (req: VolumeViewRequest): Promise<FreshView> => {
      reads += 1;
      const c = caches(get());
      const vas = c.vasOf(req.pv).filter((va) => req.attachments.includes(va.metadata?.name ?? ''));
      const keyClaims = (['a', 'b', 'c'] as const)
        .filter((n) => req.deviceKeys.includes(K[n]))
        .map((n): ReservationKey => ({
          apiVersion: 'prfence.io/v1alpha1',
          kind: 'ReservationKey',
          metadata: { name: formatKey(K[n]) },
          spec: { node: claims[n] ?? n, nodeUID: `uid-${claims[n] ?? n}` },
        }));
      return Promise.resolve({
        startedAt: performance.now(),
        scope: 'volume',
        basis: 'volume test',
        nodeFences: new Map(c.allNodeFences.map((n) => [n.metadata.name, n])),
        keyClaims,
        cachesFor: () => Promise.resolve({ ...c, vasOf: (pv: string) => (pv === req.pv ? vas : []) }),
      });
    },
  };
}

function writerStub(fencedOn: FencedKey[] = []) {
  const calls: string[] = [];
  const statuses: VolumeReservationStatus[] = [];
  /** The intents recorded, and per completeFence whether it closed the intent. */
  const intents: FenceIntent[] = [];
  const closes: boolean[] = [];
  const w = {
    calls,
    statuses,
    intents,
    closes,
    writeVolume: (_pv: string, s: VolumeReservationStatus) => (
      calls.push('writeVolume'),
      statuses.push(s),
      Promise.resolve(undefined)
    ),
    recordRegistering: () => (calls.push('recordRegistering'), Promise.resolve()),
    recordIntent: (_pv: string, i: FenceIntent) => (
      calls.push('recordIntent'),
      intents.push(i),
      Promise.resolve(true)
    ),
    completeFence: (...a: Parameters<StatusWriter['completeFence']>) => (
      calls.push('completeFence'),
      closes.push(a[4]?.closeIntent ?? true),
      Promise.resolve()
    ),
    markFenced: (n: string) => (calls.push(`markFenced ${n}`), Promise.resolve()),
    recordProof: (n: string) => (calls.push(`recordProof ${n}`), Promise.resolve()),
    fencedEvent: () => Promise.resolve(),
    forget: () => undefined,
    fencedOn: () => Promise.resolve(fencedOn),
  };
  return w;
}

const FENCED: VolumePolicy = {
  kind: 'fenced',
  reservationType: 'write-exclusive-reg-only',
  fencingFrom: { from: 'default' },
  typeFrom: { from: 'default' },
};

async function setup(
  node: 'a' | 'b' | 'c',
  cache: () => World,
  fresh: ReturnType<typeof freshOf>,
  policy: () => VolumePolicy = () => FENCED,
  given: {
    lu?: MemoryLogicalUnit;
    memory?: FenceMemory;
    fencedOn?: FencedKey[];
    volumeViews?: ReturnType<typeof volumeViewOf>;
    /** Wraps the device the reconciler opens (e.g. to make a call fail). */
    device?: (d: PrDevice) => PrDevice;
  } = {},
) {
  const lu = given.lu ?? new MemoryLogicalUnit({ id: 'lu' });
  const memory = given.memory ?? (await FenceMemory.open(undefined));
  const writer = writerStub(given.fencedOn);
  const opened: string[] = [];
  const r = new VolumeReconciler({
    node,
    key: K[node],
    tag: TAG,
    caches: () => caches(cache()),
    identityOf: () => 'lu',
    fresh: fresh as unknown as FreshViewSource,
    ...(given.volumeViews ? { volumeViews: given.volumeViews as unknown as VolumeViewSource } : {}),
    devices: new DeviceRegistry((id) => {
      opened.push(id);
      const d = lu.initiator(node);
      return Promise.resolve(given.device ? given.device(d) : d);
    }),
    memory,
    writer: writer as unknown as StatusWriter,
    policyOf: () => policy(),
    foreignKeys: 'leave',
    leaveGraceMs: 0,
    signal: new AbortController().signal,
  });
  return { lu, r, writer, opened, memory };
}

/** node-b attached alone; node-a's stale key holds the reservation. */
async function withStaleHolderA(given: Parameters<typeof setup>[4] = {}) {
  const s = await setup(
    'b',
    () => ({ vas: ['b'] }),
    freshOf(() => ({ vas: ['b'] })),
    undefined,
    given,
  );
  await s.lu.initiator('a').register(0n, K.a);
  await s.lu.initiator('a').reserve(K.a, 'write-exclusive-reg-only');
  return s;
}

/** `fn`, whose first call fails (an API error). */
function failOnce<A extends unknown[], R>(fn: (...a: A) => Promise<R>): (...a: A) => Promise<R> {
  let failed = false;
  return (...a) =>
    failed ? fn(...a) : ((failed = true), Promise.reject(new Error('API server unreachable')));
}

describe('VolumeReconciler: the fresh view gates every device command', () => {
  it('A2: the caches lag (node-c newly attached, unseen) and the fresh view has it -> node-c is never preempted', async () => {
    const { lu, r, writer } = await setup(
      'b',
      () => ({ vas: ['b'] }),
      freshOf(() => ({ vas: ['b', 'c'] })),
    );
    await lu.initiator('b').register(0n, K.b);
    await lu.initiator('b').reserve(K.b, 'write-exclusive-reg-only');
    await lu.initiator('c').register(0n, K.c);
    await r.reconcile(PV, log);
    expect(lu.state().registrations.map((x) => x.key)).toEqual([K.b, K.c]);
    expect(writer.calls).not.toContain('recordIntent');
  });

  it('S9: no fresh view (API unreachable) -> no PR command, even one the caches call for', async () => {
    const fresh = freshOf(() => ({ vas: ['b'] }), { down: () => true });
    const { lu, r } = await setup('b', () => ({ vas: ['b'] }), fresh);
    await lu.initiator('a').register(0n, K.a); // a stale key the caches would fence
    const before = lu.state();
    const res = await r.reconcile(PV, log);
    expect(res.outcome).toBe('no-fresh-view');
    expect(lu.state()).toEqual(before);
    expect(fresh.reads()).toBe(1);
  });

  it('the caches show an unfence the shared fresh view predates -> read again, and the node registers at once (not blocked until a resync)', async () => {
    const memory = await FenceMemory.open(undefined);
    await memory.lost('lu', K.a, 'T1');
    let reads = 0;
    // The first fresh read predates the unfence (the view is shared for up to --freshness).
    const fresh = freshOf(() => ({ vas: ['a'], unfencedAt: reads++ === 0 ? 'T1' : 'T2' }));
    const { lu, r } = await setup('a', () => ({ vas: ['a'], unfencedAt: 'T2' }), fresh, undefined, {
      memory,
    });
    const res = await r.reconcile(PV, log);
    expect({
      outcome: res.outcome,
      keys: lu.state().registrations.map((x) => x.key),
      reads: fresh.reads(),
    }).toEqual({
      outcome: 'done',
      keys: [K.a],
      reads: 2,
    });
  });

  it('A1: the caches say legitimate, the fresh view says Fenced -> no REGISTER (views disagree: wait for the caches)', async () => {
    const { lu, r } = await setup(
      'a',
      () => ({ vas: ['a'] }),
      freshOf(() => ({ vas: ['a'], fenced: ['a'] })),
    );
    const res = await r.reconcile(PV, log);
    expect(lu.state().registrations).toEqual([]);
    expect(res.outcome).toBe('views-disagree');
  });

  it('S1: caches and fresh view disagree about a victim -> protected if either says legitimate', async () => {
    // The fresh view (older) lacks c's attachment; the caches have it: c is protected.
    const { lu, r } = await setup(
      'b',
      () => ({ vas: ['b', 'c'] }),
      freshOf(() => ({ vas: ['b'] })),
    );
    await lu.initiator('b').register(0n, K.b);
    await lu.initiator('b').reserve(K.b, 'write-exclusive-reg-only');
    await lu.initiator('c').register(0n, K.c);
    await r.reconcile(PV, log);
    expect(lu.state().registrations.map((x) => x.key)).toContain(K.c);
  });

  it('a stale key in both views -> intent recorded before the preempt; the reconcile returns once the key is gone, handing back the record (nothing of it written yet); that record writes the volume, marks the victim and completes the fence', async () => {
    const { lu, r, writer } = await withStaleHolderA();
    const res = await r.reconcile(PV, log);
    expect(lu.state().registrations.map((x) => x.key)).toEqual([K.b]);
    expect(res.victims).toEqual([{ key: K.a, node: 'a', result: 'fenced' }]);
    const i = writer.calls.indexOf('recordIntent');
    expect(i).toBeGreaterThanOrEqual(0);
    expect({ after: writer.calls.slice(i), record: typeof res.record }).toEqual({
      after: ['recordIntent'],
      record: 'function',
    });
    await res.record!();
    expect(writer.calls.slice(i)).toEqual([
      'recordIntent',
      'writeVolume',
      'markFenced a',
      'recordProof a',
      'completeFence',
    ]);
  });

  it('the record of a fence fails (API error at the Fenced mark) -> the next reconcile, which sends no PREEMPT, writes it first: mark, proof, fence record (the intent closed)', async () => {
    const { lu, r, writer } = await withStaleHolderA();
    writer.markFenced = failOnce(writer.markFenced);
    const res = await r.reconcile(PV, log);
    await expect(res.record!()).rejects.toThrow('unreachable');
    expect(writer.calls).not.toContain('completeFence');
    const next = await r.reconcile(PV, log);
    const tail = writer.calls.slice(writer.calls.indexOf('markFenced a'));
    expect({
      keys: lu.state().registrations.map((x) => x.key),
      preemptAgain: next.victims,
      recorded: tail.slice(0, 3),
    }).toEqual({
      keys: [K.b],
      preemptAgain: [],
      recorded: ['markFenced a', 'recordProof a', 'completeFence'],
    });
    // Written once: a third reconcile records nothing more.
    const before = writer.calls.filter((c) => c === 'completeFence').length;
    await r.reconcile(PV, log);
    expect(writer.calls.filter((c) => c === 'completeFence').length).toBe(before);
  });

  it('the device read after a PREEMPT fails (the reconcile throws with the intent recorded, the key gone) -> the next reconcile reads the device, finds the key gone and records the fence: mark, proof, fence record', async () => {
    let failNextRead = false;
    const { lu, r, writer } = await withStaleHolderA({
      device: (d) =>
        new Proxy(d, {
          get(t, k, rcv) {
            const v = Reflect.get(t, k, rcv) as unknown;
            if (typeof v !== 'function') return v;
            return async (...args: unknown[]) => {
              if (failNextRead && (k === 'readKeys' || k === 'readFullStatus')) {
                failNextRead = false;
                throw new Error('path failed');
              }
              const out = await (v as (...a: unknown[]) => Promise<unknown>).apply(t, args);
              if (k === 'preemptAndAbort') failNextRead = true;
              return out;
            };
          },
        }),
    });
    await expect(r.reconcile(PV, log)).rejects.toThrow('path failed');
    expect({ keys: lu.state().registrations.map((x) => x.key), pending: r.unrecordedFences }).toEqual({
      keys: [K.b],
      pending: 1,
    });
    expect(writer.calls).not.toContain('markFenced a');
    await r.reconcile(PV, log);
    const i = writer.calls.indexOf('markFenced a');
    expect({ recorded: writer.calls.slice(i, i + 3), pending: r.unrecordedFences }).toEqual({
      recorded: ['markFenced a', 'recordProof a', 'completeFence'],
      pending: 0,
    });
  });

  it('the record of an earlier fence keeps failing -> the reconcile still goes on (a new stale key is fenced) and asks to be retried within a second', async () => {
    const { lu, r, writer } = await withStaleHolderA();
    writer.markFenced = () => Promise.reject(new Error('refused'));
    const res = await r.reconcile(PV, log);
    await expect(res.record!()).rejects.toThrow('refused');
    await lu.initiator('c').register(0n, K.c); // stale: node-c is attached nowhere
    const next = await r.reconcile(PV, log);
    expect({
      keys: lu.state().registrations.map((x) => x.key),
      victims: next.victims.map((v) => v.node),
      retryInMs: next.requeueAfterMs,
      pending: r.unrecordedFences,
    }).toEqual({ keys: [K.b], victims: ['c'], retryInMs: 1000, pending: 1 });
  });

  it("the first REGISTER on a volume -> this node's registrant entry is recorded before the command (a key no record names escapes the proof of isolation); a reconcile with the key there records nothing ahead", async () => {
    const order: string[] = [];
    const { r, writer } = await setup(
      'b',
      () => ({ vas: ['b'] }),
      freshOf(() => ({ vas: ['b'] })),
      undefined,
      {
        device: (d) =>
          new Proxy(d, {
            get(t, k, rcv) {
              const v = Reflect.get(t, k, rcv) as unknown;
              if (typeof v !== 'function') return v;
              const f = (v as (...x: unknown[]) => unknown).bind(t);
              return k === 'register' ? (...a: unknown[]) => (order.push('REGISTER'), f(...a)) : f;
            },
          }),
      },
    );
    writer.recordRegistering = () => (order.push('recordRegistering'), Promise.resolve());
    await r.reconcile(PV, log);
    await r.reconcile(PV, log);
    expect(order).toEqual(['recordRegistering', 'REGISTER']);
  });

  it('two stale keys removed in one reconcile and the agent dies before the record -> the last intent names both, and a restart completes both (two Fenced marks)', async () => {
    const { lu, r, writer } = await withStaleHolderA();
    await lu.initiator('c').register(0n, K.c); // stale too: node-c is attached nowhere
    const res = await r.reconcile(PV, log); // its record is never written: the process died
    const last = writer.intents.at(-1)!;
    expect({
      keys: lu.state().registrations.map((x) => x.key),
      intents: writer.intents.length,
      named: intentVictims(last)
        .map((v) => v.victimNode)
        .sort(),
      record: typeof res.record,
    }).toEqual({ keys: [K.b], intents: 2, named: ['a', 'c'], record: 'function' });
    const restarted = await setup(
      'b',
      () => ({ vas: ['b'] }),
      freshOf(() => ({ vas: ['b'] })),
      undefined,
      { lu },
    );
    const open = intentVictims(last).map((v) => ({ key: BigInt(`0x${v.victimKey}`), node: v.victimNode! }));
    await restarted.r.completeOpenIntent(PV, open, log);
    expect(restarted.writer.calls.filter((c) => c.startsWith('markFenced')).sort()).toEqual([
      'markFenced a',
      'markFenced c',
    ]);
  });

  it('a fence recorded while an earlier one of the volume is not -> its intent names the earlier key and stays open (closed by the earlier record)', async () => {
    const { lu, r, writer } = await withStaleHolderA();
    const markFenced = writer.markFenced;
    writer.markFenced = (n: string) => (n === 'a' ? Promise.reject(new Error('refused')) : markFenced(n));
    await expect((await r.reconcile(PV, log)).record!()).rejects.toThrow('refused');
    await lu.initiator('c').register(0n, K.c); // stale: node-c is attached nowhere
    await (
      await r.reconcile(PV, log)
    ).record!(); // node-a's record fails again first
    writer.markFenced = markFenced;
    await r.reconcile(PV, log);
    expect({
      named: writer.intents.map((i) => intentVictims(i).map((v) => v.victimNode)),
      closes: writer.closes,
      pending: r.unrecordedFences,
    }).toEqual({ named: [['a'], ['c', 'a']], closes: [false, true], pending: 0 });
  });

  it('restarted with an open intent whose record fails (API error) -> kept: the next reconcile of the volume reads the device (victim key gone) and records the fence', async () => {
    const { lu, r, writer } = await setup(
      'b',
      () => ({ vas: ['b'] }),
      freshOf(() => ({ vas: ['b'] })),
    );
    await lu.initiator('b').register(0n, K.b); // node-a's key went before the restart
    writer.markFenced = failOnce(writer.markFenced);
    await expect(r.completeOpenIntent(PV, [{ key: K.a, node: 'a' }], log)).rejects.toThrow('unreachable');
    expect(r.unrecordedFences).toBe(1);
    await r.reconcile(PV, log);
    expect({ calls: writer.calls.filter((c) => c !== 'writeVolume'), pending: r.unrecordedFences }).toEqual({
      calls: ['markFenced a', 'recordProof a', 'completeFence'],
      pending: 0,
    });
  });

  it('the record of a fence fails after the Fenced mark and the event (API error at completeFence) -> the next reconcile completes it without marking or announcing the victim again', async () => {
    const { r, writer } = await withStaleHolderA();
    writer.completeFence = failOnce(writer.completeFence);
    const events: string[] = [];
    writer.fencedEvent = (() => (events.push('Fenced'), Promise.resolve())) as typeof writer.fencedEvent;
    const res = await r.reconcile(PV, log);
    await expect(res.record!()).rejects.toThrow('unreachable');
    await r.reconcile(PV, log);
    expect({
      marks: writer.calls.filter((c) => c === 'markFenced a').length,
      events,
      completed: writer.calls.filter((c) => c === 'completeFence').length,
    }).toEqual({ marks: 1, events: ['Fenced'], completed: 1 });
  });

  it('a key registered after the shared fresh view was read (its node attached since, the caches lag) -> the view is read again before the PREEMPT, and that legitimate node is not preempted (S1)', async () => {
    let world: World = { vas: ['a'] };
    const fresh = freshOf(() => world, { shared: true });
    const { lu, r, writer } = await setup('a', () => ({ vas: ['a'] }), fresh);
    await lu.initiator('a').register(0n, K.a);
    await lu.initiator('a').reserve(K.a, 'write-exclusive-reg-only');
    await fresh.get(); // read for another volume a moment ago: node-b not attached then
    world = { vas: ['a', 'b'] }; // node-b attaches and registers; node-a's caches lag
    await lu.initiator('b').register(0n, K.b);
    const res = await r.reconcile(PV, log);
    expect({
      keys: lu.state().registrations.map((x) => x.key),
      outcome: res.outcome,
      reads: fresh.reads(),
      intent: writer.calls.includes('recordIntent'),
    }).toEqual({ keys: [K.a, K.b], outcome: 'done', reads: 2, intent: false });
  });

  it('a key registered between two rounds of one reconcile (its node attached meanwhile, the caches lag) -> the preempt planned from the new read waits for a view newer than that read, and that node is not preempted (S1)', async () => {
    let world: World = { vas: ['a'] };
    const fresh = freshOf(() => world, { shared: true });
    const lu = new MemoryLogicalUnit({ id: 'lu' });
    // node-b attaches and registers while node-a reserves (after node-a's view was read).
    const initiator = lu.initiator.bind(lu);
    lu.initiator = (node: string, o?: Parameters<typeof initiator>[1]) => {
      const d = initiator(node, o);
      if (node !== 'a') return d;
      return new Proxy(d, {
        get(t, prop) {
          if (prop === 'reserve')
            return async (...args: Parameters<typeof d.reserve>) => {
              world = { vas: ['a', 'b'] };
              await initiator('b').register(0n, K.b);
              return t.reserve(...args);
            };
          const v: unknown = Reflect.get(t, prop, t);
          return typeof v === 'function' ? (v as (...x: unknown[]) => unknown).bind(t) : v;
        },
      });
    };
    const { r, writer } = await setup('a', () => ({ vas: ['a'] }), fresh, undefined, { lu });
    const res = await r.reconcile(PV, log);
    expect({
      keys: lu.state().registrations.map((x) => x.key),
      holder: lu.state().reservation?.holder,
      outcome: res.outcome,
      intent: writer.calls.includes('recordIntent'),
    }).toEqual({ keys: [K.a, K.b], holder: 'a', outcome: 'unconfirmed', intent: false });
  });
  it('a node that registers, then preempts a stale holder in one reconcile -> one fresh view backs both: the read-back of its own register shows no new key', async () => {
    const world: World = { vas: ['b'] };
    const fresh = freshOf(() => world);
    const lu = new MemoryLogicalUnit({ id: 'lu' });
    await lu.initiator('a').register(0n, K.a);
    await lu.initiator('a').reserve(K.a, 'write-exclusive-reg-only');
    const { r, writer } = await setup('b', () => world, fresh, undefined, { lu });
    const res = await r.reconcile(PV, log);
    expect({
      keys: lu.state().registrations.map((x) => x.key),
      holder: lu.state().reservation?.holder,
      intent: writer.calls.includes('recordIntent'),
      views: fresh.reads(),
    }).toEqual({ keys: [K.b], holder: 'b', intent: true, views: 1 });
    expect(res.victims).toEqual([expect.objectContaining({ key: K.a, result: 'fenced' })]);
  });
});

describe('VolumeReconciler: the volume policy (prfence.io/fencing, prfence.io/reservation-type)', () => {
  const optedOut: VolumePolicy = { kind: 'opted-out', fencingFrom: { from: 'pv', name: PV } };

  it('a PV type write-exclusive-all-regs -> the device is reserved with that type, not the default', async () => {
    const { lu, r } = await setup(
      'a',
      () => ({ vas: ['a'] }),
      freshOf(() => ({ vas: ['a'] })),
      () => ({ ...FENCED, reservationType: 'write-exclusive-all-regs' }),
    );
    await r.reconcile(PV, log);
    expect(lu.state().reservation?.type).toBe('write-exclusive-all-regs');
  });

  it('a type change on a reserved volume -> no command: the type stays until the next reservation or takeover', async () => {
    let type: 'write-exclusive-reg-only' | 'exclusive-access' = 'write-exclusive-reg-only';
    const { lu, r } = await setup(
      'a',
      () => ({ vas: ['a'] }),
      freshOf(() => ({ vas: ['a'] })),
      () => ({ ...FENCED, reservationType: type }),
    );
    await r.reconcile(PV, log);
    const before = lu.state();
    type = 'exclusive-access';
    await r.reconcile(PV, log);
    expect(lu.state()).toEqual(before);
    expect(lu.state().reservation?.type).toBe('write-exclusive-reg-only');
  });

  it('opted out and never registered here -> the device is not opened, nothing written', async () => {
    const { lu, r, writer, opened } = await setup(
      'a',
      () => ({ vas: ['a'] }),
      freshOf(() => ({ vas: ['a'] })),
      () => optedOut,
    );
    const res = await r.reconcile(PV, log);
    expect(res.outcome).toBe('opted-out');
    expect(opened).toEqual([]);
    expect(lu.state().registrations).toEqual([]);
    expect(writer.calls).toEqual([]);
  });

  it('opted out while this node holds the reservation -> it leaves like a detach: release, then unregister', async () => {
    let policy: VolumePolicy = FENCED;
    const { lu, r } = await setup(
      'a',
      () => ({ vas: ['a'] }),
      freshOf(() => ({ vas: ['a'] })),
      () => policy,
    );
    await r.reconcile(PV, log);
    expect(lu.state().reservation?.holder).toBe('a');
    policy = optedOut;
    const res = await r.reconcile(PV, log);
    expect(res.registered).toBe(false);
    expect(lu.state().registrations).toEqual([]);
    expect(lu.state().reservation).toBeNull();
    expect(r.touched.has(PV)).toBe(false);
  });

  it('opted out while a peer is fenced and this node holds the reservation -> held for a takeover, not released', async () => {
    let policy: VolumePolicy = FENCED;
    const { lu, r } = await setup(
      'a',
      () => ({ vas: ['a'], fenced: ['c'] }),
      freshOf(() => ({ vas: ['a'], fenced: ['c'] })),
      () => policy,
      { fencedOn: [{ node: 'c', key: formatKey(K.c), at: '2026-11-30T10:00:00Z' }] },
    );
    await r.reconcile(PV, log);
    policy = optedOut;
    await r.reconcile(PV, log);
    expect(lu.state().reservation?.holder).toBe('a');
    expect(r.handingOver.has(PV)).toBe(true);
  });

  it('a node fenced elsewhere, never on this volume -> the detached holder releases and unregisters (no hold)', async () => {
    let vas = ['a'];
    const { lu, r } = await setup(
      'a',
      () => ({ vas, fenced: ['c'] }),
      freshOf(() => ({ vas, fenced: ['c'] })),
      undefined,
      { fencedOn: [] },
    );
    await r.reconcile(PV, log);
    expect(lu.state().reservation?.holder).toBe('a');
    vas = [];
    await r.reconcile(PV, log);
    expect({
      reservation: lu.state().reservation,
      keys: lu.state().registrations,
      handingOver: r.handingOver.has(PV),
    }).toEqual({
      reservation: null,
      keys: [],
      handingOver: false,
    });
  });

  it('a fence recorded on this volume whose node was unfenced since -> the detached holder releases', async () => {
    let vas = ['a'];
    const { lu, r } = await setup(
      'a',
      () => ({ vas }),
      freshOf(() => ({ vas })),
      undefined,
      {
        fencedOn: [{ node: 'c', key: formatKey(K.c), at: '2026-11-30T10:00:00Z' }],
      },
    );
    await r.reconcile(PV, log);
    vas = [];
    await r.reconcile(PV, log);
    expect(lu.state().reservation).toBeNull();
  });

  it('restarted agent, volume detached and opted out meanwhile, host memory says registered -> it still leaves', async () => {
    const first = await setup(
      'a',
      () => ({ vas: ['a'] }),
      freshOf(() => ({ vas: ['a'] })),
    );
    await first.r.reconcile(PV, log);
    expect(first.lu.state().reservation?.holder).toBe('a');
    // A new reconciler (the agent restarted) over the same LU and host memory: it has seen
    // nothing of this volume, which is no longer attached here.
    const { lu, r } = await setup(
      'a',
      () => ({ vas: [] }),
      freshOf(() => ({ vas: [] })),
      () => optedOut,
      { lu: first.lu, memory: first.memory },
    );
    await r.reconcile(PV, log);
    expect(lu.state().registrations).toEqual([]);
    expect(lu.state().reservation).toBeNull();
  });

  it('invalid annotation -> no device command (not even a register), Configured=False with the reason', async () => {
    const { lu, r, writer, opened } = await setup(
      'a',
      () => ({ vas: ['a'] }),
      freshOf(() => ({ vas: ['a'] })),
      () => ({ kind: 'invalid', reason: 'InvalidReservationType', message: 'bad "shared"' }),
    );
    const res = await r.reconcile(PV, log);
    expect(res.outcome).toBe('invalid-policy');
    expect(opened).toEqual([]);
    expect(lu.state().registrations).toEqual([]);
    expect(writer.statuses.at(-1)?.conditions).toMatchObject([
      { type: 'Configured', status: 'False', reason: 'InvalidReservationType', message: 'bad "shared"' },
    ]);
  });

  it('invalid annotation on a volume this node is registered on -> no command: the registration stays', async () => {
    let policy: VolumePolicy = FENCED;
    const { lu, r } = await setup(
      'a',
      () => ({ vas: ['a'] }),
      freshOf(() => ({ vas: ['a'] })),
      () => policy,
    );
    await r.reconcile(PV, log);
    const before = lu.state();
    policy = { kind: 'invalid', reason: 'InvalidFencing', message: 'bad' };
    await r.reconcile(PV, log);
    expect(lu.state()).toEqual(before);
  });
});

describe('VolumeReconciler: a view of one volume backs only what it can see', () => {
  /** node-b attached and holding; node-a's key on the device too. */
  async function withStaleA(cache: World, api: World, claims: Partial<Record<'a' | 'b' | 'c', string>> = {}) {
    let fullReadWithA: boolean | undefined;
    const lu = new MemoryLogicalUnit({ id: 'lu' });
    const fresh = freshOf(() => {
      fullReadWithA ??= lu.state().registrations.some((x) => x.key === K.a);
      return api;
    });
    const views = volumeViewOf(() => api, claims);
    const t = await setup('b', () => cache, fresh, undefined, { lu, volumeViews: views });
    await lu.initiator('a').register(0n, K.a);
    await lu.initiator('b').register(0n, K.b);
    await lu.initiator('b').reserve(K.b, 'write-exclusive-reg-only');
    return { ...t, fresh, views, fullReadWithA: () => fullReadWithA };
  }

  it('node-a asked to be fenced (NodeFence spec Fenced) -> its key preempted on the view of this volume, before any full view is read; the intent recorded first', async () => {
    const w: World = { vas: ['b'], fenceRequested: ['a'] };
    const { lu, r, writer, views, fullReadWithA } = await withStaleA(w, w);
    const res = await r.reconcile(PV, log);
    expect({
      keys: lu.state().registrations.map((x) => x.key),
      victims: res.victims,
      volumeReads: views.reads() > 0,
      fullReadWhileAThere: fullReadWithA(),
      intentFirst: writer.calls.indexOf('recordIntent') >= 0,
    }).toEqual({
      keys: [K.b],
      victims: [{ key: K.a, node: 'a', result: 'fenced' }],
      volumeReads: true,
      fullReadWhileAThere: undefined, // no full view: the fence record (which reads one) is not written yet
      intentFirst: true,
    });
    await res.record!();
    expect(fullReadWithA()).toBe(false); // the full view is read only for the fence record, after
  });

  it('the caches lag: they still show node-a asked to be fenced, the API shows it unfenced and attached -> the volume view does not back the preempt; the full view decides next, and node-a keeps its key (S1)', async () => {
    const { lu, r, writer, fresh } = await withStaleA(
      { vas: ['b'], fenceRequested: ['a'] },
      { vas: ['a', 'b'] },
    );
    const first = await r.reconcile(PV, log);
    expect({
      keys: lu.state().registrations.map((x) => x.key),
      requeueAfterMs: first.requeueAfterMs,
      intent: writer.calls.includes('recordIntent'),
      fullReads: fresh.reads(),
    }).toEqual({ keys: [K.a, K.b], requeueAfterMs: 100, intent: false, fullReads: 0 });
    await r.reconcile(PV, log);
    expect(lu.state().registrations.map((x) => x.key)).toEqual([K.a, K.b]);
    expect(fresh.reads()).toBeGreaterThan(0);
  });

  it('node-a asked to be fenced, but the key on the device is claimed by node-c (ReservationKey) -> not preempted on the volume view', async () => {
    const w: World = { vas: ['b'], fenceRequested: ['a'] };
    const { lu, r, writer } = await withStaleA(w, { vas: ['b', 'c'], fenceRequested: ['a'] }, { a: 'c' });
    const res = await r.reconcile(PV, log);
    expect({
      keys: lu.state().registrations.map((x) => x.key),
      requeueAfterMs: res.requeueAfterMs,
      intent: writer.calls.includes('recordIntent'),
    }).toEqual({ keys: [K.a, K.b], requeueAfterMs: 100, intent: false });
  });

  it('a stale key of a node NOT asked to be fenced (a plain detach) -> the volume view is not used at all: the full view backs the fence', async () => {
    const w: World = { vas: ['b'] };
    const { lu, r, views, fresh } = await withStaleA(w, w);
    await r.reconcile(PV, log);
    expect({
      keys: lu.state().registrations.map((x) => x.key),
      volumeReads: views.reads(),
      fullReads: fresh.reads() > 0,
    }).toEqual({ keys: [K.b], volumeReads: 0, fullReads: true });
  });

  it('a shared full view from before the fence request (within --freshness) -> not used for the Fenced mark: a newer one is read, and node-a is marked', async () => {
    const lu = new MemoryLogicalUnit({ id: 'lu' });
    let api: World = { vas: ['a', 'b'] };
    const fresh = freshOf(() => api, { shared: true });
    await fresh.get(); // an earlier reconcile's view: node-a attached and not asked to be fenced
    api = { vas: ['b'], fenceRequested: ['a'] };
    const views = volumeViewOf(() => api);
    const { r, writer } = await setup('b', () => api, fresh, undefined, { lu, volumeViews: views });
    await lu.initiator('a').register(0n, K.a);
    await lu.initiator('b').register(0n, K.b);
    await lu.initiator('b').reserve(K.b, 'write-exclusive-reg-only');
    const res = await r.reconcile(PV, log);
    await res.record!();
    expect({
      victims: res.victims,
      marked: writer.calls.filter((x) => x.startsWith('markFenced')),
      fullReads: fresh.reads(),
    }).toEqual({
      victims: [{ key: K.a, node: 'a', result: 'fenced' }],
      marked: ['markFenced a'],
      fullReads: 2,
    });
  });
});
