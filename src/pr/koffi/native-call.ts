/**
 * One native call as a message, and how a thread runs it.
 *
 * The main thread never holds native memory: it sends a request whose buffers are
 * plain bytes; the thread that runs the call allocates the native memory, patches the
 * nested pointers, makes the system call, copies every buffer back into the reply and
 * frees the memory. A buffer therefore belongs to its call until the kernel returns it,
 * by construction (STYLE "Native calls"), however late that is.
 *
 * This module is loaded by the worker thread with Node's type stripping (no build
 * step in tests): runtime imports only from node: modules; types with `import type`.
 */

/** A sub-buffer of an ioctl argument: allocated by the thread, its address written as a u64 at `offset`. */
export interface NativePointer {
  /** Byte offset of the pointer field in the argument (little-endian u64). */
  readonly offset: number;
  /** Bytes to allocate. */
  readonly size: number;
  /** Initial content (copied in, at most `size` bytes); zeroed otherwise. */
  readonly in?: Uint8Array;
}

/** A native call, with everything it needs copied into the message. */
export type NativeRequest =
  | { readonly kind: 'open'; readonly path: string; readonly flags: number }
  | { readonly kind: 'close'; readonly fd: number }
  | {
      readonly kind: 'ioctl';
      readonly fd: number;
      readonly request: number;
      /** The argument struct (copied in and back out); null passes a NULL pointer. */
      readonly arg: Uint8Array | null;
      readonly pointers?: readonly NativePointer[];
    }
  | {
      /** read(2), or pread(2) when `offset` is set, into a buffer aligned to `align` (O_DIRECT). */
      readonly kind: 'read';
      readonly fd: number;
      readonly size: number;
      readonly offset?: number;
      readonly align?: number;
    }
  | {
      /** write(2), or pwrite(2) when `offset` is set, from a buffer aligned to `align`. */
      readonly kind: 'write';
      readonly fd: number;
      readonly data: Uint8Array;
      readonly offset?: number;
      readonly align?: number;
    };

/** The answer to one call: the return value, errno when it is negative, and the buffers after the call. */
export interface NativeReply {
  readonly ret: number;
  readonly errno: number;
  /** ioctl: the argument after the call; read: the bytes read (ret of them). */
  readonly arg?: Uint8Array;
  /** ioctl: each sub-buffer after the call, in request order. */
  readonly pointers?: readonly Uint8Array[];
}

/** What a system call returns: synchronous in a worker thread, maybe a promise in a fake. */
export interface SyscallResult {
  ret: number;
  errno: number;
}
type Maybe<T> = T | Promise<T>;

/** The libc a call runs against: koffi's in a worker thread (libc.ts), or a fake (fake-libc.ts). */
export interface CallLibc {
  /** Allocates `size` zeroed bytes aligned to `align`; 0n when out of memory. */
  alloc(size: number, align: number): bigint;
  free(ptr: bigint): void;
  /** Copies bytes into native memory. */
  poke(ptr: bigint, bytes: Uint8Array): void;
  /** Copies `size` bytes out of native memory. */
  peek(ptr: bigint, size: number): Uint8Array;
  /** A live view of `size` bytes of native memory (no copy), for a block reused call after call. */
  view(ptr: bigint, size: number): Uint8Array;
  open(path: string, flags: number): Maybe<SyscallResult>;
  close(fd: number): Maybe<SyscallResult>;
  ioctl(fd: number, request: number, arg: bigint): Maybe<SyscallResult>;
  read(fd: number, buf: bigint, size: number, offset?: number): Maybe<SyscallResult>;
  write(fd: number, buf: bigint, size: number, offset?: number): Maybe<SyscallResult>;
}

const ENOMEM = 12;

/** A native block one call uses. */
export interface NativeBlock {
  readonly ptr: bigint;
  write(bytes: Uint8Array): void;
  read(size: number): Uint8Array;
}

/**
 * Native memory for calls: `block(k, ...)` is the call's k-th buffer (zeroed), null when
 * out of memory; `release()` runs once the system call returned, never before.
 */
export interface CallMemory {
  block(k: number, size: number, align: number): NativeBlock | null;
  release(): void;
}

/** Blocks allocated for one call and freed after it (a single call). */
function callMemory(libc: CallLibc): CallMemory {
  const held: bigint[] = [];
  return {
    block(_k, size, align) {
      const ptr = libc.alloc(size, align);
      if (ptr === 0n) return null;
      held.push(ptr);
      return { ptr, write: (b) => libc.poke(ptr, b), read: (n) => libc.peek(ptr, n) };
    },
    release() {
      for (const p of held.splice(0)) libc.free(p);
    },
  };
}

/**
 * Blocks one thread reuses call after call (a chunk of a batch): block k of a call is block
 * k of the previous call, zeroed, reallocated only when too small, read and written through
 * a view made once. They belong to the thread: reused only after the previous call
 * returned, freed by `dispose()` once the thread is through with the chunk. A reply read
 * from them holds views of the blocks, valid until the thread's next call: the caller
 * copies it out first (native-batch.ts).
 */
export function scratchMemory(libc: CallLibc): CallMemory & { dispose(): void } {
  const blocks: ((NativeBlock & { size: number; align: number; view: Uint8Array }) | undefined)[] = [];
  return {
    block(k, size, align) {
      let b = blocks[k];
      if (b && b.size >= size && b.align >= align) {
        b.view.fill(0, 0, size);
        return b;
      }
      if (b) libc.free(b.ptr);
      blocks[k] = undefined;
      const ptr = libc.alloc(size, align);
      if (ptr === 0n) return null;
      const view = libc.view(ptr, size);
      b = { ptr, size, align, view, write: (x) => view.set(x), read: (n) => view.subarray(0, n) };
      blocks[k] = b;
      return b;
    },
    release() {},
    dispose() {
      for (const b of blocks.splice(0)) if (b) libc.free(b.ptr);
    },
  };
}

/**
 * Runs one request against `libc`: allocate, copy in, call, copy out, free. Memory is
 * freed only after the system call returned. Never throws for a failed allocation:
 * that is `{ret: -1, errno: ENOMEM}` (nothing was sent).
 */
export async function runNativeCall(
  req: NativeRequest,
  libc: CallLibc,
  mem: CallMemory = callMemory(libc),
): Promise<NativeReply> {
  switch (req.kind) {
    case 'open':
      return { ...(await libc.open(req.path, req.flags)) };
    case 'close':
      return { ...(await libc.close(req.fd)) };
    case 'ioctl':
      return runIoctl(req, libc, mem);
    case 'read': {
      const buf = mem.block(0, Math.max(req.size, 1), req.align ?? 16);
      if (!buf) return { ret: -1, errno: ENOMEM };
      try {
        const r = await libc.read(req.fd, buf.ptr, req.size, req.offset);
        return { ...r, arg: buf.read(Math.max(0, Math.min(r.ret, req.size))) };
      } finally {
        mem.release();
      }
    }
    case 'write': {
      const buf = mem.block(0, Math.max(req.data.length, 1), req.align ?? 16);
      if (!buf) return { ret: -1, errno: ENOMEM };
      try {
        buf.write(req.data);
        return { ...(await libc.write(req.fd, buf.ptr, req.data.length, req.offset)) };
      } finally {
        mem.release();
      }
    }
  }
}

async function runIoctl(
  req: Extract<NativeRequest, { kind: 'ioctl' }>,
  libc: CallLibc,
  mem: CallMemory,
): Promise<NativeReply> {
  try {
    if (req.arg === null) return { ...(await libc.ioctl(req.fd, req.request, 0n)) };
    const arg = req.arg.slice();
    const view = new DataView(arg.buffer);
    const subs: NativeBlock[] = [];
    for (const p of req.pointers ?? []) {
      const b = mem.block(subs.length + 1, Math.max(p.size, 1), 16);
      if (!b) return { ret: -1, errno: ENOMEM };
      if (p.in) b.write(p.in.subarray(0, p.size));
      view.setBigUint64(p.offset, b.ptr, true);
      subs.push(b);
    }
    const argBlock = mem.block(0, Math.max(arg.length, 1), 16);
    if (!argBlock) return { ret: -1, errno: ENOMEM };
    argBlock.write(arg);
    const r = await libc.ioctl(req.fd, req.request, argBlock.ptr);
    // The kernel is done with every buffer: copy them out, then release (finally).
    const after = argBlock.read(arg.length);
    const afterView = new DataView(after.buffer, after.byteOffset, after.byteLength);
    // Put the caller's view back: addresses of native memory mean nothing to it.
    const pointers = req.pointers ?? [];
    for (const p of pointers) afterView.setBigUint64(p.offset, 0n, true);
    return { ...r, arg: after, pointers: subs.map((b, i) => b.read(pointers[i]!.size)) };
  } finally {
    mem.release();
  }
}
