/**
 * The agent's work loop: workers take PV names from the work queue (never one PV in two
 * workers at once), run the VolumeReconciler, and requeue per its result, or back off on
 * an error (1 s after a 409 conflict). Each result also feeds the metrics and the fence
 * hook, and the own NodeFence status is written after it.
 *
 * A reconcile that removed a stale key hands back the recording of that fence (about half
 * of its API round trips): it runs off the worker, so the worker takes the next volume's
 * fence at once. Fences come first: while volumes wait in the queue, records are written
 * one at a time (they share the API server with the fences); then up to `workers` at once. The PV stays in process in the queue
 * until its record is written: no reconcile of it starts in between.
 */
import type { Logger } from 'pino';
import { KubeApiError } from '../kube/rest-client.js';
import type { WorkQueue } from '../kube/work-queue.js';
import { describeError } from '../obs/logger.js';
import type { AgentMetrics } from '../obs/metrics.js';
import type { PrKey } from '../pr/key.js';
import type { ReconcileResult, VolumeReconciler } from './volume-reconciler.js';

export interface FenceEvent {
  pv: string;
  victimKey: PrKey;
  victimNode: string | undefined;
  result: 'fenced' | 'failed';
  /** From the first trigger this agent saw for the volume until the key was gone (read back). */
  sinceTriggerMs: number | undefined;
}

export interface ReconcileWorkersOptions {
  queue: WorkQueue<string>;
  reconciler: VolumeReconciler;
  log: Logger;
  workers: number;
  metrics?: AgentMetrics | undefined;
  /** Called for each stale key this agent removed (or failed to). */
  onFence?: ((e: FenceEvent) => void) | undefined;
  /** Writes the own NodeFence status (after each reconcile, not waited on); never rejects. */
  writeOwnStatus: () => Promise<unknown>;
}

export class ReconcileWorkers {
  readonly #o: ReconcileWorkersOptions;
  /** When this agent first saw a change that triggers a volume's reconcile (fence latency). */
  readonly #triggeredAt = new Map<string, number>();
  readonly #running: Promise<void>[] = [];
  /** Fence records being written (off the workers), and those waiting for a slot. */
  readonly #recording = new Set<Promise<void>>();
  readonly #recordSlots: (() => void)[] = [];
  #recordsRunning = 0;

  constructor(o: ReconcileWorkersOptions) {
    this.#o = o;
  }

  /** Enqueues a PV for a change seen now; its fence latency counts from the first such change. */
  trigger(pv: string): void {
    if (!this.#triggeredAt.has(pv)) this.#triggeredAt.set(pv, performance.now());
    this.#o.queue.add(pv);
  }

  start(): void {
    for (let i = 0; i < this.#o.workers; i++) {
      this.#running.push(
        (async () => {
          for (;;) {
            const pv = await this.#o.queue.get();
            if (pv === undefined) return;
            this.#pumpRecords(); // the queue may have emptied: records wait no longer
            await this.#process(pv);
          }
        })(),
      );
    }
  }

  /** Resolves once every worker has returned and every fence record was written or failed. */
  async stopped(): Promise<void> {
    await Promise.allSettled(this.#running);
    while (this.#recording.size) await Promise.allSettled([...this.#recording]);
  }

  /** One work item: reconcile, then requeue per the result, or back off on an error. */
  async #process(pv: string): Promise<void> {
    const log = this.#o.log.child({ pv });
    let recordLater = false;
    try {
      const r = await this.#o.reconciler.reconcile(pv, log);
      this.#reportFences(pv, r);
      if (r.record) {
        const p = this.#recordFence(pv, r.record, log);
        this.#recording.add(p);
        void p.finally(() => this.#recording.delete(p));
        recordLater = true;
        return;
      }
      await this.#settle(pv, r, log);
    } catch (e) {
      this.#failed(pv, e, log);
    } finally {
      if (!recordLater) this.#o.queue.done(pv);
      this.#pumpRecords();
    }
  }

  /**
   * Writes a fence's record off the worker, then settles the PV. Fences come first: while
   * volumes wait in the queue, one record is written at a time (so records always move);
   * once none waits, up to `workers` at once.
   */
  async #recordFence(pv: string, record: () => Promise<ReconcileResult>, log: Logger): Promise<void> {
    await new Promise<void>((r) => {
      this.#recordSlots.push(r);
      this.#pumpRecords();
    });
    try {
      await this.#settle(pv, await record(), log);
    } catch (e) {
      this.#failed(pv, e, log);
    } finally {
      this.#recordsRunning--;
      this.#o.queue.done(pv);
      this.#pumpRecords();
    }
  }

  /** Starts the records waiting for a slot, as many as the queue's state allows. */
  #pumpRecords(): void {
    const limit = this.#o.queue.length > 0 ? 1 : this.#o.workers;
    while (this.#recordsRunning < limit && this.#recordSlots.length) {
      this.#recordsRunning++;
      this.#recordSlots.shift()!();
    }
  }

  /** Metrics and the fence hook for the keys a reconcile removed (as soon as they are gone). */
  #reportFences(pv: string, r: ReconcileResult): void {
    const m = this.#o.metrics;
    const t = this.#triggeredAt.get(pv);
    const since = t === undefined ? undefined : performance.now() - t;
    for (const v of r.victims) {
      if (v.takeover && v.result === 'fenced') m?.takeover();
      if (v.result === 'left' || v.takeover) continue;
      m?.fence(v.result, since === undefined ? undefined : since / 1000);
      this.#o.onFence?.({
        pv,
        victimKey: v.key,
        victimNode: v.node,
        result: v.result,
        sinceTriggerMs: since,
      });
    }
  }

  /** The end of a reconcile (its record written): requeue per its result, own status. */
  async #settle(pv: string, r: ReconcileResult, log: Logger): Promise<void> {
    const { queue, reconciler } = this.#o;
    const m = this.#o.metrics;
    log.debug(
      { outcome: r.outcome, registered: r.registered, requeueAfterMs: r.requeueAfterMs },
      'reconciled',
    );
    queue.forget(pv);
    m?.reconciled(r.outcome);
    m?.registrationAllowed(reconciler.mayRegisterCached() && reconciler.blockedOn.size === 0);
    m?.handingOver(reconciler.handingOver.size);
    m?.unrecordedFences(reconciler.unrecordedFences);
    // A volume waiting on another node keeps its trigger time until it is settled.
    if (r.requeueAfterMs === undefined || r.outcome !== 'waiting') this.#triggeredAt.delete(pv);
    if (r.requeueAfterMs !== undefined) queue.addAfter(pv, r.requeueAfterMs);
    // Not waited on: the worker goes on to the next volume (the writes are coalesced).
    void this.#o.writeOwnStatus();
  }

  #failed(pv: string, e: unknown, log: Logger): void {
    this.#o.metrics?.reconciled('error');
    this.#o.metrics?.unrecordedFences(this.#o.reconciler.unrecordedFences);
    if (e instanceof KubeApiError && e.code === 409) this.#o.queue.addAfter(pv, 1000);
    else {
      log.warn({ err: describeError(e) }, 'reconcile failed; retrying with backoff');
      this.#o.queue.addRateLimited(pv);
    }
  }
}
