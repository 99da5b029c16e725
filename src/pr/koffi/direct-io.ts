/**
 * One O_DIRECT read or write of 4 KiB through the kernel's normal data path, to show
 * what a reservation does to an initiator: 'refused' is EBADE, the errno the block
 * layer returns for a reservation conflict (BLK_STS_RESV_CONFLICT). Used by the kernel
 * contract suite and the demo on real devices.
 */
import { ConflictError } from '../errors.js';
import * as abi from './abi.js';
import { classifyErrno, ERRNO } from './classify.js';
import { loadLibc } from './libc.js';

const BLOCK = 4096;

async function directIo(path: string, write: boolean, offset: number): Promise<'ok' | 'refused'> {
  const libc = loadLibc();
  const op = write ? 'write' : 'read';
  const fd = await libc.open(path, (write ? abi.O_RDWR : abi.O_RDONLY) | abi.O_DIRECT | abi.O_CLOEXEC);
  if (fd.ret < 0) throw classifyErrno(fd.errno, { op, device: path });
  const buf = libc.alloc(BLOCK, BLOCK);
  try {
    if (write) buf.bytes.fill(0xab);
    const r = write
      ? await libc.pwrite(fd.ret, buf.ptr, BLOCK, offset)
      : await libc.pread(fd.ret, buf.ptr, BLOCK, offset);
    if (r.ret === BLOCK) return 'ok';
    if (r.ret < 0 && r.errno === ERRNO.EBADE) return 'refused';
    if (r.ret < 0) throw classifyErrno(r.errno, { op, device: path });
    throw new ConflictError(`${op}: short ${op} of ${r.ret} bytes`, { op, device: path });
  } finally {
    buf.free();
    await libc.close(fd.ret);
  }
}

/** One aligned 4 KiB O_DIRECT write at `offset`: 'refused' when the reservation forbids it. */
export function directWrite(path: string, offset = 0): Promise<'ok' | 'refused'> {
  return directIo(path, true, offset);
}

/** One aligned 4 KiB O_DIRECT read at `offset`: 'refused' when the reservation forbids it. */
export function directRead(path: string, offset = 0): Promise<'ok' | 'refused'> {
  return directIo(path, false, offset);
}
