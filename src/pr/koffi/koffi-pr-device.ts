/**
 * PrDevice on a real Linux block device: the `<linux/pr.h>` ioctls through koffi.
 *
 * - Every native call (open and close included) runs on the native executor
 *   (executor.ts): its own threads, one call in flight per device, a time limit that
 *   counts queueing. A PR OUT that does not answer in time is IndeterminateError (S5);
 *   the device is then `hung` and fails fast (NotSentError) until the call returns.
 * - Buffers travel in the request and are owned by the executor thread until the kernel
 *   returns (native-call.ts); nothing here holds native memory.
 * - Both failure channels are classified (classify.ts); a CHECK CONDITION is retried
 *   once (the unit attention a freshly preempted initiator sees first on kernel 6.1).
 * - Reads use IOC_PR_READ_KEYS / IOC_PR_READ_RESERVATION where the kernel has them,
 *   else SG_IO PERSISTENT RESERVE IN (SCSI) or the NVMe Reservation Report
 *   passthrough; detected once per device.
 * - NVMe: drivers/nvme/host/pr.c maps pr_register to `old ? REPLACE : REGISTER`, which
 *   can neither unregister nor register-and-ignore an unknown key; those two are sent
 *   as NVMe passthrough Reservation Register commands (actions Unregister / Replace
 *   with IEKEY), so the port means the same on SCSI and NVMe.
 * - SCSI-2 RESERVE(6) / RELEASE(6) / TEST UNIT READY (scsi2.ts) go through the same
 *   SG_IO helper (#sgIo) and executor as the PERSISTENT RESERVE IN reads; SCSI only. The
 *   takeover's LU reset is one SG_SCSI_RESET ioctl on the same fd, executor and time limit.
 * - readFullStatus has no pr.h ioctl: SG_IO PERSISTENT RESERVE IN READ FULL STATUS on
 *   SCSI, the NVMe Reservation Report passthrough on NVMe, whatever the read method. A
 *   device that refuses it as unsupported is answered so from then on without a command.
 * - The Reservation Report asks for the extended data structure (128-bit host ids) and
 *   falls back to the non-extended one when the controller answers Host Identifier
 *   Inconsistent Format (a host with a 64-bit host id); the choice is kept per device.
 * - capabilities() asks the device once (SCSI PERSISTENT RESERVE IN REPORT CAPABILITIES
 *   through SG_IO; the RESCAP byte of NVMe Identify Namespace through the admin
 *   passthrough, which the kernel takes on the namespace's block device). A device that
 *   does not implement the report is assumed to take all six types (`source: 'assumed'`).
 * - PREEMPT AND ABORT refused as unsupported (EOPNOTSUPP; on SCSI the EINVAL sd.c makes of
 *   ILLEGAL REQUEST / INVALID FIELD IN CDB) is UnsupportedError, and capabilities() says
 *   `preemptAbort: false` from then on; the fencer falls back to PREEMPT. An EINVAL to a
 *   victim key of 0 is not taken as such (SPC-4 refuses that key outside an all-registrants
 *   reservation).
 */
import { realpath, stat } from 'node:fs/promises';
import { deviceKind } from '../device-kind.js';
import {
  IndeterminateError,
  InvalidArgumentError,
  isPrError,
  UnsupportedError,
  type PrError,
} from '../errors.js';
import type { PrKey } from '../key.js';
import type {
  CapabilityFlags,
  CapabilitySource,
  DeviceKind,
  FullStatus,
  KeyList,
  PrCallOptions,
  PrCapabilities,
  PrDevice,
  ReadMethod,
  Reservation,
} from '../pr-device.js';
import {
  isAllRegistrantsType,
  PR_TYPE_CODE,
  RESERVATION_TYPES,
  reservationTypeFromCode,
  type ReservationType,
} from '../reservation-type.js';
import { checkKey, checkType } from '../validate.js';
import * as abi from './abi.js';
import { classifyErrno, classifyNvmeStatus, classifyPrOutcome, ERRNO, type RawOutcome } from './classify.js';
import {
  defaultNativeExecutor,
  type DeviceRequest,
  type NativeExecutor,
  type NativeHandle,
} from './executor.js';
import type { NativeReply } from './native-call.js';
import * as parse from './parse.js';
import { classifyScsiReset, scsiResetArg } from './scsi-reset.js';
import {
  classifyScsi2Answer,
  scsi2Cdb,
  TAKEOVER_RESERVE_ATTEMPTS,
  scsi2Conflict,
  type Scsi2Device,
  type Scsi2Op,
  type Scsi2Status,
  type SgIoAnswer,
} from '../scsi2.js';

export interface KoffiPrDeviceOptions {
  /** Time limit per native call, ms, from submission (queueing counts). Default 10 000. */
  timeoutMs?: number;
  /**
   * Ignored: one native call is in flight per device and the rest queue (executor.ts).
   * Kept so existing configurations keep parsing.
   */
  maxInFlight?: number;
  /** Force the read method (tests, benchmarks); default: detect. */
  readMethod?: Exclude<ReadMethod, 'model'>;
  /** Where the native calls run. Default: the process-wide `defaultNativeExecutor()`. */
  executor?: NativeExecutor;
}

const INITIAL_KEYS = 32;
/** Re-reads of a key list that grew between two reads, before giving up (indeterminate). */
const MAX_READ_ATTEMPTS = 4;
/** SPC-4 PERSISTENT RESERVE IN: the 16-bit ALLOCATION LENGTH, rounded down to whole keys. */
const MAX_PRIN_ALLOC = 65528;
/** READ FULL STATUS: first allocation (room for a few iSCSI names), and the 16-bit limit. */
const INITIAL_FULL_STATUS_ALLOC = 2048;
const MAX_FULL_STATUS_ALLOC = 0xffff;
/**
 * The longest full status descriptor: 24 bytes and a TransportID, the longest of which is
 * iSCSI's (4 bytes, an iSCSI name of at most 223 bytes, ",i,0x", 12 ISID digits, a NUL,
 * padded to a multiple of 4: at most 248).
 */
const MAX_FULL_STATUS_DESCRIPTOR = 24 + 248;

/** What the device said about its reservation types, asked once (capabilities()). */
interface DeviceCaps {
  readonly types: readonly ReservationType[];
  readonly source: CapabilitySource;
  readonly assumedBecause?: string;
  readonly flags: CapabilityFlags;
}

export class KoffiPrDevice implements PrDevice, Scsi2Device {
  readonly id: string;
  readonly kind: 'scsi' | 'nvme';
  readonly #handle: NativeHandle;
  readonly #timeoutMs: number;
  #readMethod: Exclude<ReadMethod, 'model'> | undefined;
  #nsid: number | undefined;
  /** Reservation Report data structure: extended until the controller refuses it. */
  #nvmeExtended = true;
  /** The device's capability report, once it answered (or said it has none). */
  #caps: DeviceCaps | undefined;
  /** PREEMPT AND ABORT was refused as unsupported once. */
  #preemptAbortRefused = false;
  /** capabilities() read the keys once: the device takes PR commands. */
  #answeredRead = false;
  /** readFullStatus's UnsupportedError, kept (the device does not implement the read). */
  #fullStatusRefused: PrError | undefined;

  private constructor(id: string, kind: 'scsi' | 'nvme', handle: NativeHandle, opts: KoffiPrDeviceOptions) {
    this.id = id;
    this.kind = kind;
    this.#handle = handle;
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
    this.#readMethod = opts.readMethod;
  }

  /**
   * Opens a block device for PR commands (O_RDWR|O_NONBLOCK) on the executor, within the
   * time limit. Throws InvalidArgumentError for a path that is missing or not a block
   * device, NotSentError if open does not answer in time, or the classified errno.
   */
  static async open(path: string, opts: KoffiPrDeviceOptions = {}): Promise<KoffiPrDevice> {
    const executor = opts.executor ?? defaultNativeExecutor();
    // Start a thread now, so its start-up overlaps the checks below (a failure shows in open).
    executor.warm().catch(() => {});
    let real: string;
    try {
      real = await realpath(path);
    } catch {
      throw new InvalidArgumentError(`${path}: no such device`, { op: 'open', device: path });
    }
    if (!(await stat(real)).isBlockDevice()) {
      throw new InvalidArgumentError(`${path}: not a block device`, { op: 'open', device: path });
    }
    return KoffiPrDevice.openUnchecked(path, await deviceKind(real), { ...opts, executor, realPath: real });
  }

  /**
   * Opens `path` on the executor without checking that it is a block device, with the
   * kind given: for executors whose backend is a fake libc (tests, benchmarks).
   */
  static async openUnchecked(
    path: string,
    kind: 'scsi' | 'nvme',
    opts: KoffiPrDeviceOptions & { realPath?: string } = {},
  ): Promise<KoffiPrDevice> {
    const executor = opts.executor ?? defaultNativeExecutor();
    const handle = await executor.open(opts.realPath ?? path, abi.O_RDWR | abi.O_NONBLOCK | abi.O_CLOEXEC, {
      device: path,
      timeoutMs: opts.timeoutMs ?? 10_000,
    });
    return new KoffiPrDevice(path, kind, handle, opts);
  }

  /** A call on this device is past its time limit: calls fail fast (NotSentError) until it returns. */
  get hung(): boolean {
    return this.#handle.hung;
  }

  /**
   * Runs one native call on this device's queue under its time limit (queueing counts).
   * Rejects NotSentError (closed, hung, not sent in time) or IndeterminateError (no
   * answer in time); otherwise resolves the raw reply for the caller to classify.
   */
  #native(op: string, req: DeviceRequest, opts?: PrCallOptions): Promise<NativeReply> {
    const timeoutMs = Math.min(this.#timeoutMs, opts?.timeoutMs ?? Infinity);
    return this.#handle.call(req, { op, timeoutMs, signal: opts?.signal, batch: opts?.batch });
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
      const arg = new Uint8Array(size);
      fill(new DataView(arg.buffer));
      const out = await this.#native(op, { kind: 'ioctl', request, arg }, opts);
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

  /**
   * PREEMPT AND ABORT. A device that does not implement it answers UnsupportedError: the
   * kernel's EOPNOTSUPP, or on SCSI the EINVAL sd.c (sd_scsi_to_pr_err) makes of ILLEGAL
   * REQUEST / INVALID FIELD IN CDB (the arguments were checked here, and the type is one
   * the device reported, so it refused the service action). capabilities() then says
   * `preemptAbort: false`. Not so for a victim key of 0: SPC-4 refuses it outside an
   * all-registrants reservation (ILLEGAL REQUEST / INVALID FIELD IN PARAMETER LIST, the
   * same EINVAL through sd.c), so that EINVAL stays InvalidArgumentError.
   */
  async preemptAndAbort(
    ownKey: PrKey,
    victimKey: PrKey,
    type: ReservationType,
    opts?: PrCallOptions,
  ): Promise<void> {
    try {
      await this.#preempt('preempt-abort', abi.IOC_PR_PREEMPT_ABORT, ownKey, victimKey, type, opts);
    } catch (e) {
      const refused =
        isPrError(e) &&
        this.kind === 'scsi' &&
        e.kind === 'invalid-argument' &&
        e.errno === ERRNO.EINVAL &&
        victimKey !== 0n &&
        // A type the device reported it lacks is what its INVALID FIELD IN CDB was about.
        (this.#caps?.types.includes(type) ?? true)
          ? new UnsupportedError('preempt-abort: device refused PREEMPT AND ABORT (ILLEGAL REQUEST)', {
              op: 'preempt-abort',
              device: this.id,
              errno: ERRNO.EINVAL,
              cause: e,
            })
          : e;
      if (
        isPrError(refused) &&
        refused.kind === 'unsupported' &&
        refused.errno !== ERRNO.EPERM &&
        refused.errno !== ERRNO.EACCES
      )
        this.#preemptAbortRefused = true;
      throw refused;
    }
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
    // Once the method is known, the read is handed to the executor before this returns, so
    // a call made with a batch joins it (call-batch.ts).
    const method = this.#readMethod ?? (await this.#method(opts));
    if (method === 'ioctl') return this.#ioctlReadKeys(opts);
    if (method === 'sg-io') return this.#sgReadKeys(opts);
    const r = await this.#nvmeReport(opts);
    return { generation: r.generation, keys: r.registrants.map((x) => x.key) };
  }

  async readReservation(opts?: PrCallOptions): Promise<Reservation> {
    const method = await this.#method(opts);
    if (method === 'ioctl') {
      const out = await this.#native(
        'read-reservation',
        {
          kind: 'ioctl',
          request: abi.IOC_PR_READ_RESERVATION,
          arg: new Uint8Array(abi.PR_READ_RESERVATION.size),
        },
        opts,
      );
      this.#throwRead('read-reservation', out);
      const v = view(out.arg);
      const type = reservationTypeFromCode(v.getUint32(abi.PR_READ_RESERVATION.type, true)) ?? null;
      return {
        generation: v.getUint32(abi.PR_READ_RESERVATION.generation, true),
        key: type === null ? null : v.getBigUint64(abi.PR_READ_RESERVATION.key, true),
        type,
      };
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

  /**
   * Refused as unsupported by the device (not for want of privilege) once: answered so
   * again without a command, as the fence's state read falls back to readKeys and
   * readReservation on every read (fence/executor.ts readDeviceState).
   */
  async readFullStatus(opts?: PrCallOptions): Promise<FullStatus> {
    if (this.#fullStatusRefused) throw this.#fullStatusRefused;
    try {
      return await this.#readFullStatus(opts);
    } catch (e) {
      if (isPrError(e) && e.kind === 'unsupported' && e.errno !== ERRNO.EPERM && e.errno !== ERRNO.EACCES)
        this.#fullStatusRefused = e;
      throw e;
    }
  }

  async #readFullStatus(opts?: PrCallOptions): Promise<FullStatus> {
    if (this.kind === 'scsi') return this.#sgReadFullStatus(opts);
    const r = await this.#nvmeReport(opts, 'read-full-status');
    const holder = r.registrants.find((x) => x.holder);
    return {
      generation: r.generation,
      // As readReservation: host pr.c reports the first holder's key (all-registrants included).
      reservation: r.type === null ? null : { key: holder?.key ?? 0n, type: r.type },
      registrants: r.registrants.map((x) => ({
        key: x.key,
        holder: x.holder,
        initiator: { transport: 'nvme', id: x.hostId, controllerId: x.controllerId },
      })),
    };
  }

  /**
   * Kind, read method and the device's own report of its types (asked once, then kept).
   * A device without PR answers the first read with UnsupportedError, which propagates;
   * the report itself never fails the call: a device that does not implement it is
   * assumed to take all six types (kept), one that did not answer it (not sent, outcome
   * unknown) is assumed so this time and asked again next time.
   */
  async capabilities(opts?: PrCallOptions): Promise<PrCapabilities> {
    const readMethod = await this.#method(opts);
    // Once: a device without PR answers its first read with UnsupportedError. Not on every
    // call: the agent asks at every reconcile, before its state read (a fence's command).
    if (!this.#answeredRead) {
      await this.readKeys(opts);
      this.#answeredRead = true;
    }
    let caps = this.#caps;
    if (!caps) {
      try {
        caps = this.kind === 'scsi' ? await this.#scsiCaps(opts) : await this.#nvmeCaps(opts);
        this.#caps = caps;
      } catch (e) {
        if (!isPrError(e)) throw e;
        caps = assumed(`no answer to the capability report: ${e.message}`);
        if (e.kind === 'unsupported' || e.kind === 'invalid-argument') this.#caps = caps;
      }
    }
    return { kind: this.kind, readMethod, ...caps, preemptAbort: !this.#preemptAbortRefused };
  }

  /**
   * SPC-4 6.16.4 REPORT CAPABILITIES; its type mask counts only with TMV set. ILLEGAL
   * REQUEST / INVALID FIELD IN CDB (an SPC-2 era target) is UnsupportedError from #sgPrin.
   */
  async #scsiCaps(opts?: PrCallOptions): Promise<DeviceCaps> {
    const { data, received } = await this.#sgPrin(
      parse.PRIN_REPORT_CAPABILITIES,
      parse.REPORT_CAPABILITIES_LENGTH,
      opts,
    );
    const r = parse.parsePrinReportCapabilities(data, received);
    if (!r) return assumed(`REPORT CAPABILITIES answered ${received} bytes`);
    const flags: CapabilityFlags = {
      ptplCapable: r.ptplC,
      ptplActive: r.ptplA,
      allTargetPorts: r.atpC,
      specifyInitiatorPorts: r.sipC,
      compatibleReservationHandling: r.crh,
      allowCommands: r.allowCommands,
    };
    if (r.types === null) return { ...assumed('REPORT CAPABILITIES has TMV clear (no type mask)'), flags };
    return { types: r.types, source: 'device', flags };
  }

  /**
   * Identify Namespace (CNS 00h) through the admin passthrough on the namespace's block
   * device (the kernel sends it to the namespace's controller; CAP_SYS_ADMIN, or the
   * Identify allow-list of nvme_cmd_allowed), and its RESCAP byte. RESCAP 0 on a namespace
   * that answers reservation commands says nothing: assumed.
   */
  async #nvmeCaps(opts?: PrCallOptions): Promise<DeviceCaps> {
    const data = await this.#nvmePassthru(
      'identify-ns',
      parse.NVME_ADMIN_IDENTIFY,
      parse.NVME_IDENTIFY_CNS_NS,
      0,
      { size: parse.NVME_IDENTIFY_LENGTH },
      opts,
      abi.NVME_IOCTL_ADMIN_CMD,
    );
    const rescap = data.getUint8(parse.NVME_ID_NS_RESCAP);
    if (rescap === 0) return assumed('Identify Namespace RESCAP is 0 though reservations answer');
    const r = parse.parseRescap(rescap);
    return { types: r.types, source: 'device', flags: { ptplCapable: r.ptpl, ignoreExistingKey: r.iekey } };
  }

  /**
   * Releases the descriptor only; reservations and registrations stay (S8). Queued calls
   * are rejected (NotSentError); the fd is closed after the running call returns.
   */
  async close(): Promise<void> {
    await this.#handle.close(this.#timeoutMs);
  }

  /** The read method, detected once: the pr.h read ioctls if the kernel has them. */
  async #method(opts?: PrCallOptions): Promise<Exclude<ReadMethod, 'model'>> {
    if (this.#readMethod) return this.#readMethod;
    const out = await this.#native(
      'read-keys',
      { kind: 'ioctl', request: abi.IOC_PR_READ_KEYS, arg: new Uint8Array(abi.PR_READ_KEYS.size) },
      opts,
    );
    if (
      out.ret < 0 &&
      (out.errno === ERRNO.ENOTTY || out.errno === ERRNO.EOPNOTSUPP || out.errno === ERRNO.EINVAL)
    ) {
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
    for (let attempt = 0; attempt < MAX_READ_ATTEMPTS; attempt++) {
      const arg = new Uint8Array(abi.PR_READ_KEYS.size);
      new DataView(arg.buffer).setUint32(abi.PR_READ_KEYS.numKeys, room, true);
      const out = await this.#native(
        'read-keys',
        {
          kind: 'ioctl',
          request: abi.IOC_PR_READ_KEYS,
          arg,
          pointers: [{ offset: abi.PR_READ_KEYS.keysPtr, size: room * 8 }],
        },
        opts,
      );
      this.#throwRead('read-keys', out);
      const v = view(out.arg);
      const generation = v.getUint32(abi.PR_READ_KEYS.generation, true);
      const n = v.getUint32(abi.PR_READ_KEYS.numKeys, true);
      if (n > room) {
        room = n; // the device holds more keys than fit: read again with room for all
        continue;
      }
      const keys = view(out.pointers?.[0]);
      const list: PrKey[] = [];
      for (let i = 0; i < n; i++) list.push(keys.getBigUint64(i * 8, true));
      return { generation, keys: list };
    }
    throw new IndeterminateError(`read-keys: the key list kept growing over ${MAX_READ_ATTEMPTS} reads`, {
      op: 'read-keys',
      device: this.id,
    });
  }

  /**
   * One SG_IO command (the transport shared by the PERSISTENT RESERVE IN reads and the
   * SCSI-2 commands): `alloc` bytes from the device (0: no data). Rejects the errno
   * channel's outcome (EINVAL: no SCSI layer, UnsupportedError); resolves the SCSI
   * status, host status and sense for the caller to classify.
   */
  async #sgIo(
    op: string,
    cdb: Uint8Array,
    alloc: number,
    opts?: PrCallOptions,
  ): Promise<{ answer: SgIoAnswer; data: DataView; received: number }> {
    const hdr = new Uint8Array(abi.SG_IO_HDR.size);
    const h = new DataView(hdr.buffer);
    h.setInt32(abi.SG_IO_HDR.interfaceId, 'S'.charCodeAt(0), true);
    h.setInt32(abi.SG_IO_HDR.dxferDirection, alloc > 0 ? abi.SG_DXFER_FROM_DEV : abi.SG_DXFER_NONE, true);
    h.setUint8(abi.SG_IO_HDR.cmdLen, cdb.length);
    h.setUint8(abi.SG_IO_HDR.mxSbLen, 32);
    h.setUint32(abi.SG_IO_HDR.dxferLen, alloc, true);
    h.setUint32(abi.SG_IO_HDR.timeout, this.#timeoutMs, true);
    const cmd = new Uint8Array(16);
    cmd.set(cdb);
    const out = await this.#native(
      op,
      {
        kind: 'ioctl',
        request: abi.SG_IO,
        arg: hdr,
        pointers: [
          ...(alloc > 0 ? [{ offset: abi.SG_IO_HDR.dxferp, size: alloc }] : []),
          { offset: abi.SG_IO_HDR.cmdp, size: 16, in: cmd },
          { offset: abi.SG_IO_HDR.sbp, size: 32 },
        ],
      },
      opts,
    );
    if (out.ret < 0) {
      // SG_IO on a block device without a SCSI layer (virtio-blk, loop, ...): EINVAL or ENOTTY.
      if (out.errno === ERRNO.EINVAL)
        throw new UnsupportedError(`${op}: SG_IO not supported by this device (EINVAL)`, {
          op,
          device: this.id,
          errno: out.errno,
        });
      throw classifyErrno(out.errno, { op, device: this.id });
    }
    const r = view(out.arg);
    const data = alloc > 0 ? view(out.pointers?.[0]) : view(undefined);
    const sense = out.pointers?.[alloc > 0 ? 2 : 1] ?? new Uint8Array(0);
    const status = r.getUint8(abi.SG_IO_HDR.status);
    const answer: SgIoAnswer = {
      status,
      host: r.getUint16(abi.SG_IO_HDR.hostStatus, true),
      sense: status === 0x02 ? parse.parseSense(sense, r.getUint8(abi.SG_IO_HDR.sbLenWr)) : null,
    };
    const received = Math.max(0, Math.min(alloc, alloc - r.getInt32(abi.SG_IO_HDR.resid, true)));
    return { answer, data, received };
  }

  async #sgPrin(
    sa: number,
    alloc: number,
    opts?: PrCallOptions,
    attempt = 0,
  ): Promise<{ data: DataView; received: number }> {
    const op =
      sa === parse.PRIN_READ_KEYS
        ? 'read-keys'
        : sa === parse.PRIN_READ_FULL_STATUS
          ? 'read-full-status'
          : sa === parse.PRIN_REPORT_CAPABILITIES
            ? 'report-capabilities'
            : 'read-reservation';
    const { answer, data, received } = await this.#sgIo(op, parse.prinCdb(sa, alloc), alloc, opts);
    const { status, host, sense: s } = answer;
    if (status === 0x18)
      throw classifyPrOutcome({ ret: 0x18, errno: 0 }, { op, device: this.id, retried: true }) as PrError;
    if (host !== 0)
      throw new IndeterminateError(`${op}: SG_IO host status 0x${host.toString(16)}`, {
        op,
        device: this.id,
      });
    if (status === 0x02) {
      // UNIT ATTENTION (e.g. "registrations preempted", 06/2A/05, after another
      // initiator's PR OUT): not executed, and SG_IO does not retry it for us.
      if (s?.key === 0x6 && attempt < 8) return this.#sgPrin(sa, alloc, opts, attempt + 1);
      // ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE: no PR support.
      if (s && s.key === 0x5 && s.asc === 0x20)
        throw new UnsupportedError(`${op}: device does not support PERSISTENT RESERVE IN`, {
          op,
          device: this.id,
        });
      // ILLEGAL REQUEST / INVALID FIELD IN CDB to READ FULL STATUS or REPORT CAPABILITIES:
      // a service action the device does not implement (an SPC-2 / SPC-3 era target).
      if (
        s &&
        s.key === 0x5 &&
        s.asc === 0x24 &&
        (sa === parse.PRIN_READ_FULL_STATUS || sa === parse.PRIN_REPORT_CAPABILITIES)
      )
        throw new UnsupportedError(
          `${op}: device does not implement this PERSISTENT RESERVE IN service action`,
          {
            op,
            device: this.id,
          },
        );
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
    return { data, received };
  }

  // ------------------------------------------------------------------ SCSI-2 (scsi2.ts)

  /** RESERVE(6) (mhd MHIOCQRESERVE). ConflictError when another initiator holds the LU. */
  async scsi2Reserve(opts?: PrCallOptions): Promise<void> {
    if ((await this.#scsi2('scsi2-reserve', opts)) === 'reserved')
      throw scsi2Conflict('scsi2-reserve', this.id);
  }

  /** RELEASE(6) (mhd MHIOCRELEASE). GOOD and no effect when this initiator holds nothing. */
  async scsi2Release(opts?: PrCallOptions): Promise<void> {
    if ((await this.#scsi2('scsi2-release', opts)) === 'reserved')
      throw scsi2Conflict('scsi2-release', this.id);
  }

  /** TEST UNIT READY (mhd MHIOCSTATUS): RESERVATION CONFLICT = reserved by another initiator. */
  async scsi2Status(opts?: PrCallOptions): Promise<Scsi2Status> {
    return (await this.#scsi2('scsi2-status', opts)) === 'reserved'
      ? 'reserved-by-other'
      : 'not-reserved-by-other';
  }

  /**
   * MHIOCTKOWN (scsi2.ts): SG_SCSI_RESET with a LU reset that does not escalate, then
   * RESERVE(6), sent again on unit attentions (the reset leaves one) at most
   * TAKEOVER_RESERVE_ATTEMPTS times. A failed reset rejects before any RESERVE.
   */
  async scsi2Takeover(opts?: PrCallOptions): Promise<void> {
    const op = 'scsi2-takeover';
    this.#scsiOnly(op);
    const out = await this.#native(
      op,
      { kind: 'ioctl', request: abi.SG_SCSI_RESET, arg: scsiResetArg() },
      opts,
    );
    const failed = classifyScsiReset(out, { device: this.id });
    if (failed) throw failed;
    if ((await this.#scsi2('scsi2-reserve', opts, TAKEOVER_RESERVE_ATTEMPTS)) === 'reserved')
      throw scsi2Conflict(op, this.id);
  }

  #scsiOnly(op: string): void {
    if (this.kind !== 'scsi')
      throw new UnsupportedError(`${op}: SCSI-2 reservations are SCSI only; ${this.id} is an NVMe device`, {
        op,
        device: this.id,
      });
  }

  async #scsi2(op: Scsi2Op, opts?: PrCallOptions, attempts = 9): Promise<'reserved' | 'good'> {
    this.#scsiOnly(op);
    // A unit attention (a reset, a preempt, a changed reservation) means "not executed":
    // send again, a few times, as sd.c does for its own commands.
    for (let attempt = 0; ; attempt++) {
      const { answer } = await this.#sgIo(op, scsi2Cdb(op), 0, opts);
      const c = classifyScsi2Answer(answer, { op, device: this.id });
      if (c === null) return 'good';
      if (c === 'reserved') return 'reserved';
      if (c === 'retry') {
        if (attempt + 1 < attempts) continue;
        throw new IndeterminateError(`${op}: UNIT ATTENTION after ${attempt + 1} attempts`, {
          op,
          device: this.id,
          status: answer.status,
        });
      }
      throw c;
    }
  }

  async #sgReadKeys(opts?: PrCallOptions): Promise<KeyList> {
    let alloc = 8 + INITIAL_KEYS * 8;
    for (let attempt = 0; attempt < MAX_READ_ATTEMPTS; attempt++) {
      const { data, received } = await this.#sgPrin(parse.PRIN_READ_KEYS, alloc, opts);
      if (received < 8)
        throw new IndeterminateError(`read-keys: short PERSISTENT RESERVE IN transfer (${received} bytes)`, {
          op: 'read-keys',
          device: this.id,
        });
      const r = parse.parsePrinReadKeys(data, received);
      if (r.total > r.keys.length) {
        const want = Math.min(MAX_PRIN_ALLOC, 8 + r.total * 8);
        // Room for more, and the device filled what it had: read again with room for all.
        if (received >= alloc && want > alloc) {
          alloc = want;
          continue;
        }
        // More keys than one PERSISTENT RESERVE IN can carry (SPC-4 16-bit length), or a
        // device that transferred less than its ADDITIONAL LENGTH says although there was
        // room: a partial list is never taken for the whole one (a fencer would miss a key).
        throw new IndeterminateError(
          received < alloc
            ? `read-keys: device announced ${r.total} keys but transferred ${r.keys.length}`
            : `read-keys: ${r.total} keys do not fit in one PERSISTENT RESERVE IN`,
          { op: 'read-keys', device: this.id },
        );
      }
      return { generation: r.generation, keys: r.keys };
    }
    throw new IndeterminateError(`read-keys: the key list kept growing over ${MAX_READ_ATTEMPTS} reads`, {
      op: 'read-keys',
      device: this.id,
    });
  }

  /**
   * READ FULL STATUS: a first read of INITIAL_FULL_STATUS_ALLOC bytes and, when that did not
   * plainly hold the whole list, one more with the largest allocation (65535 bytes). A list
   * that does not fit in one PERSISTENT RESERVE IN is UnsupportedError (hundreds of
   * registrations: readKeys reads up to 8191 keys), a device that sends less than it
   * announces IndeterminateError: a partial list is never returned as the whole.
   *
   * "Plainly whole" is an answer that leaves room for one more descriptor: LIO
   * (core_scsi3_pri_read_full_status) stops at the first descriptor that does not fit the
   * allocation length and sets ADDITIONAL LENGTH to the descriptors it counted, where
   * SPC-4 6.16.5 keeps it the length of the whole list whatever the allocation (quirk
   * `full-status-length-cut`, test/contract/topology.ts). Seen with 34 registrants over
   * iSCSI on 6.1 and 7.2: 2048 bytes announced 2060 (LIO counts against the allocation
   * without the headers), and a read again with 2060 got 27 of them as if they were all.
   */
  async #sgReadFullStatus(opts?: PrCallOptions): Promise<FullStatus> {
    const op = 'read-full-status';
    for (const alloc of [INITIAL_FULL_STATUS_ALLOC, MAX_FULL_STATUS_ALLOC]) {
      const { data, received } = await this.#sgPrin(parse.PRIN_READ_FULL_STATUS, alloc, opts);
      if (received < 8)
        throw new IndeterminateError(`${op}: short PERSISTENT RESERVE IN transfer (${received} bytes)`, {
          op,
          device: this.id,
        });
      const r = parse.parsePrinReadFullStatus(data, received);
      if (!r.complete && received < alloc)
        throw new IndeterminateError(
          `${op}: device announced ${r.needed} bytes but transferred ${received}`,
          {
            op,
            device: this.id,
          },
        );
      if (!r.complete || alloc - r.needed < MAX_FULL_STATUS_DESCRIPTOR) continue;
      const first = r.registrants.find((x) => x.holder && x.type !== null);
      const type = first?.type ?? null;
      return {
        generation: r.generation,
        // As READ RESERVATION reports it: key 0 for all-registrants types (SPC-4 6.16.3).
        reservation:
          first === undefined || type === null
            ? null
            : { key: isAllRegistrantsType(type) ? 0n : first.key, type },
        registrants: r.registrants.map(({ key, holder, initiator }) => ({ key, holder, initiator })),
      };
    }
    // Unsupported, not indeterminate: this device cannot answer the read in one command for
    // this many registrations; a fence reads them with readKeys and readReservation instead.
    throw new UnsupportedError(
      `${op}: the full status does not fit, with room for one more descriptor, in one PERSISTENT RESERVE IN (${MAX_FULL_STATUS_ALLOC} bytes): the list may be cut`,
      { op, device: this.id },
    );
  }

  async #nsidOf(opts?: PrCallOptions): Promise<number> {
    if (this.#nsid !== undefined) return this.#nsid;
    const out = await this.#native('nvme-id', { kind: 'ioctl', request: abi.NVME_IOCTL_ID, arg: null }, opts);
    if (out.ret <= 0) throw classifyErrno(out.ret < 0 ? out.errno : 22, { op: 'nvme-id', device: this.id });
    this.#nsid = out.ret;
    return out.ret;
  }

  /**
   * One NVMe passthrough command (I/O by default; `request` NVME_IOCTL_ADMIN_CMD for an
   * admin one); `data` is its buffer (copied in if given). Resolves the buffer after.
   */
  async #nvmePassthru(
    op: string,
    opcode: number,
    cdw10: number,
    cdw11: number,
    data: { size: number; in?: Uint8Array },
    opts?: PrCallOptions,
    request: number = abi.NVME_IOCTL_IO_CMD,
  ): Promise<DataView> {
    const nsid = this.#nsid ?? (await this.#nsidOf(opts));
    const cmd = new Uint8Array(abi.NVME_PASSTHRU_CMD.size);
    const c = new DataView(cmd.buffer);
    c.setUint8(abi.NVME_PASSTHRU_CMD.opcode, opcode);
    c.setUint32(abi.NVME_PASSTHRU_CMD.nsid, nsid, true);
    c.setUint32(abi.NVME_PASSTHRU_CMD.dataLen, data.size, true);
    c.setUint32(abi.NVME_PASSTHRU_CMD.cdw10, cdw10 >>> 0, true);
    c.setUint32(abi.NVME_PASSTHRU_CMD.cdw11, cdw11 >>> 0, true);
    c.setUint32(abi.NVME_PASSTHRU_CMD.timeoutMs, this.#timeoutMs, true);
    const out = await this.#native(
      op,
      {
        kind: 'ioctl',
        request,
        arg: cmd,
        pointers: [{ offset: abi.NVME_PASSTHRU_CMD.addr, ...data }],
      },
      opts,
    );
    const err = classifyNvmeStatus(out, { op, device: this.id });
    if (err) throw err;
    return view(out.pointers?.[0]);
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
    // The payload travels in the request: the executor thread owns its native copy until
    // the kernel returns, however late (defect 14: it was freed while the call could run).
    const payload = new Uint8Array(16);
    const v = new DataView(payload.buffer);
    v.setBigUint64(0, crkey, true);
    v.setBigUint64(8, nrkey, true);
    await this.#nvmePassthru(
      op,
      parse.NVME_CMD_RESV_REGISTER,
      action | (ignore ? 1 << 3 : 0) | (3 << 30),
      0,
      { size: 16, in: payload },
      opts,
    );
  }

  async #nvmeReport(opts?: PrCallOptions, op = 'read-keys') {
    let entries = INITIAL_KEYS;
    for (let attempt = 0; attempt < MAX_READ_ATTEMPTS; attempt++) {
      const extended = this.#nvmeExtended;
      const len = extended
        ? parse.NVME_REPORT_HEADER + entries * parse.NVME_REPORT_ENTRY
        : parse.NVME_REPORT_HEADER_NO_EDS + entries * parse.NVME_REPORT_ENTRY_NO_EDS;
      let data: DataView;
      try {
        // cdw10 = number of dwords - 1; cdw11 bit 0 = EDS, extended data structure.
        data = await this.#nvmePassthru(
          op,
          parse.NVME_CMD_RESV_REPORT,
          len / 4 - 1,
          extended ? 1 : 0,
          { size: len },
          opts,
        );
      } catch (e) {
        // Host Identifier Inconsistent Format: this host has a 64-bit host id, which only
        // the non-extended structure carries (NVMe base spec, Reservation Report EDS).
        if (
          extended &&
          isPrError(e) &&
          e.status !== undefined &&
          (e.status & 0x7ff) === parse.NVME_SC_HOST_ID_INCONSISTENT
        ) {
          this.#nvmeExtended = false;
          continue;
        }
        throw e;
      }
      const r = parse.parseNvmeReport(data, len, extended);
      if (r.total > r.registrants.length) {
        entries = r.total;
        continue;
      }
      return r;
    }
    throw new IndeterminateError(`${op}: the registrant list kept growing over ${MAX_READ_ATTEMPTS} reads`, {
      op,
      device: this.id,
    });
  }
}

/** All six types, assumed for a device that does not report its own. */
function assumed(because: string): DeviceCaps {
  return { types: RESERVATION_TYPES, source: 'assumed', assumedBecause: because, flags: {} };
}

/** A DataView over a reply buffer (empty when the call returned none). */
function view(bytes: Uint8Array | undefined): DataView {
  const b = bytes ?? new Uint8Array(0);
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

export type { DeviceKind };
