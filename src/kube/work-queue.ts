/**
 * A work queue with client-go's rules (k8s.io/client-go/util/workqueue):
 * - an item is queued at most once (adds of a queued item are merged);
 * - an item is never processed by two workers at once; an add while it is processing
 *   marks it dirty and it is queued again when done() is called;
 * - per-item exponential backoff for failures (addRateLimited / forget / numRequeues);
 * - addAfter for timed requeues.
 * The clock is injected; no module state.
 */
import { doublingDelay } from './backoff.js';
export interface QueueClock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realClock: QueueClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref?.();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

/** What the queue reports (client-go's workqueue metrics); the adapter lives in src/obs. */
export interface QueueMetrics {
  added(): void;
  depth(n: number): void;
  retried(): void;
  /** Seconds an item waited in the queue before a worker took it. */
  waited(seconds: number): void;
  /** Seconds a worker spent on an item. */
  worked(seconds: number): void;
}

export interface WorkQueueOptions {
  baseDelayMs?: number;
  maxDelayMs?: number;
  clock?: QueueClock;
  metrics?: QueueMetrics;
}

export class WorkQueue<K extends string = string> {
  readonly #queue: K[] = [];
  readonly #queued = new Set<K>();
  readonly #processing = new Set<K>();
  readonly #dirty = new Set<K>();
  readonly #failures = new Map<K, number>();
  readonly #timers = new Map<K, { at: number; handle: unknown }>();
  readonly #waiters: ((k: K | undefined) => void)[] = [];
  readonly #base: number;
  readonly #max: number;
  readonly #clock: QueueClock;
  readonly #metrics: QueueMetrics | undefined;
  /** When each queued item was queued, and when each processing item was taken. */
  readonly #since = new Map<K, number>();
  #shuttingDown = false;

  constructor(opts: WorkQueueOptions = {}) {
    this.#base = opts.baseDelayMs ?? 5;
    this.#max = opts.maxDelayMs ?? 300_000;
    this.#clock = opts.clock ?? realClock;
    this.#metrics = opts.metrics;
  }

  #take(k: K): K {
    this.#queued.delete(k);
    this.#processing.add(k);
    if (this.#metrics) {
      const now = this.#clock.now();
      this.#metrics.waited((now - (this.#since.get(k) ?? now)) / 1000);
      this.#metrics.depth(this.#queue.length);
      this.#since.set(k, now);
    }
    return k;
  }

  /** Queues an item now (merged with a queued copy; marked dirty if processing). */
  add(k: K): void {
    if (this.#shuttingDown) return;
    if (this.#processing.has(k)) {
      this.#dirty.add(k);
      return;
    }
    if (this.#queued.has(k)) return;
    this.#queued.add(k);
    this.#queue.push(k);
    if (this.#metrics) {
      this.#since.set(k, this.#clock.now());
      this.#metrics.added();
      this.#metrics.depth(this.#queue.length);
    }
    // Waiting workers get items after the current synchronous run, so adds of the same
    // item in one burst (an informer event, a resync) are merged, as in client-go.
    if (this.#waiters.length > 0 && !this.#pumpScheduled) {
      this.#pumpScheduled = true;
      queueMicrotask(() => this.#pump());
    }
  }

  #pumpScheduled = false;

  #pump(): void {
    this.#pumpScheduled = false;
    while (this.#waiters.length > 0 && this.#queue.length > 0) {
      this.#waiters.shift()!(this.#take(this.#queue.shift()!));
    }
  }

  /** Queues an item after `ms`; an earlier pending addAfter for it wins. */
  addAfter(k: K, ms: number): void {
    if (this.#shuttingDown) return;
    if (ms <= 0) return this.add(k);
    const at = this.#clock.now() + ms;
    const cur = this.#timers.get(k);
    if (cur && cur.at <= at) return;
    if (cur) this.#clock.clearTimeout(cur.handle);
    const handle = this.#clock.setTimeout(() => {
      this.#timers.delete(k);
      this.add(k);
    }, ms);
    this.#timers.set(k, { at, handle });
  }

  /** Queues after the item's backoff: base * 2^failures, capped at max. */
  addRateLimited(k: K): void {
    const n = this.#failures.get(k) ?? 0;
    this.#failures.set(k, n + 1);
    this.#metrics?.retried();
    this.addAfter(k, doublingDelay(this.#base, this.#max, n + 1));
  }

  /** Clears the item's failure count (call after a success). */
  forget(k: K): void {
    this.#failures.delete(k);
  }

  numRequeues(k: K): number {
    return this.#failures.get(k) ?? 0;
  }

  /** Next item to process, or undefined once shut down. */
  get(): Promise<K | undefined> {
    const k = this.#queue.shift();
    if (k !== undefined) return Promise.resolve(this.#take(k));
    if (this.#shuttingDown) return Promise.resolve(undefined);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** Marks the item processed; a dirty item is queued again. */
  done(k: K): void {
    this.#processing.delete(k);
    if (this.#metrics) {
      const started = this.#since.get(k);
      this.#since.delete(k);
      if (started !== undefined) this.#metrics.worked((this.#clock.now() - started) / 1000);
    }
    if (this.#dirty.delete(k)) this.add(k);
  }

  get length(): number {
    return this.#queue.length;
  }

  shutDown(): void {
    this.#shuttingDown = true;
    for (const t of this.#timers.values()) this.#clock.clearTimeout(t.handle);
    this.#timers.clear();
    for (const w of this.#waiters.splice(0)) w(undefined);
  }
}
