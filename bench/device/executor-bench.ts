/**
 * Native executor benchmark, on the host (no QEMU): event-loop delay and the rate of calls
 * on a healthy fd, with no hung device and with 10 hung devices (two calls each). A hung
 * device is a FIFO nobody writes: the worker thread blocks in a real read(2), as it would
 * in an ioctl to a dead LU.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import * as abi from '../../src/pr/koffi/abi.js';
import { NativeExecutor, type NativeHandle } from '../../src/pr/koffi/executor.js';

async function measure(
  h: NativeHandle,
  ms: number,
): Promise<{ p99: number; max: number; perSecond: number }> {
  const d = monitorEventLoopDelay({ resolution: 1 });
  d.enable();
  let calls = 0;
  const end = performance.now() + ms;
  while (performance.now() < end) {
    await h.call(
      { kind: 'ioctl', request: abi.IOC_PR_READ_KEYS, arg: new Uint8Array(16) },
      { op: 'bench', timeoutMs: 5000 },
    );
    calls++;
  }
  d.disable();
  return { p99: d.percentile(99) / 1e6, max: d.max / 1e6, perSecond: (calls * 1000) / ms };
}

/** RSS of this process, MiB (/proc: what the kernel charges, worker threads included). */
const rssMib = () =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? NaN) / 1024;

/** Idle threads ending to `keepThreads` (1), shortened here to IDLE_MS: RSS before and after. */
const IDLE_MS = 2000;

export async function executorBench(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'prfence-exbench-'));
  const ex = new NativeExecutor({ idleThreadMs: IDLE_MS });
  const healthy = await ex.open('/dev/null', abi.O_RDWR, { timeoutMs: 5000 });
  const idle = await measure(healthy, 1000);
  const fifos = Array.from({ length: 10 }, (_, i) => join(dir, `hung${i}`));
  for (const f of fifos) execFileSync('mkfifo', [f]);
  const hung = await Promise.all(fifos.map((f) => ex.open(f, abi.O_RDWR, { timeoutMs: 5000 })));
  const calls = hung.flatMap((h) =>
    [0, 1].map(() =>
      h.call({ kind: 'read', size: 1 }, { op: 'bench', timeoutMs: 200 }).catch(() => undefined),
    ),
  );
  await Promise.all(calls);
  const s = ex.stats();
  const busy = await measure(healthy, 1000);
  for (const f of fifos) writeFileSync(f, 'x');
  while (ex.stats().stuck > 0) await new Promise((r) => setTimeout(r, 10));
  const after = await measure(healthy, 1000);
  const big = { threads: ex.stats().threads, rss: rssMib() };
  await new Promise((r) => setTimeout(r, IDLE_MS * 1.5));
  globalThis.gc?.();
  const small = { threads: ex.stats().threads, rss: rssMib() };
  for (const h of [...hung, healthy]) await h.close();
  ex.shutdown();
  rmSync(dir, { recursive: true, force: true });
  const f = (x: typeof idle) =>
    `event-loop delay p99 ${x.p99.toFixed(2)} ms (max ${x.max.toFixed(2)}), ${x.perSecond.toFixed(0)} calls/s on a healthy fd`;
  console.log('native executor (host, worker threads, /dev/null ioctls):');
  console.log(`  no hung device:                      ${f(idle)}`);
  console.log(`  10 hung devices (${s.stuck} threads stuck): ${f(busy)}`);
  console.log(`  after they returned:                 ${f(after)}`);
  console.log(
    `  p99 ratio ${(busy.p99 / Math.max(idle.p99, 0.001)).toFixed(2)}, rate ratio ${(busy.perSecond / Math.max(idle.perSecond, 1)).toFixed(2)}`,
  );
  const per = (big.rss - small.rss) / Math.max(big.threads - small.threads, 1);
  console.log(
    `  process RSS with ${big.threads} threads ${big.rss.toFixed(0)} MiB; idle ${IDLE_MS / 1000} s later ${small.threads} thread(s), ${small.rss.toFixed(0)} MiB (${per.toFixed(1)} MiB per thread ended; agent default: idle 60 s, keep 1)`,
  );
}
