/**
 * OwnStatus (src/agent/own-status.ts): the upkeep of the own NodeFence status, one write at
 * a time.
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { OwnStatus } from '../../../src/agent/own-status.js';
import type { StatusWriter } from '../../../src/agent/status-writer.js';

function setup(fail = false) {
  const registeredOn = new Set<string>();
  const written: number[] = [];
  let release!: () => void;
  let gate = new Promise<void>((r) => (release = r));
  const writer = {
    writeOwn: async (_nf: unknown, s: { volumes: number }) => {
      written.push(s.volumes);
      await gate;
      if (fail) throw new Error('API down');
    },
  } as unknown as StatusWriter;
  const own = new OwnStatus({
    node: 'n1',
    writer,
    log: pino({ level: 'silent' }),
    informers: { nodeFence: () => undefined, node: () => undefined },
    reconciler: { blockedOn: new Set(), registeredOn, handingOver: new Set() },
    notReady: () => undefined,
    accessLost: () => undefined,
  });
  return {
    own,
    registeredOn,
    written,
    /** Lets the writes in flight end (and the next ones wait again). */
    open: () => {
      const r = release;
      gate = new Promise<void>((res) => (release = res));
      r();
    },
  };
}

describe('OwnStatus.write', () => {
  it('ten calls while a write is in flight -> one more write after it, with the state when it starts; every call resolves true once its state is written', async () => {
    const s = setup();
    s.registeredOn.add('pv-0');
    const first = s.own.write();
    const later = Array.from({ length: 10 }, (_, i) => (s.registeredOn.add(`pv-${i + 1}`), s.own.write()));
    s.open();
    await first;
    await new Promise((r) => setImmediate(r));
    s.open();
    const results = await Promise.all(later);
    expect({ written: s.written, results: new Set(results) }).toEqual({
      written: [1, 11],
      results: new Set([true]),
    });
  });

  it('a write that fails -> false for its callers (retried later), and the next call writes again', async () => {
    const s = setup(true);
    const first = s.own.write();
    s.open();
    expect(await first).toBe(false);
    const second = s.own.write();
    s.open();
    expect(await second).toBe(false);
    expect(s.written).toEqual([0, 0]);
  });
});
