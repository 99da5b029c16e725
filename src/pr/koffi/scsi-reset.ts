/**
 * The LU reset of a SCSI-2 takeover (scsi2.ts `scsi2Takeover`, mhd's MHIOCTKOWN) on Linux:
 * which reset the SG_SCSI_RESET ioctl is asked for, its argument, and the classification
 * of its outcome into the closed PrError classes. Pure; sent by KoffiPrDevice.
 */
import { IndeterminateError, NotSentError, UnsupportedError, type PrError } from '../errors.js';
import * as abi from './abi.js';
import { ERRNO } from './classify.js';

/**
 * The reset a takeover sends: a LU (device) reset, the narrowest there is (one LU of one
 * target; a target, bus or host reset would also hit every other LU behind it), and with
 * SG_SCSI_RESET_NO_ESCALATE, so that a LU reset the driver cannot do fails instead of
 * becoming a target, bus or host reset (scsi_ioctl_reset escalates without it).
 */
export const TAKEOVER_RESET = abi.SG_SCSI_RESET_DEVICE | abi.SG_SCSI_RESET_NO_ESCALATE;

/** The argument of SG_SCSI_RESET: a native int (little-endian, 4 bytes) holding `value`. */
export function scsiResetArg(value: number = TAKEOVER_RESET): Uint8Array {
  const arg = new Uint8Array(4);
  new DataView(arg.buffer).setInt32(0, value, true);
  return arg;
}

/**
 * The outcome of the SG_SCSI_RESET ioctl of a takeover: `null` the LU was reset (the
 * driver's handler answered SUCCESS), or the PrError:
 * - EIO: the reset was tried and the driver answered FAILED (scsi_ioctl_reset): the task
 *   management function may have reached the LU, so whether the reservation was dropped is
 *   unknown: IndeterminateError, nothing reserved by the takeover;
 * - EACCES / EPERM: SG_SCSI_RESET needs CAP_SYS_ADMIN and CAP_SYS_RAWIO: UnsupportedError;
 * - ENOTTY / EOPNOTSUPP / EINVAL: no SCSI layer under the device (virtio-blk, loop, NVMe),
 *   or a driver without that reset: UnsupportedError;
 * - ENODEV / EAGAIN / EBUSY: the host is in error recovery or going away, nothing sent:
 *   NotSentError;
 * - anything else: IndeterminateError.
 */
export function classifyScsiReset(
  out: { ret: number; errno: number },
  ctx: { device: string },
): null | PrError {
  const op = 'scsi2-takeover';
  const d = { op, device: ctx.device, errno: out.errno };
  if (out.ret >= 0) return null;
  switch (out.errno) {
    case ERRNO.EIO:
      return new IndeterminateError(
        `${op}: the LU reset failed (EIO: the driver could not reset the LU), whether another initiator's reservation was dropped is unknown; nothing reserved`,
        d,
      );
    case ERRNO.EACCES:
    case ERRNO.EPERM:
      return new UnsupportedError(
        `${op}: permission denied (a SCSI reset needs CAP_SYS_ADMIN and CAP_SYS_RAWIO)`,
        d,
      );
    case ERRNO.ENOTTY:
    case ERRNO.EOPNOTSUPP:
    case ERRNO.EINVAL:
      return new UnsupportedError(
        `${op}: the device or its driver cannot do a LU reset (errno ${out.errno})`,
        d,
      );
    case ERRNO.ENODEV:
    case ERRNO.EAGAIN:
    case ERRNO.EBUSY:
      return new NotSentError(
        `${op}: LU reset not sent: the host is in error recovery or gone (errno ${out.errno})`,
        d,
      );
    default:
      return new IndeterminateError(`${op}: LU reset: unexpected errno ${out.errno}, outcome unknown`, d);
  }
}
