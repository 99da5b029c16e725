/**
 * Pure encoders/decoders for the read fallbacks: SCSI PERSISTENT RESERVE IN (SPC-4
 * 6.16) through SG_IO, and the NVMe Reservation Report (NVMe base spec 7.x, extended
 * data structure). Tested in test/unit/pr/koffi-parse.test.ts.
 */
import type { PrKey } from '../key.js';
import { reservationTypeFromCode, type ReservationType } from '../reservation-type.js';

export const PRIN_OPCODE = 0x5e;
export const PRIN_READ_KEYS = 0x00;
export const PRIN_READ_RESERVATION = 0x01;

/** A 10-byte PERSISTENT RESERVE IN CDB. */
export function prinCdb(serviceAction: number, allocationLength: number): Uint8Array {
  const cdb = new Uint8Array(10);
  cdb[0] = PRIN_OPCODE;
  cdb[1] = serviceAction & 0x1f;
  cdb[7] = (allocationLength >> 8) & 0xff;
  cdb[8] = allocationLength & 0xff;
  return cdb;
}

/** SPC-4 table 'PERSISTENT RESERVE IN parameter data for READ KEYS'. `more` = keys not returned. */
export function parsePrinReadKeys(
  data: DataView,
  received: number,
): { generation: number; keys: PrKey[]; total: number } {
  const generation = data.getUint32(0, false);
  const additional = data.getUint32(4, false);
  const total = Math.floor(additional / 8);
  const avail = Math.min(total, Math.floor((received - 8) / 8));
  const keys: PrKey[] = [];
  for (let i = 0; i < avail; i++) keys.push(data.getBigUint64(8 + i * 8, false));
  return { generation, keys, total };
}

/** SPC-4 SCOPE/TYPE codes -> pr.h reservation types. */
const SCSI_TYPE: Record<number, ReservationType> = {
  0x1: 'write-exclusive',
  0x3: 'exclusive-access',
  0x5: 'write-exclusive-reg-only',
  0x6: 'exclusive-access-reg-only',
  0x7: 'write-exclusive-all-regs',
  0x8: 'exclusive-access-all-regs',
};

/** SPC-4 'READ RESERVATION' parameter data. */
export function parsePrinReadReservation(data: DataView): {
  generation: number;
  key: PrKey | null;
  type: ReservationType | null;
} {
  const generation = data.getUint32(0, false);
  const additional = data.getUint32(4, false);
  if (additional < 16) return { generation, key: null, type: null };
  const key = data.getBigUint64(8, false);
  const type = SCSI_TYPE[data.getUint8(21) & 0x0f] ?? null;
  return { generation, key, type };
}

/** Sense key and ASC from fixed (0x70/0x71) or descriptor (0x72/0x73) sense data. */
export function parseSense(sense: Uint8Array, length: number): { key: number; asc: number } | null {
  if (length < 3) return null;
  const code = sense[0]! & 0x7f;
  if (code === 0x72 || code === 0x73) return { key: sense[1]! & 0x0f, asc: sense[2]! };
  if (code === 0x70 || code === 0x71) return { key: sense[2]! & 0x0f, asc: length > 12 ? sense[12]! : 0 };
  return null;
}

export const NVME_CMD_RESV_REGISTER = 0x0d;
export const NVME_CMD_RESV_REPORT = 0x0e;
export const NVME_REPORT_HEADER = 64;
export const NVME_REPORT_ENTRY = 64;

/** Reservation Report, extended data structure (nvme_reservation_status_ext). */
export function parseNvmeReport(
  data: DataView,
  length: number,
): {
  generation: number;
  type: ReservationType | null;
  registrants: { key: PrKey; holder: boolean }[];
  total: number;
} {
  const generation = data.getUint32(0, true);
  const rtype = data.getUint8(4);
  const total = data.getUint16(5, true);
  const avail = Math.min(total, Math.floor((length - NVME_REPORT_HEADER) / NVME_REPORT_ENTRY));
  const registrants: { key: PrKey; holder: boolean }[] = [];
  for (let i = 0; i < avail; i++) {
    const base = NVME_REPORT_HEADER + i * NVME_REPORT_ENTRY;
    registrants.push({ key: data.getBigUint64(base + 8, true), holder: (data.getUint8(base + 2) & 1) === 1 });
  }
  return {
    generation,
    type: rtype === 0 ? null : (reservationTypeFromCode(rtype) ?? null),
    registrants,
    total,
  };
}
