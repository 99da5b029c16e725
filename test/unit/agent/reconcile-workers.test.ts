import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { ReconcileWorkers } from '../../../src/agent/reconcile-workers.js';
import type { ReconcileResult, VolumeReconciler } from '../../../src/agent/volume-reconciler.js';
import { WorkQueue } from '../../../src/kube/work-queue.js';

const log = pino({ level: 'silent' });

function deferred() {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

const until = async (f: () => boolean) => {
  for (let i = 0; i < 1000 && !f(); i++) await new Promise((r) => setImmediate(r));
  if (!f()) throw new Error('condition never held');
};

/**
 * A reconciler whose every reconcile of a PV in `fencing` removes a key and hands back its
 * record, which ends only when the test releases it (`held`); a reconcile of a `slow-*` PV
 * ends only when the test releases it (`heldReconciles`).
 */
function fakeReconciler(fencing: Set<string>) {
  const log: string[] = [];
  const held = new Map<string, () => void>();
  const heldReconciles = new Map<string, () => void>();
  const recordsRunning = { now: 0, max: 0 };
  const reconciler = {
    blockedOn: new Set<string>(),
    handingOver: new Set<string>(),
    mayRegisterCached: () => true,
    reconcile: async (pv: string): Promise<ReconcileResult> => {
      log.push(`reconcile ${pv}`);
      if (pv.startsWith('slow-')) {
        // A reconcile that ends only when the test releases it (e.g. waiting on the API).
        const d = deferred();
        heldReconciles.set(pv, d.resolve);
        await d.promise;
      }
      if (!fencing.has(pv)) return Promise.resolve({ outcome: 'done', victims: [], registered: true });
      fencing.delete(pv); // fenced once
      return Promise.resolve({
        outcome: 'done',
        victims: [{ key: 1n, node: 'node-a', result: 'fenced' }],
        registered: true,
        record: async () => {
          log.push(`record ${pv}`);
          recordsRunning.now++;
          recordsRunning.max = Math.max(recordsRunning.max, recordsRunning.now);
          const d = deferred();
          held.set(pv, d.resolve);
          await d.promise;
          recordsRunning.now--;
          log.push(`recorded ${pv}`);
          return { outcome: 'done', victims: [], registered: true };
        },
      });
    },
  };
  return { reconciler: reconciler as unknown as VolumeReconciler, log, held, heldReconciles, recordsRunning };
}

function start(fencing: string[], workers: number) {
  const queue = new WorkQueue<string>();
  const f = fakeReconciler(new Set(fencing));
  const fences: string[] = [];
  const w = new ReconcileWorkers({
    queue,
    reconciler: f.reconciler,
    log,
    workers,
    onFence: (e) => fences.push(e.pv),
    writeOwnStatus: () => Promise.resolve(),
  });
  w.start();
  return { queue, w, fences, ...f };
}

describe('ReconcileWorkers: a fence record is written off the worker', () => {
  it("one worker: while pv-1's fence record is being written, the worker reconciles pv-2; the fence is reported before its record is written", async () => {
    const t = start(['pv-1'], 1);
    t.queue.add('pv-1');
    t.queue.add('pv-2');
    await until(() => t.log.includes('reconcile pv-2'));
    expect({ log: t.log, fences: t.fences }).toEqual({
      log: ['reconcile pv-1', 'record pv-1', 'reconcile pv-2'],
      fences: ['pv-1'],
    });
    t.held.get('pv-1')!();
    t.queue.shutDown();
    await t.w.stopped();
  });

  it('a PV changed while its fence record is being written -> reconciled again only after the record is written (never two at once)', async () => {
    const t = start(['pv-1'], 2);
    t.queue.add('pv-1');
    await until(() => t.held.has('pv-1'));
    t.queue.add('pv-1'); // e.g. its VolumeReservation changed meanwhile
    for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
    expect(t.log).toEqual(['reconcile pv-1', 'record pv-1']);
    t.held.get('pv-1')!();
    await until(() => t.log.length === 4);
    expect(t.log).toEqual(['reconcile pv-1', 'record pv-1', 'recorded pv-1', 'reconcile pv-1']);
    t.queue.shutDown();
    await t.w.stopped();
  });

  it('5 fences with 2 workers -> at most 2 records written at once; every record is written; stopped() waits for them', async () => {
    const pvs = ['pv-1', 'pv-2', 'pv-3', 'pv-4', 'pv-5'];
    const t = start(pvs, 2);
    for (const pv of pvs) t.queue.add(pv);
    await until(() => pvs.every((pv) => t.log.includes(`reconcile ${pv}`)));
    expect(t.recordsRunning.now).toBe(2);
    t.queue.shutDown();
    let stopped = false;
    const s = t.w.stopped().then(() => (stopped = true));
    for (let round = 0; round < 5; round++) {
      await until(() => t.held.size > 0);
      expect(stopped).toBe(false);
      const [pv, release] = [...t.held][0]!;
      t.held.delete(pv);
      release();
      await new Promise((r) => setImmediate(r));
    }
    await s;
    expect({
      max: t.recordsRunning.max,
      recorded: t.log.filter((x) => x.startsWith('recorded')).length,
    }).toEqual({ max: 2, recorded: 5 });
  });

  it('volumes waiting in the queue -> one record written at a time; the queue empty -> the next record starts at once', async () => {
    const t = start(['pv-1', 'pv-2'], 2);
    for (const pv of ['pv-1', 'pv-2', 'slow-1', 'slow-2', 'slow-3']) t.queue.add(pv);
    await until(() => t.heldReconciles.has('slow-1') && t.heldReconciles.has('slow-2'));
    for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
    // slow-3 waits in the queue: pv-2's record waits for pv-1's.
    expect({ queued: t.queue.length, running: t.recordsRunning.now, held: [...t.held.keys()] }).toEqual({
      queued: 1,
      running: 1,
      held: ['pv-1'],
    });
    t.heldReconciles.get('slow-1')!(); // its worker takes slow-3: the queue is empty
    await until(() => t.held.has('pv-2'));
    expect({ queued: t.queue.length, running: t.recordsRunning.now }).toEqual({ queued: 0, running: 2 });
    for (const r of [...t.held.values(), ...t.heldReconciles.values()]) r();
    await until(() => t.heldReconciles.has('slow-3'));
    t.heldReconciles.get('slow-3')!();
    t.queue.shutDown();
    await t.w.stopped();
    expect(t.log.filter((x) => x.startsWith('recorded'))).toEqual(['recorded pv-1', 'recorded pv-2']);
  });
});
