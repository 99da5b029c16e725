/**
 * The history of a soak run (Jepsen's approach, STYLE.md "Acting under failure"): every
 * device operation and its answer, every change of the keys on each logical unit, every
 * write the nodes' workloads attempt, what the API shows (attachments the driver made,
 * NodeFence phases it observed), the faults it injected, and the run's resource figures.
 * Pure data: the checker (checker.ts) asserts the invariants over the whole of it.
 */

/** Names a registrant: the node whose key it is, or `key:<16 hex>` for a key of no known node. */
export type Registrant = string;

export type HistoryEvent =
  /** One PR call a node's agent made, with the device's answer. */
  | { t: number; kind: 'call'; node: string; lu: string; op: string; outcome: string; ms: number }
  /** The registrants of a logical unit changed (after `cause`, when a call was seen to cause it). */
  | { t: number; kind: 'keys'; lu: string; registrants: Registrant[]; cause?: { node: string; op: string } }
  /** A write of a node's workload: accepted or refused by the device. */
  | { t: number; kind: 'write'; node: string; lu: string; ok: boolean }
  /** The driver created a VolumeAttachment (the API says: node attached to lu) ... */
  | { t: number; kind: 'attach'; node: string; lu: string }
  /** ... or deleted it (recorded before the delete is sent: from then on the node is not legitimate). */
  | { t: number; kind: 'detach'; node: string; lu: string }
  /**
   * The node's workload stopped writing to lu (its pod stopped: before a graceful detach,
   * or when a partitioned node is healed and its kubelet finds the volume detached).
   */
  | { t: number; kind: 'workload-stopped'; node: string; lu: string }
  /** NodeFence status.phase as the driver observed it (a change; null: none). */
  | { t: number; kind: 'phase'; node: string; phase: string | null }
  /** The driver asked for a fence (spec.fenceState Fenced, taint) or unfenced a node (as `prfence unfence`). */
  | { t: number; kind: 'fence-request'; node: string }
  | { t: number; kind: 'unfence'; node: string }
  /** A fault the driver injected or healed (informational). */
  | { t: number; kind: 'fault'; what: string; node?: string }
  /**
   * Event-loop delay of the test process over a window (perf_hooks monitorEventLoopDelay);
   * `baseline`: measured before any agent ran (the machine's own noise, not checked).
   */
  | { t: number; kind: 'loop-delay'; p99Ms: number; maxMs: number; baseline?: boolean }
  /** API requests one agent sent over a window. */
  | { t: number; kind: 'api'; node: string; requests: number; windowMs: number };

export type EventOf<K extends HistoryEvent['kind']> = Extract<HistoryEvent, { kind: K }>;
/** An event without its time (the recorder stamps it). */
export type Unstamped = HistoryEvent extends infer E
  ? E extends HistoryEvent
    ? Omit<E, 't'>
    : never
  : never;

/** Appends events with a time in ms since the recorder started. */
export class HistoryRecorder {
  readonly events: HistoryEvent[] = [];
  readonly #t0: number;
  readonly #now: () => number;

  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
    this.#t0 = now();
  }

  /** ms since start, rounded to 0.1 ms. */
  now(): number {
    return Math.round((this.#now() - this.#t0) * 10) / 10;
  }

  record(e: Unstamped): void {
    this.events.push({ ...e, t: this.now() } as HistoryEvent);
  }

  /** Records `registrants` of `lu` only when they differ from the last recorded ones. */
  keys(lu: string, registrants: Registrant[], cause?: { node: string; op: string }): void {
    const last = this.#lastKeys.get(lu);
    const sorted = [...registrants].sort();
    if (last !== undefined && last === sorted.join(',')) return;
    this.#lastKeys.set(lu, sorted.join(','));
    this.record({ kind: 'keys', lu, registrants: sorted, ...(cause ? { cause } : {}) });
  }

  /** Records a NodeFence phase only when it changed. */
  phase(node: string, phase: string | null): void {
    if (this.#lastPhase.has(node) && this.#lastPhase.get(node) === phase) return;
    this.#lastPhase.set(node, phase);
    this.record({ kind: 'phase', node, phase });
  }

  readonly #lastKeys = new Map<string, string>();
  readonly #lastPhase = new Map<string, string | null>();
}
