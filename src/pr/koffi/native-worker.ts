/**
 * Entry of one native executor thread (executor.ts): runs one call at a time with
 * synchronous libc calls, so a call that blocks in the kernel blocks only this thread.
 * Messages: {ready: true} once koffi is loaded; then
 * - one call: {id, req: NativeRequest} in, {id, reply: NativeReply} (or {id, error}) out;
 * - a chunk of a batch: {id, chunk: NativeChunk} in (shared memory: native-batch.ts); its
 *   answers go to that memory, with {id, bell: true} out when the doorbell rings,
 *   {id, index, error} out for a call that threw, and {id, done: true} at the end.
 *
 * Loaded by path (dist/.../native-worker.js, or this .ts file through Node's type
 * stripping when the sources run directly under vitest): relative imports name the .ts
 * file, and tsc rewrites them to .js (rewriteRelativeImportExtensions).
 */
import { parentPort } from 'node:worker_threads';
import { loadLibc } from './libc.ts';
import { runNativeCalls, type NativeChunk } from './native-batch.ts';
import { runNativeCall, type NativeRequest } from './native-call.ts';

const port = parentPort;
if (!port) throw new Error('native-worker.ts runs only as a worker thread');
const libc = loadLibc();
port.postMessage({ ready: true });
port.on('message', (msg: { id: number; req?: NativeRequest; chunk?: NativeChunk }) => {
  const { id } = msg;
  if (msg.chunk) {
    void runNativeCalls(msg.chunk, libc, {
      ring: () => port.postMessage({ id, bell: true }),
      failed: (index, e) => port.postMessage({ id, index, error: String(e) }),
    }).then(
      () => port.postMessage({ id, done: true }),
      (e: unknown) => port.postMessage({ id, error: String(e) }),
    );
    return;
  }
  void runNativeCall(msg.req!, libc).then(
    (reply) => port.postMessage({ id, reply }),
    (e: unknown) => port.postMessage({ id, error: String(e) }),
  );
});
