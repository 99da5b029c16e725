/**
 * Capabilities from the device: the REPORT CAPABILITIES parser and the RESCAP mapping on
 * hand-built bytes, then KoffiPrDevice.capabilities() on a fake libc (the SG_IO and NVMe
 * admin commands it sends, the fallback when the device does not implement them), and
 * PREEMPT AND ABORT refused as unsupported.
 */
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, UnsupportedError } from '../../../src/pr/errors.js';
import * as abi from '../../../src/pr/koffi/abi.js';
import { inProcessBackend, NativeExecutor } from '../../../src/pr/koffi/executor.js';
import { FakeLibc, type FakeCall, type FakeDevice } from '../../../src/pr/koffi/fake-libc.js';
import { KoffiPrDevice } from '../../../src/pr/koffi/koffi-pr-device.js';
import type { SyscallResult } from '../../../src/pr/koffi/native-call.js';
import { parsePrinReportCapabilities, parseRescap } from '../../../src/pr/koffi/parse.js';
import { RESERVATION_TYPES, type ReservationType } from '../../../src/pr/reservation-type.js';

const OK: SyscallResult = { ret: 0, errno: 0 };
const KA = 0xaaaa000000000001n;
const KB = 0xbbbb000000000002n;
const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);
const caps = (bytes: number[], received = bytes.length) =>
  parsePrinReportCapabilities(dv(Uint8Array.from(bytes)), received);

describe('REPORT CAPABILITIES parameter data (SPC-4 6.16.4)', () => {
  it('every flag and every type set -> all true, ALLOW COMMANDS 1, all six types', () => {
    expect(caps([0, 8, 0x1d, 0x91, 0xea, 0x01, 0, 0])).toEqual({
      crh: true,
      sipC: true,
      atpC: true,
      ptplC: true,
      tmv: true,
      allowCommands: 1,
      ptplA: true,
      types: [...RESERVATION_TYPES],
    });
  });

  it.each([
    [[0x02, 0x00], 'write-exclusive'],
    [[0x08, 0x00], 'exclusive-access'],
    [[0x20, 0x00], 'write-exclusive-reg-only'],
    [[0x40, 0x00], 'exclusive-access-reg-only'],
    [[0x80, 0x00], 'write-exclusive-all-regs'],
    [[0x00, 0x01], 'exclusive-access-all-regs'],
  ] as const)('type mask bytes %j with TMV -> only %s', (mask, type) => {
    expect(caps([0, 8, 0, 0x80, ...mask, 0, 0])?.types).toEqual([type]);
  });

  it('reserved mask bits (byte 4 bits 0, 2, 4; byte 5 bits 1-7) -> no type', () => {
    expect(caps([0, 8, 0, 0x80, 0x15, 0xfe, 0, 0])?.types).toEqual([]);
  });

  it('each flag on its own -> that flag alone', () => {
    expect(caps([0, 8, 0x10, 0, 0, 0, 0, 0])).toMatchObject({ crh: true, sipC: false, atpC: false });
    expect(caps([0, 8, 0x08, 0, 0, 0, 0, 0])).toMatchObject({ crh: false, sipC: true, atpC: false });
    expect(caps([0, 8, 0x04, 0, 0, 0, 0, 0])).toMatchObject({ sipC: false, atpC: true, ptplC: false });
    expect(caps([0, 8, 0x01, 0, 0, 0, 0, 0])).toMatchObject({ atpC: false, ptplC: true });
    expect(caps([0, 8, 0, 0x70, 0, 0, 0, 0])).toMatchObject({ allowCommands: 7, ptplA: false, tmv: false });
    expect(caps([0, 8, 0, 0x01, 0, 0, 0, 0])).toMatchObject({ allowCommands: 0, ptplA: true });
  });

  it('TMV clear -> types null (the mask is to be ignored), flags still read', () => {
    expect(caps([0, 8, 0x04, 0x10, 0xea, 0x01, 0, 0])).toMatchObject({
      tmv: false,
      types: null,
      atpC: true,
      allowCommands: 1,
    });
  });

  it('fewer than 6 bytes received, or LENGTH under 6 -> null', () => {
    expect(caps([0, 8, 0, 0x80, 0xea, 0x01, 0, 0], 4)).toBeNull();
    expect(caps([0, 4, 0, 0x80, 0xea, 0x01, 0, 0])).toBeNull();
  });
});

describe('NVMe RESCAP (Identify Namespace byte 31)', () => {
  it.each([
    [0x02, ['write-exclusive']],
    [0x04, ['exclusive-access']],
    [0x08, ['write-exclusive-reg-only']],
    [0x10, ['exclusive-access-reg-only']],
    [0x20, ['write-exclusive-all-regs']],
    [0x40, ['exclusive-access-all-regs']],
  ] as const)('bit 0x%s -> %j', (rescap, types) => {
    expect(parseRescap(rescap)).toEqual({ types, ptpl: false, iekey: false });
  });

  it('bit 0 -> PTPL, bit 7 -> IEKEY, no type', () => {
    expect(parseRescap(0x81)).toEqual({ types: [], ptpl: true, iekey: true });
  });

  it('0xfe (nvmet: every type and IEKEY) -> all six types, no PTPL', () => {
    expect(parseRescap(0xfe)).toEqual({ types: [...RESERVATION_TYPES], ptpl: false, iekey: true });
  });
});

async function device(kind: 'scsi' | 'nvme', fake: FakeDevice) {
  const libc = new FakeLibc(fake);
  const executor = new NativeExecutor({ backend: inProcessBackend(libc) });
  const readMethod = kind === 'scsi' ? 'sg-io' : 'nvme-passthru';
  const d = await KoffiPrDevice.openUnchecked(`/dev/fake-${kind}`, kind, { executor, readMethod });
  return { libc, d };
}

const cdbOf = (c: FakeCall) => [...c.deref(abi.SG_IO_HDR.cmdp).subarray(0, 10)];

/** A SCSI device answering READ KEYS (no keys) and REPORT CAPABILITIES with `answer`. */
function scsiDevice(answer: (c: FakeCall) => SyscallResult): FakeDevice {
  return (c) => {
    if (c.request !== abi.SG_IO) return { ret: -1, errno: 25 };
    const sa = cdbOf(c)[1];
    if (sa === 0x02) return answer(c);
    const h = dv(c.arg);
    const data = dv(c.deref(abi.SG_IO_HDR.dxferp));
    data.setUint32(0, 1, false);
    data.setUint32(4, 0, false);
    h.setInt32(abi.SG_IO_HDR.resid, h.getUint32(abi.SG_IO_HDR.dxferLen, true) - 8, true);
    return OK;
  };
}

/** REPORT CAPABILITIES data, all of it transferred. */
const reportCaps = (bytes: number[]) => (c: FakeCall) => {
  c.deref(abi.SG_IO_HDR.dxferp).set(bytes);
  return OK;
};

/** CHECK CONDITION, fixed sense with `key` / `asc`. */
const checkCondition = (key: number, asc: number) => (c: FakeCall) => {
  const h = dv(c.arg);
  h.setUint8(abi.SG_IO_HDR.status, 0x02);
  h.setUint8(abi.SG_IO_HDR.sbLenWr, 18);
  c.deref(abi.SG_IO_HDR.sbp).set([0x70, 0, key, 0, 0, 0, 0, 10, 0, 0, 0, 0, asc]);
  return OK;
};

const reportCapsCalls = (libc: FakeLibc) =>
  libc.calls.filter((c) => c.request === abi.SG_IO && cdbOf(c)[1] === 0x02);

describe('KoffiPrDevice.capabilities on a fake libc: SCSI', () => {
  it('REPORT CAPABILITIES with TMV and three types -> those types from the device, its flags; asked once', async () => {
    const { libc, d } = await device('scsi', scsiDevice(reportCaps([0, 8, 0x0d, 0x91, 0x2a, 0x00, 0, 0])));
    const c = await d.capabilities();
    expect(c).toEqual({
      kind: 'scsi',
      readMethod: 'sg-io',
      types: ['write-exclusive', 'exclusive-access', 'write-exclusive-reg-only'],
      source: 'device',
      flags: {
        ptplCapable: true,
        ptplActive: true,
        allTargetPorts: true,
        specifyInitiatorPorts: true,
        compatibleReservationHandling: false,
        allowCommands: 1,
      },
      preemptAbort: true,
    });
    const sent = reportCapsCalls(libc);
    expect(sent.map(cdbOf)).toEqual([[0x5e, 0x02, 0, 0, 0, 0, 0, 0, 8, 0]]);
    expect(dv(sent[0]!.arg).getUint32(abi.SG_IO_HDR.dxferLen, true)).toBe(8);
    expect(dv(sent[0]!.arg).getInt32(abi.SG_IO_HDR.dxferDirection, true)).toBe(abi.SG_DXFER_FROM_DEV);
    expect(await d.capabilities()).toEqual(c);
    expect(reportCapsCalls(libc)).toHaveLength(1);
  });

  it('asked again (the agent asks at every reconcile) -> no command at all: the first call read the keys (PR supported) and the report once', async () => {
    const { libc, d } = await device('scsi', scsiDevice(reportCaps([0, 8, 0x0d, 0x91, 0x2a, 0x00, 0, 0])));
    await d.capabilities();
    const n = libc.calls.length;
    expect(n).toBe(2); // READ KEYS, REPORT CAPABILITIES
    await d.capabilities();
    await d.capabilities();
    expect(libc.calls.length).toBe(n);
  });

  it('a device without PR (READ KEYS answered ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE) -> capabilities rejects UnsupportedError, every time', async () => {
    const { d } = await device('scsi', checkCondition(0x05, 0x20));
    await expect(d.capabilities()).rejects.toBeInstanceOf(UnsupportedError);
    await expect(d.capabilities()).rejects.toBeInstanceOf(UnsupportedError);
  });

  it('ILLEGAL REQUEST / INVALID FIELD IN CDB (not implemented) -> all six types assumed, said so, not asked again', async () => {
    const { libc, d } = await device('scsi', scsiDevice(checkCondition(0x05, 0x24)));
    const c = await d.capabilities();
    expect(c).toMatchObject({ types: RESERVATION_TYPES, source: 'assumed', flags: {}, preemptAbort: true });
    expect(c.assumedBecause).toMatch(/does not implement/);
    await d.capabilities();
    expect(reportCapsCalls(libc)).toHaveLength(1);
  });

  it('TMV clear -> all six types assumed, the flags the device reported', async () => {
    const { d } = await device('scsi', scsiDevice(reportCaps([0, 8, 0x04, 0x00, 0x02, 0x00, 0, 0])));
    const c = await d.capabilities();
    expect(c).toMatchObject({ types: RESERVATION_TYPES, source: 'assumed', flags: { allTargetPorts: true } });
    expect(c.assumedBecause).toMatch(/TMV/);
  });

  it('REPORT CAPABILITIES lost on the path (host status) -> assumed this time, asked again next time', async () => {
    let fail = true;
    const { libc, d } = await device(
      'scsi',
      scsiDevice((c) => {
        if (!fail) return reportCaps([0, 8, 0, 0x80, 0x20, 0x00, 0, 0])(c);
        dv(c.arg).setUint16(abi.SG_IO_HDR.hostStatus, 0x01, true);
        return OK;
      }),
    );
    expect((await d.capabilities()).source).toBe('assumed');
    fail = false;
    expect(await d.capabilities()).toMatchObject({ source: 'device', types: ['write-exclusive-reg-only'] });
    expect(reportCapsCalls(libc)).toHaveLength(2);
  });

  it('PREEMPT AND ABORT answered EINVAL (sd.c: ILLEGAL REQUEST / INVALID FIELD IN CDB) -> UnsupportedError, capabilities say preemptAbort false; PREEMPT still sent', async () => {
    const { libc, d } = await device('scsi', (c) => {
      if (c.request === abi.IOC_PR_PREEMPT_ABORT) return { ret: -1, errno: 22 };
      if (c.request === abi.IOC_PR_PREEMPT) return OK;
      return scsiDevice(reportCaps([0, 8, 0, 0x80, 0xea, 0x01, 0, 0]))(c);
    });
    const e = await d.preemptAndAbort(KA, KB, 'write-exclusive-reg-only').catch((x: unknown) => x);
    expect(e).toBeInstanceOf(UnsupportedError);
    expect((await d.capabilities()).preemptAbort).toBe(false);
    await d.preempt(KA, KB, 'write-exclusive-reg-only');
    expect(libc.calls.filter((c) => c.request === abi.IOC_PR_PREEMPT)).toHaveLength(1);
  });
});

describe('KoffiPrDevice PREEMPT AND ABORT with a victim key of 0', () => {
  it('EINVAL (SPC-4: key 0 outside an all-registrants reservation, INVALID FIELD IN PARAMETER LIST) -> InvalidArgumentError, PREEMPT AND ABORT not marked refused', async () => {
    const { d } = await device('scsi', (c) => {
      if (c.request === abi.IOC_PR_PREEMPT_ABORT) return { ret: -1, errno: 22 };
      return scsiDevice(reportCaps([0, 8, 0, 0x80, 0xea, 0x01, 0, 0]))(c);
    });
    await expect(d.preemptAndAbort(KA, 0n, 'write-exclusive-reg-only')).rejects.toBeInstanceOf(
      InvalidArgumentError,
    );
    expect((await d.capabilities()).preemptAbort).toBe(true);
  });
});

describe('KoffiPrDevice PREEMPT AND ABORT with a type the device lacks', () => {
  it('EINVAL for a type outside the reported mask -> InvalidArgumentError, PREEMPT AND ABORT not marked refused', async () => {
    const { d } = await device('scsi', (c) => {
      if (c.request === abi.IOC_PR_PREEMPT_ABORT) return { ret: -1, errno: 22 };
      // Type mask: write-exclusive-reg-only only.
      return scsiDevice(reportCaps([0, 8, 0, 0x80, 0x20, 0x00, 0, 0]))(c);
    });
    await d.capabilities();
    await expect(d.preemptAndAbort(KA, KB, 'exclusive-access')).rejects.toBeInstanceOf(InvalidArgumentError);
    expect((await d.capabilities()).preemptAbort).toBe(true);
  });
});

/** An NVMe namespace: id 1, an empty Reservation Report, Identify Namespace with `rescap` (or an errno). */
function nvmeDevice(identify: number | { errno: number }): FakeDevice {
  return (c) => {
    if (c.request === abi.NVME_IOCTL_ID) return { ret: 1, errno: 0 };
    if (c.request === abi.NVME_IOCTL_IO_CMD) {
      dv(c.deref(abi.NVME_PASSTHRU_CMD.addr)).setUint32(0, 1, true);
      return OK;
    }
    if (c.request === abi.NVME_IOCTL_ADMIN_CMD) {
      if (typeof identify !== 'number') return { ret: -1, errno: identify.errno };
      c.deref(abi.NVME_PASSTHRU_CMD.addr)[31] = identify; // RESCAP
      return OK;
    }
    if (c.request === abi.IOC_PR_PREEMPT_ABORT) return { ret: -1, errno: 95 };
    return { ret: -1, errno: 25 };
  };
}

describe('KoffiPrDevice.capabilities on a fake libc: NVMe', () => {
  it('Identify Namespace (admin opcode 06h, CNS 0, the namespace id, 4096 bytes) with RESCAP 0x0b -> WE and WE-RO, PTPL, no IEKEY', async () => {
    const { libc, d } = await device('nvme', nvmeDevice(0x0b));
    expect(await d.capabilities()).toEqual({
      kind: 'nvme',
      readMethod: 'nvme-passthru',
      types: ['write-exclusive', 'write-exclusive-reg-only'] satisfies ReservationType[],
      source: 'device',
      flags: { ptplCapable: true, ignoreExistingKey: false },
      preemptAbort: true,
    });
    const admin = libc.calls.filter((c) => c.request === abi.NVME_IOCTL_ADMIN_CMD);
    expect(admin).toHaveLength(1);
    const cmd = dv(admin[0]!.arg);
    expect({
      opcode: cmd.getUint8(abi.NVME_PASSTHRU_CMD.opcode),
      nsid: cmd.getUint32(abi.NVME_PASSTHRU_CMD.nsid, true),
      cdw10: cmd.getUint32(abi.NVME_PASSTHRU_CMD.cdw10, true),
      dataLen: cmd.getUint32(abi.NVME_PASSTHRU_CMD.dataLen, true),
    }).toEqual({ opcode: 0x06, nsid: 1, cdw10: 0, dataLen: 4096 });
    await d.capabilities();
    expect(libc.calls.filter((c) => c.request === abi.NVME_IOCTL_ADMIN_CMD)).toHaveLength(1);
  });

  it('admin passthrough refused (EPERM: no CAP_SYS_ADMIN) -> all six types assumed, kept', async () => {
    const { libc, d } = await device('nvme', nvmeDevice({ errno: 1 }));
    expect(await d.capabilities()).toMatchObject({ types: RESERVATION_TYPES, source: 'assumed' });
    await d.capabilities();
    expect(libc.calls.filter((c) => c.request === abi.NVME_IOCTL_ADMIN_CMD)).toHaveLength(1);
  });

  it('RESCAP 0 on a namespace whose reservations answer -> assumed', async () => {
    const { d } = await device('nvme', nvmeDevice(0));
    expect(await d.capabilities()).toMatchObject({ types: RESERVATION_TYPES, source: 'assumed' });
  });

  it('PREEMPT AND ABORT answered EOPNOTSUPP -> UnsupportedError, preemptAbort false', async () => {
    const { d } = await device('nvme', nvmeDevice(0xfe));
    await expect(d.preemptAndAbort(KA, KB, 'write-exclusive')).rejects.toBeInstanceOf(UnsupportedError);
    expect(await d.capabilities()).toMatchObject({ preemptAbort: false, source: 'device' });
  });
});
