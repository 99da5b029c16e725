/**
 * Classifies the outcome of one PR ioctl into the closed error set (src/pr/errors.ts).
 * Pure: tested by a table (test/unit/pr/koffi-classify.test.ts).
 *
 * A PR ioctl has two failure channels (block/ioctl.c blkdev_pr_*):
 * - -1 with errno: the kernel or the driver refused or failed;
 * - a positive return: a device status. Kernel >= 6.x with `enum pr_status`
 *   (include/linux/pr.h) returns 0x18 for RESERVATION CONFLICT and path failures in
 *   the host byte (PR_STS_PATH_FAILED 0x10000, PR_STS_PATH_FAST_FAILED 0xf0000,
 *   PR_STS_RETRY_PATH_FAILURE 0xe0000); kernel 6.1's sd.c returns the raw SCSI result
 *   (0x118: DID/host byte in bits 16-23, status byte in bits 0-7).
 */
import {
  ConflictError,
  IndeterminateError,
  InvalidArgumentError,
  NotSentError,
  UnsupportedError,
  type PrError,
} from '../errors.js';

export const ERRNO = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  ENXIO: 6,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EBUSY: 16,
  ENODEV: 19,
  ENOTBLK: 15,
  EINVAL: 22,
  ENOTTY: 25,
  EBADE: 52,
  ENOLINK: 67,
  EOPNOTSUPP: 95,
  ETIMEDOUT: 110,
  EREMOTEIO: 121,
} as const;

/** SCSI status byte values (SAM-5). */
const STATUS_CHECK_CONDITION = 0x02;
const STATUS_BUSY = 0x08;
const STATUS_RESERVATION_CONFLICT = 0x18;
const STATUS_TASK_SET_FULL = 0x28;
/** enum pr_status PR_STS_IOERR (include/uapi/linux/pr.h, Linux 6.12+). */
const PR_STS_IOERR = 0x2;

export interface RawOutcome {
  /** The ioctl's return value. */
  ret: number;
  /** errno when ret is -1. */
  errno: number;
}

export interface ClassifyContext {
  op: string;
  device: string;
  /** true on a second attempt after a CHECK CONDITION (a unit attention is retried once). */
  retried?: boolean;
}

/** 'retry' means: CHECK CONDITION on a first attempt; send the command once more. */
export type Classified = null | 'retry' | PrError;

/** Classifies a PR ioctl outcome: null = success. */
export function classifyPrOutcome(out: RawOutcome, ctx: ClassifyContext): Classified {
  const { op, device } = ctx;
  if (out.ret === 0) return null;
  if (out.ret < 0) return classifyErrno(out.errno, ctx);
  const status = out.ret & 0xff;
  const host = (out.ret >>> 16) & 0xff;
  const d = { op, device, status: out.ret };
  if (status === STATUS_RESERVATION_CONFLICT) {
    return new ConflictError(`${op}: reservation conflict`, d);
  }
  if (host !== 0) {
    // The command may have reached the device before the path failed.
    return new IndeterminateError(`${op}: path failure (status 0x${out.ret.toString(16)})`, d);
  }
  if (status === STATUS_CHECK_CONDITION) {
    if (!ctx.retried) return 'retry'; // e.g. the unit attention after being preempted
    // Exactly 2 is PR_STS_IOERR on kernels with `enum pr_status` (6.12+, uapi
    // linux/pr.h: "generic device failure", sd.c sd_scsi_to_pr_err for any CHECK
    // CONDITION but an invalid field) and a bare CHECK CONDITION on 6.1: the sense is not
    // visible through the ioctl, so the command may have been applied (S5: read back).
    if (out.ret === PR_STS_IOERR) {
      return new IndeterminateError(
        `${op}: device error (PR_STS_IOERR / CHECK CONDITION), outcome unknown`,
        d,
      );
    }
    return new InvalidArgumentError(
      `${op}: rejected by the device (CHECK CONDITION, 0x${out.ret.toString(16)})`,
      d,
    );
  }
  if (status === STATUS_BUSY || status === STATUS_TASK_SET_FULL) {
    return new NotSentError(`${op}: device busy (status 0x${out.ret.toString(16)})`, d);
  }
  return new IndeterminateError(`${op}: unexpected device status 0x${out.ret.toString(16)}`, d);
}

/** Classifies a -1/errno outcome of any ioctl or open. */
export function classifyErrno(errno: number, ctx: ClassifyContext): PrError {
  const { op, device } = ctx;
  const d = { op, device, errno };
  switch (errno) {
    case ERRNO.ENOTTY:
    case ERRNO.EOPNOTSUPP:
      return new UnsupportedError(`${op}: not supported by this device or kernel (errno ${errno})`, d);
    case ERRNO.EPERM:
    case ERRNO.EACCES:
      return new UnsupportedError(
        `${op}: permission denied (PR ioctls need CAP_SYS_ADMIN or a writable fd)`,
        d,
      );
    case ERRNO.EINVAL:
      return new InvalidArgumentError(`${op}: invalid argument (EINVAL)`, d);
    case ERRNO.ENOTBLK:
      return new InvalidArgumentError(`${op}: not a block device`, d);
    case ERRNO.EBADE:
      return new ConflictError(`${op}: reservation conflict (EBADE)`, d);
    case ERRNO.ENOENT:
    case ERRNO.ENXIO:
    case ERRNO.ENODEV:
    case ERRNO.EBADF:
    case ERRNO.EAGAIN:
    case ERRNO.ENOMEM:
    case ERRNO.EBUSY:
      // Refused before the command was issued (no device, no path, no memory).
      return new NotSentError(`${op}: not sent (errno ${errno})`, d);
    default:
      // EIO, ETIMEDOUT, ENOLINK, EREMOTEIO, ...: may have been applied.
      return new IndeterminateError(`${op}: I/O error, outcome unknown (errno ${errno})`, d);
  }
}

/** NVMe status (sct << 8 | sc, with DNR/MORE bits) of a passthrough command. */
export function classifyNvmeStatus(out: RawOutcome, ctx: ClassifyContext): PrError | null {
  if (out.ret === 0) return null;
  if (out.ret < 0) return classifyErrno(out.errno, ctx);
  const code = out.ret & 0x7ff; // drop DNR (0x4000) and MORE (0x2000)
  const d = { op: ctx.op, device: ctx.device, status: out.ret };
  if (code === 0x83) return new ConflictError(`${ctx.op}: reservation conflict`, d);
  if (code === 0x01) return new UnsupportedError(`${ctx.op}: invalid opcode (no reservation support)`, d);
  if (code === 0x02 || code === 0x0b) return new InvalidArgumentError(`${ctx.op}: invalid field`, d);
  return new IndeterminateError(`${ctx.op}: NVMe status 0x${out.ret.toString(16)}`, d);
}
