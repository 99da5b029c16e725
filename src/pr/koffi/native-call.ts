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
  open(path: string, flags: number): Maybe<SyscallResult>;
  close(fd: number): Maybe<SyscallResult>;
  ioctl(fd: number, request: number, arg: bigint): Maybe<SyscallResult>;
  read(fd: number, buf: bigint, size: number, offset?: number): Maybe<SyscallResult>;
  write(fd: number, buf: bigint, size: number, offset?: number): Maybe<SyscallResult>;
}

const ENOMEM = 12;

/**
 * Runs one request against `libc`: allocate, copy in, call, copy out, free. Memory is
 * freed only after the system call returned. Never throws for a failed allocation:
 * that is `{ret: -1, errno: ENOMEM}` (nothing was sent).
 */
export async function runNativeCall(req: NativeRequest, libc: CallLibc): Promise<NativeReply> {
  switch (req.kind) {
    case 'open':
      return { ...(await libc.open(req.path, req.flags)) };
    case 'close':
      return { ...(await libc.close(req.fd)) };
    case 'ioctl':
      return runIoctl(req, libc);
    case 'read': {
      const buf = libc.alloc(Math.max(req.size, 1), req.align ?? 16);
      if (buf === 0n) return { ret: -1, errno: ENOMEM };
      try {
        const r = await libc.read(req.fd, buf, req.size, req.offset);
        return { ...r, arg: libc.peek(buf, Math.max(0, Math.min(r.ret, req.size))) };
      } finally {
        libc.free(buf);
      }
    }
    case 'write': {
      const buf = libc.alloc(Math.max(req.data.length, 1), req.align ?? 16);
      if (buf === 0n) return { ret: -1, errno: ENOMEM };
      try {
        libc.poke(buf, req.data);
        return { ...(await libc.write(req.fd, buf, req.data.length, req.offset)) };
      } finally {
        libc.free(buf);
      }
    }
  }
}

async function runIoctl(
  req: Extract<NativeRequest, { kind: 'ioctl' }>,
  libc: CallLibc,
): Promise<NativeReply> {
  const held: bigint[] = [];
  try {
    if (req.arg === null) return { ...(await libc.ioctl(req.fd, req.request, 0n)) };
    const arg = req.arg.slice();
    const view = new DataView(arg.buffer);
    const subs: { ptr: bigint; size: number }[] = [];
    for (const p of req.pointers ?? []) {
      const ptr = libc.alloc(Math.max(p.size, 1), 16);
      if (ptr === 0n) return { ret: -1, errno: ENOMEM };
      held.push(ptr);
      if (p.in) libc.poke(ptr, p.in.subarray(0, p.size));
      view.setBigUint64(p.offset, ptr, true);
      subs.push({ ptr, size: p.size });
    }
    const argPtr = libc.alloc(Math.max(arg.length, 1), 16);
    if (argPtr === 0n) return { ret: -1, errno: ENOMEM };
    held.push(argPtr);
    libc.poke(argPtr, arg);
    const r = await libc.ioctl(req.fd, req.request, argPtr);
    // The kernel is done with every buffer: copy them out, then free (finally).
    const after = libc.peek(argPtr, arg.length);
    const afterView = new DataView(after.buffer);
    // Put the caller's view back: addresses of freed memory mean nothing to it.
    for (const p of req.pointers ?? []) afterView.setBigUint64(p.offset, 0n, true);
    return { ...r, arg: after, pointers: subs.map((s) => libc.peek(s.ptr, s.size)) };
  } finally {
    for (const p of held) libc.free(p);
  }
}
