import { describe, expect, it } from 'vitest';
import { MemoryLogicalUnit } from '../../../src/pr/memory/index.js';
import type { Cluster, DeviceCall } from '../../integration/agent-harness.js';
import { KeySampler } from '../../integration/key-sampler.js';

const KA = 0xaaaa000000000001n;
const KB = 0xbbbb000000000002n;

/** The part of Cluster the sampler uses: its device-call hooks. */
const fakeCluster = () => ({ deviceCalls: new Set<(c: DeviceCall) => void>() }) as unknown as Cluster;

describe('KeySampler', () => {
  it('key removed then registered again -> one return; a key that was never lost -> no loss', async () => {
    const lu = new MemoryLogicalUnit();
    await lu.initiator('a').register(0n, KA);
    await lu.initiator('b').register(0n, KB);
    await lu.initiator('b').reserve(KB, 'write-exclusive-reg-only');
    const c = fakeCluster();
    const s = new KeySampler(c, lu, { a: KA, b: KB }, 1000);
    await lu.initiator('b').preemptAndAbort(KB, KA, 'write-exclusive-reg-only');
    s.sample('b preempts a');
    await lu.initiator('a').register(0n, KA);
    s.sample('a registers');
    s.stop();
    expect(s.returns('a').map((t) => t.by)).toEqual(['a registers']);
    expect(s.losses('a').map((t) => t.by)).toEqual(['b preempts a']);
    expect(s.losses('b')).toEqual([]);
    expect(s.returns('b')).toEqual([]);
    expect(s.present('a')).toBe(true);
    expect(s.describe()).toContain('- [b preempts a]');
  });

  it('a device call of the cluster on this LU -> sampled at once, named by the call', async () => {
    const lu = new MemoryLogicalUnit();
    const c = fakeCluster();
    const s = new KeySampler(c, lu, { a: KA }, 1000);
    await lu.initiator('a').register(0n, KA);
    for (const f of c.deviceCalls)
      f({ node: 'a', lu, op: 'register', args: [], outcome: 'ok', startedAt: 0, endedAt: 1 });
    s.stop();
    expect(s.timeline('a').map((t) => [t.present, t.by])).toEqual([
      [false, 'start'],
      [true, 'a register -> ok'],
    ]);
    expect(c.deviceCalls.size).toBe(0); // stop() unhooks it
  });
});
