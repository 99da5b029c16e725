/**
 * One O_DIRECT read or write of 4 KiB through the kernel's normal data path, to show
 * what a reservation does to an initiator: 'refused' is EBADE, the errno the block
 * layer returns for a reservation conflict (BLK_STS_RESV_CONFLICT). Used by the kernel
 * contract suite and the demo on real devices. Runs on the native executor like every
 * other native call.
 */
import { ConflictError } from '../errors.js';
import * as abi from './abi.js';
import { classifyErrno, ERRNO } from './classify.js';
import { defaultNativeExecutor, type NativeExecutor } from './executor.js';

const BLOCK = 4096;

export interface DirectIoOptions {
  /** Default: the process-wide executor. */
  executor?: NativeExecutor;
  /** Time limit of each call (open, I/O), ms. Default 10 000. */
  timeoutMs?: number;
}

async function directIo(
  path: string,
  write: boolean,
  offset: number,
  opts: DirectIoOptions,
): Promise<'ok' | 'refused'> {
  const ex = opts.executor ?? defaultNativeExecutor();
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const op = write ? 'write' : 'read';
  const flags = (write ? abi.O_RDWR : abi.O_RDONLY) | abi.O_DIRECT | abi.O_CLOEXEC;
  const h = await ex.open(path, flags, { device: path, timeoutMs });
  try {
    const r = write
      ? await h.call(
          { kind: 'write', data: new Uint8Array(BLOCK).fill(0xab), offset, align: BLOCK },
          { op, timeoutMs },
        )
      : await h.call({ kind: 'read', size: BLOCK, offset, align: BLOCK }, { op, timeoutMs });
    if (r.ret === BLOCK) return 'ok';
    if (r.ret < 0 && r.errno === ERRNO.EBADE) return 'refused';
    if (r.ret < 0) throw classifyErrno(r.errno, { op, device: path });
    throw new ConflictError(`${op}: short ${op} of ${r.ret} bytes`, { op, device: path });
  } finally {
    await h.close(timeoutMs);
  }
}

/** One aligned 4 KiB O_DIRECT write at `offset`: 'refused' when the reservation forbids it. */
export function directWrite(path: string, offset = 0, opts: DirectIoOptions = {}): Promise<'ok' | 'refused'> {
  return directIo(path, true, offset, opts);
}

/** One aligned 4 KiB O_DIRECT read at `offset`: 'refused' when the reservation forbids it. */
export function directRead(path: string, offset = 0, opts: DirectIoOptions = {}): Promise<'ok' | 'refused'> {
  return directIo(path, false, offset, opts);
}
