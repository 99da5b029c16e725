/**
 * The end of a `prfence` process whose native executor may still have a thread inside a
 * call that passed its time limit (a hung device): Node's exit would wait for that thread.
 */
import type { NativeExecutor } from '../pr/koffi/executor.js';

const flushed = (s: NodeJS.WriteStream) => new Promise<void>((resolve) => s.write('', () => resolve()));

/**
 * Ends the process with `code`: sets process.exitCode and lets the event loop end, or,
 * while a thread of `executor` is still inside a native call (a call past its time limit
 * on a hung device: the command already reported it, exit 5), flushes stdout and stderr
 * and exits at once (`exitNow`): Node's exit would wait for that thread, that is for the
 * kernel, however long the device takes.
 */
export async function endProcess(code: number, executor: NativeExecutor): Promise<void> {
  process.exitCode = code;
  const { stuck, busy } = executor.stats();
  if (stuck === 0 && busy === 0) return;
  await Promise.all([flushed(process.stdout), flushed(process.stderr)]);
  const { exitNow } = await import('../pr/koffi/libc.js');
  exitNow(code);
}
