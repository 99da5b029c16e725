/**
 * SCSI-2 reservations (SPC-2 7.21 RESERVE(6), 7.19 RELEASE(6)): the narrow port, the CDBs
 * and the classification of their outcomes. The illumos mhd(7I) ioctls are the model:
 * `scsi2Reserve` is MHIOCQRESERVE (a plain RESERVE; no reset to break another host's
 * reservation), `scsi2Release` is MHIOCRELEASE, `scsi2Status` is MHIOCSTATUS (a TEST UNIT
 * READY: RESERVATION CONFLICT means another initiator holds the LU, illumos' 1; GOOD means
 * it does not, illumos' 0) and `scsi2Takeover` is MHIOCTKOWN: a LOGICAL UNIT RESET (Linux
 * SG_SCSI_RESET, SG_SCSI_RESET_DEVICE without escalation), which drops any SCSI-2
 * reservation (SPC-2 5.5.1) and keeps persistent reservations (SPC-4 5.13.1), then
 * RESERVE(6), sent again on the unit attention the reset leaves.
 *
 * For legacy arrays without Persistent Reservations and single-writer volumes only: a
 * SCSI-2 reservation belongs to one I_T nexus (not multipath safe) and is dropped by a
 * bus, target or LU reset. The agent never uses it for shared volumes (docs/design.md).
 *
 * Pure: the SG_IO transport lives in koffi/koffi-pr-device.ts, the takeover's LU reset (the
 * SG_SCSI_RESET ioctl) in koffi/scsi-reset.ts; tested in
 * test/unit/pr/scsi2.test.ts.
 */
import {
  ConflictError,
  IndeterminateError,
  InvalidArgumentError,
  NotSentError,
  UnsupportedError,
  type PrError,
} from './errors.js';
import type { PrCallOptions } from './pr-device.js';

export const TEST_UNIT_READY_OPCODE = 0x00;
export const RESERVE6_OPCODE = 0x16;
export const RELEASE6_OPCODE = 0x17;

/** The SCSI-2 commands prfence sends, as named in errors and logs. */
export type Scsi2Op = 'scsi2-reserve' | 'scsi2-release' | 'scsi2-status';

/**
 * How many RESERVE(6) a takeover sends after its reset at most: the reset leaves a unit
 * attention (29h/03h BUS DEVICE RESET FUNCTION OCCURRED) on the taker's I_T nexus (and,
 * per SAM-5 and recent LIO, on every other one of the LU), and a command that gets it was
 * not executed (mhd's MHIOCTKOWN retries its RESERVE too).
 */
export const TAKEOVER_RESERVE_ATTEMPTS = 8;

/** MHIOCSTATUS: whether another initiator holds a SCSI-2 reservation on the LU. */
export type Scsi2Status = 'reserved-by-other' | 'not-reserved-by-other';

/**
 * SCSI-2 reservation commands from one initiator (I_T nexus) to one logical unit.
 *
 * Contract: resolves on success; rejects with exactly one PrError class (errors.ts):
 * ConflictError when another initiator holds the LU (or, on SPC-3+ targets, when
 * persistent reservation registrations forbid the command: SPC-4 5.7.3);
 * UnsupportedError on a device that is not SCSI or does not implement the command;
 * IndeterminateError / NotSentError as for PR commands. Never blocks the event loop.
 */
export interface Scsi2Device {
  readonly id: string;
  /** RESERVE(6): this initiator reserves the whole LU. Idempotent for the holder. */
  scsi2Reserve(opts?: PrCallOptions): Promise<void>;
  /** RELEASE(6): frees this initiator's reservation; GOOD and no effect from a non-holder. */
  scsi2Release(opts?: PrCallOptions): Promise<void>;
  /** TEST UNIT READY: 'reserved-by-other' when it answers RESERVATION CONFLICT. No side effects. */
  scsi2Status(opts?: PrCallOptions): Promise<Scsi2Status>;
  /**
   * MHIOCTKOWN: a LOGICAL UNIT RESET, then RESERVE(6) (sent again on unit attentions, at
   * most TAKEOVER_RESERVE_ATTEMPTS times). Breaks another initiator's SCSI-2 reservation
   * and aborts every initiator's commands in flight on the LU; leaves persistent
   * reservations and registrations as they are (then the RESERVE conflicts unless this
   * initiator holds the persistent reservation: ConflictError). Always resets, even when
   * nothing is reserved. A failed reset rejects without any RESERVE sent
   * (classifyScsiReset). Single-writer / legacy volumes only: the agent never calls it.
   */
  scsi2Takeover(opts?: PrCallOptions): Promise<void>;
}

/** Whether a device offers the SCSI-2 commands (KoffiPrDevice and MemoryPrDevice do), takeover included. */
export function isScsi2Device(d: object): d is Scsi2Device {
  const x = d as Partial<Scsi2Device>;
  return (
    typeof x.scsi2Reserve === 'function' &&
    typeof x.scsi2Release === 'function' &&
    typeof x.scsi2Status === 'function' &&
    typeof x.scsi2Takeover === 'function'
  );
}

/** The 6-byte CDB of each command: opcode, then zeros (no third-party, no extent: SPC-2). */
export function scsi2Cdb(op: Scsi2Op): Uint8Array {
  const cdb = new Uint8Array(6);
  cdb[0] =
    op === 'scsi2-reserve'
      ? RESERVE6_OPCODE
      : op === 'scsi2-release'
        ? RELEASE6_OPCODE
        : TEST_UNIT_READY_OPCODE;
  return cdb;
}

/** What one SG_IO call answered: SCSI status byte, host status and the sense key / ASC. */
export interface SgIoAnswer {
  status: number;
  host: number;
  sense: { key: number; asc: number } | null;
}

/** SAM-5 status bytes. */
const GOOD = 0x00;
const CHECK_CONDITION = 0x02;
const BUSY = 0x08;
const RESERVATION_CONFLICT = 0x18;
const TASK_SET_FULL = 0x28;
/** Sense keys (SPC-4 4.5.6) and the ASC of INVALID COMMAND OPERATION CODE. */
const UNIT_ATTENTION = 0x6;
const ILLEGAL_REQUEST = 0x5;
const ASC_INVALID_OPCODE = 0x20;

/**
 * The outcome of one SCSI-2 command: `null` success, `'reserved'` RESERVATION CONFLICT
 * (for scsi2Status the answer, for the others a ConflictError), `'retry'` a unit
 * attention (the command was not executed: SG_IO does not retry it), or the PrError.
 */
export function classifyScsi2Answer(
  a: SgIoAnswer,
  ctx: { op: Scsi2Op; device: string },
): null | 'reserved' | 'retry' | PrError {
  const { op, device } = ctx;
  const d = { op, device, status: a.status };
  if (a.status === RESERVATION_CONFLICT) return 'reserved';
  if (a.host !== 0)
    return new IndeterminateError(`${op}: SG_IO host status 0x${a.host.toString(16)}`, { op, device });
  if (a.status === GOOD) return null;
  if (a.status === CHECK_CONDITION) {
    if (a.sense?.key === UNIT_ATTENTION) return 'retry';
    if (a.sense?.key === ILLEGAL_REQUEST && a.sense.asc === ASC_INVALID_OPCODE)
      return new UnsupportedError(`${op}: the device does not implement ${commandName(op)}`, d);
    if (a.sense?.key === ILLEGAL_REQUEST)
      return new InvalidArgumentError(`${op}: ${commandName(op)} rejected (ILLEGAL REQUEST)`, d);
    return new IndeterminateError(
      `${op}: CHECK CONDITION (sense key ${a.sense ? a.sense.key : 'none'}), outcome unknown`,
      d,
    );
  }
  if (a.status === BUSY || a.status === TASK_SET_FULL)
    return new NotSentError(`${op}: device busy (status 0x${a.status.toString(16)})`, d);
  return new IndeterminateError(`${op}: unexpected SCSI status 0x${a.status.toString(16)}`, d);
}

/**
 * The ConflictError of a RESERVE(6) / RELEASE(6) answered RESERVATION CONFLICT, and of a
 * takeover whose RESERVE(6) after the reset was.
 */
export function scsi2Conflict(op: Scsi2Op | 'scsi2-takeover', device: string): ConflictError {
  if (op === 'scsi2-takeover')
    return new ConflictError(
      `${op}: the LU was reset, then RESERVE(6) answered reservation conflict: persistent reservation registrations forbid SCSI-2 reservations (a reset keeps them), or another initiator reserved again after the reset`,
      { op, device, status: RESERVATION_CONFLICT },
    );
  return new ConflictError(
    op === 'scsi2-reserve'
      ? `${op}: reservation conflict: the LU is reserved by another initiator (or persistent reservation registrations forbid SCSI-2 reservations)`
      : `${op}: reservation conflict (persistent reservation registrations forbid SCSI-2 RELEASE from this initiator)`,
    { op, device, status: RESERVATION_CONFLICT },
  );
}

function commandName(op: Scsi2Op): string {
  return op === 'scsi2-reserve' ? 'RESERVE(6)' : op === 'scsi2-release' ? 'RELEASE(6)' : 'TEST UNIT READY';
}
