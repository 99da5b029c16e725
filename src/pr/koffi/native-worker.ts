/**
 * Entry of one native executor thread (executor.ts): runs one call at a time with
 * synchronous libc calls, so a call that blocks in the kernel blocks only this thread.
 * Messages: {ready: true} once koffi is loaded; then {id, req: NativeRequest} in,
 * {id, reply: NativeReply} out.
 *
 * Loaded by path (dist/.../native-worker.js, or this .ts file through Node's type
 * stripping when the sources run directly under vitest): relative imports name the .ts
 * file, and tsc rewrites them to .js (rewriteRelativeImportExtensions).
 */
import { parentPort } from 'node:worker_threads';
import { loadLibc } from './libc.ts';
import { runNativeCall, type NativeRequest } from './native-call.ts';

const port = parentPort;
if (!port) throw new Error('native-worker.ts runs only as a worker thread');
const libc = loadLibc();
port.postMessage({ ready: true });
port.on('message', (msg: { id: number; req: NativeRequest }) => {
  void runNativeCall(msg.req, libc).then(
    (reply) => port.postMessage({ id: msg.id, reply }),
    (e: unknown) => port.postMessage({ id: msg.id, error: String(e) }),
  );
});
