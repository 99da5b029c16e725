import { describe, expect, it } from 'vitest';
import { checkHistory, describeResult, summarize, type Property } from '../../soak/checker.js';
import { HistoryRecorder, type HistoryEvent } from '../../soak/history.js';

/**
 * A clean failover: a and b attached to lu1 (RWX), a partitioned and detached, b fences a,
 * the fence is recorded, a's writes are refused from then on; a is unfenced and attached
 * again later and registers.
 */
const clean: HistoryEvent[] = [
  { t: 0, kind: 'attach', node: 'a', lu: 'lu1' },
  { t: 1, kind: 'attach', node: 'b', lu: 'lu1' },
  { t: 5, kind: 'call', node: 'a', lu: 'lu1', op: 'register', outcome: 'ok', ms: 1 },
  { t: 5, kind: 'keys', lu: 'lu1', registrants: ['a'], cause: { node: 'a', op: 'register' } },
  { t: 6, kind: 'keys', lu: 'lu1', registrants: ['a', 'b'], cause: { node: 'b', op: 'register' } },
  { t: 7, kind: 'phase', node: 'a', phase: 'Registered' },
  { t: 10, kind: 'write', node: 'a', lu: 'lu1', ok: true },
  { t: 20, kind: 'fault', what: 'partition', node: 'a' },
  { t: 21, kind: 'detach', node: 'a', lu: 'lu1' },
  { t: 30, kind: 'call', node: 'b', lu: 'lu1', op: 'preemptAndAbort', outcome: 'ok', ms: 1 },
  { t: 30, kind: 'keys', lu: 'lu1', registrants: ['b'], cause: { node: 'b', op: 'preemptAndAbort' } },
  { t: 35, kind: 'phase', node: 'a', phase: 'Fenced' },
  { t: 40, kind: 'write', node: 'a', lu: 'lu1', ok: false },
  { t: 41, kind: 'write', node: 'b', lu: 'lu1', ok: true },
  { t: 50, kind: 'fault', what: 'heal', node: 'a' },
  { t: 60, kind: 'unfence', node: 'a' },
  { t: 61, kind: 'phase', node: 'a', phase: null },
  { t: 62, kind: 'attach', node: 'a', lu: 'lu1' },
  { t: 70, kind: 'keys', lu: 'lu1', registrants: ['a', 'b'], cause: { node: 'a', op: 'register' } },
  { t: 71, kind: 'write', node: 'a', lu: 'lu1', ok: true },
  // a graceful detach of b: b unregisters itself; no fence needed
  { t: 80, kind: 'detach', node: 'b', lu: 'lu1' },
  { t: 81, kind: 'keys', lu: 'lu1', registrants: ['a'], cause: { node: 'b', op: 'register' } },
  { t: 90, kind: 'loop-delay', p99Ms: 4, maxMs: 12 },
  { t: 90, kind: 'api', node: 'a', requests: 10, windowMs: 60_000 },
  { t: 90, kind: 'api', node: 'b', requests: 20, windowMs: 60_000 },
];

const props = (h: HistoryEvent[]) => checkHistory(h).violations.map((x) => x.property);
const replace = (at: number, e: HistoryEvent) => clean.map((x, i) => (i === at ? e : x));
const idx = (pred: (e: HistoryEvent) => boolean) => clean.findIndex(pred);

describe('soak history checker', () => {
  it('clean failover history -> no violations; figures counted', () => {
    const r = checkHistory(clean);
    expect(r.violations).toEqual([]);
    expect(r.figures).toMatchObject({
      durationMs: 90,
      deviceCalls: 2,
      writes: { ok: 3, refused: 1 },
      fences: 1,
      selfRemovals: 1,
      fencesRecorded: 1,
      faults: 2,
      loopDelayP99MaxMs: 4,
      apiPerMinute: { a: 10, b: 20 },
    });
    expect(describeResult(r)).toContain('"fences":1');
    expect(summarize(r)).toEqual({});
  });

  it('summarize -> counts per property and the first details', () => {
    const h: HistoryEvent[] = [
      ...clean,
      { t: 95, kind: 'loop-delay', p99Ms: 35, maxMs: 80 },
      { t: 96, kind: 'loop-delay', p99Ms: 36, maxMs: 80 },
    ];
    expect(summarize(checkHistory(h, { loopDelayP99Ms: 20 }), 1)).toEqual({
      'loop-delay': { count: 2, first: ['event-loop delay p99 35.0 ms > 20 ms'] },
    });
  });

  it('write accepted after the fence was recorded -> write-after-fence', () => {
    const h = replace(
      idx((e) => e.kind === 'write' && e.t === 40),
      { t: 40, kind: 'write', node: 'a', lu: 'lu1', ok: true },
    );
    expect(props(h)).toEqual<Property[]>(['write-after-fence']);
  });

  it('write accepted before the fence was recorded (while the key was still there) -> no violation', () => {
    const h: HistoryEvent[] = [...clean, { t: 25, kind: 'write', node: 'a', lu: 'lu1', ok: true }];
    expect(props(h)).toEqual([]);
  });

  it('a detached node whose workload stopped loses its key to the next node -> a takeover, no fence-not-recorded', () => {
    const h: HistoryEvent[] = [
      ...clean.filter((e) => !(e.kind === 'keys' && e.t === 81)),
      { t: 79, kind: 'workload-stopped', node: 'b', lu: 'lu1' },
      { t: 82, kind: 'attach', node: 'c', lu: 'lu1' },
      { t: 83, kind: 'keys', lu: 'lu1', registrants: ['a', 'b', 'c'], cause: { node: 'c', op: 'register' } },
      {
        t: 84,
        kind: 'keys',
        lu: 'lu1',
        registrants: ['a', 'c'],
        cause: { node: 'c', op: 'preemptAndAbort' },
      },
    ];
    const r = checkHistory(h);
    expect(r.violations).toEqual([]);
    expect(r.figures).toMatchObject({ takeovers: 1, fences: 1 });
  });

  it('a detached node whose workload still writes loses its key without a record -> fence-not-recorded', () => {
    const h: HistoryEvent[] = [
      ...clean.filter((e) => !(e.kind === 'keys' && e.t === 81)),
      { t: 84, kind: 'keys', lu: 'lu1', registrants: ['a'], cause: { node: 'a', op: 'preemptAndAbort' } },
    ];
    expect(props(h)).toEqual<Property[]>(['fence-not-recorded']);
  });

  it('a legitimate node loses its key (not detached) -> legit-key-lost', () => {
    const h: HistoryEvent[] = [
      ...clean,
      { t: 85, kind: 'keys', lu: 'lu1', registrants: [], cause: { node: 'b', op: 'preemptAndAbort' } },
      { t: 86, kind: 'phase', node: 'a', phase: 'Fenced' },
    ];
    expect(props(h)).toEqual<Property[]>(['legit-key-lost']);
  });

  /** c attached to lu2 and lu3; detached from lu2 (partitioned: it does not leave), d fences it there, then on lu3. */
  const nodeWide = (markAt: number, elsewhere = true): HistoryEvent[] =>
    [
      { t: 100, kind: 'attach', node: 'c', lu: 'lu2' },
      { t: 100, kind: 'attach', node: 'c', lu: 'lu3' },
      { t: 100, kind: 'attach', node: 'd', lu: 'lu3' },
      { t: 101, kind: 'keys', lu: 'lu2', registrants: ['c'], cause: { node: 'c', op: 'register' } },
      { t: 101, kind: 'keys', lu: 'lu3', registrants: ['c', 'd'], cause: { node: 'c', op: 'register' } },
      { t: 110, kind: 'detach', node: 'c', lu: 'lu2' },
      { t: 111, kind: 'attach', node: 'd', lu: 'lu2' },
      ...(elsewhere
        ? [
            {
              t: 112,
              kind: 'keys',
              lu: 'lu2',
              registrants: ['c', 'd'],
              cause: { node: 'd', op: 'register' },
            },
            {
              t: 200,
              kind: 'keys',
              lu: 'lu2',
              registrants: ['d'],
              cause: { node: 'd', op: 'preemptAndAbort' },
            },
          ]
        : []),
      // d reads c's Fenced mark from the API and removes c from lu3 too (node-wide fence)
      { t: 280, kind: 'keys', lu: 'lu3', registrants: ['d'], cause: { node: 'd', op: 'preemptAndAbort' } },
      { t: markAt, kind: 'phase', node: 'c', phase: 'Fenced' },
    ] as HistoryEvent[];

  it('fenced on one LU, then its key removed where it is still attached, its Fenced mark sampled 420 ms later -> the node-wide fence, no violation', () => {
    expect(props([...clean, ...nodeWide(700)])).toEqual([]);
  });

  it('the same loss with no removal elsewhere before it -> legit-key-lost (the mark alone excuses nothing)', () => {
    expect(props([...clean, ...nodeWide(700, false)])).toEqual<Property[]>(['legit-key-lost']);
  });

  it('the same loss with the mark observed only after the sampling slack -> legit-key-lost', () => {
    expect(props([...clean, ...nodeWide(280 + 5000)])).toEqual<Property[]>(['legit-key-lost']);
  });

  it('a write to another LU where nobody removed the fenced node -> no write-after-fence', () => {
    const h: HistoryEvent[] = [
      ...clean,
      { t: 2, kind: 'attach', node: 'a', lu: 'lu2' },
      { t: 45, kind: 'write', node: 'a', lu: 'lu2', ok: true },
    ];
    expect(props(h)).toEqual([]);
  });

  it('a node whose fence is recorded loses its key on another LU it is attached to -> not legit-key-lost', () => {
    const h: HistoryEvent[] = [
      ...clean,
      { t: 2, kind: 'attach', node: 'a', lu: 'lu2' },
      { t: 3, kind: 'keys', lu: 'lu2', registrants: ['a'], cause: { node: 'a', op: 'register' } },
      { t: 45, kind: 'keys', lu: 'lu2', registrants: [], cause: { node: 'b', op: 'preemptAndAbort' } },
    ];
    expect(props(h)).toEqual([]);
  });

  it('a key lost while a fence of that node was requested -> no legit-key-lost', () => {
    const h: HistoryEvent[] = [
      ...clean,
      { t: 84, kind: 'fence-request', node: 'a' },
      { t: 85, kind: 'keys', lu: 'lu1', registrants: [], cause: { node: 'b', op: 'preemptAndAbort' } },
      { t: 86, kind: 'phase', node: 'a', phase: 'Fenced' },
    ];
    expect(props(h)).toEqual([]);
  });

  it('the fenced node registers again before it is unfenced -> reregistered-after-fence (A1)', () => {
    const h: HistoryEvent[] = [
      ...clean,
      { t: 45, kind: 'keys', lu: 'lu1', registrants: ['a', 'b'], cause: { node: 'a', op: 'register' } },
      { t: 46, kind: 'keys', lu: 'lu1', registrants: ['b'], cause: { node: 'b', op: 'preemptAndAbort' } },
    ];
    expect(props(h)).toEqual<Property[]>(['reregistered-after-fence']);
  });

  it('the Fenced mark vanishes without an unfence -> the fence still holds for the checker', () => {
    const h: HistoryEvent[] = [
      ...clean,
      { t: 44, kind: 'phase', node: 'a', phase: 'Registered' },
      { t: 45, kind: 'write', node: 'a', lu: 'lu1', ok: true },
    ];
    expect(props(h)).toEqual<Property[]>(['write-after-fence']);
  });

  it('a key removed by a peer and never recorded as Fenced -> fence-not-recorded', () => {
    const h = clean.filter((e) => !(e.kind === 'phase' && e.phase === 'Fenced'));
    // Without the record the later re-registration and writes are no violations of their own.
    expect(props(h)).toEqual<Property[]>(['fence-not-recorded']);
  });

  it('a fence recorded before the removal and still in force -> recorded', () => {
    const h: HistoryEvent[] = clean
      .filter((e) => !(e.kind === 'phase' && e.phase === 'Fenced'))
      .concat({ t: 29, kind: 'phase', node: 'a', phase: 'Fenced' });
    expect(props(h)).toEqual([]);
  });

  it('event-loop delay p99 over a given bound -> loop-delay; without a bound only the stall counts', () => {
    const h: HistoryEvent[] = [...clean, { t: 95, kind: 'loop-delay', p99Ms: 35, maxMs: 80 }];
    expect(checkHistory(h, { loopDelayP99Ms: 20 }).violations.map((v) => v.property)).toEqual(['loop-delay']);
    expect(checkHistory(h, { loopDelayP99Ms: 50 }).violations).toEqual([]);
    expect(checkHistory(h).violations).toEqual([]);
  });

  it('one event-loop stall over the stall bound (a blocking call) -> loop-delay', () => {
    const h: HistoryEvent[] = [...clean, { t: 95, kind: 'loop-delay', p99Ms: 5, maxMs: 1500 }];
    expect(props(h)).toEqual<Property[]>(['loop-delay']);
  });

  it('a baseline loop-delay window over the bound -> a figure, no violation', () => {
    const h: HistoryEvent[] = [{ t: 0, kind: 'loop-delay', p99Ms: 35, maxMs: 80, baseline: true }, ...clean];
    const r = checkHistory(h);
    expect(r.violations).toEqual([]);
    expect(r.figures.loopDelayBaselineP99Ms).toBe(35);
  });

  it('an agent over the API request rate -> api-rate', () => {
    const h: HistoryEvent[] = [...clean, { t: 95, kind: 'api', node: 'b', requests: 5000, windowMs: 60_000 }];
    expect(props(h)).toEqual<Property[]>(['api-rate']);
    expect(checkHistory(h).figures.apiPerMinute.b).toBe(2510); // (20 + 5000) over two minutes
  });

  it('events out of order in the array -> checked in time order', () => {
    expect(checkHistory([...clean].reverse()).violations).toEqual([]);
  });
});

describe('HistoryRecorder', () => {
  it('records key sets and phases only when they change, with times from its clock', () => {
    let now = 1000;
    const r = new HistoryRecorder(() => now);
    now = 1005;
    r.keys('lu1', ['b', 'a']);
    r.keys('lu1', ['a', 'b']);
    now = 1010;
    r.keys('lu1', ['a'], { node: 'b', op: 'preempt' });
    r.phase('a', 'Registered');
    r.phase('a', 'Registered');
    r.phase('a', null);
    expect(r.events).toEqual([
      { t: 5, kind: 'keys', lu: 'lu1', registrants: ['a', 'b'] },
      { t: 10, kind: 'keys', lu: 'lu1', registrants: ['a'], cause: { node: 'b', op: 'preempt' } },
      { t: 10, kind: 'phase', node: 'a', phase: 'Registered' },
      { t: 10, kind: 'phase', node: 'a', phase: null },
    ]);
  });
});

describe('Rng', () => {
  it('same seed -> same sequence; another seed -> another; ints within bounds', async () => {
    const { Rng } = await import('../../soak/rng.js');
    const a = new Rng(7);
    const b = new Rng(7);
    const xs = Array.from({ length: 20 }, () => a.next());
    expect(Array.from({ length: 20 }, () => b.next())).toEqual(xs);
    expect(new Rng(8).next()).not.toBe(xs[0]);
    const r = new Rng(1);
    for (let i = 0; i < 1000; i++) expect(r.int(3, 5)).toBeGreaterThanOrEqual(3);
    const ints = new Set(Array.from({ length: 200 }, () => r.int(3, 5)));
    expect([...ints].sort()).toEqual([3, 4, 5]);
  });
});
