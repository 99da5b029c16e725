/**
 * The native executor's scheduling against a fake libc (in-process backend): hangs, late
 * returns, close with queued calls, buffer ownership, queue time, isolation of devices;
 * then batches: a hung call holds back no other answer, each call keeps its own limit.
 * The fake records every call and every ownership violation (fake-libc.ts).
 */
import { getEventListeners } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { CallBatch } from '../../../src/pr/call-batch.js';
import { IndeterminateError, NotSentError } from '../../../src/pr/errors.js';
import {
  inProcessBackend,
  NativeExecutor,
  NativeThreadGoneError,
  type CallOptions,
  type NativeHandle,
} from '../../../src/pr/koffi/executor.js';
import { FakeLibc, gate, type FakeDevice } from '../../../src/pr/koffi/fake-libc.js';
import type { SyscallResult } from '../../../src/pr/koffi/native-call.js';
import { recordingExecutor } from './hand-overs.js';

const OK: SyscallResult = { ret: 0, errno: 0 };
const ioctl = (arg = new Uint8Array(16)) => ({ kind: 'ioctl' as const, request: 0x1234, arg });
const opts = (timeoutMs: number): CallOptions => ({ op: 'test', timeoutMs });

/** Polls `cond` until true, failing after `ms`. */
async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** Resolves how long `p` took to settle, and how it settled. */
async function timed<T>(p: Promise<T>): Promise<{ ms: number; value?: T; error?: unknown }> {
  const t0 = performance.now();
  try {
    const value = await p;
    return { ms: performance.now() - t0, value };
  } catch (error) {
    return { ms: performance.now() - t0, error };
  }
}

let toRelease: (() => void)[] = [];
afterEach(() => {
  for (const r of toRelease) r();
  toRelease = [];
});

function setup(device: FakeDevice, o: { poolSize?: number; maxThreads?: number } = {}) {
  const libc = new FakeLibc(device);
  const ex = new NativeExecutor({ backend: inProcessBackend(libc), ...o });
  return { libc, ex };
}

describe('NativeExecutor on a fake libc', () => {
  it('a call hung past its limit -> IndeterminateError at the deadline, device hung, next call NotSent at once, device usable after the late return', async () => {
    const g = gate();
    toRelease.push(() => g.open(OK));
    let first = true;
    const { libc, ex } = setup(() => {
      if (!first) return OK;
      first = false;
      return g.promise;
    });
    const h = await ex.open('/dev/hang', 2, { timeoutMs: 1000 });

    const hung = await timed(h.call(ioctl(), opts(50)));
    expect(hung.error).toBeInstanceOf(IndeterminateError);
    expect(hung.ms).toBeGreaterThanOrEqual(45);
    expect(hung.ms).toBeLessThan(500);
    expect(h.hung).toBe(true);
    expect(ex.stats()).toMatchObject({ hungDevices: 1, stuck: 1 });

    const fast = await timed(h.call(ioctl(), opts(1000)));
    expect(fast.error).toBeInstanceOf(NotSentError);
    expect(fast.ms).toBeLessThan(50);
    expect(libc.calls).toHaveLength(1); // the fast failure was never sent

    g.open(OK); // the kernel finally answers
    await until(() => !h.hung);
    expect(ex.stats()).toMatchObject({ hungDevices: 0, stuck: 0 });
    expect((await h.call(ioctl(), opts(1000))).ret).toBe(0);
    expect(libc.calls).toHaveLength(2);
    expect(libc.violations).toEqual([]);
  });

  it('a late return after the time limit -> the caller keeps IndeterminateError, the late answer is dropped, the stuck thread is retired once a replacement exists', async () => {
    const g = gate();
    toRelease.push(() => g.open(OK));
    const { libc, ex } = setup((c) => (c.path === '/dev/slow' ? g.promise : OK), { poolSize: 1 });
    const slow = await ex.open('/dev/slow', 2, { timeoutMs: 1000 });
    const other = await ex.open('/dev/other', 2, { timeoutMs: 1000 });

    const p = slow.call(ioctl(), opts(30));
    await expect(p).rejects.toBeInstanceOf(IndeterminateError);
    // The only pool thread is stuck: a replacement runs the other device's call.
    expect((await other.call(ioctl(), opts(500))).ret).toBe(0);
    expect(ex.stats()).toMatchObject({ threads: 2, stuck: 1 });

    g.open({ ret: 0x18, errno: 0 }); // late, and a conflict: must not reach anyone
    await until(() => ex.stats().stuck === 0);
    expect(ex.stats().threads).toBe(1); // pool back to its size: the late thread retired
    await expect(p).rejects.toBeInstanceOf(IndeterminateError);
    expect(libc.violations).toEqual([]);
  });

  it('close while calls are queued -> queued calls NotSent, the fd closed only after the running call returns', async () => {
    const g = gate();
    toRelease.push(() => g.open(OK));
    const { libc, ex } = setup(() => g.promise);
    const h = await ex.open('/dev/a', 2, { timeoutMs: 1000 });
    const running = h.call(ioctl(), opts(5000));
    const queued = [h.call(ioctl(), opts(5000)), h.call(ioctl(), opts(5000))];
    await until(() => libc.calls.length === 1);

    const closing = h.close(5000);
    for (const q of queued) await expect(q).rejects.toBeInstanceOf(NotSentError);
    await expect(h.call(ioctl(), opts(5000))).rejects.toBeInstanceOf(NotSentError);
    expect(libc.closed).toEqual([]); // the running call still uses the fd
    expect(libc.openFds).toEqual([h.fd]);

    g.open(OK);
    expect((await running).ret).toBe(0);
    await closing;
    expect(libc.closed).toEqual([h.fd]);
    expect(libc.calls).toHaveLength(1); // the queued calls never ran, on any fd
    expect(libc.violations).toEqual([]);
  });

  it('close of a device whose call is stuck -> close returns at once (not at its own limit), the fd is closed when the call returns', async () => {
    const g = gate();
    toRelease.push(() => g.open(OK));
    const { libc, ex } = setup(() => g.promise);
    const h = await ex.open('/dev/a', 2, { timeoutMs: 1000 });
    const stuck = h.call(ioctl(), opts(20));
    await expect(stuck).rejects.toBeInstanceOf(IndeterminateError);
    const c = await timed(h.close(5000));
    expect(c.ms).toBeLessThan(200);
    expect(libc.closed).toEqual([]);
    g.open(OK);
    await until(() => libc.closed.length === 1);
    expect(libc.violations).toEqual([]);
    expect(ex.stats().devices).toBe(0);
  });

  it('close while a call runs, and the call then passes its limit -> close returns at that limit, not its own', async () => {
    const g = gate();
    toRelease.push(() => g.open(OK));
    const { libc, ex } = setup(() => g.promise);
    const h = await ex.open('/dev/a', 2, { timeoutMs: 1000 });
    const running = h.call(ioctl(), opts(60)).catch((e: unknown) => e);
    await until(() => libc.calls.length === 1);
    const c = await timed(h.close(5000));
    expect(c.ms).toBeLessThan(500);
    expect(await running).toBeInstanceOf(IndeterminateError);
    expect(libc.closed).toEqual([]);
    g.open(OK);
    await until(() => libc.closed.length === 1);
  });

  it('buffers of a call past its limit -> neither freed nor reused while the fake call holds them, freed after it returns', async () => {
    const g = gate();
    toRelease.push(() => g.open(OK));
    const { libc, ex } = setup((c) => (c.path === '/dev/hang' ? g.promise : OK));
    const hung = await ex.open('/dev/hang', 2, { timeoutMs: 1000 });
    const other = await ex.open('/dev/other', 2, { timeoutMs: 1000 });
    const payload = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
    const p = hung.call(
      {
        kind: 'ioctl',
        request: 0x4e43,
        arg: new Uint8Array(72),
        pointers: [{ offset: 24, size: 16, in: payload }],
      },
      opts(20),
    );
    await expect(p).rejects.toBeInstanceOf(IndeterminateError);
    const held = libc.calls[0]!;
    // Plenty of other calls allocate and free while the hung one holds its memory.
    for (let i = 0; i < 20; i++) {
      await other.call(
        { kind: 'ioctl', request: 1, arg: new Uint8Array(72), pointers: [{ offset: 24, size: 16 }] },
        opts(500),
      );
    }
    expect(held.deref(24)).toEqual(payload);
    expect(libc.calls.slice(1).flatMap((c) => c.held)).not.toContain(held.held[1]);
    expect(libc.liveBlocks).toBe(2); // the hung call's argument and payload only
    held.deref(24).fill(0xee); // the "kernel" writes into it late
    g.open(OK);
    await until(() => libc.liveBlocks === 0);
    expect(libc.violations).toEqual([]);
  });

  it('queue time counts: 80 ms queued behind another call, then 50 ms running, of a 100 ms limit -> IndeterminateError at 100 ms', async () => {
    const { ex } = setup(async (c) => {
      await new Promise((r) => setTimeout(r, c.request === 1 ? 80 : 50));
      return OK;
    });
    const h = await ex.open('/dev/a', 2, { timeoutMs: 1000 });
    const first = h.call({ kind: 'ioctl', request: 1, arg: new Uint8Array(8) }, opts(1000));
    const second = timed(h.call({ kind: 'ioctl', request: 2, arg: new Uint8Array(8) }, opts(100)));
    expect((await first).ret).toBe(0);
    const r = await second;
    expect(r.error).toBeInstanceOf(IndeterminateError);
    expect(r.ms).toBeLessThan(125);
  });

  it('a call still queued at its deadline -> NotSentError, and it is never sent', async () => {
    const g = gate();
    toRelease.push(() => g.open(OK));
    const { libc, ex } = setup(() => g.promise);
    const h = await ex.open('/dev/a', 2, { timeoutMs: 1000 });
    const first = h.call(ioctl(), opts(5000));
    const r = await timed(h.call(ioctl(), opts(40)));
    expect(r.error).toBeInstanceOf(NotSentError);
    expect(r.ms).toBeLessThan(200);
    g.open(OK);
    await first;
    await until(() => ex.stats().busy === 0);
    expect(libc.calls).toHaveLength(1);
  });

  it('ten hung devices (two calls each) -> calls on healthy devices still complete within 100 ms', async () => {
    const g = gate();
    toRelease.push(() => g.open(OK));
    const { libc, ex } = setup((c) => (c.path.startsWith('/dev/hung') ? g.promise : OK), {
      poolSize: 4,
      maxThreads: 32,
    });
    const hung = await Promise.all(
      Array.from({ length: 10 }, (_, i) => ex.open(`/dev/hung${i}`, 2, { timeoutMs: 1000 })),
    );
    for (const h of hung) {
      const [running, queued] = [h.call(ioctl(), opts(30)), h.call(ioctl(), opts(1000))];
      await expect(running).rejects.toBeInstanceOf(IndeterminateError);
      await expect(queued).rejects.toBeInstanceOf(NotSentError); // failed fast when the device hung
    }
    expect(ex.stats()).toMatchObject({ hungDevices: 10, stuck: 10 });

    const healthy = await Promise.all(
      Array.from({ length: 5 }, (_, i) => ex.open(`/dev/ok${i}`, 2, { timeoutMs: 1000 })),
    );
    for (const h of healthy) {
      const r = await timed(h.call(ioctl(), opts(1000)));
      expect(r.value?.ret).toBe(0);
      expect(r.ms).toBeLessThan(100);
    }
    expect(ex.stats().threads).toBeLessThanOrEqual(14);
    g.open(OK);
    await until(() => ex.stats().stuck === 0);
    expect(ex.stats().threads).toBe(4);
    expect(libc.violations).toEqual([]);
  });

  it('every thread stuck (maxThreads reached) -> no thread beyond the limit; a new call waits, then NotSent at its deadline', async () => {
    const g = gate();
    toRelease.push(() => g.open(OK));
    const { libc, ex } = setup((c) => (c.path.startsWith('/dev/hung') ? g.promise : OK), {
      poolSize: 1,
      maxThreads: 3,
    });
    for (let i = 0; i < 3; i++) {
      const h = await ex.open(`/dev/hung${i}`, 2, { timeoutMs: 1000 });
      await expect(h.call(ioctl(), opts(20))).rejects.toBeInstanceOf(IndeterminateError);
    }
    expect(ex.stats()).toMatchObject({ threads: 3, stuck: 3 });
    const r = await timed(ex.open('/dev/ok', 2, { timeoutMs: 40 }));
    expect(r.error).toBeInstanceOf(NotSentError);
    expect(ex.stats().threads).toBe(3);
    g.open(OK);
    const ok = await ex.open('/dev/ok', 2, { timeoutMs: 1000 });
    expect((await ok.call(ioctl(), opts(1000))).ret).toBe(0);
    expect(libc.violations).toEqual([]);
  });

  it('an open past its limit -> NotSentError, and the fd that arrives late is closed', async () => {
    const g = gate();
    toRelease.push(() => g.open(OK));
    const { libc, ex } = setup(() => OK);
    libc.openHook = () => g.promise.then(() => undefined);
    const r = await timed(ex.open('/dev/slow-open', 2, { timeoutMs: 30 }));
    expect(r.error).toBeInstanceOf(NotSentError);
    g.open(OK);
    await until(() => libc.closed.length === 1);
    expect(libc.openFds).toEqual([]);
  });

  it('abort while queued -> NotSentError at once; abort while running -> IndeterminateError, the device not hung', async () => {
    const g = gate();
    toRelease.push(() => g.open(OK));
    const { ex } = setup(() => g.promise);
    const h = await ex.open('/dev/a', 2, { timeoutMs: 1000 });
    const ac1 = new AbortController();
    const ac2 = new AbortController();
    const running = h.call(ioctl(), { op: 'x', timeoutMs: 5000, signal: ac1.signal });
    const queued = h.call(ioctl(), { op: 'x', timeoutMs: 5000, signal: ac2.signal });
    ac2.abort();
    await expect(queued).rejects.toBeInstanceOf(NotSentError);
    ac1.abort();
    await expect(running).rejects.toBeInstanceOf(IndeterminateError);
    expect(h.hung).toBe(false);
    g.open(OK);
  });

  it('the first thread slow to start (Node + koffi boot) -> not counted against the open time limit', async () => {
    const libc = new FakeLibc(() => OK);
    const inner = inProcessBackend(libc);
    const ex = new NativeExecutor({
      backend: { spawn: () => ({ ...inner.spawn(), ready: new Promise<void>((r) => setTimeout(r, 80)) }) },
    });
    const h = await ex.open('/dev/a', 2, { timeoutMs: 30 });
    expect((await h.call(ioctl(), opts(30))).ret).toBe(0);
  });

  it('a thread that fails to start -> open NotSentError, nothing sent, the next open starts a new thread', async () => {
    const libc = new FakeLibc(() => OK);
    const inner = inProcessBackend(libc);
    let fail = true;
    const ex = new NativeExecutor({
      backend: {
        spawn: () => ({
          ...inner.spawn(),
          ready: fail ? Promise.reject(new Error('koffi missing')) : Promise.resolve(),
        }),
      },
    });
    await expect(ex.open('/dev/a', 2, { timeoutMs: 1000 })).rejects.toBeInstanceOf(NotSentError);
    expect(ex.stats().threads).toBe(0);
    fail = false;
    const h = await ex.open('/dev/a', 2, { timeoutMs: 1000 });
    expect((await h.call(ioctl(), opts(1000))).ret).toBe(0);
  });

  it('a thread that died while idle -> the call handed to it NotSentError (never sent), the thread dropped', async () => {
    const libc = new FakeLibc(() => OK);
    const inner = inProcessBackend(libc);
    let dead = false;
    const ex = new NativeExecutor({
      poolSize: 1,
      backend: {
        spawn: () => {
          const t = inner.spawn();
          return {
            ...t,
            run: (req) => (dead ? Promise.reject(new NativeThreadGoneError('exited')) : t.run(req)),
          };
        },
      },
    });
    const h = await ex.open('/dev/a', 2, { timeoutMs: 1000 });
    dead = true;
    await expect(h.call(ioctl(), opts(1000))).rejects.toBeInstanceOf(NotSentError);
    expect(libc.calls).toHaveLength(0);
    expect(ex.stats().threads).toBe(0);
  });
});

describe('NativeExecutor batches (callMany, CallBatch) on a fake libc', () => {
  const many = (ex: NativeExecutor, hs: NativeHandle[], timeoutMs: number | number[], signal?: AbortSignal) =>
    ex.callMany(
      hs.map((handle, i) => ({
        handle,
        req: ioctl(),
        op: 'read-keys',
        timeoutMs: Array.isArray(timeoutMs) ? timeoutMs[i]! : timeoutMs,
      })),
      signal ? { signal } : {},
    );
  const openAll = (ex: NativeExecutor, paths: string[]) =>
    Promise.all(paths.map((p) => ex.open(p, 2, { timeoutMs: 1000 })));
  const names = (n: number, prefix = '/dev/ok') => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

  it('a batch of 21 calls with one device hung, first in line (pool 4) -> the 20 healthy answers well before the hung call is past its limit; it IndeterminateError at its limit, its device hung; in the next batch it fails fast, never sent', async () => {
    const g = gate();
    toRelease.push(() => g.open(OK));
    const { libc, ex } = setup((c) => (c.path === '/dev/hung' ? g.promise : OK), { poolSize: 4 });
    const hs = await openAll(ex, ['/dev/hung', ...names(20)]);

    const t0 = performance.now();
    const [hung, ...healthy] = many(ex, hs, 500);
    const answers = await Promise.all(healthy);
    const healthyMs = performance.now() - t0;
    expect(answers.map((a) => a.ret)).toEqual(Array(20).fill(0));
    expect(healthyMs).toBeLessThan(250);
    const h = await timed(hung!);
    expect(h.error).toBeInstanceOf(IndeterminateError);
    expect(healthyMs + h.ms).toBeGreaterThanOrEqual(490);
    expect(hs[0]!.hung).toBe(true);
    expect(ex.stats()).toMatchObject({ hungDevices: 1, stuck: 1 });

    const [again, ...rest] = many(ex, hs, 500);
    await expect(again).rejects.toBeInstanceOf(NotSentError);
    expect((await Promise.all(rest)).every((a) => a.ret === 0)).toBe(true);
    expect(libc.calls.filter((c) => c.path === '/dev/hung')).toHaveLength(1);

    g.open(OK); // the kernel answers at last: the device takes calls again
    await until(() => !hs[0]!.hung && ex.stats().stuck === 0);
    expect((await many(ex, hs.slice(0, 1), 500)[0]!).ret).toBe(0);
    expect(libc.violations).toEqual([]);
  });

  it('one thread (pool 1), [ok, hung, later]: the answer before the hung call is delivered at once; the call behind it runs on the replacement thread once the hung call is past its limit, long before its own', async () => {
    const g = gate();
    toRelease.push(() => g.open(OK));
    const { libc, ex } = setup((c) => (c.path === '/dev/hung' ? g.promise : OK), { poolSize: 1 });
    const hs = await openAll(ex, ['/dev/ok', '/dev/hung', '/dev/later']);
    const [ok, hung, later] = many(ex, hs, [5000, 100, 5000]).map((p) => timed(p));
    const first = await ok!;
    expect(first.value?.ret).toBe(0);
    expect(first.ms).toBeLessThan(60); // not held until the hung call's limit
    expect((await hung!).error).toBeInstanceOf(IndeterminateError);
    const third = await later!;
    expect(third.value?.ret).toBe(0);
    expect(third.ms).toBeLessThan(1000);
    expect(libc.calls.map((c) => c.path)).toEqual(['/dev/ok', '/dev/hung', '/dev/later']);
    expect(ex.stats()).toMatchObject({ stuck: 1, threads: 2 });
    expect(libc.violations).toEqual([]);
  });

  it('calls still unstarted behind a hung call when their own limit is up, no thread free -> NotSentError, never sent', async () => {
    const g = gate();
    toRelease.push(() => g.open(OK));
    const { libc, ex } = setup((c) => (c.path === '/dev/hung' ? g.promise : OK), {
      poolSize: 1,
      maxThreads: 1,
    });
    const hs = await openAll(ex, ['/dev/hung', '/dev/a', '/dev/b']);
    const [hung, a, b] = many(ex, hs, [1000, 40, 40]).map((p) => timed(p));
    for (const r of [await a!, await b!]) {
      expect(r.error).toBeInstanceOf(NotSentError);
      expect(r.ms).toBeLessThan(500);
    }
    expect(libc.calls.map((c) => c.path)).toEqual(['/dev/hung']);
    g.open(OK);
    expect((await hung!).value?.ret).toBe(0);
    expect(hs.map((h) => h.hung)).toEqual([false, false, false]);
  });

  it('300 calls with uneven call times on 4 threads, five batches -> every call sent exactly once, every answer to its own caller', async () => {
    const { libc, ex } = setup(async (c) => {
      await new Promise((r) => setTimeout(r, c.fd % 7 === 0 ? 3 : 0));
      // The answer names the device: the caller checks it got its own.
      new DataView(c.arg.buffer, c.arg.byteOffset).setUint32(0, c.fd, true);
      return OK;
    });
    const hs = await openAll(ex, names(300));
    for (let round = 0; round < 5; round++) {
      const answers = await Promise.all(many(ex, hs, 5000));
      expect(answers.map((a) => new DataView(a.arg!.buffer, a.arg!.byteOffset).getUint32(0, true))).toEqual(
        hs.map((h) => h.fd),
      );
    }
    const perFd = new Map<number, number>();
    for (const c of libc.calls) perFd.set(c.fd, (perFd.get(c.fd) ?? 0) + 1);
    expect([...perFd.values()].every((n) => n === 5)).toBe(true);
    expect(perFd.size).toBe(300);
    expect(libc.violations).toEqual([]);
    expect(libc.liveBlocks).toBe(0);
  });

  it('the batch signal aborted -> calls not started NotSentError (never sent), the running one IndeterminateError, no device hung', async () => {
    const g = gate();
    toRelease.push(() => g.open(OK));
    const { libc, ex } = setup(() => g.promise, { poolSize: 1 });
    const hs = await openAll(ex, names(3));
    const ac = new AbortController();
    const ps = many(ex, hs, 5000, ac.signal).map((p) => timed(p));
    await until(() => libc.calls.length === 1);
    ac.abort();
    const [running, ...queued] = await Promise.all(ps);
    expect(running!.error).toBeInstanceOf(IndeterminateError);
    for (const q of queued) expect(q.error).toBeInstanceOf(NotSentError);
    expect(hs.some((h) => h.hung)).toBe(false);
    g.open(OK);
    await until(() => ex.stats().busy === 0);
    expect(libc.calls).toHaveLength(1);
  });

  it('a batch whose calls are all answered -> its abort listener (and its deadline timer with it) gone at once, not at the limit', async () => {
    const { ex } = setup(() => OK);
    const hs = await openAll(ex, names(5));
    const ac = new AbortController();
    const ps = many(ex, hs, 60_000, ac.signal);
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(1);
    await Promise.all(ps);
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(0);
  });

  it('a device with a call in flight -> its batch call is sent on its own after that call (one call per device at a time); the other devices answer at once', async () => {
    const g = gate();
    toRelease.push(() => g.open(OK));
    const { libc, ex } = setup((c) => (c.path === '/dev/busy' && c.seq === 0 ? g.promise : OK));
    const [busy, other] = await openAll(ex, ['/dev/busy', '/dev/other']);
    const first = busy!.call(ioctl(), opts(5000));
    await until(() => libc.calls.length === 1);
    const [queued, free] = many(ex, [busy!, other!], 5000);
    expect((await free!).ret).toBe(0);
    g.open(OK);
    expect((await first).ret).toBe(0);
    expect((await queued!).ret).toBe(0);
    expect(libc.calls.map((c) => c.path)).toEqual(['/dev/busy', '/dev/other', '/dev/busy']);
    expect(libc.violations).toEqual([]);
  });

  it('CallBatch: calls made while it is open go together, one made after flush() goes on its own, and a batch never flushed is sent at the end of the synchronous run', async () => {
    const { executor: ex, handOvers: runs } = recordingExecutor(new FakeLibc(() => OK), { poolSize: 1 });
    const hs = await Promise.all(names(3).map((p) => ex.open(p, 2, { timeoutMs: 1000 })));
    runs.length = 0;
    const b = new CallBatch();
    const ps = hs.slice(0, 2).map((h) => h.call(ioctl(), { ...opts(1000), batch: b }));
    b.flush();
    ps.push(hs[2]!.call(ioctl(), { ...opts(1000), batch: b }));
    await Promise.all(ps);
    expect(runs).toEqual([2, 'one']);

    runs.length = 0;
    const unflushed = new CallBatch();
    const qs = hs.map((h) => h.call(ioctl(), { ...opts(1000), batch: unflushed }));
    expect(unflushed.open).toBe(true);
    await Promise.all(qs);
    expect(unflushed.open).toBe(false);
    expect(runs).toEqual([3]);
  });

  it('buffers of a batch call past its limit -> neither freed nor reused while it holds them; the other calls use other blocks; all freed once it returns', async () => {
    const g = gate();
    toRelease.push(() => g.open(OK));
    const { libc, ex } = setup((c) => (c.path === '/dev/hung' ? g.promise : OK), { poolSize: 2 });
    const hs = await openAll(ex, ['/dev/hung', ...names(10)]);
    const payload = Uint8Array.from({ length: 16 }, (_, i) => i + 1);
    const req = {
      kind: 'ioctl' as const,
      request: 0x4e43,
      arg: new Uint8Array(72),
      pointers: [{ offset: 24, size: 16, in: payload }],
    };
    const ps = ex.callMany(hs.map((handle) => ({ handle, req, op: 'nvme', timeoutMs: 50 })));
    await expect(ps[0]).rejects.toBeInstanceOf(IndeterminateError);
    await Promise.all(ps.slice(1));
    const held = libc.calls.find((c) => c.path === '/dev/hung')!;
    expect(held.deref(24)).toEqual(payload);
    expect(libc.calls.filter((c) => c !== held).flatMap((c) => c.held)).not.toContain(held.held[1]);
    g.open(OK);
    await until(() => libc.liveBlocks === 0);
    expect(libc.violations).toEqual([]);
  });
});
