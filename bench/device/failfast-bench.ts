/**
 * Failfast probe cost (docs/design.md "Failfast"): 1,000 model devices probed at 1 Hz
 * behind the real native executor, 10 of them hung. Each model device is its own executor
 * handle and reads as KoffiPrDevice does: the same IOC_PR_READ_KEYS request (argument and
 * key buffer), handed to the executor with the probe's batch and signal, so the round goes
 * through the same batched path as the agent's. A healthy one does a real ioctl on
 * /dev/null (a worker thread does the syscall, as on a LU) and reports the own key; a
 * hung one is a FIFO nobody writes (the thread blocks in a real read(2), as in an ioctl to
 * a dead LU). Prints CPU % of one core (process-wide: the event loop and the executor
 * threads; then per kind of thread) and the event-loop delay p99, with and without the
 * probe. Targets: < 5 % of one core, p99 < 20 ms (printed, not asserted).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import pino from 'pino';
import { FailfastProbe, type ProbeTarget } from '../../src/agent/failfast.js';
import { FenceMemory } from '../../src/agent/fence-memory.js';
import * as abi from '../../src/pr/koffi/abi.js';
import { NativeExecutor, type NativeHandle } from '../../src/pr/koffi/executor.js';
import type { KeyList, PrCallOptions, PrDevice } from '../../src/pr/pr-device.js';

const OWN = 0x1234567800000001n;
const DEVICES = 1000;
const HUNG = Number(process.env.PRFENCE_BENCH_HUNG ?? 10);
const SECONDS = Number(process.env.PRFENCE_BENCH_SECONDS ?? 10);
/** The agent's --ioctl-timeout default: a hung call holds its thread this long before it counts as stuck. */
const IOCTL_TIMEOUT_MS = 10_000;
/** The first window, while the hung devices' first reads reach their limit and threads are replaced. */
const STARTUP_MS = 5000;
/** Then at most this long until every hung device is marked and no thread is starting (a loaded machine is slow to start threads). */
const SETTLE_MS = 30_000;

/** Room for keys in a first read, as KoffiPrDevice asks (INITIAL_KEYS there). */
const INITIAL_KEYS = 32;

/** A model PrDevice whose readKeys is one executor call on its own handle, made as KoffiPrDevice makes it. */
function modelDevice(id: string, h: NativeHandle, hung: boolean): PrDevice {
  const unused = () => Promise.reject(new Error('not used by the probe'));
  return {
    id,
    readKeys: async (opts?: PrCallOptions): Promise<KeyList> => {
      // As KoffiPrDevice: the probe's per-call limit, never above the device's own; its
      // signal and batch passed on.
      const call = {
        op: 'read-keys',
        timeoutMs: Math.min(IOCTL_TIMEOUT_MS, opts?.timeoutMs ?? Infinity),
        signal: opts?.signal,
        batch: opts?.batch,
      };
      if (hung) {
        await h.call({ kind: 'read', size: 1 }, call);
        return { generation: 1, keys: [OWN] };
      }
      const arg = new Uint8Array(abi.PR_READ_KEYS.size);
      new DataView(arg.buffer).setUint32(abi.PR_READ_KEYS.numKeys, INITIAL_KEYS, true);
      await h.call(
        {
          kind: 'ioctl',
          request: abi.IOC_PR_READ_KEYS,
          arg,
          pointers: [{ offset: abi.PR_READ_KEYS.keysPtr, size: INITIAL_KEYS * 8 }],
        },
        call,
      );
      // /dev/null answers ENOTTY; a LU registered with the own key would list it.
      return { generation: 1, keys: [OWN] };
    },
    readReservation: () => Promise.resolve({ generation: 1, key: OWN, type: 'write-exclusive-reg-only' }),
    register: unused,
    registerAndIgnore: unused,
    reserve: unused,
    release: unused,
    preempt: unused,
    preemptAndAbort: unused,
    clear: unused,
    capabilities: unused,
    close: () => h.close(),
  } as unknown as PrDevice;
}

/** Where a window's CPU went, % of one core: the event loop, executor threads, V8's helpers (GC), the rest. */
interface ThreadCpu {
  main: number;
  executor: number;
  v8: number;
  other: number;
}

/** CPU seconds of each thread of this process, by kind (Linux /proc; thread names as Node sets them). */
function threadTimes(): Map<string, { kind: keyof ThreadCpu; s: number }> {
  const out = new Map<string, { kind: keyof ThreadCpu; s: number }>();
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      const comm = readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim();
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // utime and stime (fields 14 and 15 of proc(5)), in clock ticks (100 Hz on Linux).
      const s = (Number(f[11]) + Number(f[12])) / 100;
      const kind =
        tid === String(process.pid)
          ? 'main'
          : comm === 'WorkerThread'
            ? 'executor'
            : comm === 'V8Worker'
              ? 'v8'
              : 'other';
      out.set(tid, { kind, s });
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

async function window(ms: number): Promise<{ cpuPct: number; p99: number; max: number; threads: ThreadCpu }> {
  const d = monitorEventLoopDelay({ resolution: 1 });
  const t0Threads = threadTimes();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  d.enable();
  await new Promise((r) => setTimeout(r, ms));
  d.disable();
  const cpu = process.cpuUsage(cpu0);
  const wall = performance.now() - t0;
  const threads: ThreadCpu = { main: 0, executor: 0, v8: 0, other: 0 };
  for (const [tid, t] of threadTimes())
    threads[t.kind] += ((t.s - (t0Threads.get(tid)?.s ?? 0)) * 1e5) / wall;
  return {
    cpuPct: ((cpu.user + cpu.system) / 1000 / wall) * 100,
    p99: d.percentile(99) / 1e6,
    max: d.max / 1e6,
    threads,
  };
}

export async function failfastBench(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'prfence-ffbench-'));
  const ex = new NativeExecutor();
  const memory = await FenceMemory.open(undefined);
  const targets: ProbeTarget[] = [];
  for (let i = 0; i < DEVICES; i++) {
    const hung = i < HUNG;
    const path = hung ? join(dir, `hung${i}`) : '/dev/null';
    if (hung) execFileSync('mkfifo', [path]);
    const h = await ex.open(path, abi.O_RDWR, { timeoutMs: 5000 });
    const identity = `model-${i}`;
    targets.push({ pv: `pv-${i}`, identity, device: modelDevice(identity, h, hung) });
    await memory.registered(identity, OWN);
  }
  const idle = await window(SECONDS * 1000);
  let skipped = 0;
  const probe = new FailfastProbe({
    key: OWN,
    intervalMs: 1000,
    // As tight as the interval: 10 hung devices must not hold the executor's threads for 10 s.
    readTimeoutMs: 1000,
    targets: () => targets,
    memory,
    unfencedAt: () => undefined,
    log: pino({ level: 'silent' }),
    onSkipped: (n) => (skipped += n),
  });
  probe.start();
  // Until the hung calls pass their time limit (the probe's: its interval) they hold
  // executor threads (4 working threads, 10 hung devices): other reads queue meanwhile.
  const r0 = probe.reads;
  const startup = await window(STARTUP_MS);
  const startupReads = probe.reads - r0;
  // The steady window starts once the hung calls hold their threads and the replacements are
  // up: a thread starting (Node and koffi loading) is not the probe's steady cost.
  const settle0 = performance.now();
  while (
    performance.now() - settle0 < SETTLE_MS &&
    // 4: the executor's default pool of working threads, besides the stuck ones.
    (ex.stats().stuck < HUNG || ex.stats().starting > 0 || ex.stats().threads < HUNG + 4)
  ) {
    await new Promise((r) => setTimeout(r, 100));
  }
  const settledMs = performance.now() - settle0;
  const r1 = probe.reads;
  const s1 = skipped;
  const probing = await window(SECONDS * 1000);
  probe.stop();
  const reads = probe.reads - r1;
  skipped -= s1;
  const stats = ex.stats();
  for (let i = 0; i < HUNG; i++) writeFileSync(join(dir, `hung${i}`), 'x');
  while (ex.stats().stuck > 0 || ex.stats().busy > 0) await new Promise((r) => setTimeout(r, 10));
  await Promise.all(targets.map((t) => t.device.close()));
  ex.shutdown();
  rmSync(dir, { recursive: true, force: true });
  const f = (x: typeof idle) =>
    `CPU ${x.cpuPct.toFixed(2)} % of one core (event loop ${x.threads.main.toFixed(1)}, executor threads ${x.threads.executor.toFixed(1)}, V8 helpers ${x.threads.v8.toFixed(1)}, other ${x.threads.other.toFixed(1)}), event-loop delay p99 ${x.p99.toFixed(2)} ms (max ${x.max.toFixed(2)})`;
  console.log(
    `failfast probe (${DEVICES} model devices on the native executor, ${HUNG} hung, 1 Hz, ${SECONDS} s windows):`,
  );
  console.log(`  no probe:   ${f(idle)}`);
  console.log(
    `  first ${STARTUP_MS / 1000} s (hung reads reach the probe's limit, 1 s; threads replaced): ${f(startup)}, ${startupReads} reads started; settled ${(settledMs / 1000).toFixed(1)} s later`,
  );
  console.log(`  probing, steady (hung calls stuck): ${f(probing)}`);
  console.log(
    `  ${reads} probe reads started (${(reads / SECONDS).toFixed(0)}/s; ${DEVICES - HUNG} healthy devices at 1 Hz = ${DEVICES - HUNG}/s), ${skipped} not probed (hung: skipped or refused fast by the executor), ${stats.stuck} executor threads stuck, ${stats.threads} threads`,
  );
  console.log(
    `  probe cost ${(probing.cpuPct - idle.cpuPct).toFixed(2)} % of one core (target < 5 %), p99 ratio ${(probing.p99 / Math.max(idle.p99, 0.001)).toFixed(2)} (target p99 < 20 ms)`,
  );
}
