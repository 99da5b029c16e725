/**
 * Calls of many devices handed to the native threads together: the failfast probe's reads
 * of one round (docs/design.md "Failfast", "Native executor").
 *
 * A device whose calls run on the native executor (KoffiPrDevice) adds a call made with
 * `{ batch }` to the batch while it is open, instead of sending it alone; `flush()` sends
 * what was added, one hand-over per executor (executor.ts: a few messages to its threads
 * instead of a round trip per call). A call made with the batch after the flush (a second
 * read, a retry) is sent on its own, so nothing waits for a batch that is gone. Devices
 * without native calls (the memory model) ignore it. Each call keeps its own time limit and
 * hung-device handling; a call whose own signal is not the batch's is sent on its own.
 *
 * The batch flushes itself at the end of the current synchronous run (a microtask) if the
 * caller did not: a call is never left unsent.
 */

/** Holds the calls added to a batch until it is flushed (the native executor). */
export interface BatchSink {
  /** Sends the calls this sink holds for `batch`. */
  sendBatch(batch: CallBatch): void;
}

export class CallBatch {
  /** Stops waiting for every call of the batch (as a call's own signal does). */
  readonly signal: AbortSignal | undefined;
  readonly #sinks = new Set<BatchSink>();
  #open = true;

  constructor(opts: { signal?: AbortSignal | undefined } = {}) {
    this.signal = opts.signal;
  }

  /** Calls made with this batch now join it; false once it was flushed. */
  get open(): boolean {
    return this.#open;
  }

  /** @internal the device layer: `sink` holds a call for this batch and sends it on flush. */
  enlist(sink: BatchSink): void {
    if (this.#sinks.size === 0) queueMicrotask(() => this.flush());
    this.#sinks.add(sink);
  }

  /** Sends every call added so far; idempotent. */
  flush(): void {
    if (!this.#open) return;
    this.#open = false;
    for (const s of this.#sinks) s.sendBatch(this);
    this.#sinks.clear();
  }
}
