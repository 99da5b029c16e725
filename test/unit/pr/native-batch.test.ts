/**
 * The shared-memory form of a batch (native-batch.ts): a request decoded by the thread is
 * the request the executor encoded, and an answer read back is the reply the call gave.
 */
import { describe, expect, it } from 'vitest';
import { FakeLibc } from '../../../src/pr/koffi/fake-libc.js';
import {
  answerOf,
  CALL_DONE,
  CALL_TAKEN,
  encodeBatch,
  requestOf,
  runNativeCalls,
} from '../../../src/pr/koffi/native-batch.js';
import type { NativeRequest } from '../../../src/pr/koffi/native-call.js';

const bytes = (...b: number[]) => Uint8Array.from(b);

const REQS: NativeRequest[] = [
  {
    kind: 'ioctl',
    fd: 3,
    request: 0xc0107ace, // above 2^31: kept as the unsigned request number
    arg: bytes(1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0),
    pointers: [{ offset: 8, size: 32 }],
  },
  { kind: 'ioctl', fd: 4, request: 0x4e40, arg: null, pointers: [] },
  {
    kind: 'ioctl',
    fd: 5,
    request: 0x2285,
    arg: new Uint8Array(88),
    pointers: [
      { offset: 16, size: 64 },
      { offset: 24, size: 16, in: bytes(0x5e, 0, 0, 0, 0, 0, 0, 0, 0, 0x40) },
    ],
  },
  { kind: 'read', fd: 6, size: 512, offset: 2 ** 40, align: 4096 },
  { kind: 'read', fd: 7, size: 1 },
  { kind: 'write', fd: 8, data: bytes(9, 8, 7), offset: 0 },
];

describe('a batch in shared memory', () => {
  it('each request encoded -> decoded the same (ioctl with and without argument and sub-buffers, read, write, 64-bit offsets)', () => {
    const b = encodeBatch(REQS);
    const plain = (r: NativeRequest) =>
      JSON.parse(JSON.stringify(r, (_k, v) => (v instanceof Uint8Array ? [...v] : v)));
    for (let i = 0; i < REQS.length; i++) expect(plain(requestOf(b, i))).toEqual(plain(REQS[i]!));
  });

  it('open and close cannot be batched', () => {
    expect(() => encodeBatch([{ kind: 'close', fd: 3 }])).toThrow(/cannot be batched/);
  });

  it('a chunk run on a fake libc -> each answer read back as the call left its buffers; a call taken back is never run', async () => {
    const libc = new FakeLibc((c) => {
      if (c.kind === 'ioctl' && c.request === 0xc0107ace) {
        c.arg[0] = 0xaa;
        c.deref(8).fill(0x11);
      }
      if (c.kind === 'read') return { ret: 3, errno: 0 };
      return { ret: c.fd === 4 ? -1 : 0, errno: c.fd === 4 ? 25 : 0 };
    });
    const fds = new Map<number, number>();
    for (const r of REQS) if ('fd' in r) fds.set(r.fd, (await libc.open(`/dev/fd${r.fd}`, 2)).ret);
    const reqs = REQS.map((r) => ('fd' in r ? { ...r, fd: fds.get(r.fd)! } : r)) as NativeRequest[];
    const b = encodeBatch(reqs);
    const claims = new Int32Array(new SharedArrayBuffer(4 * reqs.length));
    claims[4] = CALL_TAKEN;
    let rings = 0;
    await runNativeCalls({ batch: b, indices: Int32Array.from(reqs.keys()), claims }, libc, {
      ring: () => void (rings++, Atomics.store(b.bell, 0, 0)),
      failed: (k, e) => {
        throw new Error(`call ${k} failed: ${String(e)}`);
      },
    });
    expect([...claims]).toEqual([CALL_DONE, CALL_DONE, CALL_DONE, CALL_DONE, CALL_TAKEN, CALL_DONE]);
    expect(rings).toBe(5);
    expect(libc.calls.map((c) => c.kind)).toEqual(['ioctl', 'ioctl', 'ioctl', 'read', 'write']);
    const first = answerOf(b, 0, reqs[0]!);
    expect(first.ret).toBe(0);
    expect(first.arg![0]).toBe(0xaa);
    expect([...first.arg!.subarray(8)]).toEqual(Array(8).fill(0)); // the native address is not handed out
    expect([...first.pointers![0]!]).toEqual(Array(32).fill(0x11));
    expect(answerOf(b, 1, reqs[1]!)).toEqual({ ret: -1, errno: 25 });
    expect(answerOf(b, 3, reqs[3]!).arg).toHaveLength(3);
    expect(libc.liveBlocks).toBe(0);
    expect(libc.violations).toEqual([]);
  });
});
