/**
 * A fake libc for the native executor (`inProcessBackend(new FakeLibc(device))`): calls
 * run in-process, against fake memory and fake fds, and the test decides what each
 * system call does through `device` (answer now, later, never, write results into the
 * argument, fail with an errno). It records every call and every ownership violation:
 * memory freed while a running call holds it, memory used after it was freed, a call
 * or close on an fd that is closed or has another call running. Used by the unit tests
 * and the device benchmark; never by production code.
 */
import type { CallLibc, SyscallResult } from './native-call.js';

/** One system call as the fake device sees it. */
export interface FakeCall {
  readonly seq: number;
  readonly kind: 'ioctl' | 'read' | 'write';
  readonly fd: number;
  /** The path the fd was opened with. */
  readonly path: string;
  /** ioctl request number (0 for read/write). */
  readonly request: number;
  /** The argument as the kernel sees it: live memory, writes are what the call returns. */
  readonly arg: Uint8Array;
  /** The sub-buffer whose address is stored at `offset` in the argument (live memory). */
  deref(offset: number): Uint8Array;
  /** Addresses of the blocks this call holds while it runs. */
  readonly held: readonly bigint[];
}

export type FakeDevice = (call: FakeCall) => SyscallResult | Promise<SyscallResult>;

interface Block {
  bytes: Uint8Array;
  freed: boolean;
}

export class FakeLibc implements CallLibc {
  /** Every ioctl/read/write, in start order. */
  readonly calls: FakeCall[] = [];
  /** Ownership and fd violations seen; a correct executor leaves this empty. */
  readonly violations: string[] = [];
  /** fds closed, in order. */
  readonly closed: number[] = [];
  /** Runs before each open: may delay it, or fail it by answering a negative ret. */
  openHook: ((path: string) => Promise<SyscallResult | undefined> | SyscallResult | undefined) | undefined;
  readonly #device: FakeDevice;
  readonly #blocks = new Map<bigint, Block>();
  readonly #fds = new Map<number, string>();
  /** fd -> running calls on it. */
  readonly #running = new Map<number, number>();
  /** Addresses held by running calls -> how many calls hold them. */
  readonly #held = new Map<bigint, number>();
  #nextAddr = 0x10000n;
  #nextFd = 3;

  constructor(device: FakeDevice) {
    this.#device = device;
  }

  /** Blocks allocated and not yet freed. */
  get liveBlocks(): number {
    let n = 0;
    for (const b of this.#blocks.values()) if (!b.freed) n++;
    return n;
  }
  /** fds open now. */
  get openFds(): number[] {
    return [...this.#fds.keys()];
  }

  alloc(size: number, align: number): bigint {
    const a = BigInt(align);
    const addr = ((this.#nextAddr + a - 1n) / a) * a;
    // Never reuse an address: a use after free then shows as a violation, not as
    // silently reading someone else's block.
    this.#nextAddr = addr + BigInt(size) + 64n;
    this.#blocks.set(addr, { bytes: new Uint8Array(size), freed: false });
    return addr;
  }
  free(ptr: bigint): void {
    const b = this.#blocks.get(ptr);
    if (!b || b.freed) {
      this.violations.push(`free of unknown or freed block 0x${ptr.toString(16)}`);
      return;
    }
    if (this.#held.has(ptr))
      this.violations.push(`free of block 0x${ptr.toString(16)} held by a running call`);
    b.freed = true;
  }
  poke(ptr: bigint, bytes: Uint8Array): void {
    this.#block(ptr, 'write').set(bytes);
  }
  peek(ptr: bigint, size: number): Uint8Array {
    return this.#block(ptr, 'read').slice(0, size);
  }
  view(ptr: bigint, size: number): Uint8Array {
    return this.#block(ptr, 'view').subarray(0, size);
  }

  async open(path: string, _flags: number): Promise<SyscallResult> {
    const hooked = await this.openHook?.(path);
    if (hooked && hooked.ret < 0) return hooked;
    const fd = this.#nextFd++;
    this.#fds.set(fd, path);
    return { ret: fd, errno: 0 };
  }
  close(fd: number): SyscallResult {
    if (!this.#fds.has(fd)) {
      this.violations.push(`close of fd ${fd} that is not open`);
      return { ret: -1, errno: 9 };
    }
    if (this.#running.get(fd)) this.violations.push(`close of fd ${fd} while a call runs on it`);
    this.#fds.delete(fd);
    this.closed.push(fd);
    return { ret: 0, errno: 0 };
  }
  ioctl(fd: number, request: number, arg: bigint): Promise<SyscallResult> {
    return this.#call('ioctl', fd, request, arg);
  }
  read(fd: number, buf: bigint): Promise<SyscallResult> {
    return this.#call('read', fd, 0, buf);
  }
  write(fd: number, buf: bigint): Promise<SyscallResult> {
    return this.#call('write', fd, 0, buf);
  }

  #block(ptr: bigint, what: string): Uint8Array {
    const b = this.#blocks.get(ptr);
    if (!b) throw new Error(`fake libc: ${what} of unknown address 0x${ptr.toString(16)}`);
    if (b.freed) this.violations.push(`${what} of freed block 0x${ptr.toString(16)}`);
    return b.bytes;
  }

  async #call(kind: FakeCall['kind'], fd: number, request: number, argPtr: bigint): Promise<SyscallResult> {
    const path = this.#fds.get(fd);
    if (path === undefined) {
      this.violations.push(`${kind} on fd ${fd} that is not open`);
      return { ret: -1, errno: 9 };
    }
    if (this.#running.get(fd)) this.violations.push(`${kind} on fd ${fd} while another call runs on it`);
    const arg = argPtr === 0n ? new Uint8Array(0) : this.#block(argPtr, kind);
    // The call holds its argument and every live block the argument points to.
    const held = argPtr === 0n ? [] : [argPtr];
    const view = new DataView(arg.buffer, arg.byteOffset, arg.byteLength);
    for (let o = 0; o + 8 <= arg.length; o += 8) {
      const p = view.getBigUint64(o, true);
      const b = this.#blocks.get(p);
      if (b && !b.freed) held.push(p);
    }
    const call: FakeCall = {
      seq: this.calls.length,
      kind,
      fd,
      path,
      request,
      arg,
      held,
      deref: (offset) => this.#block(view.getBigUint64(offset, true), 'deref'),
    };
    this.calls.push(call);
    for (const p of held) this.#held.set(p, (this.#held.get(p) ?? 0) + 1);
    this.#running.set(fd, (this.#running.get(fd) ?? 0) + 1);
    try {
      return await this.#device(call);
    } finally {
      this.#running.set(fd, this.#running.get(fd)! - 1);
      for (const p of held) {
        const n = this.#held.get(p)! - 1;
        if (n === 0) this.#held.delete(p);
        else this.#held.set(p, n);
      }
    }
  }
}

/** A promise with its resolver outside: a fake call that returns when the test says. */
export function gate<T = SyscallResult>(): { promise: Promise<T>; open(v: T): void } {
  let open!: (v: T) => void;
  const promise = new Promise<T>((r) => (open = r));
  return { promise, open };
}
