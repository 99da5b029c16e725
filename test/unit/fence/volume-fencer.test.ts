import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { clusterTag, makeKey } from '../../../src/fence/keys.js';
import type { FenceInput, NodeKey } from '../../../src/fence/rule.js';
import { fenceVolume } from '../../../src/fence/volume-fencer.js';
import { fenceRecord } from '../../../src/agent/vr-record.js';
import { MemoryLogicalUnit } from '../../../src/pr/memory/index.js';
import { UnsupportedError, type PrDevice } from '../../../src/pr/index.js';

const log = pino({ level: 'silent' });
const TAG = clusterTag('test-cluster');
const K = { a: makeKey(TAG, 1), b: makeKey(TAG, 2), c: makeKey(TAG, 3) };
const known: NodeKey[] = Object.entries(K).map(([node, key]) => ({ node, key }));

function inputFor(node: 'a' | 'b' | 'c', legit: ('a' | 'b' | 'c')[], over: Partial<FenceInput['self']> = {}) {
  return {
    self: { node, key: K[node], legitimate: legit.includes(node), mayRegister: true, inUse: false, ...over },
    legitimate: legit.map((n) => ({ node: n, key: K[n] })),
    known,
    clusterTag: TAG,
    desiredType: 'write-exclusive-reg-only' as const,
    foreignKeys: 'leave' as const,
  };
}

async function attachedTo(lu: MemoryLogicalUnit, node: 'a' | 'b' | 'c') {
  return fenceVolume({ device: lu.initiator(node), input: inputFor(node, [node]), log });
}

describe('fenceVolume on the memory model', () => {
  for (const kind of ['scsi', 'nvme'] as const) {
    it(`${kind}: RWO failover a -> b -> a's key gone, b holds, a's writes refused, b writes`, async () => {
      const lu = new MemoryLogicalUnit({ kind });
      expect((await attachedTo(lu, 'a')).outcome).toBe('done');
      expect(lu.write('a')).toBe('ok');
      const obs = await fenceVolume({ device: lu.initiator('b'), input: inputFor('b', ['b']), log });
      expect(obs.outcome).toBe('done');
      expect(obs.victims).toEqual([{ key: K.a, node: 'a', result: 'fenced' }]);
      expect(obs.state.keys.keys).toEqual([K.b]);
      expect(obs.state.reservation.key).toBe(K.b);
      expect(lu.write('a')).toBe('refused');
      expect(lu.write('b')).toBe('ok');
      expect(lu.abortCount('a')).toBe(1);
    });

    it(`${kind}: RWX a, b, c legitimate then c stale -> only c removed, holder kept`, async () => {
      const lu = new MemoryLogicalUnit({ kind });
      for (const n of ['a', 'b', 'c'] as const) {
        await fenceVolume({ device: lu.initiator(n), input: inputFor(n, ['a', 'b', 'c']), log });
      }
      expect((await lu.initiator('a').readKeys()).keys).toHaveLength(3);
      const holderBefore = (await lu.initiator('a').readReservation()).key;
      // c goes stale; a and b run the rule; exactly the lowest legitimate key acts.
      const [oa, ob] = await Promise.all([
        fenceVolume({ device: lu.initiator('a'), input: inputFor('a', ['a', 'b']), log }),
        fenceVolume({ device: lu.initiator('b'), input: inputFor('b', ['a', 'b']), log }),
      ]);
      expect([oa.outcome, ob.outcome].sort()).toEqual(['done', 'waiting'].sort());
      const keys = (await lu.initiator('a').readKeys()).keys;
      expect([...keys].sort()).toEqual([K.a, K.b].sort());
      expect((await lu.initiator('a').readReservation()).key).toBe(holderBefore);
      expect(lu.write('c')).toBe('refused');
    });
  }

  for (const kind of ['scsi', 'nvme'] as const) {
    it(`${kind}: a target without PREEMPT AND ABORT -> the key removed with PREEMPT, recorded as not aborted, the refusal logged once and remembered`, async () => {
      const lu = new MemoryLogicalUnit({ kind, preemptAbort: false });
      await attachedTo(lu, 'a');
      const warnings: string[] = [];
      const seen = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(line) });
      const calls: string[] = [];
      const b = lu.initiator('b');
      const counted: PrDevice = {
        id: b.id,
        register: (o, n, x) => b.register(o, n, x),
        registerAndIgnore: (n, x) => b.registerAndIgnore(n, x),
        reserve: (k, t, x) => b.reserve(k, t, x),
        release: (k, t, x) => b.release(k, t, x),
        preempt: (o, v, t, x) => (calls.push('preempt'), b.preempt(o, v, t, x)),
        preemptAndAbort: (o, v, t, x) => (calls.push('preempt-abort'), b.preemptAndAbort(o, v, t, x)),
        clear: (k, x) => b.clear(k, x),
        readKeys: (x) => b.readKeys(x),
        readReservation: (x) => b.readReservation(x),
        readFullStatus: (x) => b.readFullStatus(x),
        capabilities: (x) => b.capabilities(x),
        close: () => b.close(),
      };
      const obs = await fenceVolume({ device: counted, input: inputFor('b', ['b']), log: seen });
      expect(obs.outcome).toBe('done');
      expect(obs.victims).toEqual([{ key: K.a, node: 'a', result: 'fenced', aborted: false }]);
      expect(obs.preemptAbortRefused).toBe(true);
      expect(obs.results.find((r) => r.action.kind === 'preempt-abort')).toMatchObject({
        result: 'ok',
        aborted: false,
      });
      expect(calls).toEqual(['preempt-abort', 'preempt']);
      expect(obs.state.keys.keys).toEqual([K.b]);
      expect(lu.write('a')).toBe('refused');
      expect(lu.abortCount('a')).toBe(0);
      expect(fenceRecord(obs.victims[0]!, 'b', 'now', 1)).toMatchObject({ result: 'Fenced', aborted: false });
      expect(warnings.filter((w) => w.includes('refused PREEMPT AND ABORT'))).toHaveLength(1);

      // The caller remembers it: the next fence on this device sends PREEMPT alone, logs nothing.
      await lu.initiator('a').register(0n, K.a);
      calls.length = 0;
      const again = await fenceVolume({
        device: counted,
        input: inputFor('b', ['b']),
        log: seen,
        preemptAbortRefused: true,
      });
      expect(again.victims).toEqual([{ key: K.a, node: 'a', result: 'fenced', aborted: false }]);
      // (nvmet's holder preempt keeps the victim: a second PREEMPT follows, still no abort.)
      expect(calls).toContain('preempt');
      expect(calls).not.toContain('preempt-abort');
      expect(warnings.filter((w) => w.includes('refused PREEMPT AND ABORT'))).toHaveLength(1);
    });
  }

  it('a target with PREEMPT AND ABORT -> no aborted field, nothing refused', async () => {
    const lu = new MemoryLogicalUnit();
    await attachedTo(lu, 'a');
    const obs = await fenceVolume({ device: lu.initiator('b'), input: inputFor('b', ['b']), log });
    expect(obs.victims).toEqual([{ key: K.a, node: 'a', result: 'fenced' }]);
    expect(obs.preemptAbortRefused).toBe(false);
    expect(fenceRecord(obs.victims[0]!, 'b', 'now', 1)).not.toHaveProperty('aborted');
  });

  it('S3: every PR OUT is followed by a read-back equal to the device state at that moment', async () => {
    const lu = new MemoryLogicalUnit();
    await attachedTo(lu, 'a');
    const obs = await fenceVolume({ device: lu.initiator('b'), input: inputFor('b', ['b']), log });
    expect(obs.results.length).toBeGreaterThan(0);
    for (const r of obs.results) expect(r.after).toBeDefined();
    const s = lu.state();
    expect(obs.state.keys).toEqual({ generation: s.generation, keys: s.registrations.map((r) => r.key) });
  });

  it('S4: a racing node fences first -> our preempt conflicts, we re-read and settle without a blind retry', async () => {
    const lu = new MemoryLogicalUnit();
    await attachedTo(lu, 'a');
    await lu.initiator('b').register(0n, K.b);
    await lu.initiator('c').register(0n, K.c);
    // c wins the race between b's read and b's preempt.
    const b = lu.initiator('b');
    let raced = false;
    const racing: PrDevice = {
      id: b.id,
      register: (o, n, x) => b.register(o, n, x),
      registerAndIgnore: (n, x) => b.registerAndIgnore(n, x),
      reserve: (k, t, x) => b.reserve(k, t, x),
      release: (k, t, x) => b.release(k, t, x),
      preempt: (o, v, t, x) => b.preempt(o, v, t, x),
      preemptAndAbort: async (o, v, t, x) => {
        if (!raced) {
          raced = true;
          await lu.initiator('c').preemptAndAbort(K.c, K.a, 'write-exclusive-reg-only');
        }
        return b.preemptAndAbort(o, v, t, x);
      },
      clear: (k, x) => b.clear(k, x),
      readKeys: (x) => b.readKeys(x),
      readReservation: (x) => b.readReservation(x),
      readFullStatus: (x) => b.readFullStatus(x),
      capabilities: (x) => b.capabilities(x),
      close: () => b.close(),
    };
    // b believes only itself legitimate, c believes only itself: both try to fence a.
    const obs = await fenceVolume({ device: racing, input: inputFor('b', ['b']), log });
    expect(obs.results.some((r) => r.result === 'conflict')).toBe(true);
    const keys = (await b.readKeys()).keys;
    expect(keys).not.toContain(K.a);
    expect(lu.write('a')).toBe('refused');
    // the conflict was followed by a read and a new decision, not a resend of the same command
    const preempts = obs.results.filter((r) => r.action.kind === 'preempt-abort' && r.action.victim === K.a);
    expect(preempts).toHaveLength(1);
  });

  it('S5: answer lost after the preempt was applied -> re-read, no second preempt, done', async () => {
    const lu = new MemoryLogicalUnit();
    await attachedTo(lu, 'a');
    await lu.initiator('b').register(0n, K.b);
    lu.inject({ kind: 'lost-after', op: 'preempt-abort', initiator: 'b' });
    const g0 = lu.state().generation;
    const obs = await fenceVolume({ device: lu.initiator('b'), input: inputFor('b', ['b']), log });
    expect(obs.results[0]?.result).toBe('indeterminate');
    expect(lu.state().generation).toBe(g0 + 1); // exactly one preempt reached the device
    expect(obs.outcome).toBe('done');
    expect(lu.write('a')).toBe('refused');
  });

  it('S5: a hung device call -> IndeterminateError within the time limit, nothing assumed', async () => {
    const lu = new MemoryLogicalUnit();
    await attachedTo(lu, 'a');
    await lu.initiator('b').register(0n, K.b);
    lu.inject({ kind: 'hang', op: 'preempt-abort', initiator: 'b', times: Infinity });
    const dev = lu.initiator('b', { timeoutMs: 30 });
    const t0 = Date.now();
    const obs = await fenceVolume({ device: dev, input: inputFor('b', ['b']), log, maxRounds: 2 });
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(obs.outcome).toBe('indeterminate');
    expect(obs.state.keys.keys).toContain(K.a); // the device says a is still there: recorded as such
    lu.clearFaults();
  });

  it('S2: a node that was fenced and may not register -> blocked, key stays off the device', async () => {
    const lu = new MemoryLogicalUnit();
    await attachedTo(lu, 'a');
    await fenceVolume({ device: lu.initiator('b'), input: inputFor('b', ['b']), log });
    const obs = await fenceVolume({
      device: lu.initiator('a'),
      input: inputFor('a', ['a'], { mayRegister: false }),
      log,
    });
    expect(obs.outcome).toBe('blocked');
    expect((await lu.initiator('b').readKeys()).keys).toEqual([K.b]);
    expect(lu.write('a')).toBe('refused');
  });

  it('A9: nvme holder preempt keeps the victim (nvmet) -> the quirk is seen, then release/preempt/reserve removes it', async () => {
    const lu = new MemoryLogicalUnit({ kind: 'nvme' });
    await attachedTo(lu, 'b');
    await lu.initiator('a').register(0n, K.a);
    const obs = await fenceVolume({ device: lu.initiator('b'), input: inputFor('b', ['b']), log });
    expect(obs.holderPreemptKeepsVictim).toBe(true);
    expect(obs.results.map((r) => r.action.kind)).toEqual([
      'preempt-abort',
      'release',
      'preempt-abort',
      'reserve',
    ]);
    expect(obs.state.keys.keys).toEqual([K.b]);
    expect(obs.state.reservation.key).toBe(K.b);
    expect(obs.victims).toEqual([{ key: K.a, node: 'a', result: 'fenced' }]);
  });

  it('A9: scsi holder preempt removes the victim -> no quirk recorded, no release (no window without a reservation)', async () => {
    const lu = new MemoryLogicalUnit({ kind: 'scsi' });
    await attachedTo(lu, 'b');
    await lu.initiator('a').register(0n, K.a);
    const obs = await fenceVolume({ device: lu.initiator('b'), input: inputFor('b', ['b']), log });
    expect(obs.holderPreemptKeepsVictim).toBe(false);
    expect(obs.results.map((r) => r.action.kind)).toEqual(['preempt-abort']);
  });

  it('A10: the stale node unregisters just before our preempt -> conflict, key gone, victim "left", no fence', async () => {
    const lu = new MemoryLogicalUnit();
    await attachedTo(lu, 'b');
    await lu.initiator('a').register(0n, K.a);
    const b = lu.initiator('b');
    // a's own unregister lands between b's read and b's preempt.
    const dev: PrDevice = {
      ...Object.fromEntries(
        (
          [
            'register',
            'registerAndIgnore',
            'reserve',
            'release',
            'preempt',
            'clear',
            'readKeys',
            'readReservation',
            'readFullStatus',
            'capabilities',
            'close',
          ] as const
        ).map((m) => [m, (...args: unknown[]) => (b[m] as (...a: unknown[]) => unknown).apply(b, args)]),
      ),
      id: b.id,
      preemptAndAbort: async (o, v, t, x) => {
        await lu.initiator('a').register(K.a, 0n);
        return b.preemptAndAbort(o, v, t, x);
      },
    } as PrDevice;
    const obs = await fenceVolume({ device: dev, input: inputFor('b', ['b']), log });
    expect(obs.state.keys.keys).toEqual([K.b]);
    expect(obs.victims).toEqual([{ key: K.a, node: 'a', result: 'left' }]);
  });

  it('A1/A2: a command the fresh view does not confirm -> not sent, device unchanged, outcome unconfirmed', async () => {
    const lu = new MemoryLogicalUnit();
    await attachedTo(lu, 'a');
    const before = lu.state();
    const asked: string[] = [];
    const obs = await fenceVolume({
      device: lu.initiator('b'),
      input: inputFor('b', ['b']),
      log,
      confirm: (a) => {
        asked.push(a.kind);
        return Promise.resolve(false);
      },
    });
    expect(asked).toEqual(['register']);
    expect(obs.outcome).toBe('unconfirmed');
    expect(lu.state()).toEqual(before);
    expect(lu.write('a')).toBe('ok');
  });
});

describe('fenceVolume: registering again through new paths', () => {
  it('the own key is gone by the time the REGISTER AND IGNORE would be sent (a peer fenced this node after the plan read) -> not sent (S2), the key stays gone', async () => {
    const lu = new MemoryLogicalUnit();
    const a = lu.initiator('a');
    const b = lu.initiator('b');
    await a.register(0n, K.a);
    await a.reserve(K.a, 'write-exclusive-all-regs');
    const planRead = {
      keys: await a.readKeys(),
      reservation: await a.readReservation(),
    };
    await b.register(0n, K.b);
    await b.preemptAndAbort(K.b, K.a, 'write-exclusive-all-regs');
    const sent: string[] = [];
    const spy = new Proxy(a, {
      get(t, p) {
        const v: unknown = Reflect.get(t, p, t);
        if (typeof v !== 'function') return v;
        return (...args: unknown[]) => {
          if (p === 'register' || p === 'registerAndIgnore') sent.push(String(p));
          return (v as (...x: unknown[]) => unknown).apply(t, args);
        };
      },
    }) as PrDevice;
    const obs = await fenceVolume({
      device: spy,
      input: { ...inputFor('a', ['a', 'b']), newPaths: ['sdd'] },
      log,
      initial: { kind: 'memory', state: planRead },
    });
    expect({ outcome: obs.outcome, sent, keys: lu.state().registrations.map((r) => r.key) }).toEqual({
      outcome: 'not-sent',
      sent: [],
      keys: [K.b],
    });
  });

  it('registered again once -> the next rounds do not repeat it', async () => {
    const lu = new MemoryLogicalUnit();
    const a = lu.initiator('a');
    await a.register(0n, K.a);
    await a.reserve(K.a, 'write-exclusive-all-regs');
    const gen = (await a.readKeys()).generation;
    const obs = await fenceVolume({ device: a, input: { ...inputFor('a', ['a']), newPaths: ['sdd'] }, log });
    expect({
      outcome: obs.outcome,
      registers: obs.results.map((r) => r.action),
      generation: obs.state.keys.generation - gen,
    }).toEqual({
      outcome: 'done',
      registers: [{ kind: 'register', reregister: ['sdd'] }],
      generation: 1,
    });
  });

  /** Initiator b of the model, counting its PrDevice calls; readFullStatus refused when asked. */
  function countedB(lu: MemoryLogicalUnit, calls: string[], refuseFullStatus = false): PrDevice {
    const b = lu.initiator('b');
    return new Proxy(b, {
      get(t, prop) {
        const v: unknown = Reflect.get(t, prop, t);
        if (typeof v !== 'function') return v;
        return (...args: unknown[]) => {
          calls.push(String(prop));
          if (prop === 'readFullStatus' && refuseFullStatus)
            return Promise.reject(new UnsupportedError('read-full-status: not implemented'));
          return (v as (...x: unknown[]) => unknown).apply(t, args);
        };
      },
    });
  }

  for (const kind of ['scsi', 'nvme'] as const)
    it(`${kind}: a fence reads the state with one readFullStatus, before the preempt and after it (S3)`, async () => {
      const lu = new MemoryLogicalUnit({ kind });
      await attachedTo(lu, 'a');
      const calls: string[] = [];
      const obs = await fenceVolume({ device: countedB(lu, calls), input: inputFor('b', ['b']), log });
      expect(obs.victims).toEqual([{ key: K.a, node: 'a', result: 'fenced' }]);
      expect(calls.filter((c) => c.startsWith('read'))).toEqual(calls.filter((c) => c === 'readFullStatus'));
      expect(calls.filter((c) => c === 'preemptAndAbort')).toHaveLength(1);
      const b = lu.initiator('b');
      expect(obs.state).toEqual({
        keys: await b.readKeys(),
        reservation: await b.readReservation(),
        registrants: (await b.readFullStatus()).registrants,
      });
    });

  it('a device that refuses readFullStatus as unsupported -> readKeys and readReservation, and it is not asked again', async () => {
    const lu = new MemoryLogicalUnit();
    await attachedTo(lu, 'a');
    const calls: string[] = [];
    const dev = countedB(lu, calls, true);
    const obs = await fenceVolume({ device: dev, input: inputFor('b', ['b']), log });
    expect(obs.victims).toEqual([{ key: K.a, node: 'a', result: 'fenced' }]);
    expect(calls.filter((c) => c === 'readFullStatus')).toHaveLength(1);
    expect(calls.filter((c) => c === 'readKeys').length).toBeGreaterThanOrEqual(2);
    const b = lu.initiator('b');
    expect(obs.state).toEqual({ keys: await b.readKeys(), reservation: await b.readReservation() });
  });
});
