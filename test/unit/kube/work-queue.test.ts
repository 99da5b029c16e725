import { describe, expect, it } from 'vitest';
import { WorkQueue, type QueueClock } from '../../../src/kube/work-queue.js';

function fakeClock() {
  let now = 0;
  const timers: { at: number; fn: () => void; id: number }[] = [];
  let id = 0;
  const clock: QueueClock = {
    now: () => now,
    setTimeout: (fn, ms) => {
      timers.push({ at: now + ms, fn, id: ++id });
      return id;
    },
    clearTimeout: (h) => {
      const i = timers.findIndex((t) => t.id === h);
      if (i >= 0) timers.splice(i, 1);
    },
  };
  const advance = (ms: number) => {
    now += ms;
    for (const t of timers.filter((x) => x.at <= now).sort((a, b) => a.at - b.at)) {
      timers.splice(timers.indexOf(t), 1);
      t.fn();
    }
  };
  return { clock, advance, pending: () => timers.map((t) => t.at - now) };
}

describe('WorkQueue', () => {
  it('adds of a queued item -> merged into one', async () => {
    const q = new WorkQueue();
    q.add('a');
    q.add('a');
    q.add('b');
    expect(q.length).toBe(2);
    expect(await q.get()).toBe('a');
    expect(await q.get()).toBe('b');
  });

  it('add while processing -> not handed to a second worker; re-queued once on done', async () => {
    const q = new WorkQueue();
    q.add('a');
    const k = await q.get();
    q.add('a');
    q.add('a');
    expect(q.length).toBe(0); // not available to another worker while processing
    q.done(k!);
    expect(q.length).toBe(1);
    expect(await q.get()).toBe('a');
    q.done('a');
    expect(q.length).toBe(0);
  });

  it('a waiting worker -> gets the next add immediately', async () => {
    const q = new WorkQueue();
    const p = q.get();
    q.add('x');
    expect(await p).toBe('x');
  });

  it('a burst of adds of one item while a worker waits -> processed once, not re-run as dirty', async () => {
    const q = new WorkQueue();
    const p = q.get();
    q.add('x'); // e.g. a resync adding the same PV through two routes in one tick
    q.add('x');
    expect(await p).toBe('x');
    q.done('x');
    expect(q.length).toBe(0);
  });

  it('addRateLimited -> delays 10, 20, 40, 50, 50 (capped); forget resets the count', async () => {
    const { clock, advance, pending } = fakeClock();
    const q = new WorkQueue({ clock, baseDelayMs: 10, maxDelayMs: 50 });
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      q.addRateLimited('a');
      const d = pending()[0]!;
      delays.push(d);
      advance(d);
      q.done((await q.get())!);
    }
    expect(delays).toEqual([10, 20, 40, 50, 50]);
    expect(q.numRequeues('a')).toBe(5);
    q.forget('a');
    q.addRateLimited('a');
    expect(pending()).toEqual([10]);
  });

  it('addAfter -> queued only when the time comes; an earlier deadline wins', () => {
    const { clock, advance } = fakeClock();
    const q = new WorkQueue({ clock });
    q.addAfter('a', 100);
    q.addAfter('a', 30);
    advance(29);
    expect(q.length).toBe(0);
    advance(1);
    expect(q.length).toBe(1);
    advance(100);
    expect(q.length).toBe(1);
  });

  it('shutDown -> waiting workers get undefined, adds are ignored', async () => {
    const q = new WorkQueue();
    const p = q.get();
    q.shutDown();
    expect(await p).toBeUndefined();
    q.add('a');
    expect(q.length).toBe(0);
  });
});
