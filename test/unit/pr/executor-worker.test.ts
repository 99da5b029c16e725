/**
 * The native executor with its REAL backend: worker threads loading koffi and blocking in
 * real libc calls. A read() on a FIFO nobody writes blocks like a hung ioctl does.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { IndeterminateError, NotSentError } from '../../../src/pr/errors.js';
import * as abi from '../../../src/pr/koffi/abi.js';
import { ERRNO } from '../../../src/pr/koffi/classify.js';
import { NativeExecutor } from '../../../src/pr/koffi/executor.js';

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('NativeExecutor on worker threads (koffi)', () => {
  it('four threads blocked in read() on FIFOs -> fs.promises and an ioctl on another fd still complete, the blocked calls IndeterminateError and their devices hung', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'prfence-exec-'));
    const fifos = [0, 1, 2, 3].map((i) => join(dir, `fifo${i}`));
    for (const f of fifos) execFileSync('mkfifo', [f]);
    writeFileSync(join(dir, 'plain'), 'hello');
    const ex = new NativeExecutor({ poolSize: 4, maxThreads: 16 });
    // O_RDWR on a FIFO does not wait for a writer (Linux fifo(7)); without O_NONBLOCK read() blocks.
    const blockedFds = await Promise.all(fifos.map((f) => ex.open(f, abi.O_RDWR, { timeoutMs: 5000 })));
    const other = await ex.open('/dev/null', abi.O_RDWR, { timeoutMs: 5000 });
    await ex.warm(4); // the whole pool up before the calls block (a start takes ~0.2-0.5 s here)
    try {
      const t0 = performance.now();
      const blocked = blockedFds.map((h) =>
        h.call({ kind: 'read', size: 1 }, { op: 'read', timeoutMs: 300 }).catch((e: unknown) => e),
      );
      await until(() => ex.stats().busy === 4); // every pool thread is in read()

      // libuv's pool is untouched: with koffi's .async these four calls would hold all of it.
      const f0 = performance.now();
      expect(await readFile(join(dir, 'plain'), 'utf8')).toBe('hello');
      expect(performance.now() - f0).toBeLessThan(250);

      // Another fd: runs on a replacement thread once the blocked calls pass their limit.
      const r = await other.call(
        { kind: 'ioctl', request: abi.IOC_PR_READ_KEYS, arg: new Uint8Array(16) },
        { op: 'read-keys', timeoutMs: 5000 },
      );
      expect([r.ret, r.errno]).toEqual([-1, ERRNO.ENOTTY]);
      expect(performance.now() - t0).toBeLessThan(2000);

      for (const b of await Promise.all(blocked)) expect(b).toBeInstanceOf(IndeterminateError);
      expect(ex.stats()).toMatchObject({ stuck: 4, hungDevices: 4 });
      expect(blockedFds.every((h) => h.hung)).toBe(true);
      await expect(
        blockedFds[0]!.call({ kind: 'read', size: 1 }, { op: 'read', timeoutMs: 5000 }),
      ).rejects.toBeInstanceOf(NotSentError);
    } finally {
      // Unblock the reads (a writer on each FIFO), then everything closes normally.
      for (const f of fifos) writeFileSync(f, 'x');
      await until(() => ex.stats().stuck === 0);
      for (const h of [...blockedFds, other]) await h.close(5000);
      expect(ex.stats()).toMatchObject({ devices: 0, hungDevices: 0, threads: 4 });
      ex.shutdown();
    }
  });

  it('a batch on worker threads: 2 devices blocked in read() on FIFOs among 60 ioctls on /dev/null -> the 60 answers long before the limit of the blocked calls; those IndeterminateError at it, their devices hung; all usable once the FIFOs are written', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'prfence-exec-'));
    const fifos = [0, 1].map((i) => join(dir, `fifo${i}`));
    for (const f of fifos) execFileSync('mkfifo', [f]);
    const ex = new NativeExecutor({ poolSize: 4, maxThreads: 16 });
    const blocked = await Promise.all(fifos.map((f) => ex.open(f, abi.O_RDWR, { timeoutMs: 5000 })));
    const healthy = await Promise.all(
      Array.from({ length: 60 }, () => ex.open('/dev/null', abi.O_RDWR, { timeoutMs: 5000 })),
    );
    await ex.warm(4);
    const limit = 1500;
    const readKeys = {
      kind: 'ioctl' as const,
      request: abi.IOC_PR_READ_KEYS,
      arg: new Uint8Array(16),
      pointers: [{ offset: 8, size: 256 }],
    };
    try {
      const t0 = performance.now();
      // The blocked devices first: the rest of their chunk is behind them.
      const ps = ex.callMany([
        ...blocked.map((handle) => ({
          handle,
          req: { kind: 'read' as const, size: 1 },
          op: 'read',
          timeoutMs: limit,
        })),
        ...healthy.map((handle) => ({ handle, req: readKeys, op: 'read-keys', timeoutMs: limit })),
      ]);
      const answers = await Promise.all(ps.slice(2));
      expect(performance.now() - t0).toBeLessThan(limit / 2);
      for (const r of answers) expect([r.ret, r.errno]).toEqual([-1, ERRNO.ENOTTY]);
      for (const p of ps.slice(0, 2)) await expect(p).rejects.toBeInstanceOf(IndeterminateError);
      expect(performance.now() - t0).toBeGreaterThanOrEqual(limit - 5);
      expect(blocked.every((h) => h.hung)).toBe(true);
      expect(ex.stats()).toMatchObject({ stuck: 2, hungDevices: 2 });
    } finally {
      for (const f of fifos) writeFileSync(f, 'x');
      await until(() => ex.stats().stuck === 0);
      const again = ex.callMany(
        blocked.map((handle) => ({ handle, req: readKeys, op: 'read-keys', timeoutMs: 5000 })),
      );
      for (const r of await Promise.all(again)) expect(r.errno).toBe(ERRNO.ENOTTY); // a FIFO has no PR ioctl
      for (const h of [...blocked, ...healthy]) await h.close(5000);
      expect(ex.stats()).toMatchObject({ devices: 0, hungDevices: 0 });
      ex.shutdown();
    }
  });
});
