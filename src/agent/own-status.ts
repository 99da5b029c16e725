/**
 * The upkeep of this node's own NodeFence status: gathers what ownNodeStatus
 * (nf-status.ts) decides from (the recorded phase, a fence request, the volumes where
 * this node is blocked or registered, readiness, a lost own key) and writes it, with the
 * volumes this node holds to hand over. Written at start, after each reconcile, every
 * resync, and when the failfast reactions change it: one write at a time, the calls made
 * while one is in flight sharing one more write after it, of the state then (a burst of
 * 200 reconciles writes the volume count a few times, not 200 times, and leaves the API
 * server to the fences).
 */
import type { Logger } from 'pino';
import { describeError } from '../obs/logger.js';
import type { ClusterInformers } from './cluster-informers.js';
import { isFenceRequested } from './cluster-view.js';
import { Coalescer } from './coalescer.js';
import { ownNodeStatus } from './nf-status.js';
import type { StatusWriter } from './status-writer.js';
import type { VolumeReconciler } from './volume-reconciler.js';

export interface OwnStatusOptions {
  node: string;
  writer: StatusWriter;
  log: Logger;
  informers: Pick<ClusterInformers, 'nodeFence' | 'node'>;
  reconciler: Pick<VolumeReconciler, 'blockedOn' | 'registeredOn' | 'handingOver'>;
  /** Why the agent cannot act safely now, if it cannot (readiness). */
  notReady: () => string | undefined;
  /** The AccessLost message, while the own key is gone from a device. */
  accessLost: () => string | undefined;
}

export class OwnStatus {
  readonly #o: OwnStatusOptions;

  /** One write at a time; the calls made meanwhile share the next (one key: this node). */
  readonly #writes = new Coalescer<null>(() => this.#writeNow());

  constructor(o: OwnStatusOptions) {
    this.#o = o;
  }

  /**
   * Writes the own NodeFence status as it is when the write starts (see the module
   * comment); resolves false if it was not written (retried later), never rejects.
   */
  write(): Promise<boolean> {
    return this.#writes.add(this.#o.node, null).then(
      () => true,
      (e: unknown) => {
        this.#o.log.debug({ err: describeError(e) }, 'own status not written; next time');
        return false;
      },
    );
  }

  async #writeNow(): Promise<void> {
    const { node, informers, reconciler } = this.#o;
    const nf = informers.nodeFence(node);
    const problem = this.#o.notReady();
    const lost = this.#o.accessLost();
    const { phase, volumes, conditions } = ownNodeStatus({
      recordedPhase: nf?.status?.phase,
      fencedBy: nf?.status?.fencedBy,
      lost,
      fenceRequested: isFenceRequested(nf, informers.node(node)),
      blockedVolumes: reconciler.blockedOn.size,
      registeredVolumes: reconciler.registeredOn.size,
      problem,
    });
    return this.#o.writer.writeOwn(nf, {
      phase,
      volumes,
      handingOver: [...reconciler.handingOver],
      conditions,
    });
  }
}
