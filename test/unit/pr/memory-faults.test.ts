import { describe, expect, it } from 'vitest';
import type { PrKey } from '../../../src/pr/key.js';
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

  describe("applied-late (a real device's hung command: the caller gives up, the device acts later)", () => {
    const keys = (lu: MemoryLogicalUnit): PrKey[] => lu.state().registrations.map((r) => r.key);
    const until = async (cond: () => boolean, ms = 2000) => {
      const end = Date.now() + ms;
      while (!cond()) {
        if (Date.now() > end) throw new Error('not in time');
        await new Promise((r) => setTimeout(r, 5));
      }
    };

    it('time limit -> IndeterminateError, NOT applied yet; lateMs later -> applied', async () => {
      const lu = new MemoryLogicalUnit();
      lu.inject({ kind: 'applied-late', op: 'register', lateMs: 80 });
      const t0 = Date.now();
      await expect(lu.initiator('a', { timeoutMs: 20 }).register(0n, KA)).rejects.toBeInstanceOf(
        IndeterminateError,
      );
      expect(keys(lu)).toEqual([]); // the caller's read-back sees nothing
      expect(lu.lateCalls).toBe(1);
      expect(lu.hungCalls).toBe(0);
      await until(() => keys(lu).length === 1);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(90);
      expect(keys(lu)).toEqual([KA]);
      expect(lu.lateCalls).toBe(0);
      expect(lu.lateApplied).toEqual([
        { initiator: 'a', op: 'register', result: 'applied', at: expect.any(Number) },
      ]);
    });

    it('caller signal aborted -> IndeterminateError; the command still lands afterwards', async () => {
      const lu = new MemoryLogicalUnit();
      lu.inject({ kind: 'applied-late', op: 'register', lateMs: 0 });
      const ac = new AbortController();
      const p = lu.initiator('a').register(0n, KA, { signal: ac.signal });
      ac.abort();
      await expect(p).rejects.toBeInstanceOf(IndeterminateError);
      await until(() => keys(lu).length === 1);
    });

    it('a late preempt-abort removes the victim AFTER its fencer gave up and read back (the hazard it models)', async () => {
      const lu = new MemoryLogicalUnit();
      const KB = 0xbbbb000000000002n;
      await lu.initiator('a').register(0n, KA);
      await lu.initiator('b').register(0n, KB);
      await lu.initiator('b').reserve(KB, 'write-exclusive-reg-only');
      lu.inject({ kind: 'applied-late', op: 'preempt-abort', initiator: 'b', lateMs: Infinity });
      await expect(
        lu.initiator('b', { timeoutMs: 20 }).preemptAndAbort(KB, KA, 'write-exclusive-reg-only'),
      ).rejects.toBeInstanceOf(IndeterminateError);
      // The fencer reads back: a is still there; whoever decides from this read is wrong later.
      expect((await lu.initiator('b').readKeys()).keys).toContain(KA);
      expect(lu.write('a')).toBe('ok');
      expect(lu.settleLate()).toBe(1);
      expect(keys(lu)).toEqual([KB]);
      expect(lu.write('a')).toBe('refused');
      expect(lu.abortCount('a')).toBe(1);
    });

    it('lateMs Infinity -> applied only by settleLate(), in the order sent', async () => {
      const lu = new MemoryLogicalUnit();
      lu.inject({ kind: 'applied-late', initiator: 'a', op: 'any-out', lateMs: Infinity, times: 2 });
      const a = lu.initiator('a', { timeoutMs: 10 });
      await expect(a.register(0n, KA)).rejects.toBeInstanceOf(IndeterminateError);
      await expect(a.reserve(KA, 'write-exclusive')).rejects.toBeInstanceOf(IndeterminateError);
      await new Promise((r) => setTimeout(r, 50));
      expect(lu.lateCalls).toBe(2);
      expect(lu.state().registrations).toEqual([]);
      expect(lu.settleLate()).toBe(2);
      expect(lu.state()).toMatchObject({
        registrations: [{ initiator: 'a', key: KA }],
        reservation: { type: 'write-exclusive', holder: 'a' },
      });
      expect(lu.lateApplied.map((l) => [l.op, l.result])).toEqual([
        ['register', 'applied'],
        ['reserve', 'applied'],
      ]);
    });

    it('a late command the device refuses when it lands -> not applied, logged as conflict', async () => {
      const lu = new MemoryLogicalUnit();
      lu.inject({ kind: 'applied-late', op: 'register', initiator: 'a', lateMs: Infinity });
      await expect(lu.initiator('a', { timeoutMs: 10 }).register(0n, KA)).rejects.toBeInstanceOf(
        IndeterminateError,
      );
      await lu.initiator('a').register(0n, 0xcn); // a registers another key in the meantime
      lu.settleLate();
      expect(keys(lu)).toEqual([0xcn]);
      expect(lu.lateApplied.map((l) => l.result)).toEqual(['conflict']);
    });

    it('released before the time limit -> applied and answers, nothing left to land late', async () => {
      const lu = new MemoryLogicalUnit();
      lu.inject({ kind: 'applied-late', op: 'register', lateMs: 0 });
      const p = lu.initiator('a', { timeoutMs: 5000 }).register(0n, KA);
      await until(() => lu.hungCalls === 1);
      lu.releaseHung();
      await p;
      expect(keys(lu)).toEqual([KA]);
      expect(lu.lateCalls).toBe(0);
      expect(lu.lateApplied).toEqual([]);
    });

    it('only matching calls are affected: reads and other initiators answer at once', async () => {
      const lu = new MemoryLogicalUnit();
      lu.inject({ kind: 'applied-late', op: 'any-out', initiator: 'a', lateMs: Infinity });
      await lu.initiator('b').register(0n, 0xbn);
      expect((await lu.initiator('a', { timeoutMs: 10 }).readKeys()).keys).toEqual([0xbn]);
      expect(lu.lateCalls).toBe(0);
    });
  });
});
