import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { Agent } from '../../../src/agent/agent.js';
import { FailfastProbe, type ProbeTarget } from '../../../src/agent/failfast.js';
import { FenceMemory, type KeyLoss } from '../../../src/agent/fence-memory.js';
import { formatKey } from '../../../src/pr/key.js';
import * as abi from '../../../src/pr/koffi/abi.js';
import { FakeLibc, gate, type FakeCall } from '../../../src/pr/koffi/fake-libc.js';
import { KoffiPrDevice } from '../../../src/pr/koffi/koffi-pr-device.js';
import { MemoryLogicalUnit } from '../../../src/pr/memory/index.js';
import { PR_TYPE_CODE } from '../../../src/pr/reservation-type.js';
import { recordingExecutor } from '../pr/hand-overs.js';

const OWN = 0x1111111100000001n;
const PEER = 0x1111111100000002n;
const INTERVAL = 200;
const log = pino({ level: 'silent' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Polls `cond` until true, failing after `ms`. */
async function until(cond: () => boolean, ms: number): Promise<void> {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) throw new Error('condition not reached in time');
    await sleep(2);
  }
}

/** A LU where this node (node-a) is registered and reserved, and a peer (node-b) registered. */
async function lu(
  id: string,
): Promise<{ lu: MemoryLogicalUnit; target: ProbeTarget; peer: ReturnType<MemoryLogicalUnit['initiator']> }> {
  const l = new MemoryLogicalUnit({ id });
  const own = l.initiator('node-a');
  const peer = l.initiator('node-b');
  await own.register(0n, OWN);
  await own.reserve(OWN, 'write-exclusive-reg-only');
  await peer.register(0n, PEER);
  return { lu: l, peer, target: { pv: `pv-${id}`, identity: id, device: own } };
}

describe('failfast probe (memory devices, real timers)', () => {
  const probes: FailfastProbe[] = [];
  afterEach(() => {
    for (const p of probes.splice(0)) p.stop();
  });

  async function setup(n: number, intervalMs = INTERVAL) {
    const memory = await FenceMemory.open(undefined);
    const devs = await Promise.all(Array.from({ length: n }, (_, i) => lu(`lu${i}`)));
    for (const d of devs) await memory.registered(d.target.identity, OWN);
    const losses: { identity: string; loss: KeyLoss; at: number }[] = [];
    memory.listen({ lost: (identity, loss) => losses.push({ identity, loss, at: performance.now() }) });
    const probe = new FailfastProbe({
      key: OWN,
      intervalMs,
      targets: () => devs.map((d) => d.target),
      memory,
      unfencedAt: () => '2026-01-01T00:00:00Z',
      log,
    });
    probes.push(probe);
    return { memory, devs, losses, probe };
  }

  it('own key preempted by another initiator -> loss recorded in the host memory within one interval + 100 ms, holder named', async () => {
    const { memory, devs, losses, probe } = await setup(2);
    probe.start();
    await sleep(INTERVAL * 1.5);
    expect(losses).toEqual([]);
    const removedAt = performance.now();
    await devs[0]!.peer.preemptAndAbort(PEER, OWN, 'write-exclusive-reg-only');
    await sleep(INTERVAL + 300);
    expect(losses.map((l) => l.identity)).toEqual(['lu0']);
    const detectionMs = losses[0]!.at - removedAt;
    console.log(`failfast unit: detection ${detectionMs.toFixed(1)} ms (interval ${INTERVAL} ms)`);
    expect(detectionMs).toBeLessThanOrEqual(INTERVAL + 100);
    expect(memory.lossOf('lu0')).toMatchObject({
      key: '1111111100000001',
      holder: '1111111100000002',
      unfencedAtBefore: '2026-01-01T00:00:00Z',
    });
    expect(memory.expects('lu0', OWN)).toBe(false);
    expect(memory.expects('lu1', OWN)).toBe(true);
  });

  it('device the node is leaving (unregistering() before its own unregister) -> no loss there, while a key removed by a peer on another device is found', async () => {
    const { memory, devs, losses, probe } = await setup(2);
    probe.start();
    await memory.unregistering('lu0');
    await devs[0]!.target.device.release(OWN, 'write-exclusive-reg-only');
    await devs[0]!.target.device.register(OWN, 0n);
    await devs[1]!.peer.preemptAndAbort(PEER, OWN, 'write-exclusive-reg-only');
    await sleep(INTERVAL * 3);
    expect(losses.map((l) => l.identity)).toEqual(['lu1']);
    expect(memory.lossOf('lu0')).toBeUndefined();
  });

  it('a hung device is skipped (one read in flight at most) while the others are still probed and a loss on them is found; round() never waits', async () => {
    const { devs, losses, probe } = await setup(3);
    devs[1]!.lu.inject({ kind: 'hang', op: 'read-keys', times: Infinity });
    const r1 = probe.round();
    expect(r1).toEqual({ started: 3, skipped: [] });
    await sleep(20);
    const t0 = performance.now();
    const r2 = probe.round();
    expect(performance.now() - t0).toBeLessThan(20);
    expect(r2).toEqual({ started: 2, skipped: ['pv-lu1'] });
    await sleep(20); // the reads of round 2 returned
    await devs[2]!.peer.preemptAndAbort(PEER, OWN, 'write-exclusive-reg-only');
    probe.round();
    await sleep(20);
    expect(losses.map((l) => l.identity)).toEqual(['lu2']);
    // Still one read in flight on the hung device, however many rounds ran.
    expect(devs[1]!.lu.hungCalls).toBe(1);
    devs[1]!.lu.releaseHung();
    await sleep(10);
    devs[1]!.lu.clearFaults();
    expect(probe.round()).toEqual({ started: 2, skipped: [] });
  });

  it('probe interval 0 -> no reads at all', async () => {
    const { devs, probe } = await setup(1, 0);
    let reads = 0;
    const dev = devs[0]!.target.device;
    const orig = dev.readKeys.bind(dev);
    dev.readKeys = (o) => (reads++, orig(o));
    probe.start();
    await sleep(300);
    expect([probe.enabled, probe.reads, reads]).toEqual([false, 0, 0]);
  });

  it('a device the memory does not expect the key on is never read', async () => {
    const { memory, probe } = await setup(2);
    await memory.unregistering('lu1');
    expect(probe.round()).toEqual({ started: 1, skipped: [] });
  });
});

describe('failfast probe on the native executor (KoffiPrDevice on a fake libc)', () => {
  const release: (() => void)[] = [];
  afterEach(() => {
    for (const r of release.splice(0)) r();
  });

  it("one device hung, first in the round's batch -> the own key removed from the device behind it in that batch, and later from another, is found within one interval + 100 ms; the reads go to the threads in batches", async () => {
    const g = gate();
    release.push(() => g.open({ ret: 0, errno: 0 }));
    /** path -> registered keys, as the fake devices report them. */
    const registered = new Map<string, bigint[]>();
    const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);
    const answer = (c: FakeCall) => {
      const v = dv(c.arg);
      if (c.request === abi.IOC_PR_READ_RESERVATION) {
        v.setBigUint64(abi.PR_READ_RESERVATION.key, PEER, true);
        v.setUint32(abi.PR_READ_RESERVATION.type, PR_TYPE_CODE['write-exclusive-reg-only'], true);
        return { ret: 0, errno: 0 };
      }
      const keys = registered.get(c.path)!;
      v.setUint32(abi.PR_READ_KEYS.numKeys, keys.length, true);
      keys.forEach((k, i) => dv(c.deref(abi.PR_READ_KEYS.keysPtr)).setBigUint64(i * 8, k, true));
      return { ret: 0, errno: 0 };
    };
    const libc = new FakeLibc((c) => (c.path === '/dev/hung' ? g.promise : answer(c)));
    const { executor, handOvers } = recordingExecutor(libc);
    const memory = await FenceMemory.open(undefined);
    const paths = ['/dev/hung', ...Array.from({ length: 7 }, (_, i) => `/dev/ok${i}`)];
    const targets: ProbeTarget[] = [];
    for (const path of paths) {
      registered.set(path, [PEER, OWN]);
      const device = await KoffiPrDevice.openUnchecked(path, 'scsi', { executor, readMethod: 'ioctl' });
      targets.push({ pv: `pv-${path.slice(5)}`, identity: path, device });
      await memory.registered(path, OWN);
    }
    const losses: { identity: string; at: number }[] = [];
    memory.listen({ lost: (identity) => losses.push({ identity, at: performance.now() }) });
    const probe = new FailfastProbe({
      key: OWN,
      intervalMs: INTERVAL,
      targets: () => targets,
      memory,
      unfencedAt: () => undefined,
      log,
    });
    handOvers.length = 0;
    // Gone before the first round: that round's batch holds the hung device's read first and
    // ok0's behind it, on the same thread (4 threads, 8 reads: 2 a chunk).
    registered.set('/dev/ok0', [PEER]);
    let removedAt = performance.now();
    probe.start();
    try {
      await until(() => losses.length === 1, INTERVAL + 1000);
      expect(losses[0]!.identity).toBe('/dev/ok0');
      expect(losses[0]!.at - removedAt).toBeLessThanOrEqual(INTERVAL + 100);
      expect(memory.lossOf('/dev/ok0')).toMatchObject({ holder: formatKey(PEER) });

      // Later rounds: the hung read is still in flight (the device's own limit, 10 s),
      // skipped, and still holds its thread.
      await sleep(INTERVAL * 1.5);
      expect(probe.inFlight).toBe(1);
      registered.set('/dev/ok5', [PEER]);
      removedAt = performance.now();
      await until(() => losses.length === 2, INTERVAL + 1000);
      expect(losses[1]!.identity).toBe('/dev/ok5');
      expect(losses[1]!.at - removedAt).toBeLessThanOrEqual(INTERVAL + 100);
      // Reads went in batches; only the holder's reads after the losses went alone.
      expect(handOvers.filter((h) => h !== 'one').length).toBeGreaterThanOrEqual(3);
      expect(handOvers.filter((h) => h === 'one')).toHaveLength(2);
      expect(libc.calls.filter((c) => c.path === '/dev/hung')).toHaveLength(1);
    } finally {
      probe.stop();
    }
  });
});

describe('failfast action reboot is opt-in', () => {
  it('Agent.start with failfastAction reboot and no allowReboot -> refused before any API request or device open', async () => {
    let touched = 0;
    const start = Agent.start({
      kubeConfig: {
        get server(): string {
          touched++;
          throw new Error('no API expected');
        },
      } as never,
      nodeName: 'n',
      log,
      openDevice: () => {
        touched++;
        return Promise.reject(new Error('no device expected'));
      },
      failfastAction: 'reboot',
      rebootTrigger: () => void touched++,
    });
    await expect(start).rejects.toThrow(/failfast action reboot needs allowReboot/);
    expect(touched).toBe(0);
  });
});
