/**
 * The only module that imports koffi: libc's open/close/ioctl/pread/pwrite, called
 * asynchronously on koffi's worker threads so a blocking ioctl never stalls the event
 * loop, plus native memory blocks whose addresses stay valid while a call runs.
 */
import koffi from 'koffi';

/** Result of one native call: the return value and, when it is negative, errno. */
export interface NativeResult {
  ret: number;
  errno: number;
}

type AsyncFn = { async: (...args: unknown[]) => void };

export interface Libc {
  open(path: string, flags: number): Promise<NativeResult>;
  close(fd: number): Promise<NativeResult>;
  ioctl(fd: number, request: number, arg: bigint | null): Promise<NativeResult>;
  pread(fd: number, buf: bigint, len: number, offset: number): Promise<NativeResult>;
  pwrite(fd: number, buf: bigint, len: number, offset: number): Promise<NativeResult>;
  /** Allocates `size` bytes aligned to `align`, zeroed. */
  alloc(size: number, align?: number): NativeBlock;
}

/** A block of native memory: `ptr` for the kernel, `view` for JS. Free it once no call uses it. */
export interface NativeBlock {
  readonly ptr: bigint;
  readonly size: number;
  readonly view: DataView;
  readonly bytes: Uint8Array;
  free(): void;
}

let cached: Libc | undefined;

/** Loads libc through koffi once (a process has one libc; this is not per-object state). */
export function loadLibc(): Libc {
  if (cached) return cached;
  const lib = koffi.load('libc.so.6');
  // ioctl is variadic in glibc; declared with a fixed pointer argument, as the x86-64 and
  // aarch64 ABIs pass it in the same register either way. koffi cannot call variadics async.
  const fns = {
    open: lib.func('int open(const char *path, int flags)') as unknown as AsyncFn,
    close: lib.func('int close(int fd)') as unknown as AsyncFn,
    ioctl: lib.func('int ioctl(int fd, unsigned long request, void *arg)') as unknown as AsyncFn,
    pread: lib.func('long pread(int fd, void *buf, size_t count, long offset)') as unknown as AsyncFn,
    pwrite: lib.func('long pwrite(int fd, void *buf, size_t count, long offset)') as unknown as AsyncFn,
  };
  const alignedAlloc = lib.func('void *aligned_alloc(size_t alignment, size_t size)');
  const free = lib.func('void free(void *ptr)');

  const call = (fn: AsyncFn, ...args: unknown[]): Promise<NativeResult> =>
    new Promise((resolve, reject) => {
      fn.async(...args, (err: unknown, res: number | bigint) => {
        if (err) {
          reject(err instanceof Error ? err : new Error(String(err)));
          return;
        }
        const ret = Number(res);
        // koffi makes the worker thread's errno visible inside the async callback.
        resolve({ ret, errno: ret < 0 ? koffi.errno() : 0 });
      });
    });

  cached = {
    open: (path, flags) => call(fns.open, path, flags),
    close: (fd) => call(fns.close, fd),
    ioctl: (fd, request, arg) => call(fns.ioctl, fd, request, arg),
    pread: (fd, buf, len, off) => call(fns.pread, fd, buf, len, off),
    pwrite: (fd, buf, len, off) => call(fns.pwrite, fd, buf, len, off),
    alloc(size, align = 16) {
      const rounded = Math.ceil(size / align) * align;
      const ptr = BigInt(koffi.address(alignedAlloc(align, rounded)));
      if (ptr === 0n) throw new Error(`aligned_alloc(${align}, ${rounded}) failed`);
      const ab = koffi.view(ptr, rounded);
      const bytes = new Uint8Array(ab);
      bytes.fill(0);
      let freed = false;
      return {
        ptr,
        size: rounded,
        view: new DataView(ab),
        bytes,
        free() {
          if (freed) return;
          freed = true;
          free(ptr);
        },
      };
    },
  };
  return cached;
}
