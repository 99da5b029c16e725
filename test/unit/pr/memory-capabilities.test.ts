/**
 * The memory model's capability options: a reduced type mask and a target without
 * PREEMPT AND ABORT, answered as such targets answer and reported by capabilities().
 */
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, RESERVATION_TYPES, UnsupportedError } from '../../../src/pr/index.js';
import { MemoryLogicalUnit } from '../../../src/pr/memory/index.js';

const KA = 0xaaaa000000000001n;
const KB = 0xbbbb000000000002n;

describe('MemoryLogicalUnit capability options', () => {
  it('no options -> all six types from the device, PREEMPT AND ABORT', async () => {
    for (const kind of ['scsi', 'nvme'] as const) {
      const c = await new MemoryLogicalUnit({ kind }).initiator('a').capabilities();
      expect(c).toMatchObject({ kind, types: RESERVATION_TYPES, source: 'device', preemptAbort: true });
    }
  });

  it('types [WE, WE-RO] -> reported in pr.h order; RESERVE / PREEMPT with another type -> InvalidArgumentError, nothing changed', async () => {
    const lu = new MemoryLogicalUnit({ types: ['write-exclusive-reg-only', 'write-exclusive'] });
    const [a, b] = [lu.initiator('a'), lu.initiator('b')];
    expect((await a.capabilities()).types).toEqual(['write-exclusive', 'write-exclusive-reg-only']);
    await a.register(0n, KA);
    await b.register(0n, KB);
    await expect(a.reserve(KA, 'exclusive-access')).rejects.toBeInstanceOf(InvalidArgumentError);
    await a.reserve(KA, 'write-exclusive-reg-only');
    await expect(b.preempt(KB, KA, 'exclusive-access-all-regs')).rejects.toBeInstanceOf(InvalidArgumentError);
    expect(lu.state()).toMatchObject({
      registrations: [
        { initiator: 'a', key: KA },
        { initiator: 'b', key: KB },
      ],
      reservation: { type: 'write-exclusive-reg-only', holder: 'a' },
    });
  });

  it('preemptAbort false -> PREEMPT AND ABORT UnsupportedError with nothing changed, PREEMPT works, capabilities say so', async () => {
    const lu = new MemoryLogicalUnit({ kind: 'nvme', preemptAbort: false });
    const [a, b] = [lu.initiator('a'), lu.initiator('b')];
    expect((await a.capabilities()).preemptAbort).toBe(false);
    await a.register(0n, KA);
    await b.register(0n, KB);
    await a.reserve(KA, 'write-exclusive-reg-only');
    const before = lu.state();
    await expect(b.preemptAndAbort(KB, KA, 'write-exclusive-reg-only')).rejects.toBeInstanceOf(
      UnsupportedError,
    );
    expect(lu.state()).toEqual(before);
    await b.preempt(KB, KA, 'write-exclusive-reg-only');
    expect((await b.readKeys()).keys).toEqual([KB]);
    expect(lu.abortCount('a')).toBe(0);
  });
});
