import { describe, expect, it } from 'vitest';
import {
  parseNvmeReport,
  parsePrinReadKeys,
  parsePrinReadReservation,
  parseSense,
  prinCdb,
} from '../../../src/pr/koffi/parse.js';

describe('SCSI PERSISTENT RESERVE IN', () => {
  it('CDB -> opcode 0x5e, service action, big-endian allocation length', () => {
    expect([...prinCdb(1, 0x1234)]).toEqual([0x5e, 1, 0, 0, 0, 0, 0, 0x12, 0x34, 0]);
  });

  it('READ KEYS data -> generation and keys (big-endian), total when truncated', () => {
    const v = new DataView(new ArrayBuffer(24));
    v.setUint32(0, 7, false);
    v.setUint32(4, 24, false); // three keys on the device
    v.setBigUint64(8, 0xaaaa000000000001n, false);
    v.setBigUint64(16, 0xbbbb000000000002n, false);
    expect(parsePrinReadKeys(v, 24)).toEqual({
      generation: 7,
      keys: [0xaaaa000000000001n, 0xbbbb000000000002n],
      total: 3,
    });
  });

  it('READ RESERVATION with a WE-RO holder -> key and type', () => {
    const v = new DataView(new ArrayBuffer(24));
    v.setUint32(0, 3, false);
    v.setUint32(4, 16, false);
    v.setBigUint64(8, 0xbbbb000000000002n, false);
    v.setUint8(21, 0x05);
    expect(parsePrinReadReservation(v)).toEqual({
      generation: 3,
      key: 0xbbbb000000000002n,
      type: 'write-exclusive-reg-only',
    });
  });

  it('READ RESERVATION with none -> nulls', () => {
    const v = new DataView(new ArrayBuffer(24));
    v.setUint32(0, 3, false);
    expect(parsePrinReadReservation(v)).toEqual({ generation: 3, key: null, type: null });
  });

  it('fixed and descriptor sense -> key and ASC', () => {
    const fixed = new Uint8Array(18);
    fixed[0] = 0x70;
    fixed[2] = 0x05;
    fixed[12] = 0x20;
    expect(parseSense(fixed, 18)).toEqual({ key: 5, asc: 0x20 });
    expect(parseSense(Uint8Array.from([0x72, 0x06, 0x2a, 0x05]), 4)).toEqual({ key: 6, asc: 0x2a });
  });
});

describe('NVMe Reservation Report (extended)', () => {
  it('two registrants, the second holds WE-RO -> keys in order, holder flagged, LE fields', () => {
    const v = new DataView(new ArrayBuffer(64 + 2 * 64));
    v.setUint32(0, 9, true);
    v.setUint8(4, 3);
    v.setUint16(5, 2, true);
    v.setBigUint64(64 + 8, 0xaaaa000000000001n, true);
    v.setUint8(128 + 2, 1);
    v.setBigUint64(128 + 8, 0xbbbb000000000002n, true);
    expect(parseNvmeReport(v, 192)).toEqual({
      generation: 9,
      type: 'write-exclusive-reg-only',
      registrants: [
        { key: 0xaaaa000000000001n, holder: false },
        { key: 0xbbbb000000000002n, holder: true },
      ],
      total: 2,
    });
  });
});
