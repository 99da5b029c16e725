/**
 * Asserts the safety invariants over a whole soak history (history.ts). Pure.
 *
 * Properties (DESIGN.md S1, S2, S9; STYLE.md "Acting under failure"):
 * - write-after-fence: no write from a node to a logical unit is accepted after another
 *   party removed its key there and its fence was recorded (NodeFence phase Fenced
 *   observed), until it is unfenced;
 * - legit-key-lost: a node legitimate in the API (attached by the driver, not detached,
 *   no fence requested, no fence recorded: DESIGN.md "Words") never loses its key on that
 *   logical unit. A node fenced on one logical unit is not legitimate on any: a loss that
 *   follows a removal of its key elsewhere by another party, with its Fenced mark observed
 *   within the phase sampling slack after the loss, is that node-wide fence (the harness
 *   samples phases every 500 ms; the peers read the mark from the API at once);
 * - reregistered-after-fence: a node never registers again on any logical unit after its
 *   fence was recorded, until it is unfenced (S2);
 * - fence-not-recorded: every key removed by another party (a fence) is recorded in the
 *   API: the victim's NodeFence shows Fenced at that time or later. A key removed from a
 *   node that is detached there and whose workload there has stopped cannot cut off a
 *   writer: it is a takeover of the reservation (counted apart), not a fence;
 * - loop-delay: the event loop never stalls (no single delay over a bound; optionally a p99 bound);
 * - api-rate: each agent's API requests per minute stay under a bound.
 */
import type { EventOf, HistoryEvent } from './history.js';

export type Property =
  | 'write-after-fence'
  | 'legit-key-lost'
  | 'reregistered-after-fence'
  | 'fence-not-recorded'
  | 'loop-delay'
  | 'api-rate';

export interface Violation {
  property: Property;
  t: number;
  detail: string;
}

export interface CheckLimits {
  /**
   * Bound on any window's event-loop delay p99, ms. Default none: on a shared 2-core
   * machine the p99 measures CPU starvation as much as the agent; the 20 ms target is
   * measured by `npm run bench` (executor bench) instead.
   */
  loopDelayP99Ms?: number;
  /**
   * Bound on any single event-loop delay, ms: a blocking call (a synchronous ioctl on a
   * hung device) stalls the loop for the whole hang. Default 1000.
   */
  loopDelayMaxMs?: number;
  /** Bound on each agent's API requests per minute over the run. Default 600. */
  apiRequestsPerMinute?: number;
}

export interface Figures {
  durationMs: number;
  deviceCalls: number;
  deviceCallsByOutcome: Record<string, number>;
  writes: { ok: number; refused: number };
  /** Key removals by another party (fences on the device). */
  fences: number;
  /** Key removals by the node itself (release after detach). */
  selfRemovals: number;
  /** Keys removed by another party from detached nodes whose workload had stopped (a takeover). */
  takeovers: number;
  fencesRecorded: number;
  faults: number;
  loopDelayP99MaxMs: number;
  loopDelayMaxMs: number;
  /** p99 of the baseline window (before the agents ran), if one was recorded. */
  loopDelayBaselineP99Ms?: number;
  /** Per agent: API requests per minute over the run. */
  apiPerMinute: Record<string, number>;
}

export interface CheckResult {
  violations: Violation[];
  figures: Figures;
}

/** Intervals during which a predicate holds, from start/stop events in time order. */
class Spans {
  readonly #open = new Map<string, number>();
  readonly #closed = new Map<string, [number, number][]>();
  start(id: string, t: number): void {
    if (!this.#open.has(id)) this.#open.set(id, t);
  }
  stop(id: string, t: number): void {
    const s = this.#open.get(id);
    if (s === undefined) return;
    this.#open.delete(id);
    const l = this.#closed.get(id) ?? [];
    l.push([s, t]);
    this.#closed.set(id, l);
  }
  /** Whether `id` holds at t (a span that started strictly before t). */
  at(id: string, t: number): boolean {
    const s = this.#open.get(id);
    if (s !== undefined && s < t) return true;
    return (this.#closed.get(id) ?? []).some(([a, b]) => a < t && t <= b);
  }
  /** When the span holding at t started. */
  since(id: string, t: number): number | undefined {
    const s = this.#open.get(id);
    if (s !== undefined && s < t) return s;
    return (this.#closed.get(id) ?? []).find(([a, b]) => a < t && t <= b)?.[0];
  }
}

/** How late the harness may observe a Fenced mark the agents already read (sampled every 500 ms). */
const PHASE_SAMPLE_SLACK_MS = 1500;
/** How long before a loss a removal elsewhere counts as the fence that caused it. */
const NODE_WIDE_FENCE_MS = 10_000;

export function checkHistory(history: readonly HistoryEvent[], limits: CheckLimits = {}): CheckResult {
  const events = [...history].sort((a, b) => a.t - b.t);
  const loopLimit = limits.loopDelayP99Ms ?? Infinity;
  const stallLimit = limits.loopDelayMaxMs ?? 1000;
  const apiLimit = limits.apiRequestsPerMinute ?? 600;
  const violations: Violation[] = [];
  const v = (property: Property, t: number, detail: string) => violations.push({ property, t, detail });

  // Fenced (recorded) spans per node and attachment spans per node@lu, built in one pass
  // alongside the checks (each check needs only what happened before its event).
  const fenced = new Spans();
  const attached = new Spans();
  /** node@lu: detached, and its workload there stopped (until attached again). */
  const stopped = new Set<string>();
  const requested = new Spans();
  /** node@lu: its key was removed there by another party (until the node is unfenced). */
  const removedBy = new Spans();
  const removedLus = new Map<string, Set<string>>();
  const lastKeys = new Map<string, Set<string>>();
  const removals: { t: number; node: string; lu: string; by: string }[] = [];
  const phases: EventOf<'phase'>[] = [];
  /** Keys removed by another party (fence or takeover), per node: where and when. */
  const removedByOther = new Map<string, { t: number; lu: string }[]>();
  /** Losses of a key by a node legitimate there, decided after the pass (see the header). */
  const losses: { t: number; node: string; lu: string; detail: string }[] = [];
  const f: Figures = {
    durationMs: events.at(-1)?.t ?? 0,
    deviceCalls: 0,
    deviceCallsByOutcome: {},
    writes: { ok: 0, refused: 0 },
    fences: 0,
    selfRemovals: 0,
    takeovers: 0,
    fencesRecorded: 0,
    faults: 0,
    loopDelayP99MaxMs: 0,
    loopDelayMaxMs: 0,
    apiPerMinute: {},
  };
  const api = new Map<string, { requests: number; windowMs: number }>();

  for (const e of events) {
    switch (e.kind) {
      case 'call':
        f.deviceCalls += 1;
        f.deviceCallsByOutcome[e.outcome] = (f.deviceCallsByOutcome[e.outcome] ?? 0) + 1;
        break;
      case 'attach':
        attached.start(`${e.node}@${e.lu}`, e.t);
        stopped.delete(`${e.node}@${e.lu}`);
        break;
      case 'detach':
        attached.stop(`${e.node}@${e.lu}`, e.t);
        break;
      case 'workload-stopped':
        stopped.add(`${e.node}@${e.lu}`);
        break;
      case 'fence-request':
        requested.start(e.node, e.t);
        break;
      case 'unfence':
        requested.stop(e.node, e.t);
        fenced.stop(e.node, e.t);
        for (const lu of removedLus.get(e.node) ?? []) removedBy.stop(`${e.node}@${lu}`, e.t);
        removedLus.delete(e.node);
        break;
      case 'phase':
        phases.push(e);
        // A recorded fence holds until an unfence; a mark that vanishes otherwise (its
        // node overwrote it) does not lift it.
        if (e.phase === 'Fenced') {
          f.fencesRecorded += 1;
          fenced.start(e.node, e.t);
        }
        break;
      case 'fault':
        f.faults += 1;
        break;
      case 'loop-delay':
        if (e.baseline) {
          f.loopDelayBaselineP99Ms = e.p99Ms;
          break;
        }
        f.loopDelayP99MaxMs = Math.max(f.loopDelayP99MaxMs, e.p99Ms);
        f.loopDelayMaxMs = Math.max(f.loopDelayMaxMs, e.maxMs);
        if (e.p99Ms > loopLimit)
          v('loop-delay', e.t, `event-loop delay p99 ${e.p99Ms.toFixed(1)} ms > ${loopLimit} ms`);
        if (e.maxMs > stallLimit)
          v('loop-delay', e.t, `event-loop stalled ${e.maxMs.toFixed(1)} ms > ${stallLimit} ms`);
        break;
      case 'api': {
        const a = api.get(e.node) ?? { requests: 0, windowMs: 0 };
        a.requests += e.requests;
        a.windowMs += e.windowMs;
        api.set(e.node, a);
        break;
      }
      case 'write':
        if (e.ok) f.writes.ok += 1;
        else f.writes.refused += 1;
        if (e.ok && fenced.at(e.node, e.t) && removedBy.at(`${e.node}@${e.lu}`, e.t))
          v(
            'write-after-fence',
            e.t,
            `${e.node} wrote to ${e.lu} at ${e.t} ms; its key was removed there at ${removedBy.since(`${e.node}@${e.lu}`, e.t)} ms, its fence recorded at ${fenced.since(e.node, e.t)} ms`,
          );
        break;
      case 'keys': {
        const before = lastKeys.get(e.lu) ?? new Set<string>();
        const now = new Set(e.registrants);
        lastKeys.set(e.lu, now);
        const cause = e.cause ? ` (after ${e.cause.node} ${e.cause.op})` : '';
        for (const n of now) {
          if (before.has(n) || n.startsWith('key:')) continue;
          if (fenced.at(n, e.t))
            v(
              'reregistered-after-fence',
              e.t,
              `${n} registered on ${e.lu} at ${e.t} ms${cause}; fenced (recorded) since ${fenced.since(n, e.t)} ms, not unfenced`,
            );
        }
        for (const n of before) {
          if (now.has(n) || n.startsWith('key:')) continue;
          const legit = attached.at(`${n}@${e.lu}`, e.t) && !requested.at(n, e.t) && !fenced.at(n, e.t);
          if (legit)
            losses.push({
              t: e.t,
              node: n,
              lu: e.lu,
              detail: `${n} lost its key on ${e.lu} at ${e.t} ms${cause} while attached since ${attached.since(`${n}@${e.lu}`, e.t)} ms`,
            });
          const by = e.cause?.node ?? 'unknown';
          if (by !== n) removedByOther.set(n, [...(removedByOther.get(n) ?? []), { t: e.t, lu: e.lu }]);
          if (by === n) f.selfRemovals += 1;
          else if (stopped.has(`${n}@${e.lu}`) && !attached.at(`${n}@${e.lu}`, e.t)) f.takeovers += 1;
          else {
            f.fences += 1;
            removals.push({ t: e.t, node: n, lu: e.lu, by });
            removedBy.start(`${n}@${e.lu}`, e.t);
            removedLus.set(n, (removedLus.get(n) ?? new Set()).add(e.lu));
          }
        }
        break;
      }
    }
  }

  for (const l of losses) {
    const fencedElsewhere = (removedByOther.get(l.node) ?? []).some(
      (r) => r.lu !== l.lu && r.t <= l.t && r.t >= l.t - NODE_WIDE_FENCE_MS,
    );
    const markSoonAfter = phases.some(
      (p) => p.node === l.node && p.phase === 'Fenced' && p.t >= l.t && p.t <= l.t + PHASE_SAMPLE_SLACK_MS,
    );
    if (!(fencedElsewhere && markSoonAfter)) v('legit-key-lost', l.t, l.detail);
  }

  // Every fence recorded: Fenced at the removal or later (the record may come after the act).
  for (const r of removals) {
    const recorded =
      fenced.at(r.node, r.t) || phases.some((p) => p.node === r.node && p.phase === 'Fenced' && p.t >= r.t);
    if (!recorded)
      v(
        'fence-not-recorded',
        r.t,
        `${r.node}'s key removed from ${r.lu} at ${r.t} ms by ${r.by}; its NodeFence never showed Fenced afterwards`,
      );
  }
  for (const [node, a] of api) {
    const perMin = a.windowMs > 0 ? (a.requests * 60_000) / a.windowMs : 0;
    f.apiPerMinute[node] = Math.round(perMin);
    if (perMin > apiLimit)
      v('api-rate', f.durationMs, `${node}: ${Math.round(perMin)} API requests/min > ${apiLimit}`);
  }
  return { violations: violations.sort((a, b) => a.t - b.t), figures: f };
}

/** Violations grouped by property: how many, and the first few details of each. */
export function summarize(
  r: CheckResult,
  perProperty = 5,
): Partial<Record<Property, { count: number; first: string[] }>> {
  const out: Partial<Record<Property, { count: number; first: string[] }>> = {};
  for (const x of r.violations) {
    const s = (out[x.property] ??= { count: 0, first: [] });
    s.count += 1;
    if (s.first.length < perProperty) s.first.push(x.detail);
  }
  return out;
}

/** A short text of a result (figures, then the first violations of each property). */
export function describeResult(r: CheckResult, perProperty = 3): string {
  const lines = [`figures: ${JSON.stringify(r.figures)}`];
  const by = new Map<Property, Violation[]>();
  for (const x of r.violations) by.set(x.property, [...(by.get(x.property) ?? []), x]);
  for (const [p, xs] of by) {
    lines.push(`${p}: ${xs.length}`);
    for (const x of xs.slice(0, perProperty)) lines.push(`  ${x.detail}`);
  }
  return lines.join('\n');
}
