/**
 * Preloaded into a real `prfence agent` process by the scale benchmark
 * (`node --import ./dist/bench/scale/memory-devices.js dist/src/cli/main.js agent ...`):
 * device paths under /dev/prfence-bench/ open a memory LU of this process instead of a
 * block device (this host has none to share). Everything else is the shipped agent: its
 * CLI, API client, informers, reconciler, failfast probe. Each memory LU has one initiator,
 * this node, as a volume attached to one node at steady state has.
 *
 * A real agent's native executor starts its threads (a worker each, loading koffi) on the
 * first device call, which never comes here; one such thread is started so that the RSS
 * measured includes what the smallest real agent with a device carries.
 */
import { isMainThread } from 'node:worker_threads';
import { KoffiPrDevice } from '../../src/pr/koffi/koffi-pr-device.js';
import { NativeExecutor } from '../../src/pr/koffi/executor.js';
import { MemoryLogicalUnit } from '../../src/pr/memory/index.js';
import type { PrDevice } from '../../src/pr/pr-device.js';
import { BENCH_DEVICE_DIR } from './objects.js';

const argv = process.argv;
const node = argv[argv.indexOf('--node-name') + 1] ?? 'bench-node';
const lus = new Map<string, MemoryLogicalUnit>();
const real = KoffiPrDevice.open.bind(KoffiPrDevice);
const open = async (path: string, opts?: Parameters<typeof KoffiPrDevice.open>[1]): Promise<PrDevice> => {
  if (!path.startsWith(BENCH_DEVICE_DIR)) return real(path, opts);
  let lu = lus.get(path);
  if (!lu) lus.set(path, (lu = new MemoryLogicalUnit({ id: path.slice(BENCH_DEVICE_DIR.length) })));
  return lu.initiator(node);
};
// Worker threads inherit --import: only the agent's main thread is changed (and a thread
// started from here would start another).
if (isMainThread) {
  (KoffiPrDevice as unknown as { open: typeof open }).open = open;
  new NativeExecutor().warm(1).catch(() => {});
}
