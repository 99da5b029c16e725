/**
 * Pure encoders/decoders for the read fallbacks: SCSI PERSISTENT RESERVE IN (SPC-4
 * 6.16) through SG_IO, and the NVMe Reservation Report (NVMe base spec 7.x, extended
 * and non-extended data structures). Tested in test/unit/pr/koffi-parse.test.ts.
 */
import type { PrKey } from '../key.js';
import type { InitiatorId, Registrant } from '../pr-device.js';
import { RESERVATION_TYPES, reservationTypeFromCode, type ReservationType } from '../reservation-type.js';

export const PRIN_OPCODE = 0x5e;
export const PRIN_READ_KEYS = 0x00;
export const PRIN_READ_RESERVATION = 0x01;
export const PRIN_REPORT_CAPABILITIES = 0x02;
export const PRIN_READ_FULL_STATUS = 0x03;
/** REPORT CAPABILITIES parameter data: LENGTH is 8 (SPC-4 6.16.4). */
export const REPORT_CAPABILITIES_LENGTH = 8;

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

/** A SPC-4 SCOPE/TYPE byte -> reservation type (LU scope, the only one SPC-4 keeps). */
export function scsiReservationType(scopeType: number): ReservationType | null {
  return SCSI_TYPE[scopeType & 0x0f] ?? null;
}

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

/** What REPORT CAPABILITIES says (SPC-4 6.16.4), field by field. */
export interface ReportCapabilities {
  /** Compatible Reservation Handling (byte 2 bit 4). */
  readonly crh: boolean;
  /** Specify Initiator Ports capable (byte 2 bit 3). */
  readonly sipC: boolean;
  /** All Target Ports capable (byte 2 bit 2). */
  readonly atpC: boolean;
  /** Persist Through Power Loss capable (byte 2 bit 0). */
  readonly ptplC: boolean;
  /** Type Mask Valid (byte 3 bit 7): the type mask means something only when set. */
  readonly tmv: boolean;
  /** ALLOW COMMANDS (byte 3 bits 6-4). */
  readonly allowCommands: number;
  /** Persist Through Power Loss activated (byte 3 bit 0). */
  readonly ptplA: boolean;
  /** The PERSISTENT RESERVATION TYPE MASK (bytes 4-5) in pr.h order; null when TMV is clear. */
  readonly types: ReservationType[] | null;
}

/**
 * PERSISTENT RESERVATION TYPE MASK bits (SPC-4 table "Persistent Reservation Type Mask
 * format"): byte 4 bit 7 WR_EX_AR, 6 EX_AC_RO, 5 WR_EX_RO, 3 EX_AC, 1 WR_EX; byte 5 bit 0
 * EX_AC_AR. As a 16-bit big-endian value.
 */
const TYPE_MASK_BIT: Readonly<Record<ReservationType, number>> = {
  'write-exclusive': 0x0200,
  'exclusive-access': 0x0800,
  'write-exclusive-reg-only': 0x2000,
  'exclusive-access-reg-only': 0x4000,
  'write-exclusive-all-regs': 0x8000,
  'exclusive-access-all-regs': 0x0001,
};

/**
 * SPC-4 6.16.4 REPORT CAPABILITIES parameter data (LENGTH in bytes 0-1, flags in bytes
 * 2-3, the type mask in bytes 4-5). Null when fewer than 6 bytes arrived or LENGTH says
 * less: the answer is then not one to read capabilities from.
 */
export function parsePrinReportCapabilities(data: DataView, received: number): ReportCapabilities | null {
  if (received < 6 || data.byteLength < 6) return null;
  const length = data.getUint16(0, false);
  if (length < 6) return null;
  const b2 = data.getUint8(2);
  const b3 = data.getUint8(3);
  const tmv = (b3 & 0x80) !== 0;
  const mask = data.getUint16(4, false);
  return {
    crh: (b2 & 0x10) !== 0,
    sipC: (b2 & 0x08) !== 0,
    atpC: (b2 & 0x04) !== 0,
    ptplC: (b2 & 0x01) !== 0,
    tmv,
    allowCommands: (b3 >> 4) & 0x07,
    ptplA: (b3 & 0x01) !== 0,
    types: tmv ? RESERVATION_TYPES.filter((t) => (mask & TYPE_MASK_BIT[t]) !== 0) : null,
  };
}

/** Sense key and ASC from fixed (0x70/0x71) or descriptor (0x72/0x73) sense data. */
export function parseSense(sense: Uint8Array, length: number): { key: number; asc: number } | null {
  if (length < 3) return null;
  const code = sense[0]! & 0x7f;
  if (code === 0x72 || code === 0x73) return { key: sense[1]! & 0x0f, asc: sense[2]! };
  if (code === 0x70 || code === 0x71) return { key: sense[2]! & 0x0f, asc: length > 12 ? sense[12]! : 0 };
  return null;
}

/** Admin Identify (opcode 06h), CNS 00h: the Identify Namespace data structure (4096 bytes). */
export const NVME_ADMIN_IDENTIFY = 0x06;
export const NVME_IDENTIFY_CNS_NS = 0x00;
export const NVME_IDENTIFY_LENGTH = 4096;
/**
 * Identify Namespace byte 31: Reservation Capabilities (RESCAP), after NSZE, NCAP, NUSE
 * (8 bytes each) and NSFEAT, NLBAF, FLBAS, MC, DPC, DPS, NMIC (include/linux/nvme.h
 * struct nvme_id_ns). Byte 93 is inside ANAGRPID (92-95).
 */
export const NVME_ID_NS_RESCAP = 31;

/** What the RESCAP byte says (NVMe base spec, Identify Namespace data structure, byte 31). */
export interface Rescap {
  /** Bits 1-6, in pr.h order. */
  readonly types: ReservationType[];
  /** Bit 0: Persist Through Power Loss. */
  readonly ptpl: boolean;
  /** Bit 7: Ignore Existing Key as NVMe 1.3 and later define it. */
  readonly iekey: boolean;
}

/** RESCAP bits 1-6: Write Exclusive, Exclusive Access, -Registrants Only, -All Registrants. */
const RESCAP_BIT: Readonly<Record<ReservationType, number>> = {
  'write-exclusive': 0x02,
  'exclusive-access': 0x04,
  'write-exclusive-reg-only': 0x08,
  'exclusive-access-reg-only': 0x10,
  'write-exclusive-all-regs': 0x20,
  'exclusive-access-all-regs': 0x40,
};

/** The RESCAP byte -> reservation types and flags. */
export function parseRescap(rescap: number): Rescap {
  return {
    types: RESERVATION_TYPES.filter((t) => (rescap & RESCAP_BIT[t]) !== 0),
    ptpl: (rescap & 0x01) !== 0,
    iekey: (rescap & 0x80) !== 0,
  };
}

export const NVME_CMD_RESV_REGISTER = 0x0d;
export const NVME_CMD_RESV_REPORT = 0x0e;
/** SPC-4 7.6.2 PROTOCOL IDENTIFIER values of the TransportIDs parsed by name. */
const PROTOCOL_FC = 0x0;
const PROTOCOL_ISCSI = 0x5;
const PROTOCOL_SAS = 0x6;

const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, '0')).join('');

/**
 * A TransportID (SPC-4 7.6.4) -> the initiator it names:
 * - FC (protocol 0): the N_PORT_NAME, bytes 8-15, as 16 hex digits;
 * - iSCSI (5): the iSCSI name (format 00b), or name and ISID (format 01b:
 *   "name,i,0xISID"), bytes 4.. of ADDITIONAL LENGTH (bytes 2-3), NUL terminated;
 * - SAS (6): the SAS address, bytes 4-11, as 16 hex digits;
 * - any other protocol: the whole TransportID in hex, and its protocol number.
 */
export function parseTransportId(bytes: Uint8Array): InitiatorId {
  const protocol = (bytes[0] ?? 0) & 0x0f;
  const format = ((bytes[0] ?? 0) >> 6) & 0x03;
  if (protocol === PROTOCOL_FC && format === 0 && bytes.length >= 16)
    return { transport: 'fc', id: hex(bytes.subarray(8, 16)) };
  if (protocol === PROTOCOL_SAS && format === 0 && bytes.length >= 12)
    return { transport: 'sas', id: hex(bytes.subarray(4, 12)) };
  if (protocol === PROTOCOL_ISCSI && (format === 0 || format === 1) && bytes.length >= 4) {
    const length = ((bytes[2]! << 8) | bytes[3]!) >>> 0;
    const field = bytes.subarray(4, Math.min(bytes.length, 4 + length));
    const nul = field.indexOf(0);
    const text = new TextDecoder().decode(nul < 0 ? field : field.subarray(0, nul));
    if (format === 1) {
      // SPC-4 table 'iSCSI initiator port TransportID': name, ",i,0x", ISID in hex.
      const at = text.toLowerCase().lastIndexOf(',i,0x');
      if (at >= 0)
        return { transport: 'iscsi', id: text.slice(0, at), isid: text.slice(at + 5).toLowerCase() };
    }
    return { transport: 'iscsi', id: text };
  }
  return { transport: 'other', id: hex(bytes), protocolId: protocol };
}

/** One registrant of READ FULL STATUS, with the reservation fields of its descriptor. */
export interface FullStatusDescriptor extends Registrant {
  /** SCOPE/TYPE, meaningful when `holder` (SPC-4 6.16.5: zero otherwise). */
  readonly type: ReservationType | null;
}

/**
 * SPC-4 6.16.5 'READ FULL STATUS' parameter data: PRGENERATION, ADDITIONAL LENGTH, then
 * one full status descriptor per registered I_T nexus (reservation key, ALL_TG_PT and
 * R_HOLDER in byte 12, SCOPE/TYPE in byte 13, RELATIVE TARGET PORT IDENTIFIER in bytes
 * 18-19, ADDITIONAL DESCRIPTOR LENGTH in 20-23, the TransportID from byte 24).
 * `complete` is false when the data the device has (8 + ADDITIONAL LENGTH bytes) did not
 * fit in `received`: only the descriptors that fit whole are returned, and `needed` says
 * how many bytes to ask for.
 */
export function parsePrinReadFullStatus(
  data: DataView,
  received: number,
): { generation: number; registrants: FullStatusDescriptor[]; complete: boolean; needed: number } {
  const generation = data.getUint32(0, false);
  const additional = data.getUint32(4, false);
  const needed = 8 + additional;
  const end = Math.min(needed, received, data.byteLength);
  const registrants: FullStatusDescriptor[] = [];
  let off = 8;
  while (off + 24 <= end) {
    const length = data.getUint32(off + 20, false);
    if (off + 24 + length > end) break;
    const flags = data.getUint8(off + 12);
    const holder = (flags & 0x01) !== 0;
    const transportId = new Uint8Array(data.buffer, data.byteOffset + off + 24, length);
    registrants.push({
      key: data.getBigUint64(off, false),
      holder,
      type: holder ? scsiReservationType(data.getUint8(off + 13)) : null,
      initiator: {
        ...parseTransportId(transportId),
        relativeTargetPort: data.getUint16(off + 18, false),
        allTargetPorts: (flags & 0x02) !== 0,
      },
    });
    off += 24 + length;
  }
  return { generation, registrants, complete: received >= needed, needed };
}

/** Extended data structure (EDS=1): 64-byte header, 64-byte Registered Controller entries. */
export const NVME_REPORT_HEADER = 64;
export const NVME_REPORT_ENTRY = 64;
/** Non-extended data structure (EDS=0): 24-byte header, 24-byte entries, 64-bit host ids. */
export const NVME_REPORT_HEADER_NO_EDS = 24;
export const NVME_REPORT_ENTRY_NO_EDS = 24;
/** Generic status Host Identifier Inconsistent Format (NVMe base spec, EDS not matching the host id size). */
export const NVME_SC_HOST_ID_INCONSISTENT = 0x18;

/** One registered controller of a Reservation Report. */
export interface NvmeRegistrant {
  key: PrKey;
  holder: boolean;
  controllerId: number;
  /** HOSTID in hex as sent (32 digits with EDS, 16 without). */
  hostId: string;
}

/**
 * Reservation Report (NVMe base spec 'Reservation Status Data Structure'): header GEN
 * (0-3), RTYPE (4), REGCTL (5-6); each entry CNTLID (0-1), RCSTS (2, bit 0 = holds the
 * reservation), then with EDS=1 RKEY (8-15) and a 128-bit HOSTID (16-31), with EDS=0
 * HOSTID (8-15) and RKEY (16-23). All little-endian. `total` = registrants on the namespace.
 */
export function parseNvmeReport(
  data: DataView,
  length: number,
  extended = true,
): {
  generation: number;
  type: ReservationType | null;
  registrants: NvmeRegistrant[];
  total: number;
} {
  const header = extended ? NVME_REPORT_HEADER : NVME_REPORT_HEADER_NO_EDS;
  const entry = extended ? NVME_REPORT_ENTRY : NVME_REPORT_ENTRY_NO_EDS;
  const generation = data.getUint32(0, true);
  const rtype = data.getUint8(4);
  const total = data.getUint16(5, true);
  const avail = Math.max(0, Math.min(total, Math.floor((length - header) / entry)));
  const registrants: NvmeRegistrant[] = [];
  for (let i = 0; i < avail; i++) {
    const base = header + i * entry;
    const bytes = (at: number, n: number) => new Uint8Array(data.buffer, data.byteOffset + base + at, n);
    registrants.push({
      key: data.getBigUint64(base + (extended ? 8 : 16), true),
      holder: (data.getUint8(base + 2) & 1) === 1,
      controllerId: data.getUint16(base, true),
      hostId: extended ? hex(bytes(16, 16)) : hex(bytes(8, 8)),
    });
  }
  return {
    generation,
    type: rtype === 0 ? null : (reservationTypeFromCode(rtype) ?? null),
    registrants,
    total,
  };
}
