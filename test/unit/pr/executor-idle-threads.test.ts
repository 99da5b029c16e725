/**
 * The native executor ends threads that stay idle (each worker costs about 20 MiB of RSS),
 * down to `keepThreads`, and never a thread with a call on it. Against the fake libc, with
 * a backend that records which threads ended and whether they were running then.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { inProcessBackend, NativeExecutor, type NativeBackend } from '../../../src/pr/koffi/executor.js';
import { FakeLibc, gate, type FakeDevice } from '../../../src/pr/koffi/fake-libc.js';
import type { SyscallResult } from '../../../src/pr/koffi/native-call.js';

const OK: SyscallResult = { ret: 0, errno: 0 };
const ioctl = () => ({ kind: 'ioctl' as const, request: 0x1234, arg: new Uint8Array(16) });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached in time');
    await sleep(5);
  }
}

/** inProcessBackend, counting threads ended and those ended while a call ran on them. */
function recording(libc: FakeLibc): { backend: NativeBackend; ended: number; endedBusy: number } {
  const inner = inProcessBackend(libc);
  const rec = {
    ended: 0,
    endedBusy: 0,
    backend: {
      spawn() {
        const t = inner.spawn();
        let running = 0;
        return {
          ...t,
          run: async (req: Parameters<typeof t.run>[0]) => {
            running++;
            try {
              return await t.run(req);
            } finally {
              running--;
            }
          },
          terminate() {
            rec.ended++;
            if (running > 0) rec.endedBusy++;
            t.terminate();
          },
        };
      },
    },
  };
  return rec;
}

let toRelease: (() => void)[] = [];
afterEach(() => {
  for (const r of toRelease) r();
  toRelease = [];
});

function setup(device: FakeDevice, idleThreadMs: number, keepThreads?: number) {
  const libc = new FakeLibc(device);
  const rec = recording(libc);
  const ex = new NativeExecutor({
    backend: rec.backend,
    poolSize: 4,
    idleThreadMs,
    ...(keepThreads !== undefined ? { keepThreads } : {}),
  });
  return { libc, rec, ex };
}

describe('NativeExecutor idle threads', () => {
  it('a burst that started 4 threads, then nothing for idleThreadMs -> 3 threads end, 1 is kept (default keepThreads) and still answers', async () => {
    const g = gate();
    toRelease.push(() => g.open(OK));
    const { rec, ex } = setup((c) => (c.path.startsWith('/dev/slow') ? g.promise : OK), 150);
    const hs = await Promise.all([0, 1, 2, 3].map((i) => ex.open(`/dev/slow${i}`, 2, { timeoutMs: 5000 })));
    const calls = hs.map((h) => h.call(ioctl(), { op: 'test', timeoutMs: 5000 }));
    await until(() => ex.stats().busy === 4);
    g.open(OK);
    await Promise.all(calls);
    expect(ex.stats().threads).toBe(4);
    await until(() => ex.stats().threads === 1);
    expect(rec.ended).toBe(3);
    expect(rec.endedBusy).toBe(0);
    // The kept thread takes the next call; nothing new is started for it.
    const r = await hs[0]!.call(ioctl(), { op: 'test', timeoutMs: 5000 });
    expect(r.ret).toBe(0);
    expect(ex.stats().threads).toBe(1);
  });

  it('a call running longer than idleThreadMs -> its thread is never ended; only the idle one beyond keepThreads is', async () => {
    const g = gate();
    toRelease.push(() => g.open(OK));
    const { rec, ex } = setup((c) => (c.path === '/dev/long' ? g.promise : OK), 100, 0);
    const long = await ex.open('/dev/long', 2, { timeoutMs: 10_000 });
    const quick = await ex.open('/dev/quick', 2, { timeoutMs: 10_000 });
    const running = long.call(ioctl(), { op: 'test', timeoutMs: 10_000 });
    await until(() => ex.stats().busy === 1);
    await quick.call(ioctl(), { op: 'test', timeoutMs: 10_000 }); // a second thread
    expect(ex.stats().threads).toBe(2);
    await until(() => ex.stats().threads === 1); // the idle one ended
    await sleep(300); // three idle periods with the long call still running
    expect(ex.stats()).toMatchObject({ threads: 1, busy: 1 });
    expect(rec.endedBusy).toBe(0);
    g.open(OK);
    expect((await running).ret).toBe(0);
    await until(() => ex.stats().threads === 0); // keepThreads 0: it ends once idle
    expect(rec).toMatchObject({ ended: 2, endedBusy: 0 });
  });

  it('one call every 20 ms with idleThreadMs 150 -> the same thread takes every call, the 3 others of an earlier burst end', async () => {
    const g = gate();
    toRelease.push(() => g.open(OK));
    const { rec, ex } = setup((c) => (c.path.startsWith('/dev/slow') ? g.promise : OK), 150);
    const hs = await Promise.all([0, 1, 2, 3].map((i) => ex.open(`/dev/slow${i}`, 2, { timeoutMs: 5000 })));
    const burst = hs.map((h) => h.call(ioctl(), { op: 'test', timeoutMs: 5000 }));
    await until(() => ex.stats().busy === 4);
    g.open(OK);
    await Promise.all(burst);
    const steady = await ex.open('/dev/steady', 2, { timeoutMs: 5000 });
    const t0 = Date.now();
    while (Date.now() - t0 < 600) {
      await steady.call(ioctl(), { op: 'test', timeoutMs: 5000 });
      await sleep(20);
    }
    expect(ex.stats().threads).toBe(1);
    expect(rec).toMatchObject({ ended: 3, endedBusy: 0 });
  });
});
