/**
 * SCSI-2 RESERVE(6) / RELEASE(6) / TEST UNIT READY: CDB encoding and outcome classes
 * (src/pr/scsi2.ts), and the SG_IO requests KoffiPrDevice sends for them on a fake libc.
 */
import { describe, expect, it } from 'vitest';
import {
  ConflictError,
  IndeterminateError,
  InvalidArgumentError,
  NotSentError,
  UnsupportedError,
} from '../../../src/pr/errors.js';
import * as abi from '../../../src/pr/koffi/abi.js';
import { inProcessBackend, NativeExecutor } from '../../../src/pr/koffi/executor.js';
import { FakeLibc, type FakeCall, type FakeDevice } from '../../../src/pr/koffi/fake-libc.js';
import { KoffiPrDevice } from '../../../src/pr/koffi/koffi-pr-device.js';
import { MemoryLogicalUnit } from '../../../src/pr/memory/index.js';
import {
  classifyScsi2Answer,
  isScsi2Device,
  scsi2Cdb,
  TAKEOVER_RESERVE_ATTEMPTS,
  type SgIoAnswer,
} from '../../../src/pr/scsi2.js';
import { classifyScsiReset, scsiResetArg, TAKEOVER_RESET } from '../../../src/pr/koffi/scsi-reset.js';

const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);
const ctx = { op: 'scsi2-reserve' as const, device: '/dev/x' };

describe('scsi2Cdb', () => {
  it.each([
    ['scsi2-reserve', 0x16],
    ['scsi2-release', 0x17],
    ['scsi2-status', 0x00],
  ] as const)('%s -> a 6-byte CDB, opcode 0x%s, the other bytes 0', (op, opcode) => {
    expect([...scsi2Cdb(op)]).toEqual([opcode, 0, 0, 0, 0, 0]);
  });
});

describe('classifyScsi2Answer', () => {
  const a = (status: number, host = 0, sense: SgIoAnswer['sense'] = null): SgIoAnswer => ({
    status,
    host,
    sense,
  });
  it.each([
    ['GOOD -> success', a(0), null],
    ['RESERVATION CONFLICT -> reserved (by another initiator)', a(0x18), 'reserved'],
    [
      'RESERVATION CONFLICT with a host status -> still reserved: the device answered',
      a(0x18, 7),
      'reserved',
    ],
    ['CHECK CONDITION / UNIT ATTENTION -> retry (not executed)', a(2, 0, { key: 6, asc: 0x29 }), 'retry'],
  ] as const)('%s', (_t, answer, want) => {
    expect(classifyScsi2Answer(answer, ctx)).toBe(want);
  });
  it.each([
    [
      'ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE -> unsupported',
      a(2, 0, { key: 5, asc: 0x20 }),
      UnsupportedError,
    ],
    ['ILLEGAL REQUEST / other ASC -> invalid argument', a(2, 0, { key: 5, asc: 0x24 }), InvalidArgumentError],
    ['CHECK CONDITION / MEDIUM ERROR -> indeterminate', a(2, 0, { key: 3, asc: 0x11 }), IndeterminateError],
    ['CHECK CONDITION without sense -> indeterminate', a(2), IndeterminateError],
    ['host status set (path failure) -> indeterminate', a(0, 0x0e), IndeterminateError],
    ['BUSY -> not sent', a(0x08), NotSentError],
    ['TASK SET FULL -> not sent', a(0x28), NotSentError],
    ['an unknown status -> indeterminate', a(0x40), IndeterminateError],
  ] as const)('%s', (_t, answer, cls) => {
    expect(classifyScsi2Answer(answer, ctx)).toBeInstanceOf(cls);
  });
});

describe('the takeover reset: SG_SCSI_RESET argument and classification', () => {
  it('a LU (device) reset that does not escalate: SG_SCSI_RESET_DEVICE | SG_SCSI_RESET_NO_ESCALATE = 0x101, a 4-byte native int', () => {
    expect(TAKEOVER_RESET).toBe(0x101);
    expect(TAKEOVER_RESET).toBe(abi.SG_SCSI_RESET_DEVICE | abi.SG_SCSI_RESET_NO_ESCALATE);
    expect([...scsiResetArg()]).toEqual([0x01, 0x01, 0, 0]);
    expect(abi.SG_SCSI_RESET).toBe(0x2284);
  });
  const dev = { device: '/dev/x' };
  it('ret 0 -> reset done (null)', () => {
    expect(classifyScsiReset({ ret: 0, errno: 0 }, dev)).toBeNull();
  });
  it.each([
    [
      'EIO (the driver answered FAILED: the TMF may have reached the LU) -> indeterminate',
      5,
      IndeterminateError,
    ],
    ['EACCES (no CAP_SYS_ADMIN / CAP_SYS_RAWIO) -> unsupported', 13, UnsupportedError],
    ['EPERM -> unsupported', 1, UnsupportedError],
    ['ENOTTY (no SCSI layer) -> unsupported', 25, UnsupportedError],
    ['EOPNOTSUPP -> unsupported', 95, UnsupportedError],
    ['EINVAL (a reset the driver does not know) -> unsupported', 22, UnsupportedError],
    ['ENODEV (host in error recovery, O_NONBLOCK) -> not sent', 19, NotSentError],
    ['EAGAIN -> not sent', 11, NotSentError],
    ['EBUSY -> not sent', 16, NotSentError],
    ['ETIMEDOUT (unknown here) -> indeterminate', 110, IndeterminateError],
  ] as const)('%s', (_t, errno, cls) => {
    const e = classifyScsiReset({ ret: -1, errno }, dev);
    expect(e).toBeInstanceOf(cls);
    expect(e?.op).toBe('scsi2-takeover');
    expect(e?.errno).toBe(errno);
  });
});

describe('isScsi2Device', () => {
  it('memory model initiator -> true; an object without the four methods -> false', () => {
    expect(isScsi2Device(new MemoryLogicalUnit().initiator('a'))).toBe(true);
    expect(isScsi2Device({ scsi2Reserve: () => {}, scsi2Release: () => {} })).toBe(false);
    const noTakeover = { scsi2Reserve: () => {}, scsi2Release: () => {}, scsi2Status: () => {} };
    expect(isScsi2Device(noTakeover)).toBe(false);
  });
});

/** A fake SG_IO answering with `status` (and, for CHECK CONDITION, fixed-format sense `key`/`asc`). */
function answer(status: number, sense?: { key: number; asc: number }) {
  return (c: FakeCall) => {
    const h = dv(c.arg);
    h.setUint8(abi.SG_IO_HDR.status, status);
    if (sense) {
      const sb = c.deref(abi.SG_IO_HDR.sbp);
      sb[0] = 0x70;
      sb[2] = sense.key;
      sb[7] = 10;
      sb[12] = sense.asc;
      h.setUint8(abi.SG_IO_HDR.sbLenWr, 18);
    }
    return { ret: 0, errno: 0 };
  };
}

async function device(kind: 'scsi' | 'nvme', fake: FakeDevice) {
  const libc = new FakeLibc(fake);
  const executor = new NativeExecutor({ backend: inProcessBackend(libc) });
  const d = await KoffiPrDevice.openUnchecked(`/dev/fake-${kind}`, kind, { executor });
  return { libc, d };
}

describe('KoffiPrDevice SCSI-2 commands on a fake libc', () => {
  it.each([
    ['scsi2Reserve', 0x16],
    ['scsi2Release', 0x17],
    ['scsi2Status', 0x00],
  ] as const)('%s -> one SG_IO, no data transfer, the 6-byte CDB with opcode %i', async (method, opcode) => {
    const { libc, d } = await device('scsi', answer(0));
    await d[method]();
    expect(libc.calls).toHaveLength(1);
    const c = libc.calls[0]!;
    expect(c.request).toBe(abi.SG_IO);
    const h = dv(c.arg);
    expect(h.getInt32(abi.SG_IO_HDR.dxferDirection, true)).toBe(abi.SG_DXFER_NONE);
    expect(h.getUint32(abi.SG_IO_HDR.dxferLen, true)).toBe(0);
    expect(h.getUint8(abi.SG_IO_HDR.cmdLen)).toBe(6);
    expect([...c.deref(abi.SG_IO_HDR.cmdp).subarray(0, 6)]).toEqual([opcode, 0, 0, 0, 0, 0]);
  });

  it('RESERVE(6) answered RESERVATION CONFLICT -> ConflictError saying another initiator holds the LU', async () => {
    const { d } = await device('scsi', answer(0x18));
    const e = await d.scsi2Reserve().catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ConflictError);
    expect((e as Error).message).toMatch(/reserved by another initiator/);
  });

  it('TEST UNIT READY: RESERVATION CONFLICT -> reserved-by-other; GOOD -> not-reserved-by-other', async () => {
    expect(await (await device('scsi', answer(0x18))).d.scsi2Status()).toBe('reserved-by-other');
    expect(await (await device('scsi', answer(0))).d.scsi2Status()).toBe('not-reserved-by-other');
  });

  it('a UNIT ATTENTION, then GOOD -> RESERVE(6) sent twice, success', async () => {
    let n = 0;
    const { libc, d } = await device('scsi', (c) =>
      n++ === 0 ? answer(2, { key: 6, asc: 0x29 })(c) : answer(0)(c),
    );
    await d.scsi2Reserve();
    expect(libc.calls).toHaveLength(2);
  });

  it('UNIT ATTENTION on every attempt -> IndeterminateError after a bounded number of sends', async () => {
    const { libc, d } = await device('scsi', answer(2, { key: 6, asc: 0x29 }));
    await expect(d.scsi2Release()).rejects.toBeInstanceOf(IndeterminateError);
    expect(libc.calls.length).toBeLessThanOrEqual(9);
  });

  it('INVALID COMMAND OPERATION CODE -> UnsupportedError', async () => {
    const { d } = await device('scsi', answer(2, { key: 5, asc: 0x20 }));
    await expect(d.scsi2Reserve()).rejects.toBeInstanceOf(UnsupportedError);
  });

  it('SG_IO answered EINVAL (no SCSI layer) -> UnsupportedError', async () => {
    const { d } = await device('scsi', () => ({ ret: -1, errno: 22 }));
    await expect(d.scsi2Status()).rejects.toBeInstanceOf(UnsupportedError);
  });

  it('an NVMe device -> UnsupportedError "SCSI only", nothing sent', async () => {
    const { libc, d } = await device('nvme', answer(0));
    await expect(d.scsi2Reserve()).rejects.toThrow(/SCSI only/);
    await expect(d.scsi2Status()).rejects.toBeInstanceOf(UnsupportedError);
    expect(libc.calls).toHaveLength(0);
  });
});

describe('KoffiPrDevice scsi2Takeover on a fake libc', () => {
  /** SG_SCSI_RESET answers `reset`; each SG_IO the next of `sgio` (the last one repeats). */
  function takeoverFake(
    reset: { ret: number; errno: number },
    ...sgio: ((c: FakeCall) => { ret: number; errno: number })[]
  ) {
    let n = 0;
    return (c: FakeCall) => {
      if (c.request === abi.SG_SCSI_RESET) return reset;
      return sgio[Math.min(n++, sgio.length - 1)]!(c);
    };
  }
  const ua = answer(2, { key: 6, asc: 0x29 });

  it('-> SG_SCSI_RESET with 0x101 (LU reset, no escalation) first, then one SG_IO RESERVE(6); success', async () => {
    const { libc, d } = await device('scsi', takeoverFake({ ret: 0, errno: 0 }, answer(0)));
    await d.scsi2Takeover();
    expect(libc.calls.map((c) => c.request)).toEqual([abi.SG_SCSI_RESET, abi.SG_IO]);
    expect([...libc.calls[0]!.arg]).toEqual([0x01, 0x01, 0, 0]);
    expect(libc.calls[1]!.deref(abi.SG_IO_HDR.cmdp)[0]).toBe(0x16);
  });

  it('the unit attention the reset leaves, twice, then GOOD -> RESERVE(6) sent three times, success', async () => {
    const { libc, d } = await device('scsi', takeoverFake({ ret: 0, errno: 0 }, ua, ua, answer(0)));
    await d.scsi2Takeover();
    expect(libc.calls.map((c) => c.request)).toEqual([abi.SG_SCSI_RESET, abi.SG_IO, abi.SG_IO, abi.SG_IO]);
  });

  it(`unit attention on every RESERVE -> IndeterminateError after ${TAKEOVER_RESERVE_ATTEMPTS} RESERVE(6), one reset`, async () => {
    const { libc, d } = await device('scsi', takeoverFake({ ret: 0, errno: 0 }, ua));
    await expect(d.scsi2Takeover()).rejects.toBeInstanceOf(IndeterminateError);
    expect(libc.calls.filter((c) => c.request === abi.SG_SCSI_RESET)).toHaveLength(1);
    expect(libc.calls.filter((c) => c.request === abi.SG_IO)).toHaveLength(TAKEOVER_RESERVE_ATTEMPTS);
  });

  it('RESERVE(6) after the reset answered RESERVATION CONFLICT -> ConflictError of scsi2-takeover naming the PR registrations', async () => {
    const { d } = await device('scsi', takeoverFake({ ret: 0, errno: 0 }, answer(0x18)));
    const e = await d.scsi2Takeover().catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ConflictError);
    expect((e as ConflictError).op).toBe('scsi2-takeover');
    expect((e as Error).message).toMatch(/LU was reset.*persistent reservation registrations/);
  });

  it.each([
    ['EIO (reset failed)', 5, IndeterminateError],
    ['EACCES (no CAP_SYS_RAWIO)', 13, UnsupportedError],
    ['ENODEV (host in recovery)', 19, NotSentError],
  ] as const)('the reset answered %s -> its error class, no RESERVE(6) sent', async (_t, errno, cls) => {
    const { libc, d } = await device('scsi', takeoverFake({ ret: -1, errno }, answer(0)));
    await expect(d.scsi2Takeover()).rejects.toBeInstanceOf(cls);
    expect(libc.calls.map((c) => c.request)).toEqual([abi.SG_SCSI_RESET]);
  });

  it('an NVMe device -> UnsupportedError "SCSI only", nothing sent (no reset)', async () => {
    const { libc, d } = await device('nvme', answer(0));
    await expect(d.scsi2Takeover()).rejects.toThrow(/SCSI only/);
    expect(libc.calls).toHaveLength(0);
  });
});

describe('MemoryLogicalUnit SCSI-2 reservation', () => {
  it('takeover by b while a holds -> one LU reset, b holds; the registrations of a LU with PR survive a takeover', async () => {
    const lu = new MemoryLogicalUnit();
    await lu.initiator('a').scsi2Reserve();
    await lu.initiator('b').scsi2Takeover();
    expect(lu.luResets).toBe(1);
    expect(lu.scsi2Holder).toBe('b');
    await lu.initiator('b').scsi2Release();
    await lu.initiator('a').register(0n, 0xa1n);
    await lu.initiator('a').reserve(0xa1n, 'exclusive-access');
    await expect(lu.initiator('c').scsi2Takeover()).rejects.toBeInstanceOf(ConflictError);
    expect(lu.luResets).toBe(2);
    expect(lu.state()).toEqual({
      generation: 1,
      registrations: [{ initiator: 'a', key: 0xa1n }],
      reservation: { type: 'exclusive-access', holder: 'a' },
    });
  });

  it('a power cycle drops the SCSI-2 reservation -> b is no longer reserved out and writes', async () => {
    const lu = new MemoryLogicalUnit();
    await lu.initiator('a').scsi2Reserve();
    expect(await lu.initiator('b').scsi2Status()).toBe('reserved-by-other');
    lu.powerCycle();
    expect(lu.scsi2Holder).toBeNull();
    expect(await lu.initiator('b').scsi2Status()).toBe('not-reserved-by-other');
    expect(lu.write('b')).toBe('ok');
  });

  it('an injected not-sent fault on scsi2-reserve -> NotSentError, nothing reserved', async () => {
    const lu = new MemoryLogicalUnit();
    lu.inject({ kind: 'not-sent', op: 'scsi2-reserve' });
    await expect(lu.initiator('a').scsi2Reserve()).rejects.toBeInstanceOf(NotSentError);
    expect(lu.scsi2Holder).toBeNull();
  });
});
