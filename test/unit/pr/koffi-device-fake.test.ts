/**
 * KoffiPrDevice on a fake libc (fake-libc.ts through the in-process executor backend):
 * the request encoding, the outcome classes and the read loops, with device answers the
 * kernel suite cannot produce on demand (hangs, growing key lists, short transfers).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { CallBatch } from '../../../src/pr/call-batch.js';
import { IndeterminateError, NotSentError, UnsupportedError } from '../../../src/pr/errors.js';
import * as abi from '../../../src/pr/koffi/abi.js';
import { inProcessBackend, NativeExecutor } from '../../../src/pr/koffi/executor.js';
import { FakeLibc, gate, type FakeCall, type FakeDevice } from '../../../src/pr/koffi/fake-libc.js';
import { KoffiPrDevice } from '../../../src/pr/koffi/koffi-pr-device.js';
import type { SyscallResult } from '../../../src/pr/koffi/native-call.js';
import { fullStatusData, iscsiTransportId } from './full-status-bytes.js';
import { recordingExecutor } from './hand-overs.js';

const OK: SyscallResult = { ret: 0, errno: 0 };
const KA = 0xaaaa000000000001n;
const keyN = (i: number) => 0x5000000000000000n + BigInt(i);
const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 2));
  }
}

let toRelease: (() => void)[] = [];
afterEach(() => {
  for (const r of toRelease) r();
  toRelease = [];
});

async function device(
  kind: 'scsi' | 'nvme',
  fake: FakeDevice,
  opts: { readMethod?: 'ioctl' | 'sg-io' | 'nvme-passthru'; timeoutMs?: number } = {},
) {
  const libc = new FakeLibc(fake);
  const executor = new NativeExecutor({ backend: inProcessBackend(libc) });
  const d = await KoffiPrDevice.openUnchecked(`/dev/fake-${kind}`, kind, { executor, ...opts });
  return { libc, d, executor };
}

/** IOC_PR_READ_KEYS on a device holding `n` keys: fills what fits, reports the total. */
function readKeysIoctl(c: FakeCall, n: number): SyscallResult {
  const v = dv(c.arg);
  const room = v.getUint32(abi.PR_READ_KEYS.numKeys, true);
  v.setUint32(abi.PR_READ_KEYS.generation, 7, true);
  v.setUint32(abi.PR_READ_KEYS.numKeys, n, true);
  const keys = dv(c.deref(abi.PR_READ_KEYS.keysPtr));
  for (let i = 0; i < Math.min(room, n); i++) keys.setBigUint64(i * 8, keyN(i), true);
  return OK;
}

/** SG_IO PERSISTENT RESERVE IN / READ KEYS on a device holding `n` keys, transferring at most `cap`. */
function readKeysSgIo(c: FakeCall, n: number, cap = Infinity): SyscallResult {
  const h = dv(c.arg);
  const alloc = h.getUint32(abi.SG_IO_HDR.dxferLen, true);
  const data = dv(c.deref(abi.SG_IO_HDR.dxferp));
  data.setUint32(0, 7, false);
  data.setUint32(4, n * 8, false); // ADDITIONAL LENGTH: all keys on the device
  const sent = Math.min(n, cap, Math.floor((alloc - 8) / 8));
  for (let i = 0; i < sent; i++) data.setBigUint64(8 + i * 8, keyN(i), false);
  h.setInt32(abi.SG_IO_HDR.resid, alloc - (8 + sent * 8), true);
  return OK;
}

describe('KoffiPrDevice on a fake libc', () => {
  it('READ KEYS ioctl with 40 keys on the device -> re-issued with room for 40, all keys returned', async () => {
    const { libc, d } = await device('scsi', (c) => readKeysIoctl(c, 40), { readMethod: 'ioctl' });
    const r = await d.readKeys();
    expect(r.keys).toEqual(Array.from({ length: 40 }, (_, i) => keyN(i)));
    expect(libc.calls.map((c) => dv(c.arg).getUint32(abi.PR_READ_KEYS.numKeys, true))).toEqual([40, 40]);
    expect(libc.calls).toHaveLength(2);
    expect(libc.violations).toEqual([]);
  });

  it('SG_IO READ KEYS with 40 keys on the device -> re-issued with a 328-byte buffer, all keys returned', async () => {
    const { libc, d } = await device('scsi', (c) => readKeysSgIo(c, 40), { readMethod: 'sg-io' });
    const r = await d.readKeys();
    expect(r.keys).toHaveLength(40);
    expect(r.keys[39]).toBe(keyN(39));
    expect(libc.calls.map((c) => dv(c.arg).getUint32(abi.SG_IO_HDR.dxferLen, true))).toEqual([264, 328]);
  });

  it('SG_IO READ KEYS transferring fewer keys than its ADDITIONAL LENGTH says -> IndeterminateError, no endless re-reads', async () => {
    const { libc, d } = await device('scsi', (c) => readKeysSgIo(c, 40, 8), { readMethod: 'sg-io' });
    await expect(d.readKeys()).rejects.toBeInstanceOf(IndeterminateError);
    expect(libc.calls.length).toBeLessThanOrEqual(4);
  });

  it('SG_IO READ KEYS with more keys than one PERSISTENT RESERVE IN carries (8200 > 8190) -> grown to the 16-bit limit, then IndeterminateError, never the cut list', async () => {
    const { libc, d } = await device('scsi', (c) => readKeysSgIo(c, 8200), { readMethod: 'sg-io' });
    await expect(d.readKeys()).rejects.toThrow(/8200 keys do not fit/);
    expect(libc.calls.map((c) => dv(c.arg).getUint32(abi.SG_IO_HDR.dxferLen, true))).toEqual([264, 65528]);
  });

  it('SG_IO answered EINVAL (a block device without SCSI) -> UnsupportedError', async () => {
    const { d } = await device('scsi', () => ({ ret: -1, errno: 22 }), { readMethod: 'sg-io' });
    await expect(d.readKeys()).rejects.toBeInstanceOf(UnsupportedError);
  });

  it('PR OUT answered 2 twice (PR_STS_IOERR) -> retried once, then IndeterminateError', async () => {
    const { libc, d } = await device('scsi', () => ({ ret: 2, errno: 0 }));
    await expect(d.reserve(KA, 'write-exclusive')).rejects.toBeInstanceOf(IndeterminateError);
    expect(libc.calls).toHaveLength(2);
  });

  it('NVMe Register hung past the limit -> IndeterminateError, device hung and failing fast, the crkey/nrkey payload kept until the late return', async () => {
    const g = gate();
    toRelease.push(() => g.open(OK));
    const { libc, d, executor } = await device(
      'nvme',
      (c) => (c.request === abi.NVME_IOCTL_ID ? { ret: 1, errno: 0 } : g.promise),
      { timeoutMs: 50, readMethod: 'nvme-passthru' },
    );
    await expect(d.register(KA, 0n)).rejects.toBeInstanceOf(IndeterminateError);
    expect(d.hung).toBe(true);
    expect(executor.stats().hungDevices).toBe(1);
    await expect(d.readKeys()).rejects.toBeInstanceOf(NotSentError);

    const reg = libc.calls.find((c) => c.request === abi.NVME_IOCTL_IO_CMD)!;
    const payload = dv(reg.deref(abi.NVME_PASSTHRU_CMD.addr));
    expect([payload.getBigUint64(0, true), payload.getBigUint64(8, true)]).toEqual([KA, 0n]);
    expect(libc.violations).toEqual([]);

    g.open(OK);
    await until(() => !d.hung);
    expect(libc.liveBlocks).toBe(0);
    expect(libc.violations).toEqual([]);
  });

  it('close with a read queued behind a running one -> the queued read NotSent, the fd closed after the running read returns', async () => {
    const g = gate();
    toRelease.push(() => g.open(OK));
    const { libc, d } = await device(
      'scsi',
      async (c) => {
        await g.promise;
        return readKeysIoctl(c, 1);
      },
      { readMethod: 'ioctl' },
    );
    const running = d.readKeys();
    const queued = d.readKeys();
    await until(() => libc.calls.length === 1);
    const closing = d.close();
    await expect(queued).rejects.toBeInstanceOf(NotSentError);
    expect(libc.closed).toEqual([]);
    g.open(OK);
    expect((await running).keys).toEqual([keyN(0)]);
    await closing;
    expect(libc.closed).toHaveLength(1);
    expect(libc.violations).toEqual([]);
  });

  it('readKeys of four devices made with one CallBatch -> one hand-over to the threads, each device its own keys; a list that outgrew the first read is read again on its own (SG_IO and ioctl)', async () => {
    const libc = new FakeLibc((c) => {
      const n = Number(c.path.slice(-1)) * 20; // /dev/fake0..3: 0, 20, 40, 60 keys
      return c.request === abi.SG_IO ? readKeysSgIo(c, n) : readKeysIoctl(c, n);
    });
    const { executor, handOvers: handovers } = recordingExecutor(libc, { poolSize: 1 });
    const devices = await Promise.all(
      [0, 1, 2, 3].map((i) =>
        KoffiPrDevice.openUnchecked(`/dev/fake${i}`, 'scsi', {
          executor,
          readMethod: i % 2 ? 'sg-io' : 'ioctl',
        }),
      ),
    );
    handovers.length = 0;
    const batch = new CallBatch();
    const reads = devices.map((d) => d.readKeys({ batch }));
    batch.flush();
    const lists = await Promise.all(reads);
    expect(lists.map((l) => l.keys)).toEqual(
      [0, 20, 40, 60].map((n) => Array.from({ length: n }, (_, i) => keyN(i))),
    );
    // 40 and 60 keys do not fit the first read (room for 32): each read again alone.
    expect(handovers).toEqual([4, 'one', 'one']);
    expect(libc.violations).toEqual([]);
    expect(libc.liveBlocks).toBe(0);
  });
});

/** SG_IO READ FULL STATUS answering `data`: as much as the allocation length takes (SPC-4 truncation). */
function fullStatusSgIo(c: FakeCall, data: Uint8Array): SyscallResult {
  const h = dv(c.arg);
  const alloc = h.getUint32(abi.SG_IO_HDR.dxferLen, true);
  const sent = Math.min(alloc, data.length);
  c.deref(abi.SG_IO_HDR.dxferp).set(data.subarray(0, sent));
  h.setInt32(abi.SG_IO_HDR.resid, alloc - sent, true);
  return OK;
}

/** An NVMe Reservation Report from nvmet-like controllers; `eds` says which structures it answers. */
function nvmeReport(c: FakeCall, eds: { extended: boolean; plain: boolean }): SyscallResult {
  if (c.request === abi.NVME_IOCTL_ID) return { ret: 1, errno: 0 };
  const cmd = dv(c.arg);
  const extended = (cmd.getUint32(abi.NVME_PASSTHRU_CMD.cdw11, true) & 1) === 1;
  // Host Identifier Inconsistent Format, with DNR, as the kernel passes the status on.
  if (extended ? !eds.extended : !eds.plain) return { ret: 0x4018, errno: 0 };
  const out = dv(c.deref(abi.NVME_PASSTHRU_CMD.addr));
  const [header, entry] = extended ? [64, 64] : [24, 24];
  out.setUint32(0, 3, true);
  out.setUint8(4, 1); // write-exclusive
  out.setUint16(5, 2, true);
  for (let i = 0; i < 2; i++) {
    const base = header + i * entry;
    out.setUint16(base, 10 + i, true);
    out.setUint8(base + 2, i === 0 ? 1 : 0);
    out.setBigUint64(base + (extended ? 8 : 16), keyN(i), true);
    out.setUint8(base + (extended ? 31 : 15), 0xa0 + i); // last byte of the host id
  }
  return OK;
}

describe('KoffiPrDevice.readFullStatus on a fake libc', () => {
  const tid = (i: number) => iscsiTransportId(`iqn.2026-11.io.prfence:host-${i}-${'x'.repeat(200)}`);

  it('SG_IO READ FULL STATUS longer than the first allocation -> read again with the largest allocation, every descriptor returned', async () => {
    // 12 descriptors of about 240 bytes: more than the first 2048-byte read holds.
    const data = fullStatusData(
      4,
      Array.from({ length: 12 }, (_, i) => ({
        key: keyN(i),
        holder: i === 0,
        scopeType: 0x01,
        tid: tid(i),
      })),
    );
    const cdbs: number[][] = [];
    const { libc, d } = await device('scsi', (c) => {
      cdbs.push([...c.deref(abi.SG_IO_HDR.cmdp).subarray(0, 10)]);
      return fullStatusSgIo(c, data);
    });
    const f = await d.readFullStatus();
    expect(f.registrants.map((r) => r.key)).toEqual(Array.from({ length: 12 }, (_, i) => keyN(i)));
    expect(f.registrants[11]!.initiator).toMatchObject({
      transport: 'iscsi',
      id: expect.stringContaining('host-11') as string,
    });
    expect(f.reservation).toEqual({ key: keyN(0), type: 'write-exclusive' });
    expect(f.generation).toBe(4);
    // PERSISTENT RESERVE IN, service action 03h; the second read with the largest allocation.
    expect(cdbs.map((c) => [c[0], c[1], (c[7]! << 8) | c[8]!])).toEqual([
      [0x5e, 0x03, 2048],
      [0x5e, 0x03, 0xffff],
    ]);
    expect(libc.calls.map((c) => dv(c.arg).getUint32(abi.SG_IO_HDR.dxferLen, true))).toEqual([2048, 0xffff]);
    expect(libc.violations).toEqual([]);
  });

  // A cut list and an ADDITIONAL LENGTH of the descriptors counted: as LIO counts them (the
  // descriptors so far and the next one's TransportID against the allocation, headers left
  // out: it announced 2060 bytes in 2048 with 34 iSCSI registrants), or within the allocation.
  for (const kernel of ['lio', 'within']) {
    it(`SG_IO READ FULL STATUS cut where the allocation ends, ADDITIONAL LENGTH of the descriptors counted (${kernel === 'lio' ? 'as LIO counts' : 'within the allocation'}) -> read again with the largest allocation, every descriptor returned`, async () => {
      const all = Array.from({ length: 34 }, (_, i) => ({
        key: keyN(i),
        holder: i === 0,
        scopeType: 0x05,
        tid: tid(i),
      }));
      const lio = (c: FakeCall): SyscallResult => {
        const alloc = dv(c.arg).getUint32(abi.SG_IO_HDR.dxferLen, true);
        const fits = (n: number) =>
          kernel === 'lio'
            ? fullStatusData(4, all.slice(0, n)).length - 8 + all[n]!.tid.length <= alloc
            : fullStatusData(4, all.slice(0, n + 1)).length <= alloc;
        let n = 0;
        while (n < all.length && fits(n)) n++;
        return fullStatusSgIo(c, fullStatusData(4, all.slice(0, n)));
      };
      const { libc, d } = await device('scsi', lio);
      const f = await d.readFullStatus();
      expect(f.registrants.map((r) => r.key)).toEqual(all.map((x) => x.key));
      expect(libc.calls.map((c) => dv(c.arg).getUint32(abi.SG_IO_HDR.dxferLen, true))).toEqual([
        2048, 0xffff,
      ]);
    });
  }

  it('SG_IO READ FULL STATUS that fills the largest allocation but for less than one descriptor -> UnsupportedError (it may be cut), kept', async () => {
    const many = Array.from({ length: 400 }, (_, i) => ({ key: keyN(i), tid: tid(i) }));
    const lio = (c: FakeCall): SyscallResult => {
      const alloc = dv(c.arg).getUint32(abi.SG_IO_HDR.dxferLen, true);
      let n = 0;
      while (n < many.length && fullStatusData(4, many.slice(0, n + 1)).length <= alloc) n++;
      return fullStatusSgIo(c, fullStatusData(4, many.slice(0, n)));
    };
    const { libc, d } = await device('scsi', lio);
    await expect(d.readFullStatus()).rejects.toThrow(/may be cut/);
    // Unsupported (a fence reads with readKeys and readReservation instead), kept: not sent again.
    const n = libc.calls.length;
    await expect(d.readFullStatus()).rejects.toBeInstanceOf(UnsupportedError);
    expect(libc.calls.length).toBe(n);
  });

  it('SG_IO READ FULL STATUS sending less than its ADDITIONAL LENGTH with room to spare -> IndeterminateError, no partial list', async () => {
    const data = fullStatusData(4, [{ key: KA, tid: tid(1) }]);
    const { d } = await device('scsi', (c) => fullStatusSgIo(c, data.subarray(0, 40)));
    await expect(d.readFullStatus()).rejects.toBeInstanceOf(IndeterminateError);
  });

  it('SG_IO READ FULL STATUS answered ILLEGAL REQUEST / INVALID FIELD IN CDB -> UnsupportedError, kept', async () => {
    const { libc, d } = await device('scsi', (c) => {
      const h = dv(c.arg);
      h.setUint8(abi.SG_IO_HDR.status, 0x02);
      h.setUint8(abi.SG_IO_HDR.sbLenWr, 18);
      c.deref(abi.SG_IO_HDR.sbp).set([0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24]);
      return OK;
    });
    await expect(d.readFullStatus()).rejects.toBeInstanceOf(UnsupportedError);
    // Kept per device: answered so again without a command.
    const n = libc.calls.length;
    await expect(d.readFullStatus()).rejects.toBeInstanceOf(UnsupportedError);
    expect(libc.calls.length).toBe(n);
  });

  it('NVMe controller answering the extended report (EDS=1) -> 128-bit host ids and controller ids, holder flagged', async () => {
    const { libc, d } = await device('nvme', (c) => nvmeReport(c, { extended: true, plain: false }));
    const f = await d.readFullStatus();
    expect(f).toEqual({
      generation: 3,
      reservation: { key: keyN(0), type: 'write-exclusive' },
      registrants: [
        {
          key: keyN(0),
          holder: true,
          initiator: { transport: 'nvme', id: '0'.repeat(30) + 'a0', controllerId: 10 },
        },
        {
          key: keyN(1),
          holder: false,
          initiator: { transport: 'nvme', id: '0'.repeat(30) + 'a1', controllerId: 11 },
        },
      ],
    });
    expect(libc.calls.filter((c) => c.request === abi.NVME_IOCTL_IO_CMD)).toHaveLength(1);
  });

  it('NVMe controller answering Host Identifier Inconsistent Format to EDS=1 -> the non-extended report (64-bit host ids), and EDS=0 from then on', async () => {
    const { libc, d } = await device('nvme', (c) => nvmeReport(c, { extended: false, plain: true }), {
      readMethod: 'nvme-passthru',
    });
    const f = await d.readFullStatus();
    expect(f.registrants.map((r) => r.initiator)).toEqual([
      { transport: 'nvme', id: '00000000000000a0', controllerId: 10 },
      { transport: 'nvme', id: '00000000000000a1', controllerId: 11 },
    ]);
    expect((await d.readKeys()).keys).toEqual([keyN(0), keyN(1)]);
    const eds = libc.calls
      .filter((c) => c.request === abi.NVME_IOCTL_IO_CMD)
      .map((c) => dv(c.arg).getUint32(abi.NVME_PASSTHRU_CMD.cdw11, true) & 1);
    expect(eds).toEqual([1, 0, 0]);
  });
});
