/**
 * The periodic resync (`--resync`, default 30 s), the level-based safety net: every volume
 * attached to this node and every volume it is still involved in is reconciled again; a
 * missing own NodeFence is recreated; the own status is written (an idle node, with no
 * volume to reconcile, still gets its phase and Ready); failfast writes that have not
 * landed yet are retried.
 */
import type { WorkQueue } from '../kube/work-queue.js';
import type { ClusterInformers } from './cluster-informers.js';
import type { FailfastReactions } from './failfast-reactions.js';
import type { OwnStatus } from './own-status.js';

export interface ResyncOptions {
  intervalMs: number;
  node: string;
  queue: WorkQueue<string>;
  informers: Pick<ClusterInformers, 'pvsOf' | 'recheckOwnNodeFence'>;
  /** PVs this node is still involved in (released after a detach). */
  touched: () => Iterable<string>;
  ownStatus: Pick<OwnStatus, 'write'>;
  failfast: Pick<FailfastReactions, 'retryPendingWrites'>;
}

/** Starts the resync timer (it keeps no process alive); returns the function that stops it. */
export function startResync(o: ResyncOptions): () => void {
  const timer = setInterval(() => {
    for (const pv of o.informers.pvsOf(o.node)) o.queue.add(pv);
    for (const pv of o.touched()) o.queue.add(pv);
    o.informers.recheckOwnNodeFence();
    void o.ownStatus.write();
    o.failfast.retryPendingWrites();
  }, o.intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
