/**
 * What this node was in the middle of when it stopped, taken up again at start: the fence
 * intents it recorded (completed from what the device says, as dm-log replays its log),
 * the volumes its key is recorded on (left if it was detached meanwhile), and the
 * reservations it held to hand over (held and watched again).
 */
import type { Logger } from 'pino';
import { intentVictims } from '../crd/fence-intent.js';
import type { NodeFence, VolumeReservation } from '../crd/types.js';
import type { RestClient } from '../kube/rest-client.js';
import type { WorkQueue } from '../kube/work-queue.js';
import { describeError } from '../obs/logger.js';
import { formatKey, type PrKey } from '../pr/key.js';
import { fromIntentVictim } from './fence-records.js';
import { vrPath } from './status-writer.js';
import type { VolumeReconciler } from './volume-reconciler.js';

export interface ResumeContext {
  rest: RestClient;
  node: string;
  /** This node's key. */
  key: PrKey;
  log: Logger;
  reconciler: VolumeReconciler;
  queue: WorkQueue<string>;
  /**
   * Only the VolumeReservations with this label (a node-scoped agent's own: an intent of
   * this node is on a volume it is attached to or registered on, so labelled for it).
   */
  labelSelector?: string | undefined;
}

/**
 * From the VolumeReservations, at start:
 * - the intents this node recorded before it stopped: completed from the device;
 * - the volumes whose record names this node's key: looked at until this node has left
 *   them (`touched`). A volume detached while the agent was down (a rollout during a
 *   migration) is otherwise attached nowhere for it, and its key would stay until a peer
 *   fenced it as stale after the leave grace, and marked this healthy node Fenced.
 * Each such volume is enqueued.
 */
export async function resumeVolumes(c: ResumeContext): Promise<void> {
  const list = await c.rest.get<{ items: VolumeReservation[] }>(
    vrPath(),
    c.labelSelector ? { labelSelector: c.labelSelector } : undefined,
  );
  const key = formatKey(c.key);
  for (const vr of list.items) {
    if (vr.status?.registrants?.some((r) => r.node === c.node && r.key === key)) {
      c.reconciler.touched.add(vr.metadata.name);
      c.queue.add(vr.metadata.name);
    }
    const i = vr.status?.fenceIntent;
    if (i?.by !== c.node) continue;
    const log = c.log.child({ pv: vr.metadata.name });
    const victims = intentVictims(i).map(fromIntentVictim);
    log.info(
      { victims: victims.map((v) => ({ key: formatKey(v.key), node: v.node })) },
      'completing a fence intent from before the restart',
    );
    try {
      await c.reconciler.completeOpenIntent(vr.metadata.name, victims, log);
    } catch (e) {
      log.warn({ err: describeError(e) }, 'open intent not completed yet; the volume is reconciled');
    }
    c.queue.add(vr.metadata.name);
  }
}

/** Reservations this node held to hand over before it stopped (status.handingOver of its NodeFence). */
export function resumeHandovers(
  c: Pick<ResumeContext, 'reconciler' | 'queue'>,
  own: NodeFence | undefined,
): void {
  for (const pv of own?.status?.handingOver ?? []) {
    c.reconciler.handingOver.add(pv);
    c.reconciler.touched.add(pv);
    c.queue.add(pv);
  }
}
