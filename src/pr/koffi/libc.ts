/**
 * The only module that imports koffi: libc's open/close/ioctl/read/write and native
 * memory, called SYNCHRONOUSLY. Loaded only inside the native executor's worker threads
 * (native-worker.ts), never on the main thread, so a blocking call blocks one worker and
 * nothing else (not the event loop, not libuv's shared pool). One exception: `exitNow`,
 * the main thread's last call when a worker is stuck in the kernel.
 *
 * Loaded with Node's type stripping in tests: runtime imports only from packages and
 * node: modules.
 */
import koffi from 'koffi';
import type { CallLibc, SyscallResult } from './native-call.ts';

/** Loads libc through koffi (once per worker thread: each thread has its own module instance). */
export function loadLibc(): CallLibc {
  const lib = koffi.load('libc.so.6');
  // ioctl is variadic in glibc; declared with a fixed pointer argument, as the x86-64 and
  // aarch64 ABIs pass it in the same register either way.
  const open = lib.func('int open(const char *path, int flags)');
  const close = lib.func('int close(int fd)');
  const ioctl = lib.func('int ioctl(int fd, unsigned long request, void *arg)');
  const read = lib.func('long read(int fd, void *buf, size_t count)');
  const write = lib.func('long write(int fd, const void *buf, size_t count)');
  const pread = lib.func('long pread(int fd, void *buf, size_t count, long offset)');
  const pwrite = lib.func('long pwrite(int fd, const void *buf, size_t count, long offset)');
  const alignedAlloc = lib.func('void *aligned_alloc(size_t alignment, size_t size)');
  const free = lib.func('void free(void *ptr)');

  // errno is read right after the call, on the same thread.
  const result = (res: unknown): SyscallResult => {
    const ret = Number(res);
    return { ret, errno: ret < 0 ? koffi.errno() : 0 };
  };
  const bytesAt = (ptr: bigint, size: number) =>
    size === 0 ? new Uint8Array(0) : new Uint8Array(koffi.view(ptr, size));
  const sizes = new Map<bigint, number>();

  return {
    alloc(size, align) {
      const rounded = Math.ceil(size / align) * align;
      const ptr = BigInt(koffi.address(alignedAlloc(align, rounded)));
      if (ptr === 0n) return 0n;
      bytesAt(ptr, rounded).fill(0);
      sizes.set(ptr, rounded);
      return ptr;
    },
    free(ptr) {
      if (!sizes.delete(ptr)) return;
      free(ptr);
    },
    poke(ptr, bytes) {
      bytesAt(ptr, bytes.length).set(bytes);
    },
    peek(ptr, size) {
      return bytesAt(ptr, size).slice();
    },
    view: bytesAt,
    open: (path, flags) => result(open(path, flags)),
    close: (fd) => result(close(fd)),
    ioctl: (fd, request, arg) => result(ioctl(fd, request, arg === 0n ? null : arg)),
    read: (fd, buf, size, offset) =>
      result(offset === undefined ? read(fd, buf, size) : pread(fd, buf, size, offset)),
    write: (fd, buf, size, offset) =>
      result(offset === undefined ? write(fd, buf, size) : pwrite(fd, buf, size, offset)),
  };
}

/**
 * Ends the process at once with `code`: libc's _exit(2), on the calling thread. No exit
 * handlers, no flushing of Node streams, and no wait for worker threads: Node's own exit
 * joins every worker (node::Environment::stop_sub_worker_contexts), and a worker inside a
 * system call cannot be stopped, so a process with an executor thread stuck in a hung
 * device would stay until the kernel answers. After _exit the kernel completes or aborts
 * that call by itself; the fd and the buffers it uses are the kernel's until then.
 */
export function exitNow(code: number): never {
  koffi.load('libc.so.6').func('void _exit(int status)')(code);
  throw new Error('_exit returned');
}
