/**
 * Which volumes are fenced and with which type (DESIGN.md "Which volumes are fenced",
 * "Reservation types"): PV annotation > StorageClass annotation > agent default, against
 * the real API server with agents in-process on memory LUs.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { FENCING_ANNOTATION, RESERVATION_TYPE_ANNOTATION } from '../../src/fence/volume-policy.js';
import type { MemoryLogicalUnit } from '../../src/pr/memory/index.js';
import { eventually } from '../envtest/kube.js';
import { Cluster, type DeviceCall } from './agent-harness.js';

const F = FENCING_ANNOTATION;
const T = RESERVATION_TYPE_ANNOTATION;
const RESYNC_MS = 400;

describe('per-volume policy: prfence.io/fencing and prfence.io/reservation-type', () => {
  const c = new Cluster();
  const calls: DeviceCall[] = [];
  c.deviceCalls.add((d) => calls.push(d));
  afterEach(async () => {
    await c.stopAll();
    calls.length = 0;
    c.deviceCalls.add((d) => calls.push(d));
  });
  const callsOn = (lu: MemoryLogicalUnit) => calls.filter((d) => d.lu === lu);
  /**
   * State reads the agents made on `lu` (one per reconcile that opened it: READ FULL STATUS,
   * or READ KEYS where the device is read with two commands).
   */
  const readsOn = (lu: MemoryLogicalUnit) =>
    callsOn(lu).filter((d) => d.op === 'readFullStatus' || d.op === 'readKeys').length;
  /** Waits until the agents reconciled `lu` `n` more times (resyncs): they demonstrably ran. */
  async function reconciledAgain(lu: MemoryLogicalUnit, n: number): Promise<void> {
    const start = readsOn(lu);
    await eventually(() => readsOn(lu) >= start + n, { timeoutMs: 20_000 });
  }

  it('PV annotation write-exclusive-all-regs (agent default write-exclusive-reg-only) -> the LU is reserved with write-exclusive-all-regs, and the VR says so', async () => {
    const n = await c.node('node-a');
    const { name: pv, lu } = await c.pv('scsi', { annotations: { [T]: 'write-exclusive-all-regs' } });
    await c.startAgent(n, c.kc, { resyncMs: RESYNC_MS, reservationType: 'write-exclusive-reg-only' });
    await c.attach(pv, n);
    await eventually(() => lu.state().reservation !== null, { timeoutMs: 20_000 });
    expect(lu.state().reservation?.type).toBe('write-exclusive-all-regs');
    await eventually(async () => (await c.vr(pv)).status?.reservationType === 'write-exclusive-all-regs');
  });

  it('StorageClass annotation -> applies to a PV without one; a PV annotation wins over it', async () => {
    const n = await c.node('node-a');
    const sc = await c.storageClass({ [T]: 'exclusive-access-reg-only' });
    const plain = await c.pv('scsi', { storageClassName: sc });
    const own = await c.pv('scsi', { storageClassName: sc, annotations: { [T]: 'write-exclusive' } });
    await c.startAgent(n, c.kc, { resyncMs: RESYNC_MS });
    await c.attach(plain.name, n);
    await c.attach(own.name, n);
    await eventually(() => plain.lu.state().reservation !== null && own.lu.state().reservation !== null, {
      timeoutMs: 20_000,
    });
    expect(plain.lu.state().reservation?.type).toBe('exclusive-access-reg-only');
    expect(own.lu.state().reservation?.type).toBe('write-exclusive');
  });

  it('PV prfence.io/fencing: disabled -> the LU is never opened, registered or reserved while attached, over several resyncs in which an opted-in PV was reserved and reconciled', async () => {
    const n = await c.node('node-a');
    const off = await c.pv('scsi', { annotations: { [F]: 'disabled' } });
    const on = await c.pv();
    await c.startAgent(n, c.kc, { resyncMs: RESYNC_MS });
    await c.attach(off.name, n);
    await c.attach(on.name, n); // attached after the opted-out one: reconciled after it
    await eventually(() => on.lu.state().reservation?.holder === n, { timeoutMs: 20_000 });
    await reconciledAgain(on.lu, 4);
    expect(callsOn(off.lu)).toEqual([]);
    expect(off.lu.state().registrations).toEqual([]);
    expect(off.lu.state().reservation).toBeNull();
    expect(off.lu.write(n)).toBe('ok'); // no reservation: every initiator writes
  });

  it('fencingDefault disabled -> only the volumes of a StorageClass annotated enabled are fenced; a StorageClass changed to enabled reaches its attached volume', async () => {
    const n = await c.node('node-a');
    const enabledSc = await c.storageClass({ [F]: 'enabled' });
    const laterSc = await c.storageClass({});
    const on = await c.pv('scsi', { storageClassName: enabledSc });
    const later = await c.pv('scsi', { storageClassName: laterSc });
    const plain = await c.pv();
    await c.startAgent(n, c.kc, { resyncMs: RESYNC_MS, fencingDefault: 'disabled' });
    for (const p of [plain, later, on]) await c.attach(p.name, n);
    await eventually(() => on.lu.state().reservation?.holder === n, { timeoutMs: 20_000 });
    await reconciledAgain(on.lu, 3);
    expect(callsOn(plain.lu)).toEqual([]);
    expect(callsOn(later.lu)).toEqual([]);
    // The StorageClass informer: the annotation reaches the volume without a PV change.
    await c.annotateStorageClass(laterSc, { [F]: 'enabled' });
    await eventually(() => later.lu.state().reservation?.holder === n, { timeoutMs: 20_000 });
    expect(callsOn(plain.lu)).toEqual([]);
  });

  it('a reserved PV annotated fencing: disabled (no node fenced) -> its node releases and unregisters (the leaver path), and stays away', async () => {
    await c.unfenceAll(); // with a fenced node it would hold the reservation (handover; unit-tested)
    const n = await c.node('node-a');
    const { name: pv, lu } = await c.pv();
    const a = await c.startAgent(n, c.kc, { resyncMs: RESYNC_MS });
    await c.attach(pv, n);
    await eventually(() => lu.state().reservation?.holder === n, { timeoutMs: 20_000 });
    await c.annotatePv(pv, { [F]: 'disabled' });
    await eventually(() => lu.state().registrations.length === 0, { timeoutMs: 20_000 });
    expect(lu.state().reservation).toBeNull();
    // Release first, then unregister (REGISTER from the own key to key 0): no PREEMPT.
    const ops = callsOn(lu).map((d) => (d.op === 'register' && d.args[1] === 0n ? 'unregister' : d.op));
    expect(ops.filter((o) => ['release', 'unregister', 'preemptAndAbort'].includes(o))).toEqual([
      'release',
      'unregister',
    ]);
    expect(callsOn(lu).find((d) => d.op === 'release')?.args[0]).toBe(a.key);
    await eventually(async () => ((await c.vr(pv)).status?.registrants ?? []).every((r) => r.node !== n));
    // Stays away: no call at all on the LU over several resyncs of another volume.
    const other = await c.pv();
    await c.attach(other.name, n);
    await eventually(() => other.lu.state().reservation?.holder === n, { timeoutMs: 20_000 });
    const seen = callsOn(lu).length;
    await reconciledAgain(other.lu, 3);
    expect(callsOn(lu).length).toBe(seen);
    expect(lu.state().registrations).toEqual([]);
  });

  it('invalid reservation type on the PV -> VR Configured=False InvalidReservationType and the LU untouched; fixed -> reserved with that type and the condition gone', async () => {
    const n = await c.node('node-a');
    const { name: pv, lu } = await c.pv('scsi', { annotations: { [T]: 'shared' } });
    const other = await c.pv();
    await c.startAgent(n, c.kc, { resyncMs: RESYNC_MS });
    await c.attach(pv, n);
    await c.attach(other.name, n);
    const vr = await eventually(async () => {
      const v = await c.vr(pv);
      const cond = v.status?.conditions?.find((x) => x.type === 'Configured');
      if (!cond) throw new Error('no Configured condition yet');
      return v;
    });
    expect(vr.status?.conditions?.find((x) => x.type === 'Configured')).toMatchObject({
      status: 'False',
      reason: 'InvalidReservationType',
    });
    expect(vr.status?.conditions?.find((x) => x.type === 'Configured')?.message).toContain('"shared"');
    await eventually(() => other.lu.state().reservation?.holder === n, { timeoutMs: 20_000 });
    await reconciledAgain(other.lu, 3);
    expect(callsOn(lu)).toEqual([]);
    expect(lu.state().registrations).toEqual([]);
    await c.annotatePv(pv, { [T]: 'exclusive-access' });
    await eventually(() => lu.state().reservation?.holder === n, { timeoutMs: 20_000 });
    expect(lu.state().reservation?.type).toBe('exclusive-access');
    await eventually(async () => (await c.vr(pv)).status?.conditions?.every((x) => x.type !== 'Configured'));
  });

  it('the annotation of a reserved volume turns invalid while its agent restarts (no host memory) -> Configured=False, and the record still names the holder (registrant entry, holder), its key still on the LU', async () => {
    const n = await c.node('node-a');
    const { name: pv, lu } = await c.pv();
    const a = await c.startAgent(n, c.kc, { resyncMs: RESYNC_MS });
    await c.attach(pv, n);
    await eventually(async () => (await c.vr(pv)).status?.holder?.node === n, { timeoutMs: 20_000 });
    await a.stop();
    await c.annotatePv(pv, { [T]: 'shared' });
    await c.startAgent(n, c.kc, { resyncMs: RESYNC_MS });
    const vr = await eventually(async () => {
      const v = await c.vr(pv);
      if (!v.status?.conditions?.some((x) => x.type === 'Configured')) throw new Error('not yet');
      return v; // the write that added it would have cleared the record too
    });
    expect({
      onDevice: lu.state().registrations.map((r) => r.key),
      registrants: vr.status?.registrants?.map((r) => r.node),
      holder: vr.status?.holder?.node,
    }).toEqual({ onDevice: [a.key], registrants: [n], holder: n });
  });

  it('invalid fencing value on the StorageClass -> VR Configured=False InvalidFencing, the LU untouched (no fallback to the default)', async () => {
    const n = await c.node('node-a');
    const sc = await c.storageClass({ [F]: 'off' });
    const { name: pv, lu } = await c.pv('scsi', { storageClassName: sc });
    const other = await c.pv();
    await c.startAgent(n, c.kc, { resyncMs: RESYNC_MS });
    await c.attach(pv, n);
    await c.attach(other.name, n);
    await eventually(async () => {
      const cond = (await c.vr(pv)).status?.conditions?.find((x) => x.type === 'Configured');
      return cond?.status === 'False' && cond.reason === 'InvalidFencing' && cond.message.includes(sc);
    });
    await eventually(() => other.lu.state().reservation?.holder === n, { timeoutMs: 20_000 });
    await reconciledAgain(other.lu, 3);
    expect(callsOn(lu)).toEqual([]);
    expect(lu.state().registrations).toEqual([]);
  });
});
