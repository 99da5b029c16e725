/**
 * The closed set of Persistent Reservation failures. Every outcome of a PR
 * command, on any PrDevice implementation, is either success or exactly one of
 * these. Callers match on the class (or `kind`), never on message text.
 *
 * - not-sent:        the command never reached the device (open failed, queue full,
 *                    aborted before submission). Safe to retry.
 * - indeterminate:   the command may or may not have been applied (time-out, transport
 *                    error after submission, unknown status). Read back before any retry (S5).
 * - conflict:        the device refused with RESERVATION CONFLICT. Re-read and decide
 *                    again; never blind-retry (S4).
 * - unsupported:     the device or kernel does not support PR (or this operation).
 *                    Terminal: report as a condition, do not retry.
 * - invalid-argument: the request itself is wrong (zero key, bad type, not a block device).
 */
export type PrErrorKind = 'not-sent' | 'indeterminate' | 'conflict' | 'unsupported' | 'invalid-argument';

export interface PrErrorDetails {
  /** The operation, e.g. "register", "preempt-abort", "read-keys". */
  op?: string;
  /** The device path or model id. */
  device?: string;
  /** errno name/number when the failure came from the -1/errno channel. */
  errno?: number;
  /** The positive status returned by the ioctl (device status channel). */
  status?: number;
  cause?: unknown;
}

export abstract class PrError extends Error {
  abstract readonly kind: PrErrorKind;
  readonly op: string | undefined;
  readonly device: string | undefined;
  readonly errno: number | undefined;
  readonly status: number | undefined;

  constructor(message: string, details: PrErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = new.target.name;
    this.op = details.op;
    this.device = details.device;
    this.errno = details.errno;
    this.status = details.status;
  }
}

/** The command did not reach the device. Safe to retry. */
export class NotSentError extends PrError {
  readonly kind = 'not-sent' as const;
}
/** The command may have been applied. Read the device back before any retry (S5). */
export class IndeterminateError extends PrError {
  readonly kind = 'indeterminate' as const;
}
/** RESERVATION CONFLICT: the device decided against us. Re-read and decide again (S4). */
export class ConflictError extends PrError {
  readonly kind = 'conflict' as const;
}
/** No PR support on this device/kernel, or not for this operation. Terminal. */
export class UnsupportedError extends PrError {
  readonly kind = 'unsupported' as const;
}
/** The request is malformed (zero key, bad type, not a block device, ...). */
export class InvalidArgumentError extends PrError {
  readonly kind = 'invalid-argument' as const;
}

export function isPrError(e: unknown): e is PrError {
  return e instanceof PrError;
}
