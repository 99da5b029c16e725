/**
 * A batch of native calls in shared memory (SharedArrayBuffers): the requests, the answers,
 * the claims and the doorbell that the executor (executor.ts) and its threads
 * (native-worker.ts) share, so a chunk of hundreds of calls is one small message each way
 * instead of a structured-clone round trip per call.
 *
 * - Requests: encoded once by the executor (`encodeBatch`), decoded by the thread that runs
 *   the call into the same `NativeRequest` a single call gets (`requestOf`), and run by the
 *   same `runNativeCall`.
 * - Claims: one slot per call of a chunk. PENDING -> RUNNING and PENDING -> TAKEN only by
 *   compare-and-exchange: the thread running the chunk claims a call right before it; the
 *   executor takes a call back to move it to another thread or to fail it unsent at its
 *   limit. Whoever wins decides: a call is sent at most once, and one taken back was never
 *   sent. The thread then marks it DONE (its answer is written) or FAILED (the call threw;
 *   reported by message).
 * - Doorbell: a thread that wrote an answer wakes the executor unless a wake-up is already
 *   on its way; the executor clears the bell before it looks, so no answer is left unseen
 *   and none waits for the rest of its chunk.
 *
 * Loaded by the worker thread with Node's type stripping: relative imports name .ts files.
 */
import {
  runNativeCall,
  scratchMemory,
  type CallLibc,
  type NativeReply,
  type NativeRequest,
} from './native-call.ts';

export const CALL_PENDING = 0;
export const CALL_RUNNING = 1;
export const CALL_TAKEN = 2;
export const CALL_DONE = 3;
export const CALL_FAILED = 4;

/** Fields of one call in `SharedBatch.fields`. */
const F = {
  kind: 0,
  fd: 1,
  request: 2,
  /** ioctl: argument length, -1 for NULL; write: data length; read: size. */
  len: 3,
  /** ioctl: first pointer in `pointers` and how many. */
  ptrFirst: 4,
  ptrCount: 5,
  /** Where the call's bytes are in `bytes` (argument, initial contents, write data). */
  bytesAt: 6,
  /** read/write: buffer alignment, 0 for the default. */
  align: 7,
  /** Where the call's answer buffers go in `out`. */
  outAt: 8,
  /** 1 once the answer carries buffers (the thread writes it). */
  hasOut: 9,
  ret: 10,
  errno: 11,
  size: 12,
} as const;
const KINDS = ['ioctl', 'read', 'write'] as const;
/** Fields of one pointer in `SharedBatch.pointers`: offset, size, initial content length (-1: none). */
const P = 3;

/** One batch in shared memory (see the module doc): views of one SharedArrayBuffer. */
export interface SharedBatch {
  /** One slot: 1 while a wake-up is on its way to the executor. */
  readonly bell: Int32Array;
  /** One claim slot per call, for the chunks the batch is first split into (a chunk made later has its own). */
  readonly claims: Int32Array;
  /** F.size slots per call. */
  readonly fields: Int32Array;
  readonly pointers: Int32Array;
  /** read/write file offsets, NaN for none. */
  readonly offsets: Float64Array;
  readonly bytes: Uint8Array;
  /** Answer buffers: the argument then each sub-buffer (ioctl), the bytes read (read). */
  readonly out: Uint8Array;
}

/** Calls of a batch run by one thread, in order. */
export interface NativeChunk {
  readonly batch: SharedBatch;
  /** The batch index of each call of the chunk. */
  readonly indices: Int32Array;
  /** CALL_* per call of the chunk. */
  readonly claims: Int32Array;
}

/** What a thread running a chunk tells the executor besides the answers. */
export interface ChunkEvents {
  /** Answers are waiting (the doorbell). */
  ring(): void;
  /** Call `k` of the chunk threw (marked FAILED). */
  failed(k: number, e: Error): void;
}

/** The batch of `reqs` (calls on an fd: ioctl, read, write) in shared memory (executor side). */
export function encodeBatch(reqs: readonly NativeRequest[]): SharedBatch {
  let nPointers = 0;
  let nBytes = 0;
  let nOut = 0;
  for (const r of reqs) {
    if (r.kind === 'ioctl') {
      nBytes += r.arg?.length ?? 0;
      nOut += r.arg?.length ?? 0;
      for (const p of r.pointers ?? []) {
        nPointers++;
        nBytes += p.in?.length ?? 0;
        nOut += p.size;
      }
    } else if (r.kind === 'read') {
      nOut += r.size;
    } else if (r.kind === 'write') {
      nBytes += r.data.length;
    } else {
      throw new Error(`${r.kind} cannot be batched`);
    }
  }
  // One buffer (a message carrying it costs far less than one carrying six); the 8-byte
  // offsets first, then the 4-byte fields, then bytes.
  const n = reqs.length;
  const at8 = 0;
  const at4 = at8 + 8 * n;
  const sizes4 = [1, n, F.size * n, P * nPointers];
  const bytesAt = at4 + 4 * sizes4.reduce((a, x) => a + x, 0);
  const sab = new SharedArrayBuffer(bytesAt + nBytes + nOut);
  let o4 = at4;
  const int32 = (count: number) => {
    const v = new Int32Array(sab, o4, count);
    o4 += 4 * count;
    return v;
  };
  const b: SharedBatch = {
    offsets: new Float64Array(sab, at8, n),
    bell: int32(1),
    claims: int32(n),
    fields: int32(F.size * n),
    pointers: int32(P * nPointers),
    bytes: new Uint8Array(sab, bytesAt, nBytes),
    out: new Uint8Array(sab, bytesAt + nBytes, nOut),
  };
  let ptr = 0;
  let at = 0;
  let out = 0;
  const put = (bytes: Uint8Array) => {
    b.bytes.set(bytes, at);
    at += bytes.length;
  };
  for (let i = 0; i < reqs.length; i++) {
    const r = reqs[i]!;
    const f = i * F.size;
    b.fields[f + F.fd] = 'fd' in r ? r.fd : -1;
    b.fields[f + F.bytesAt] = at;
    b.fields[f + F.outAt] = out;
    b.offsets[i] = NaN;
    if (r.kind === 'ioctl') {
      b.fields[f + F.kind] = 0;
      b.fields[f + F.request] = r.request | 0; // the u32 request's bits; read back with >>> 0
      b.fields[f + F.len] = r.arg ? r.arg.length : -1;
      b.fields[f + F.ptrFirst] = ptr;
      b.fields[f + F.ptrCount] = r.pointers?.length ?? 0;
      if (r.arg) put(r.arg);
      out += r.arg?.length ?? 0;
      for (const p of r.pointers ?? []) {
        b.pointers[ptr * P] = p.offset;
        b.pointers[ptr * P + 1] = p.size;
        b.pointers[ptr * P + 2] = p.in ? p.in.length : -1;
        if (p.in) put(p.in);
        out += p.size;
        ptr++;
      }
    } else if (r.kind === 'read' || r.kind === 'write') {
      b.fields[f + F.kind] = r.kind === 'read' ? 1 : 2;
      b.fields[f + F.align] = r.align ?? 0;
      if (r.offset !== undefined) b.offsets[i] = r.offset;
      if (r.kind === 'read') {
        b.fields[f + F.len] = r.size;
        out += r.size;
      } else {
        b.fields[f + F.len] = r.data.length;
        put(r.data);
      }
    }
  }
  return b;
}

/** Call `i` of the batch as a request (thread side); its buffers are views of the shared bytes. */
export function requestOf(b: SharedBatch, i: number): NativeRequest {
  const f = i * F.size;
  const kind = KINDS[b.fields[f + F.kind]!]!;
  const fd = b.fields[f + F.fd]!;
  const len = b.fields[f + F.len]!;
  let at = b.fields[f + F.bytesAt]!;
  const take = (n: number) => b.bytes.subarray(at, (at += n));
  if (kind === 'ioctl') {
    const arg = len < 0 ? null : take(len);
    const first = b.fields[f + F.ptrFirst]!;
    const pointers = [];
    for (let k = first; k < first + b.fields[f + F.ptrCount]!; k++) {
      const inLen = b.pointers[k * P + 2]!;
      const p = { offset: b.pointers[k * P]!, size: b.pointers[k * P + 1]! };
      pointers.push(inLen < 0 ? p : { ...p, in: take(inLen) });
    }
    return { kind, fd, request: b.fields[f + F.request]! >>> 0, arg, pointers };
  }
  const offset = b.offsets[i]!;
  const align = b.fields[f + F.align]!;
  const opt = { ...(Number.isNaN(offset) ? {} : { offset }), ...(align ? { align } : {}) };
  return kind === 'read' ? { kind, fd, size: len, ...opt } : { kind, fd, data: take(len), ...opt };
}

/** Writes call `i`'s reply into the batch (thread side). */
function putAnswer(b: SharedBatch, i: number, reply: NativeReply): void {
  const f = i * F.size;
  b.fields[f + F.ret] = reply.ret;
  b.fields[f + F.errno] = reply.errno;
  b.fields[f + F.hasOut] = reply.arg ? 1 : 0;
  let at = b.fields[f + F.outAt]!;
  for (const x of reply.arg ? [reply.arg, ...(reply.pointers ?? [])] : []) {
    b.out.set(x, at);
    at += x.length;
  }
}

/**
 * Call `i`'s reply as `runNativeCall` returned it (executor side, once the call is DONE).
 * Its buffers are views of the batch's shared memory: written once by the thread that ran
 * the call, before DONE, never again.
 */
export function answerOf(b: SharedBatch, i: number, req: NativeRequest): NativeReply {
  const f = i * F.size;
  const ret = b.fields[f + F.ret]!;
  const errno = b.fields[f + F.errno]!;
  if (!b.fields[f + F.hasOut]) return { ret, errno };
  let at = b.fields[f + F.outAt]!;
  const take = (n: number) => b.out.subarray(at, (at += n));
  if (req.kind === 'ioctl') {
    const arg = take(req.arg?.length ?? 0);
    return { ret, errno, arg, pointers: (req.pointers ?? []).map((p) => take(p.size)) };
  }
  if (req.kind === 'read') return { ret, errno, arg: take(Math.max(0, Math.min(ret, req.size))) };
  return { ret, errno };
}

/**
 * Runs a chunk on this thread, in order: claims each call first (skips one the executor
 * took back), runs it as `runNativeCall` in native blocks reused from call to call
 * (`scratchMemory`), writes its answer, marks it DONE and rings the doorbell, all before the
 * next call starts, so a later call that hangs holds no earlier answer back. Resolves when
 * every call was run or skipped.
 */
export async function runNativeCalls(chunk: NativeChunk, libc: CallLibc, events: ChunkEvents): Promise<void> {
  const { batch, indices, claims } = chunk;
  const mem = scratchMemory(libc);
  try {
    for (let k = 0; k < indices.length; k++) {
      if (Atomics.compareExchange(claims, k, CALL_PENDING, CALL_RUNNING) !== CALL_PENDING) continue;
      const i = indices[k]!;
      try {
        putAnswer(batch, i, await runNativeCall(requestOf(batch, i), libc, mem));
      } catch (e) {
        Atomics.store(claims, k, CALL_FAILED);
        events.failed(k, e instanceof Error ? e : new Error(String(e)));
        continue;
      }
      Atomics.store(claims, k, CALL_DONE);
      if (Atomics.exchange(batch.bell, 0, 1) === 0) events.ring();
    }
  } finally {
    mem.dispose();
  }
}
