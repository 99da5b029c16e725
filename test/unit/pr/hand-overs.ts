/**
 * An executor on a fake libc that records what it hands its threads: 'one' for a single
 * call, the number of calls for a chunk of a batch (tests of batching).
 */
import {
  inProcessBackend,
  NativeExecutor,
  type NativeExecutorOptions,
} from '../../../src/pr/koffi/executor.js';
import type { FakeLibc } from '../../../src/pr/koffi/fake-libc.js';

export function recordingExecutor(
  libc: FakeLibc,
  opts: Omit<NativeExecutorOptions, 'backend'> = {},
): { executor: NativeExecutor; handOvers: (number | 'one')[] } {
  const handOvers: (number | 'one')[] = [];
  const inner = inProcessBackend(libc);
  const executor = new NativeExecutor({
    ...opts,
    backend: {
      spawn: () => {
        const t = inner.spawn();
        return {
          ...t,
          run: (req) => (handOvers.push('one'), t.run(req)),
          runMany: (chunk, events) => (handOvers.push(chunk.indices.length), t.runMany(chunk, events)),
        };
      },
    },
  });
  return { executor, handOvers };
}
