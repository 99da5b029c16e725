/** Hand-built READ FULL STATUS parameter data, for the parser and fake-device tests. */

/** An iSCSI TransportID (SPC-4 7.6.4.6): format 00b name, or 01b "name,i,0xISID"; NUL padded to 4. */
export function iscsiTransportId(name: string, isid?: string): Uint8Array {
  const text = new TextEncoder().encode(isid === undefined ? name : `${name},i,0x${isid}`);
  const field = Math.ceil((text.length + 1) / 4) * 4;
  const b = new Uint8Array(4 + field);
  b[0] = (isid === undefined ? 0x00 : 0x40) | 0x05;
  b[2] = field >> 8;
  b[3] = field & 0xff;
  b.set(text, 4);
  return b;
}

/** A READ FULL STATUS answer: header and one descriptor per entry, big-endian. */
export function fullStatusData(
  generation: number,
  entries: {
    key: bigint;
    holder?: boolean;
    scopeType?: number;
    port?: number;
    allTgPt?: boolean;
    tid: Uint8Array;
  }[],
): Uint8Array {
  const length = entries.reduce((n, e) => n + 24 + e.tid.length, 0);
  const b = new Uint8Array(8 + length);
  const v = new DataView(b.buffer);
  v.setUint32(0, generation, false);
  v.setUint32(4, length, false);
  let off = 8;
  for (const e of entries) {
    v.setBigUint64(off, e.key, false);
    v.setUint8(off + 12, (e.allTgPt ? 0x02 : 0) | (e.holder ? 0x01 : 0));
    v.setUint8(off + 13, e.scopeType ?? 0);
    v.setUint16(off + 18, e.port ?? 1, false);
    v.setUint32(off + 20, e.tid.length, false);
    b.set(e.tid, off + 24);
    off += 24 + e.tid.length;
  }
  return b;
}
