import { describe, expect, it } from 'vitest';
import {
  parseNvmeReport,
  parsePrinReadFullStatus,
  parsePrinReadKeys,
  parsePrinReadReservation,
  parseSense,
  parseTransportId,
  prinCdb,
} from '../../../src/pr/koffi/parse.js';
import { fullStatusData, iscsiTransportId } from './full-status-bytes.js';

const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

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

describe('SCSI TransportID (SPC-4 7.6.4)', () => {
  it('iSCSI format 00b -> the name, NUL padding dropped', () => {
    expect(parseTransportId(iscsiTransportId('iqn.2026-11.io.prfence:host-1'))).toEqual({
      transport: 'iscsi',
      id: 'iqn.2026-11.io.prfence:host-1',
    });
  });

  it('iSCSI format 01b -> the name and the ISID apart', () => {
    expect(parseTransportId(iscsiTransportId('iqn.2026-11.io.prfence:host-2', '23D000000002'))).toEqual({
      transport: 'iscsi',
      id: 'iqn.2026-11.io.prfence:host-2',
      isid: '23d000000002',
    });
  });

  it('FC (protocol 0) -> the N_Port name, bytes 8-15, as 16 hex digits', () => {
    const b = new Uint8Array(24);
    b.set([0x21, 0x00, 0x00, 0x24, 0xff, 0x31, 0x2a, 0x0c], 8);
    expect(parseTransportId(b)).toEqual({ transport: 'fc', id: '21000024ff312a0c' });
  });

  it('SAS (protocol 6) -> the SAS address, bytes 4-11, as 16 hex digits', () => {
    const b = new Uint8Array(24);
    b[0] = 0x06;
    b.set([0x50, 0x06, 0x05, 0xb0, 0x00, 0xc0, 0xff, 0xee], 4);
    expect(parseTransportId(b)).toEqual({ transport: 'sas', id: '500605b000c0ffee' });
  });

  it('another protocol (SRP, 4) -> the whole TransportID in hex with its protocol id', () => {
    const b = new Uint8Array(24);
    b[0] = 0x04;
    b[8] = 0xfe;
    b[23] = 0x01;
    expect(parseTransportId(b)).toEqual({
      transport: 'other',
      id: '04000000000000' + '00fe' + '00'.repeat(14) + '01',
      protocolId: 4,
    });
  });
});

describe('SCSI READ FULL STATUS (SPC-4 6.16.5)', () => {
  const entries = [
    {
      key: 0xaaaa000000000001n,
      holder: true,
      scopeType: 0x05,
      port: 1,
      tid: iscsiTransportId('iqn.2026-11.io.prfence:host-1', '23d000000001'),
    },
    {
      key: 0xbbbb000000000002n,
      port: 2,
      allTgPt: true,
      tid: iscsiTransportId('iqn.2026-11.io.prfence:host-2'),
    },
  ];

  it('two descriptors -> keys, R_HOLDER with its SCOPE/TYPE, ALL_TG_PT, relative target port, initiators', () => {
    const b = fullStatusData(5, entries);
    expect(parsePrinReadFullStatus(dv(b), b.length)).toEqual({
      generation: 5,
      complete: true,
      needed: b.length,
      registrants: [
        {
          key: 0xaaaa000000000001n,
          holder: true,
          type: 'write-exclusive-reg-only',
          initiator: {
            transport: 'iscsi',
            id: 'iqn.2026-11.io.prfence:host-1',
            isid: '23d000000001',
            relativeTargetPort: 1,
            allTargetPorts: false,
          },
        },
        {
          key: 0xbbbb000000000002n,
          holder: false,
          type: null,
          initiator: {
            transport: 'iscsi',
            id: 'iqn.2026-11.io.prfence:host-2',
            relativeTargetPort: 2,
            allTargetPorts: true,
          },
        },
      ],
    });
  });

  it('ADDITIONAL LENGTH beyond what was received -> only whole descriptors, incomplete, the bytes needed', () => {
    const b = fullStatusData(5, entries);
    const cut = 8 + 24 + entries[0]!.tid.length + 10; // into the second descriptor
    const r = parsePrinReadFullStatus(dv(b.slice(0, cut)), cut);
    expect(r.registrants.map((x) => x.key)).toEqual([0xaaaa000000000001n]);
    expect(r).toMatchObject({ complete: false, needed: b.length });
  });

  it('nothing registered -> no descriptors, complete', () => {
    const b = fullStatusData(0, []);
    expect(parsePrinReadFullStatus(dv(b), 2048)).toEqual({
      generation: 0,
      registrants: [],
      complete: true,
      needed: 8,
    });
  });
});

describe('NVMe Reservation Report (non-extended, EDS=0)', () => {
  it('24-byte header and entries: CNTLID, RCSTS, 64-bit HOSTID, then RKEY', () => {
    const v = new DataView(new ArrayBuffer(24 + 2 * 24));
    v.setUint32(0, 4, true);
    v.setUint8(4, 1);
    v.setUint16(5, 2, true);
    v.setUint16(24, 7, true);
    v.setUint8(24 + 2, 1);
    v.setBigUint64(24 + 8, 0x0102030405060708n, false); // HOSTID bytes as sent
    v.setBigUint64(24 + 16, 0xaaaa000000000001n, true);
    v.setUint16(48, 9, true);
    v.setBigUint64(48 + 8, 0x1112131415161718n, false);
    v.setBigUint64(48 + 16, 0xbbbb000000000002n, true);
    expect(parseNvmeReport(v, 72, false)).toEqual({
      generation: 4,
      type: 'write-exclusive',
      registrants: [
        { key: 0xaaaa000000000001n, holder: true, controllerId: 7, hostId: '0102030405060708' },
        { key: 0xbbbb000000000002n, holder: false, controllerId: 9, hostId: '1112131415161718' },
      ],
      total: 2,
    });
  });
});

describe('NVMe Reservation Report (extended)', () => {
  it('two registrants, the second holds WE-RO -> keys in order, holder flagged, LE fields', () => {
    const v = new DataView(new ArrayBuffer(64 + 2 * 64));
    v.setUint32(0, 9, true);
    v.setUint8(4, 3);
    v.setUint16(5, 2, true);
    v.setUint16(64, 1, true);
    v.setBigUint64(64 + 8, 0xaaaa000000000001n, true);
    v.setBigUint64(64 + 16, 0x1111111100004000n, false); // 128-bit HOSTID (a UUID) as sent
    v.setBigUint64(64 + 24, 0x8000000000000001n, false);
    v.setUint16(128, 2, true);
    v.setUint8(128 + 2, 1);
    v.setBigUint64(128 + 8, 0xbbbb000000000002n, true);
    expect(parseNvmeReport(v, 192)).toEqual({
      generation: 9,
      type: 'write-exclusive-reg-only',
      registrants: [
        {
          key: 0xaaaa000000000001n,
          holder: false,
          controllerId: 1,
          hostId: '11111111000040008000000000000001',
        },
        { key: 0xbbbb000000000002n, holder: true, controllerId: 2, hostId: '0'.repeat(32) },
      ],
      total: 2,
    });
  });
});
