/**
 * The agent's work loop: workers take PV names from the work queue (never one PV in two
 * workers at once), run the VolumeReconciler, and requeue per its result, or back off on
 * an error (1 s after a 409 conflict). Each result also feeds the metrics and the fence
 * hook, and the own NodeFence status is written after it.
 */
import type { Logger } from 'pino';
import { KubeApiError } from '../kube/rest-client.js';
import type { WorkQueue } from '../kube/work-queue.js';
import { describeError } from '../obs/logger.js';
import type { AgentMetrics } from '../obs/metrics.js';
import type { PrKey } from '../pr/key.js';
import type { VolumeReconciler } from './volume-reconciler.js';

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
  /** Writes the own NodeFence status (after each reconcile); never rejects. */
  writeOwnStatus: () => Promise<unknown>;
}

export class ReconcileWorkers {
  readonly #o: ReconcileWorkersOptions;
  /** When this agent first saw a change that triggers a volume's reconcile (fence latency). */
  readonly #triggeredAt = new Map<string, number>();
  readonly #running: Promise<void>[] = [];

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
            await this.#process(pv);
          }
        })(),
      );
    }
  }

  /** Resolves once every worker has returned (after the queue was shut down). */
  async stopped(): Promise<void> {
    await Promise.allSettled(this.#running);
  }

  /** One work item: reconcile, then requeue per the result, or back off on an error. */
  async #process(pv: string): Promise<void> {
    const { queue, reconciler } = this.#o;
    const log = this.#o.log.child({ pv });
    const m = this.#o.metrics;
    try {
      const r = await reconciler.reconcile(pv, log);
      log.debug(
        { outcome: r.outcome, registered: r.registered, requeueAfterMs: r.requeueAfterMs },
        'reconciled',
      );
      queue.forget(pv);
      m?.reconciled(r.outcome);
      m?.registrationAllowed(reconciler.mayRegisterCached() && reconciler.blockedOn.size === 0);
      const t = this.#triggeredAt.get(pv);
      const since = t === undefined ? undefined : performance.now() - t;
      m?.handingOver(reconciler.handingOver.size);
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
      // A volume waiting on another node keeps its trigger time until it is settled.
      if (r.requeueAfterMs === undefined || r.outcome !== 'waiting') this.#triggeredAt.delete(pv);
      if (r.requeueAfterMs !== undefined) queue.addAfter(pv, r.requeueAfterMs);
      await this.#o.writeOwnStatus();
    } catch (e) {
      m?.reconciled('error');
      if (e instanceof KubeApiError && e.code === 409) queue.addAfter(pv, 1000);
      else {
        log.warn({ err: describeError(e) }, 'reconcile failed; retrying with backoff');
        queue.addRateLimited(pv);
      }
    } finally {
      queue.done(pv);
    }
  }
}
