/**
 * PrDevice on a real Linux block device: the `<linux/pr.h>` ioctls through koffi.
 *
 * - Every native call runs on a koffi worker thread with a time limit; a PR OUT that
 *   does not answer in time is IndeterminateError (S5), and its slot stays taken until
 *   the kernel really returns, so a hung device cannot pile up unbounded calls.
 * - Both failure channels are classified (classify.ts); a CHECK CONDITION is retried
 *   once (the unit attention a freshly preempted initiator sees first on kernel 6.1).
 * - Reads use IOC_PR_READ_KEYS / IOC_PR_READ_RESERVATION where the kernel has them,
 *   else SG_IO PERSISTENT RESERVE IN (SCSI) or the NVMe Reservation Report
 *   passthrough; detected once per device.
 * - NVMe: drivers/nvme/host/pr.c maps pr_register to `old ? REPLACE : REGISTER`, which
 *   can neither unregister nor register-and-ignore an unknown key; those two are sent
 *   as NVMe passthrough Reservation Register commands (actions Unregister / Replace
 *   with IEKEY), so the port means the same on SCSI and NVMe.
 */
import { realpathSync, statSync, existsSync, readlinkSync } from 'node:fs';
import { basename } from 'node:path';
import {
  IndeterminateError,
  InvalidArgumentError,
  isPrError,
  NotSentError,
  UnsupportedError,
  type PrError,
} from '../errors.js';
import type { PrKey } from '../key.js';
import type {
  DeviceKind,
  KeyList,
  PrCallOptions,
  PrCapabilities,
  PrDevice,
  ReadMethod,
  Reservation,
} from '../pr-device.js';
import {
  PR_TYPE_CODE,
  RESERVATION_TYPES,
  reservationTypeFromCode,
  type ReservationType,
} from '../reservation-type.js';
import { checkKey, checkType } from '../validate.js';
import * as abi from './abi.js';
import { classifyErrno, classifyNvmeStatus, classifyPrOutcome, type RawOutcome } from './classify.js';
import { loadLibc, type Libc, type NativeBlock, type NativeResult } from './libc.js';
import * as parse from './parse.js';

export interface KoffiPrDeviceOptions {
  /** Time limit per native call, ms. Default 10 000. */
  timeoutMs?: number;
  /** Native calls in flight on this device (queued beyond). Default 2. */
  maxInFlight?: number;
  /** Force the read method (tests, benchmarks); default: detect. */
  readMethod?: Exclude<ReadMethod, 'model'>;
}

const INITIAL_KEYS = 32;

/** A counting semaphore whose permits are released by the native call's own completion. */
class Slots {
  #free: number;
  readonly #waiters: (() => void)[] = [];
  constructor(n: number) {
    this.#free = n;
  }
  acquire(signal?: AbortSignal): Promise<void> {
    if (this.#free > 0) {
      this.#free -= 1;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const w = () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = () => {
        const i = this.#waiters.indexOf(w);
        if (i >= 0) this.#waiters.splice(i, 1);
        reject(signal?.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.push(w);
    });
  }
  release(): void {
    const next = this.#waiters.shift();
    if (next) next();
    else this.#free += 1;
  }
}

/** Detects scsi / nvme from sysfs (dm-multipath and other stacked devices count as scsi). */
function detectKind(dev: string): 'scsi' | 'nvme' {
  const name = basename(dev);
  const sys = `/sys/class/block/${name}`;
  try {
    const target = readlinkSync(sys);
    if (target.includes('/nvme')) return 'nvme';
  } catch {
    // not in sysfs (containers without /sys): fall back to the name
  }
  return name.startsWith('nvme') ? 'nvme' : 'scsi';
}

export class KoffiPrDevice implements PrDevice {
  readonly id: string;
  readonly kind: 'scsi' | 'nvme';
  readonly #libc: Libc;
  readonly #fd: number;
  readonly #timeoutMs: number;
  readonly #slots: Slots;
  #readMethod: Exclude<ReadMethod, 'model'> | undefined;
  #nsid: number | undefined;
  #closed = false;

  private constructor(id: string, kind: 'scsi' | 'nvme', libc: Libc, fd: number, opts: KoffiPrDeviceOptions) {
    this.id = id;
    this.kind = kind;
    this.#libc = libc;
    this.#fd = fd;
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
    this.#slots = new Slots(opts.maxInFlight ?? 2);
    this.#readMethod = opts.readMethod;
  }

  /**
   * Opens a block device for PR commands (O_RDWR|O_NONBLOCK). Throws InvalidArgumentError
   * for a path that is missing or not a block device, NotSent/Indeterminate if open fails.
   */
  static async open(path: string, opts: KoffiPrDeviceOptions = {}): Promise<KoffiPrDevice> {
    if (!existsSync(path))
      throw new InvalidArgumentError(`${path}: no such device`, { op: 'open', device: path });
    const real = realpathSync(path);
    if (!statSync(real).isBlockDevice()) {
      throw new InvalidArgumentError(`${path}: not a block device`, { op: 'open', device: path });
    }
    const libc = loadLibc();
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const res = await withTimeout(
      libc.open(real, abi.O_RDWR | abi.O_NONBLOCK | abi.O_CLOEXEC),
      timeoutMs,
      () => new NotSentError(`${path}: open did not answer in ${timeoutMs} ms`, { op: 'open', device: path }),
      (late) => {
        if (late.ret >= 0) void libc.close(late.ret);
      },
    );
    if (res.ret < 0) throw classifyErrno(res.errno, { op: 'open', device: path });
    return new KoffiPrDevice(path, detectKind(real), libc, res.ret, opts);
  }

  /**
   * Runs one native call under the slot limit and the time limit. Ownership of `blocks`
   * (memory the kernel reads or writes): on success the caller reads and frees them; if
   * this throws, the blocks are freed here once the kernel is really done with them. On
   * time-out the slot also stays taken until the call returns, so a hung device cannot
   * pile up calls (S5).
   */
  async #native(
    op: string,
    fn: () => Promise<NativeResult>,
    blocks: NativeBlock[],
    opts?: PrCallOptions,
  ): Promise<RawOutcome> {
    const freeAll = () => blocks.forEach((b) => b.free());
    if (this.#closed) {
      freeAll();
      throw new NotSentError(`${op}: device closed`, { op, device: this.id });
    }
    try {
      await this.#slots.acquire(opts?.signal);
    } catch (e) {
      freeAll();
      throw new NotSentError(`${op}: aborted while queued`, { op, device: this.id, cause: e });
    }
    let abandoned = false;
    const done = fn().finally(() => {
      this.#slots.release();
      if (abandoned) freeAll();
    });
    try {
      return await withTimeout(
        done,
        this.#timeoutMs,
        () =>
          new IndeterminateError(`${op}: no answer within ${this.#timeoutMs} ms`, { op, device: this.id }),
        undefined,
        opts?.signal,
      );
    } catch (e) {
      abandoned = true;
      if (isPrError(e)) throw e;
      throw new IndeterminateError(`${op}: ${String(e)}`, { op, device: this.id, cause: e });
    }
  }

  /** One PR OUT ioctl, with the single CHECK CONDITION retry. */
  async #prOut(
    op: string,
    request: number,
    fill: (v: DataView) => void,
    size: number,
    opts?: PrCallOptions,
  ): Promise<void> {
    for (let attempt = 0; attempt < 2; attempt++) {
      const block = this.#libc.alloc(size);
      fill(block.view);
      const out = await this.#native(op, () => this.#libc.ioctl(this.#fd, request, block.ptr), [block], opts);
      block.free();
      const c = classifyPrOutcome(out, { op, device: this.id, retried: attempt > 0 });
      if (c === null) return;
      if (c === 'retry') continue;
      throw c;
    }
  }

  async register(oldKey: PrKey, newKey: PrKey, opts?: PrCallOptions): Promise<void> {
    checkKey(oldKey, 'old key', true);
    checkKey(newKey, 'new key', true);
    if (this.kind === 'nvme' && newKey === 0n) {
      if (oldKey === 0n) return; // nothing registered to remove, as SPC-4 treats it
      return this.#nvmeRegister('register', 1, oldKey, 0n, false, opts);
    }
    await this.#prOut(
      'register',
      abi.IOC_PR_REGISTER,
      (v) => {
        v.setBigUint64(abi.PR_REGISTRATION.oldKey, oldKey, true);
        v.setBigUint64(abi.PR_REGISTRATION.newKey, newKey, true);
      },
      abi.PR_REGISTRATION.size,
      opts,
    );
  }

  async registerAndIgnore(newKey: PrKey, opts?: PrCallOptions): Promise<void> {
    checkKey(newKey, 'new key', true);
    if (this.kind === 'nvme') {
      // Register if unregistered; else Replace (or Unregister) ignoring the current key.
      if (newKey !== 0n) {
        try {
          return await this.#nvmeRegister('register-ignore', 0, 0n, newKey, false, opts);
        } catch (e) {
          if (!(isPrError(e) && e.kind === 'conflict')) throw e;
        }
      }
      return this.#nvmeRegister('register-ignore', newKey === 0n ? 1 : 2, 0n, newKey, true, opts);
    }
    await this.#prOut(
      'register-ignore',
      abi.IOC_PR_REGISTER,
      (v) => {
        v.setBigUint64(abi.PR_REGISTRATION.newKey, newKey, true);
        v.setUint32(abi.PR_REGISTRATION.flags, abi.PR_FL_IGNORE_KEY, true);
      },
      abi.PR_REGISTRATION.size,
      opts,
    );
  }

  async reserve(key: PrKey, type: ReservationType, opts?: PrCallOptions): Promise<void> {
    checkKey(key, 'key', false);
    checkType(type);
    await this.#prOut(
      'reserve',
      abi.IOC_PR_RESERVE,
      (v) => {
        v.setBigUint64(abi.PR_RESERVATION.key, key, true);
        v.setUint32(abi.PR_RESERVATION.type, PR_TYPE_CODE[type], true);
      },
      abi.PR_RESERVATION.size,
      opts,
    );
  }

  async release(key: PrKey, type: ReservationType, opts?: PrCallOptions): Promise<void> {
    checkKey(key, 'key', false);
    checkType(type);
    await this.#prOut(
      'release',
      abi.IOC_PR_RELEASE,
      (v) => {
        v.setBigUint64(abi.PR_RESERVATION.key, key, true);
        v.setUint32(abi.PR_RESERVATION.type, PR_TYPE_CODE[type], true);
      },
      abi.PR_RESERVATION.size,
      opts,
    );
  }

  async preempt(ownKey: PrKey, victimKey: PrKey, type: ReservationType, opts?: PrCallOptions): Promise<void> {
    await this.#preempt('preempt', abi.IOC_PR_PREEMPT, ownKey, victimKey, type, opts);
  }

  async preemptAndAbort(
    ownKey: PrKey,
    victimKey: PrKey,
    type: ReservationType,
    opts?: PrCallOptions,
  ): Promise<void> {
    await this.#preempt('preempt-abort', abi.IOC_PR_PREEMPT_ABORT, ownKey, victimKey, type, opts);
  }

  async #preempt(
    op: string,
    req: number,
    ownKey: PrKey,
    victimKey: PrKey,
    type: ReservationType,
    opts?: PrCallOptions,
  ) {
    checkKey(ownKey, 'own key', false);
    checkKey(victimKey, 'victim key', true);
    checkType(type);
    // pr.h: old_key = the caller's own key (RESERVATION KEY / CRKEY), new_key = the key
    // being preempted (SERVICE ACTION RESERVATION KEY / PRKEY). Swapped = conflict.
    await this.#prOut(
      op,
      req,
      (v) => {
        v.setBigUint64(abi.PR_PREEMPT.oldKey, ownKey, true);
        v.setBigUint64(abi.PR_PREEMPT.newKey, victimKey, true);
        v.setUint32(abi.PR_PREEMPT.type, PR_TYPE_CODE[type], true);
      },
      abi.PR_PREEMPT.size,
      opts,
    );
  }

  async clear(key: PrKey, opts?: PrCallOptions): Promise<void> {
    checkKey(key, 'key', false);
    await this.#prOut(
      'clear',
      abi.IOC_PR_CLEAR,
      (v) => {
        v.setBigUint64(abi.PR_CLEAR.key, key, true);
      },
      abi.PR_CLEAR.size,
      opts,
    );
  }

  // ------------------------------------------------------------------ reads

  async readKeys(opts?: PrCallOptions): Promise<KeyList> {
    const method = await this.#method(opts);
    if (method === 'ioctl') return this.#ioctlReadKeys(opts);
    if (method === 'sg-io') return this.#sgReadKeys(opts);
    const r = await this.#nvmeReport(opts);
    return { generation: r.generation, keys: r.registrants.map((x) => x.key) };
  }

  async readReservation(opts?: PrCallOptions): Promise<Reservation> {
    const method = await this.#method(opts);
    if (method === 'ioctl') {
      const block = this.#libc.alloc(abi.PR_READ_RESERVATION.size);
      const out = await this.#native(
        'read-reservation',
        () => this.#libc.ioctl(this.#fd, abi.IOC_PR_READ_RESERVATION, block.ptr),
        [],
        opts,
      );
      try {
        this.#throwRead('read-reservation', out);
        const v = block.view;
        const type = reservationTypeFromCode(v.getUint32(abi.PR_READ_RESERVATION.type, true)) ?? null;
        return {
          generation: v.getUint32(abi.PR_READ_RESERVATION.generation, true),
          key: type === null ? null : v.getBigUint64(abi.PR_READ_RESERVATION.key, true),
          type,
        };
      } finally {
        block.free();
      }
    }
    if (method === 'sg-io') {
      const { data } = await this.#sgPrin(parse.PRIN_READ_RESERVATION, 24, opts);
      const r = parse.parsePrinReadReservation(data);
      // sd.c returns generation 0 when nothing is reserved; match it so both read paths agree.
      return r.type === null ? { generation: 0, key: null, type: null } : r;
    }
    const r = await this.#nvmeReport(opts);
    const holder = r.registrants.find((x) => x.holder);
    return { generation: r.generation, key: r.type === null ? null : (holder?.key ?? null), type: r.type };
  }

  async capabilities(opts?: PrCallOptions): Promise<PrCapabilities> {
    const readMethod = await this.#method(opts);
    // A device without PR answers the first read with unsupported: let that propagate.
    await this.readKeys(opts);
    return { kind: this.kind, readMethod, types: RESERVATION_TYPES, preemptAbort: true };
  }

  async close(): Promise<void> {
    // Releases the descriptor only; reservations and registrations stay (S8).
    if (this.#closed) return;
    this.#closed = true;
    await this.#libc.close(this.#fd);
  }

  /** The read method, detected once: the pr.h read ioctls if the kernel has them. */
  async #method(opts?: PrCallOptions): Promise<Exclude<ReadMethod, 'model'>> {
    if (this.#readMethod) return this.#readMethod;
    const block = this.#libc.alloc(abi.PR_READ_KEYS.size);
    const out = await this.#native(
      'read-keys',
      () => this.#libc.ioctl(this.#fd, abi.IOC_PR_READ_KEYS, block.ptr),
      [],
      opts,
    );
    block.free();
    if (out.ret < 0 && (out.errno === 25 || out.errno === 95 || out.errno === 22)) {
      this.#readMethod = this.kind === 'nvme' ? 'nvme-passthru' : 'sg-io';
    } else {
      this.#readMethod = 'ioctl';
    }
    return this.#readMethod;
  }

  #throwRead(op: string, out: RawOutcome): void {
    if (out.ret === 0) return;
    const c = classifyPrOutcome(out, { op, device: this.id, retried: true });
    if (c && c !== 'retry') throw c;
  }

  async #ioctlReadKeys(opts?: PrCallOptions): Promise<KeyList> {
    let room = INITIAL_KEYS;
    for (;;) {
      const arg = this.#libc.alloc(abi.PR_READ_KEYS.size);
      const keys = this.#libc.alloc(room * 8);
      arg.view.setUint32(abi.PR_READ_KEYS.numKeys, room, true);
      arg.view.setBigUint64(abi.PR_READ_KEYS.keysPtr, keys.ptr, true);
      const out = await this.#native(
        'read-keys',
        () => this.#libc.ioctl(this.#fd, abi.IOC_PR_READ_KEYS, arg.ptr),
        [],
        opts,
      );
      try {
        this.#throwRead('read-keys', out);
        const generation = arg.view.getUint32(abi.PR_READ_KEYS.generation, true);
        const n = arg.view.getUint32(abi.PR_READ_KEYS.numKeys, true);
        if (n > room) {
          room = n; // the device holds more keys than fit: read again with room for all
          continue;
        }
        const list: PrKey[] = [];
        for (let i = 0; i < n; i++) list.push(keys.view.getBigUint64(i * 8, true));
        return { generation, keys: list };
      } finally {
        arg.free();
        keys.free();
      }
    }
  }

  async #sgPrin(
    sa: number,
    alloc: number,
    opts?: PrCallOptions,
    attempt = 0,
  ): Promise<{ data: DataView; received: number }> {
    const op = sa === parse.PRIN_READ_KEYS ? 'read-keys' : 'read-reservation';
    const hdr = this.#libc.alloc(abi.SG_IO_HDR.size);
    const cdb = this.#libc.alloc(16);
    const sense = this.#libc.alloc(32);
    const data = this.#libc.alloc(alloc);
    cdb.bytes.set(parse.prinCdb(sa, alloc));
    const h = hdr.view;
    h.setInt32(abi.SG_IO_HDR.interfaceId, 'S'.charCodeAt(0), true);
    h.setInt32(abi.SG_IO_HDR.dxferDirection, abi.SG_DXFER_FROM_DEV, true);
    h.setUint8(abi.SG_IO_HDR.cmdLen, 10);
    h.setUint8(abi.SG_IO_HDR.mxSbLen, 32);
    h.setUint32(abi.SG_IO_HDR.dxferLen, alloc, true);
    h.setBigUint64(abi.SG_IO_HDR.dxferp, data.ptr, true);
    h.setBigUint64(abi.SG_IO_HDR.cmdp, cdb.ptr, true);
    h.setBigUint64(abi.SG_IO_HDR.sbp, sense.ptr, true);
    h.setUint32(abi.SG_IO_HDR.timeout, this.#timeoutMs, true);
    const out = await this.#native(
      op,
      () => this.#libc.ioctl(this.#fd, abi.SG_IO, hdr.ptr),
      [hdr, cdb, sense, data],
      opts,
    );
    try {
      if (out.ret < 0) throw classifyErrno(out.errno, { op, device: this.id });
      const status = h.getUint8(abi.SG_IO_HDR.status);
      const host = h.getUint16(abi.SG_IO_HDR.hostStatus, true);
      if (status === 0x18)
        throw classifyPrOutcome({ ret: 0x18, errno: 0 }, { op, device: this.id, retried: true }) as PrError;
      if (host !== 0)
        throw new IndeterminateError(`${op}: SG_IO host status 0x${host.toString(16)}`, {
          op,
          device: this.id,
        });
      if (status === 0x02) {
        const s = parse.parseSense(sense.bytes, h.getUint8(abi.SG_IO_HDR.sbLenWr));
        // UNIT ATTENTION (e.g. "registrations preempted", 06/2A/05, after another
        // initiator's PR OUT): not executed, and SG_IO does not retry it for us.
        if (s?.key === 0x6 && attempt < 8) return await this.#sgPrin(sa, alloc, opts, attempt + 1);
        // ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE: no PR support.
        if (s && s.key === 0x5 && s.asc === 0x20)
          throw new UnsupportedError(`${op}: device does not support PERSISTENT RESERVE IN`, {
            op,
            device: this.id,
          });
        throw new IndeterminateError(`${op}: CHECK CONDITION (sense key ${s?.key ?? '?'})`, {
          op,
          device: this.id,
          status,
        });
      }
      if (status !== 0)
        throw new IndeterminateError(`${op}: SCSI status 0x${status.toString(16)}`, {
          op,
          device: this.id,
          status,
        });
      const received = alloc - h.getInt32(abi.SG_IO_HDR.resid, true);
      const copy = new DataView(data.bytes.slice(0, alloc).buffer);
      return { data: copy, received };
    } finally {
      for (const b of [hdr, cdb, sense, data]) b.free();
    }
  }

  async #sgReadKeys(opts?: PrCallOptions): Promise<KeyList> {
    let alloc = 8 + INITIAL_KEYS * 8;
    for (;;) {
      const { data, received } = await this.#sgPrin(parse.PRIN_READ_KEYS, alloc, opts);
      const r = parse.parsePrinReadKeys(data, received);
      if (r.total > r.keys.length && alloc < 65528) {
        alloc = Math.min(65528, 8 + r.total * 8);
        continue;
      }
      return { generation: r.generation, keys: r.keys };
    }
  }

  async #nsidOf(opts?: PrCallOptions): Promise<number> {
    if (this.#nsid !== undefined) return this.#nsid;
    const out = await this.#native(
      'nvme-id',
      () => this.#libc.ioctl(this.#fd, abi.NVME_IOCTL_ID, null),
      [],
      opts,
    );
    if (out.ret <= 0) throw classifyErrno(out.ret < 0 ? out.errno : 22, { op: 'nvme-id', device: this.id });
    this.#nsid = out.ret;
    return out.ret;
  }

  async #nvmePassthru(
    op: string,
    opcode: number,
    cdw10: number,
    cdw11: number,
    data: NativeBlock,
    opts?: PrCallOptions,
  ): Promise<void> {
    const nsid = await this.#nsidOf(opts);
    const cmd = this.#libc.alloc(abi.NVME_PASSTHRU_CMD.size);
    const c = cmd.view;
    c.setUint8(abi.NVME_PASSTHRU_CMD.opcode, opcode);
    c.setUint32(abi.NVME_PASSTHRU_CMD.nsid, nsid, true);
    c.setBigUint64(abi.NVME_PASSTHRU_CMD.addr, data.ptr, true);
    c.setUint32(abi.NVME_PASSTHRU_CMD.dataLen, data.size, true);
    c.setUint32(abi.NVME_PASSTHRU_CMD.cdw10, cdw10 >>> 0, true);
    c.setUint32(abi.NVME_PASSTHRU_CMD.cdw11, cdw11 >>> 0, true);
    c.setUint32(abi.NVME_PASSTHRU_CMD.timeoutMs, this.#timeoutMs, true);
    const out = await this.#native(
      op,
      () => this.#libc.ioctl(this.#fd, abi.NVME_IOCTL_IO_CMD, cmd.ptr),
      [cmd],
      opts,
    );
    const err = classifyNvmeStatus(out, { op, device: this.id });
    if (err) {
      data.free();
      throw err;
    }
  }

  /** Reservation Register (action 0 register, 1 unregister, 2 replace), CPTPL "persist". */
  async #nvmeRegister(
    op: string,
    action: number,
    crkey: PrKey,
    nrkey: PrKey,
    ignore: boolean,
    opts?: PrCallOptions,
  ) {
    const data = this.#libc.alloc(16);
    data.view.setBigUint64(0, crkey, true);
    data.view.setBigUint64(8, nrkey, true);
    try {
      await this.#nvmePassthru(
        op,
        parse.NVME_CMD_RESV_REGISTER,
        action | (ignore ? 1 << 3 : 0) | (3 << 30),
        0,
        data,
        opts,
      );
    } finally {
      data.free();
    }
  }

  async #nvmeReport(opts?: PrCallOptions) {
    let entries = INITIAL_KEYS;
    for (;;) {
      const len = parse.NVME_REPORT_HEADER + entries * parse.NVME_REPORT_ENTRY;
      const data = this.#libc.alloc(len);
      // cdw10 = number of dwords - 1; cdw11 bit 0 = extended data structure (128-bit host ids).
      await this.#nvmePassthru('read-keys', parse.NVME_CMD_RESV_REPORT, len / 4 - 1, 1, data, opts);
      const r = parse.parseNvmeReport(data.view, len);
      data.free();
      if (r.total > r.registrants.length) {
        entries = r.total;
        continue;
      }
      return r;
    }
  }
}

/** Races a promise against a time limit (and an optional signal); `late` sees a result that came too late. */
function withTimeout<T>(
  p: Promise<T>,
  ms: number,
  onTimeout: () => Error,
  late?: (v: T) => void,
  signal?: AbortSignal,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let done = false;
    const finish = () => {
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    };
    const onAbort = () => {
      if (done) return;
      finish();
      reject(onTimeout());
    };
    const timer = setTimeout(onAbort, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        if (done) {
          late?.(v);
          return;
        }
        finish();
        resolve(v);
      },
      (e: unknown) => {
        if (done) return;
        finish();
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

export type { DeviceKind };
