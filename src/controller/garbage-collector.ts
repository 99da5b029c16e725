/**
 * Garbage collection of prfence objects whose Kubernetes object is gone:
 * - a VolumeReservation whose PersistentVolume no longer exists is deleted only when no
 *   key is left on the device as far as it records (`status.registrants` empty, no
 *   holder, no open fence intent); else it is kept and a Warning event says why;
 * - a VolumeReservation being deleted (by that collection, or by hand) keeps the
 *   controller's finalizer, and so its record, on the same condition: a holder that leaves
 *   reads there whether a fenced node must still be kept out;
 * - a NodeFence whose Node no longer exists is deleted only when the node is neither
 *   asked to be fenced (`spec.fenceState`) nor marked fenced (`status.phase`), and its key
 *   is registered on no volume; its ReservationKey claims go first (so the NodeFence still
 *   names the key while they exist). A fenced node incarnation keeps its mark, and its
 *   claims, until a person unfences it.
 * Caches only select the work. The decision rests on consistent reads, and each delete
 * carries the uid and resourceVersion of that read. A 404 of the owner (PV, Node) is the
 * only "gone"; any other error is thrown and retried, never taken as gone.
 */
import type { V1Node, V1PersistentVolume } from '@kubernetes/client-node';
import {
  API_VERSION,
  NODE_FENCE,
  RESERVATION_KEY,
  VOLUME_RESERVATION,
  VR_FINALIZER,
  type NodeFence,
  type ReservationKey,
  type VolumeReservation,
} from '../crd/types.js';
import type { Acting } from './acting.js';
import {
  deleteExact,
  getFresh,
  listFresh,
  nfPath,
  nodePath,
  patchExact,
  pvPath,
  rkPath,
  vrPath,
} from './api.js';

export const GC_BLOCKED_REASON = 'GarbageCollectionBlocked';

/** Why a VolumeReservation of a deleted PV is kept, or undefined if it may go. */
export function volumeReservationKeepReason(vr: VolumeReservation): string | undefined {
  const s = vr.status ?? {};
  const regs = s.registrants ?? [];
  if (regs.length > 0)
    return `${regs.length} key(s) still registered on the device: ${regs.map((r) => `${r.node} ${r.key}`).join(', ')}`;
  if (s.holder) return `the device still has a holder: ${s.holder.node ?? '?'} ${s.holder.key}`;
  if (s.fenceIntent) return `a fence of ${s.fenceIntent.victimKey} is in progress`;
  return undefined;
}

/** Why the NodeFence of a deleted Node is kept (its own fields only), or undefined. */
export function nodeFenceKeepReason(nf: NodeFence): string | undefined {
  if (nf.spec?.fenceState === 'Fenced')
    return `the node is asked to be fenced (spec.fenceState Fenced, reason ${JSON.stringify(nf.spec.reason ?? '')}); unfence it to let it be collected`;
  if (nf.status?.phase === 'Fenced')
    return `the node is marked fenced (status.phase Fenced by ${nf.status.fencedBy ?? '?'}); unfence it to let it be collected`;
  return undefined;
}

/** Volumes whose recorded keys include this node or its key. */
export function volumesHoldingNode(
  vrs: readonly VolumeReservation[],
  node: string,
  key: string | undefined,
): string[] {
  return vrs
    .filter((vr) => {
      const s = vr.status ?? {};
      const mine = (n: string | undefined, k: string | undefined) => n === node || (!!key && k === key);
      return (
        (s.registrants ?? []).some((r) => mine(r.node, r.key)) ||
        (!!s.holder && mine(s.holder.node, s.holder.key))
      );
    })
    .map((vr) => vr.metadata.name);
}

export type GcOutcome = 'gone' | 'in-use' | 'kept' | 'deleted';

export interface GcCaches {
  pv(name: string): V1PersistentVolume | undefined;
  node(name: string): V1Node | undefined;
  volumeReservation(name: string): VolumeReservation | undefined;
  nodeFence(name: string): NodeFence | undefined;
}

export async function collectVolumeReservation(
  a: Acting,
  caches: GcCaches,
  name: string,
): Promise<GcOutcome> {
  const cached = caches.volumeReservation(name);
  if (!cached) return 'gone';
  if (cached.metadata.deletionTimestamp) return releaseVolumeReservation(a, cached);
  if (caches.pv(name)) return 'in-use';
  if (await getFresh<V1PersistentVolume>(a.rest, pvPath(name))) return 'in-use';
  const vr = await getFresh<VolumeReservation>(a.rest, vrPath(name));
  if (!vr) return 'gone';
  const why = volumeReservationKeepReason(vr);
  if (why) {
    await blocked(
      a,
      VOLUME_RESERVATION.kind,
      name,
      `PersistentVolume ${name} no longer exists but the VolumeReservation is kept: ${why}`,
    );
    return 'kept';
  }
  const deleted = await a.write({ kind: 'delete', resource: VOLUME_RESERVATION.plural, name }, () =>
    deleteExact(a.rest, vrPath(name), vr.metadata),
  );
  if (!deleted) return 'gone';
  a.metrics?.gcDeleted(VOLUME_RESERVATION.kind);
  a.log.info(
    { vr: name },
    'VolumeReservation of a deleted PersistentVolume deleted (no key left on the device)',
  );
  return 'deleted';
}

/**
 * A VolumeReservation being deleted (by the collection above, or by hand) loses the
 * controller's finalizer once no key is left on the device as far as it records: until
 * then it stays, with the record that a leaving holder and the proof of isolation read
 * (a record deleted with its object would let a holder release while a fenced node still
 * writes). The decision rests on a consistent read; the write carries its resourceVersion.
 */
export async function releaseVolumeReservation(a: Acting, cached: VolumeReservation): Promise<GcOutcome> {
  const name = cached.metadata.name;
  // The cache may only keep it (a status write that empties the record comes as an event).
  const vr = volumeReservationKeepReason(cached)
    ? cached
    : await getFresh<VolumeReservation>(a.rest, vrPath(name));
  const finalizers = vr?.metadata.finalizers ?? [];
  if (!vr?.metadata.deletionTimestamp || !finalizers.includes(VR_FINALIZER)) return 'gone';
  const why = volumeReservationKeepReason(vr);
  if (why) {
    await blocked(
      a,
      VOLUME_RESERVATION.kind,
      name,
      `VolumeReservation ${name} is being deleted but is kept (finalizer ${VR_FINALIZER}) while the device may hold a key: ${why}`,
    );
    return 'kept';
  }
  const rest = finalizers.filter((f) => f !== VR_FINALIZER);
  const released = await a.write({ kind: 'release', resource: VOLUME_RESERVATION.plural, name }, () =>
    patchExact(a.rest, vrPath(name), vr.metadata, { finalizers: rest.length ? rest : null }),
  );
  if (!released) return 'gone';
  a.log.info(
    { vr: name },
    `VolumeReservation deleted: no key left on the device (finalizer ${VR_FINALIZER} removed)`,
  );
  return 'deleted';
}

export async function collectNodeFence(a: Acting, caches: GcCaches, name: string): Promise<GcOutcome> {
  if (!caches.nodeFence(name)) return 'gone';
  if (caches.node(name)) return 'in-use';
  if (await getFresh<V1Node>(a.rest, nodePath(name))) return 'in-use';
  const nf = await getFresh<NodeFence>(a.rest, nfPath(name));
  if (!nf) return 'gone';
  const why = nodeFenceKeepReason(nf);
  if (why) {
    await blocked(
      a,
      NODE_FENCE.kind,
      name,
      `Node ${name} no longer exists but its NodeFence and key claims are kept: ${why}`,
    );
    return 'kept';
  }
  const holding = volumesHoldingNode(
    await listFresh<VolumeReservation>(a.rest, vrPath()),
    name,
    nf.status?.key,
  );
  if (holding.length > 0) {
    await blocked(
      a,
      NODE_FENCE.kind,
      name,
      `Node ${name} no longer exists but its key ${nf.status?.key ?? '?'} is still registered on ${holding.join(', ')}: NodeFence and key claims kept`,
    );
    return 'kept';
  }
  // Claims first: while one exists, the NodeFence still tells every agent whose key it is.
  for (const rk of await listFresh<ReservationKey>(a.rest, rkPath())) {
    if (rk.spec.node !== name) continue;
    const deleted = await a.write(
      { kind: 'delete', resource: RESERVATION_KEY.plural, name: rk.metadata.name },
      () => deleteExact(a.rest, rkPath(rk.metadata.name), rk.metadata),
    );
    if (deleted) {
      a.metrics?.gcDeleted(RESERVATION_KEY.kind);
      a.log.info({ node: name, key: rk.metadata.name }, 'key claim of a deleted Node deleted');
    }
  }
  const deleted = await a.write({ kind: 'delete', resource: NODE_FENCE.plural, name }, () =>
    deleteExact(a.rest, nfPath(name), nf.metadata),
  );
  if (!deleted) return 'gone';
  a.metrics?.gcDeleted(NODE_FENCE.kind);
  a.log.info({ node: name, key: nf.status?.key }, 'NodeFence of a deleted Node deleted (not fenced)');
  return 'deleted';
}

async function blocked(a: Acting, kind: string, name: string, note: string): Promise<void> {
  a.log.info({ kind, name }, note);
  await a.event({
    regarding: { apiVersion: API_VERSION, kind, name },
    reason: GC_BLOCKED_REASON,
    action: 'GarbageCollect',
    type: 'Warning',
    note,
  });
}
