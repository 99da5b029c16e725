/** Coalescer (src/agent/coalescer.ts): writes per object, batched while one is in flight. */
import { describe, expect, it } from 'vitest';
import { Coalescer } from '../../../src/agent/coalescer.js';

/** A write that waits until the test lets it finish (or fail). */
function gatedWrites() {
  const calls: { key: string; items: number[]; finish: (e?: Error) => void }[] = [];
  const write = (key: string, items: readonly number[]) =>
    new Promise<void>((resolve, reject) =>
      calls.push({ key, items: [...items], finish: (e) => (e ? reject(e) : resolve()) }),
    );
  return { calls, write };
}

const tick = () => new Promise((r) => setTimeout(r, 0));

describe('Coalescer', () => {
  it('items added while a write to the same object is in flight -> one next write carries them all; each caller settles only with the write that carried its item', async () => {
    const { calls, write } = gatedWrites();
    const c = new Coalescer<number>(write);
    const settled: number[] = [];
    const add = (i: number) => c.add('node-a', i).then(() => settled.push(i));
    const first = add(1);
    await tick();
    const rest = [2, 3, 4].map(add);
    await tick();
    expect(calls.map((x) => x.items)).toEqual([[1]]); // 2-4 wait for the write in flight
    calls[0]!.finish();
    await first;
    await tick();
    expect(settled).toEqual([1]);
    expect(calls.map((x) => x.items)).toEqual([[1], [2, 3, 4]]);
    calls[1]!.finish();
    await Promise.all(rest);
    expect(settled).toEqual([1, 2, 3, 4]);
  });

  it('different objects -> written independently, in parallel', async () => {
    const { calls, write } = gatedWrites();
    const c = new Coalescer<number>(write);
    const a = c.add('node-a', 1);
    const b = c.add('node-b', 2);
    await tick();
    expect(calls.map((x) => [x.key, x.items])).toEqual([
      ['node-a', [1]],
      ['node-b', [2]],
    ]);
    for (const x of calls) x.finish();
    await Promise.all([a, b]);
  });

  it('a failed write -> exactly the callers of its batch reject; items added meanwhile go in the next write', async () => {
    const { calls, write } = gatedWrites();
    const c = new Coalescer<number>(write);
    const failed = c.add('node-a', 1);
    await tick();
    const later = c.add('node-a', 2);
    calls[0]!.finish(new Error('409 five times'));
    await expect(failed).rejects.toThrow('409 five times');
    await tick();
    expect(calls.map((x) => x.items)).toEqual([[1], [2]]);
    calls[1]!.finish();
    await expect(later).resolves.toBeUndefined();
  });
});
