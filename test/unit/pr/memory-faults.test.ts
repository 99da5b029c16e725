import { describe, expect, it } from 'vitest';
import { IndeterminateError, NotSentError, UnsupportedError } from '../../../src/pr/index.js';
import { MemoryLogicalUnit } from '../../../src/pr/memory/index.js';

const KA = 0xaaaa000000000001n;

describe('MemoryLogicalUnit fault injection', () => {
  it('not-sent fault -> NotSentError and nothing applied', async () => {
    const lu = new MemoryLogicalUnit();
    lu.inject({ kind: 'not-sent', op: 'register' });
    await expect(lu.initiator('a').register(0n, KA)).rejects.toBeInstanceOf(NotSentError);
    expect(lu.state().registrations).toEqual([]);
    await lu.initiator('a').register(0n, KA); // the fault was used up
    expect(lu.state().registrations).toEqual([{ initiator: 'a', key: KA }]);
  });

  it('lost-after fault -> IndeterminateError but the command WAS applied', async () => {
    const lu = new MemoryLogicalUnit();
    lu.inject({ kind: 'lost-after', op: 'any-out' });
    await expect(lu.initiator('a').register(0n, KA)).rejects.toBeInstanceOf(IndeterminateError);
    expect((await lu.initiator('b').readKeys()).keys).toEqual([KA]);
  });

  it('lost-before fault -> IndeterminateError and nothing applied', async () => {
    const lu = new MemoryLogicalUnit();
    lu.inject({ kind: 'lost-before', initiator: 'a' });
    await expect(lu.initiator('a').register(0n, KA)).rejects.toBeInstanceOf(IndeterminateError);
    expect((await lu.initiator('b').readKeys()).keys).toEqual([]);
  });

  it('hang + time limit -> IndeterminateError after the limit, not applied', async () => {
    const lu = new MemoryLogicalUnit();
    lu.inject({ kind: 'hang', op: 'register' });
    const dev = lu.initiator('a', { timeoutMs: 20 });
    await expect(dev.register(0n, KA)).rejects.toBeInstanceOf(IndeterminateError);
    expect(lu.hungCalls).toBe(0);
    expect(lu.state().registrations).toEqual([]);
  });

  it('hang released -> the call is applied and answers', async () => {
    const lu = new MemoryLogicalUnit();
    lu.inject({ kind: 'hang', op: 'register' });
    const p = lu.initiator('a').register(0n, KA);
    await Promise.resolve();
    expect(lu.hungCalls).toBe(1);
    expect(lu.releaseHung()).toBe(1);
    await p;
    expect(lu.state().registrations).toEqual([{ initiator: 'a', key: KA }]);
  });

  it('unsupported device -> every call UnsupportedError', async () => {
    const lu = new MemoryLogicalUnit({ supported: false });
    await expect(lu.initiator('a').readKeys()).rejects.toBeInstanceOf(UnsupportedError);
    await expect(lu.initiator('a').register(0n, KA)).rejects.toBeInstanceOf(UnsupportedError);
  });

  it('preempt-and-abort -> the victim nexus is counted as aborted', async () => {
    const lu = new MemoryLogicalUnit({ kind: 'nvme' });
    await lu.initiator('a').register(0n, KA);
    await lu.initiator('b').register(0n, 2n);
    await lu.initiator('a').reserve(KA, 'write-exclusive-reg-only');
    await lu.initiator('b').preemptAndAbort(2n, KA, 'write-exclusive-reg-only');
    expect(lu.abortCount('a')).toBe(1);
    expect(lu.abortCount('b')).toBe(0);
  });

  it('close -> the reservation is untouched (S8)', async () => {
    const lu = new MemoryLogicalUnit();
    const a = lu.initiator('a');
    await a.register(0n, KA);
    await a.reserve(KA, 'write-exclusive-reg-only');
    await a.close();
    expect(lu.state().reservation).toEqual({ type: 'write-exclusive-reg-only', holder: 'a' });
    expect(lu.state().registrations).toHaveLength(1);
  });
});
