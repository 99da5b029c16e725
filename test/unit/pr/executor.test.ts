/**
 * The native executor's scheduling against a fake libc (in-process backend): hangs, late
 * returns, close with queued calls, buffer ownership, queue time, isolation of devices.
 * The fake records every call and every ownership violation (fake-libc.ts).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { IndeterminateError, NotSentError } from '../../../src/pr/errors.js';
import {
  inProcessBackend,
  NativeExecutor,
  NativeThreadGoneError,
  type CallOptions,
} from '../../../src/pr/koffi/executor.js';
import { FakeLibc, gate, type FakeDevice } from '../../../src/pr/koffi/fake-libc.js';
import type { SyscallResult } from '../../../src/pr/koffi/native-call.js';

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
