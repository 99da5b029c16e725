/**
 * Device benchmark, run inside the QEMU guest on real kernel devices (test/kernel/run.mjs
 * --bench). Prints per-operation cost of the koffi path against a C baseline and against
 * sg_persist, one whole fence by prfence against ClusterLabs' `fence_scsi -o off` on the
 * same LU, and the event-loop delay while PR calls are stuck on a suspended device-mapper
 * device, as figures and ratios.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { accessSync, constants, writeFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import pino from 'pino';
import { clusterTag, makeKey } from '../../src/fence/keys.js';
import { readDeviceState } from '../../src/fence/executor.js';
import { fenceVolume } from '../../src/fence/volume-fencer.js';
import { KoffiPrDevice } from '../../src/pr/koffi/koffi-pr-device.js';

const N = Number(process.env.PRFENCE_BENCH_N ?? 200);
const KEY = 0x0bec000000000002n;

interface Row {
  target: string;
  op: string;
  koffiUs: number;
  cUs: number;
  sgPersistUs?: number;
}

async function timeUs(n: number, f: () => Promise<unknown>): Promise<number> {
  await f(); // warm-up (and read-method detection)
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await f();
  return ((performance.now() - t0) * 1000) / n;
}

async function measure(target: string, dev: string, cLoop: string): Promise<Row[]> {
  const d = await KoffiPrDevice.open(dev);
  const read = await timeUs(N, () => d.readKeys());
  const cycle = await timeUs(N / 2, async () => {
    await d.register(0n, KEY);
    await d.register(KEY, 0n);
  });
  const caps = await d.capabilities();
  await d.close();
  const [cRead, cCycle] = execFileSync(cLoop, [dev, String(N)], { encoding: 'utf8' })
    .trim()
    .split(' ')
    .map(Number) as [number, number];
  const rows: Row[] = [
    { target: `${target} (${caps.readMethod})`, op: 'read keys', koffiUs: read, cUs: cRead },
    { target, op: 'register+unregister', koffiUs: cycle, cUs: cCycle },
  ];
  if (caps.kind === 'scsi' && spawnSync('sg_persist', ['--version']).status !== null) {
    const t0 = performance.now();
    const runs = 20;
    for (let i = 0; i < runs; i++) spawnSync('sg_persist', ['--in', '--read-keys', dev], { stdio: 'ignore' });
    rows[0]!.sgPersistUs = ((performance.now() - t0) * 1000) / runs;
  }
  return rows;
}

/**
 * The fence itself on a real target, as the agent runs it (agent/volume-reconciler.ts):
 * node-b asks capabilities() (kind, PREEMPT AND ABORT refused before), reads the state
 * (readDeviceState: one READ FULL STATUS / Reservation Report where the device answers it)
 * and hands both to fenceVolume as `initial` (decide, preempt-and-abort node-a's key, read
 * back), against node-a holding the reservation, through two initiators of one logical
 * unit. All of it is timed, the agent's reads before fenceVolume included. Per round,
 * set-up untimed. Also returns the PrDevice calls of one round, by method.
 */
async function fenceRounds(
  target: string,
  devA: string,
  devB: string,
  rounds: number,
): Promise<{ ms: number[]; calls: string[] }> {
  const tag = clusterTag('bench');
  const [ka, kb] = [makeKey(tag, 1), makeKey(tag, 2)];
  const [a, b] = [await KoffiPrDevice.open(devA), await KoffiPrDevice.open(devB)];
  const log = pino({ level: 'silent' });
  const ms: number[] = [];
  let calls: string[] = [];
  const counted = new Proxy(b, {
    get(target, prop) {
      const v: unknown = Reflect.get(target, prop, target);
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => {
        calls.push(String(prop));
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  let roundCalls: string[] = [];
  try {
    // Start clean whatever earlier measurements left registered.
    await b.registerAndIgnore(kb);
    await b.clear(kb);
    for (let i = 0; i < rounds; i++) {
      await a.register(0n, ka);
      await a.reserve(ka, 'write-exclusive-reg-only');
      await b.register(0n, kb);
      calls = [];
      const t0 = performance.now();
      const caps = await counted.capabilities();
      const state = await readDeviceState(counted, caps.kind);
      const obs = await fenceVolume({
        device: counted,
        initial: { kind: caps.kind, state },
        preemptAbortRefused: !caps.preemptAbort,
        input: {
          self: { node: 'b', key: kb, legitimate: true, mayRegister: true, inUse: false },
          legitimate: [{ node: 'b', key: kb }],
          known: [
            { node: 'a', key: ka },
            { node: 'b', key: kb },
          ],
          clusterTag: tag,
          desiredType: 'write-exclusive-reg-only',
          foreignKeys: 'leave',
        },
        log,
      });
      ms.push(performance.now() - t0);
      roundCalls = calls;
      if (obs.victims[0]?.result !== 'fenced' || obs.state.keys.keys.includes(ka))
        throw new Error(`${target}: round ${i}: node-a not fenced (${obs.outcome})`);
      await b.clear(kb);
    }
  } finally {
    await a.close();
    await b.close();
  }
  return { ms, calls: roundCalls };
}

interface Percentiles {
  p50: number;
  p99: number;
  max: number;
}

function percentiles(samples: readonly number[]): Percentiles {
  const ms = [...samples].sort((x, y) => x - y);
  const p = (q: number) => ms[Math.min(ms.length - 1, Math.floor(q * ms.length))]!;
  return { p50: p(0.5), p99: p(0.99), max: ms.at(-1)! };
}

const fmtMs = (x: Percentiles) =>
  `p50 ${x.p50.toFixed(1)} ms, p99 ${x.p99.toFixed(1)} ms, max ${x.max.toFixed(1)} ms`;

const FENCE_SCSI = '/usr/sbin/fence_scsi';
/** fence_scsi's local key: `fence_scsi -o on --key K` writes it at unfencing, `-o off` reads it (STORE_PATH + ".key"). */
const FENCE_SCSI_KEY_FILE = '/var/run/cluster.key';

/** Runs a command to its exit (async: the event loop stays free); never past `limitMs`. */
function run(
  cmd: string,
  args: string[],
  limitMs: number,
): Promise<{ rc: number | null; out: string; ms: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), limitMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (rc) => {
      clearTimeout(timer);
      resolve({ rc, out, ms: performance.now() - t0 });
    });
  });
}

/**
 * The same fence by Debian's `fence_scsi -o off` (fence-agents), on the same LU and with the
 * same set-up per round as fenceRounds: node-a (victim) registered and holding a
 * write-exclusive-registrants-only reservation, node-b (fencer) registered. Standalone,
 * without corosync: `--key` is the victim's key (hex, as sg_persist prints keys; with
 * `--plug` fence_scsi derives the key from corosync's cluster name and node id or name
 * hash, so a cluster-less run has to name the key), `--devices` the fencer's path to the
 * LU, and the fencer's own key is read from /var/run/cluster.key, the file `fence_scsi -o
 * on --key` writes when a node unfences itself; it is written here once (the bench
 * registers both keys itself, the same way for both fencers). `-o off` then runs sg_turs
 * and `sg_persist -n -i -k` (status: is the victim registered), sg_persist PREEMPT AND
 * ABORT (`-o -A -T 5 -K <own> -S <victim>`), and reads keys and reservation back: one
 * python3 start, 8 sg_turs and 6 sg_persist processes per fence. Each run is timed
 * from spawn to exit; a run counts only if it exited 0 and a read back through the
 * fencer's path shows the victim's key gone, else the round fails the bench.
 */
async function fenceScsiRounds(
  target: string,
  devA: string,
  devB: string,
  rounds: number,
): Promise<{ ms: number[]; pythonMs: number[] } | { skipped: string }> {
  try {
    accessSync(FENCE_SCSI, constants.X_OK);
  } catch {
    return { skipped: `fence_scsi not installed (apt-get install fence-agents)` };
  }
  const tag = clusterTag('bench');
  const [ka, kb] = [makeKey(tag, 1), makeKey(tag, 2)];
  try {
    writeFileSync(FENCE_SCSI_KEY_FILE, `${kb.toString(16)}\n`);
  } catch (e) {
    return {
      skipped: `cannot write fence_scsi's local key file ${FENCE_SCSI_KEY_FILE}: ${(e as Error).message}`,
    };
  }
  // The fixed part of every fence_scsi run: its interpreter starting and importing fence-agents' library.
  const pythonMs: number[] = [];
  for (let i = 0; i < 5; i++) {
    const r = await run(
      '/usr/bin/python3',
      ['-c', 'import sys; sys.path.append("/usr/share/fence"); import fencing'],
      60_000,
    );
    if (r.rc === 0) pythonMs.push(r.ms);
  }
  const [a, b] = [await KoffiPrDevice.open(devA), await KoffiPrDevice.open(devB)];
  const ms: number[] = [];
  try {
    await b.registerAndIgnore(kb);
    await b.clear(kb);
    for (let i = 0; i < rounds; i++) {
      await a.register(0n, ka);
      await a.reserve(ka, 'write-exclusive-reg-only');
      await b.register(0n, kb);
      const r = await run(FENCE_SCSI, ['-o', 'off', '--key', ka.toString(16), '--devices', devB], 120_000);
      const after = await b.readKeys();
      if (r.rc !== 0 || after.keys.includes(ka))
        throw new Error(
          `${target}: fence_scsi round ${i}: node-a not fenced (exit ${r.rc}; keys after: ${after.keys.map((k) => k.toString(16)).join(' ')}): ${r.out.trim()}`,
        );
      ms.push(r.ms);
      await b.clear(kb);
    }
  } finally {
    await a.close();
    await b.close();
  }
  return { ms, pythonMs };
}

async function loopDelay(ms: number): Promise<{ p50: number; p99: number; max: number }> {
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  const tick = setInterval(() => {}, 5);
  await new Promise((r) => setTimeout(r, ms));
  clearInterval(tick);
  h.disable();
  return { p50: h.percentile(50) / 1e6, p99: h.percentile(99) / 1e6, max: h.max / 1e6 };
}

async function stuckCalls(dev: string): Promise<string[]> {
  const out: string[] = [];
  const idle = await loopDelay(2000);
  // A linear device-mapper device over the LU, suspended: I/O to it blocks in the kernel.
  // No udev in the guest: dmsetup makes the /dev/mapper node itself.
  const dm = (...args: string[]) =>
    execFileSync('dmsetup', args, { env: { ...process.env, DM_DISABLE_UDEV: '1' } });
  dm('create', 'prfence-bench', '--table', `0 8192 linear ${dev} 0`);
  dm('mknodes', 'prfence-bench');
  const d = await KoffiPrDevice.open('/dev/mapper/prfence-bench', { timeoutMs: 60_000 });
  dm('suspend', 'prfence-bench');
  const { directRead } = await import('../../src/pr/koffi/direct-io.js');
  let settled = 0;
  const calls = [
    ...Array.from({ length: 4 }, () =>
      d.readKeys().then(
        () => settled++,
        () => settled++,
      ),
    ),
    ...Array.from({ length: 4 }, () =>
      directRead('/dev/mapper/prfence-bench').then(
        () => settled++,
        () => settled++,
      ),
    ),
  ];
  const busy = await loopDelay(2000);
  const stuck = calls.length - settled;
  dm('resume', 'prfence-bench');
  await Promise.allSettled(calls);
  await d.close();
  dm('remove', 'prfence-bench');
  const f = (x: { p50: number; p99: number; max: number }) =>
    `p50 ${x.p50.toFixed(2)} ms, p99 ${x.p99.toFixed(2)} ms, max ${x.max.toFixed(2)} ms`;
  out.push(`event-loop delay idle:                 ${f(idle)}`);
  out.push(
    `event-loop delay, ${stuck} of ${calls.length} calls stuck: ${f(busy)}  (p99 ratio ${(busy.p99 / Math.max(idle.p99, 0.001)).toFixed(2)})`,
  );
  return out;
}

const topologies = JSON.parse(process.env.PRFENCE_KERNEL_TOPOLOGIES ?? '[]') as {
  name: string;
  kind: 'scsi' | 'nvme';
  devices: string[];
  limitations: string[];
}[];
const cLoop = process.env.PRFENCE_BENCH_C_LOOP ?? 'pr-loop';
const rows: Row[] = [];
for (const t of topologies) rows.push(...(await measure(t.name, t.devices[0]!, cLoop)));
console.log(
  `\ndevice benchmark on ${execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim()} (N=${N}, QEMU TCG: absolute figures are slow, ratios matter)`,
);
console.log(
  'target                          op                     koffi us/op   C us/op   koffi/C   sg_persist us/call   sg_persist/koffi',
);
for (const r of rows) {
  console.log(
    // pr-loop prints -1 when the kernel has no PR read-keys ioctl (6.1): no C figure.
    `${r.target.padEnd(32)}${r.op.padEnd(23)}${r.koffiUs.toFixed(0).padStart(11)}${(r.cUs < 0 ? 'n/a' : r.cUs.toFixed(0)).padStart(10)}${(r.cUs < 0 ? 'n/a' : (r.koffiUs / r.cUs).toFixed(2)).padStart(10)}${
      r.sgPersistUs === undefined
        ? ''
        : `${r.sgPersistUs.toFixed(0).padStart(21)}${(r.sgPersistUs / r.koffiUs).toFixed(1).padStart(19)}`
    }`,
  );
}
const FENCE_ROUNDS = 20;
for (const t of topologies) {
  if (t.limitations.includes('preempt-abort-hangs')) {
    console.log(`${t.name.padEnd(32)}fence: not measured (PREEMPT AND ABORT hangs this target)`);
    continue;
  }
  const fr = await fenceRounds(t.name, t.devices[0]!, t.devices[1]!, FENCE_ROUNDS);
  const prf = percentiles(fr.ms);
  console.log(
    `${t.name.padEnd(32)}fence as the agent runs it (capabilities, read, preempt-abort, read back) x${FENCE_ROUNDS}: ${fmtMs(prf)}`,
  );
  console.log(`${''.padEnd(32)}  PrDevice calls of one fence: ${fr.calls.join(', ')}`);
  if (t.kind !== 'scsi') continue;
  // One whole fence against ClusterLabs' agent, same guest, same LU, same set-up.
  const fs = await fenceScsiRounds(t.name, t.devices[0]!, t.devices[1]!, FENCE_ROUNDS).catch(
    (e: unknown) => ({ failed: e instanceof Error ? e.message : String(e) }),
  );
  if ('failed' in fs) {
    // Not a fence, so no figure: the bench fails, the rest of it still runs.
    console.log(`${t.name.padEnd(32)}fence_scsi -o off: FAILED: ${fs.failed}`);
    process.exitCode = 1;
    continue;
  }
  if ('skipped' in fs) {
    console.log(`${t.name.padEnd(32)}fence_scsi -o off: skipped: ${fs.skipped}`);
    continue;
  }
  const fsp = percentiles(fs.ms);
  console.log(`${t.name.padEnd(32)}fence_scsi -o off x${FENCE_ROUNDS}: ${fmtMs(fsp)}`);
  console.log(`${''.padEnd(32)}  per round, ms: ${fs.ms.map((x) => x.toFixed(0)).join(' ')}`);
  if (fs.pythonMs.length > 0) {
    const py = percentiles(fs.pythonMs).p50;
    const rest = fsp.p50 - py;
    console.log(
      `${''.padEnd(32)}  of which python3 + fence-agents library start alone: p50 ${py.toFixed(1)} ms; ${
        rest > 0
          ? `the rest (p50 - that): ${rest.toFixed(1)} ms, x ${(rest / prf.p50).toFixed(0)} prfence's fence`
          : 'longer than a whole fence_scsi run at p50: the host was busier then, figures not comparable'
      }`,
    );
  }
  const ratio = fsp.p50 / prf.p50;
  console.log(
    `${t.name.padEnd(32)}prfence fence vs fence_scsi -o off: x ${ratio.toFixed(0)} faster at p50, x ${(fsp.p99 / prf.p99).toFixed(0)} at p99 (target >= 100 at p50: ${ratio >= 100 ? 'met' : 'NOT met'})`,
  );
}
const scsi = topologies.find((t) => t.name.startsWith('lio'));
if (scsi) for (const l of await stuckCalls(scsi.devices[1]!)) console.log(l);
