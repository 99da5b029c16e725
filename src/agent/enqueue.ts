/**
 * Which informer events concern which volumes of this node (the enqueue predicates).
 * Handlers only enqueue PV names; the reconcile reads the current state (level-based).
 * Changes that the fence rule does not read (heartbeats, status the agent itself wrote)
 * enqueue nothing.
 */
import type { V1Node, V1PersistentVolume, V1StorageClass, V1VolumeAttachment } from '@kubernetes/client-node';
import type { NodeFence, VolumeReservation } from '../crd/types.js';
import type { InformerHandlers } from '../kube/informer.js';
import { pvOf } from '../kube/slim.js';
import { deviceOf, hasOutOfService, storageClassOf } from './cluster-view.js';
import { POLICY_ANNOTATIONS } from '../fence/volume-policy.js';

export interface EnqueueContext {
  node: string;
  /** PVs with an attachment on a node. */
  pvsOf: (node: string) => Iterable<string>;
  /** PVs this node is still involved in (released after a detach). */
  touched: () => Iterable<string>;
  trigger: (pv: string) => void;
  onOwnNodeFenceDeleted: () => void;
  /**
   * A volume's VolumeReservation was added or went away (node scope): what this node last
   * wrote there may be gone (deleted and created again), so its next write is not skipped
   * as unchanged.
   */
  onRecordReplaced?: (pv: string) => void;
  /** The StorageClass a PV names (from the PV cache). */
  storageClassOf: (pv: string) => string | undefined;
}

/** Whether the fencing or reservation-type annotations differ (PV or StorageClass). */
export function policyAnnotationsChanged(
  a: { metadata?: { annotations?: Record<string, string> } } | undefined,
  b: { metadata?: { annotations?: Record<string, string> } } | undefined,
): boolean {
  return POLICY_ANNOTATIONS.some((k) => a?.metadata?.annotations?.[k] !== b?.metadata?.annotations?.[k]);
}

/** What the reconcile reads of a PV: its device identity, its StorageClass and the policy annotations. */
export function shouldEnqueuePvChange(pv: V1PersistentVolume, old: V1PersistentVolume): boolean {
  return (
    deviceOf(pv) !== deviceOf(old) ||
    storageClassOf(pv) !== storageClassOf(old) ||
    policyAnnotationsChanged(pv, old)
  );
}

/** What the fence rule reads of a NodeFence: key, Fenced mark, the request and an unfence. */
export function shouldEnqueueNodeFenceChange(nf: NodeFence, old: NodeFence): boolean {
  return (
    nf.status?.key !== old.status?.key ||
    nf.status?.phase !== old.status?.phase ||
    nf.spec?.fenceState !== old.spec?.fenceState ||
    nf.spec?.unfencedAt !== old.spec?.unfencedAt
  );
}

export function enqueueRules(c: EnqueueContext): {
  volumeAttachment: InformerHandlers<V1VolumeAttachment>;
  persistentVolume: InformerHandlers<V1PersistentVolume>;
  node: InformerHandlers<V1Node>;
  nodeFence: InformerHandlers<NodeFence>;
  storageClass: InformerHandlers<V1StorageClass>;
  volumeReservation: InformerHandlers<VolumeReservation>;
} {
  const onVa = (va: V1VolumeAttachment) => {
    const pv = pvOf(va);
    if (pv) c.trigger(pv);
  };
  const onNodeChange = (name: string) => {
    for (const pv of c.pvsOf(name)) c.trigger(pv);
    if (name === c.node) for (const pv of c.touched()) c.trigger(pv);
  };
  // The volumes of this node (attached, or still involved) that name a StorageClass.
  const onClass = (sc: V1StorageClass) => {
    const name = sc.metadata?.name;
    for (const pv of new Set([...c.pvsOf(c.node), ...c.touched()]))
      if (name && c.storageClassOf(pv) === name) c.trigger(pv);
  };
  return {
    volumeAttachment: { onAdd: onVa, onUpdate: onVa, onDelete: onVa },
    persistentVolume: {
      onAdd: (p) => c.trigger(p.metadata?.name ?? ''),
      onUpdate: (p, old) => {
        if (shouldEnqueuePvChange(p, old)) c.trigger(p.metadata?.name ?? '');
      },
    },
    // The desired state of a volume (node scope): added, changed, or no longer labelled for
    // this node (a delete: the node is no longer involved, or the object is gone).
    volumeReservation: {
      onAdd: (vr) => (c.onRecordReplaced?.(vr.metadata.name), c.trigger(vr.metadata.name)),
      onUpdate: (vr, old) => {
        // Deleted and created again while the watch was down: a re-list shows a new uid.
        const replaced = vr.metadata.uid !== old.metadata.uid;
        if (replaced) c.onRecordReplaced?.(vr.metadata.name);
        if (replaced || JSON.stringify(vr.spec) !== JSON.stringify(old.spec)) c.trigger(vr.metadata.name);
      },
      onDelete: (vr) => (c.onRecordReplaced?.(vr.metadata.name), c.trigger(vr.metadata.name)),
    },
    storageClass: {
      onAdd: onClass,
      onUpdate: (sc, old) => {
        if (policyAnnotationsChanged(sc, old)) onClass(sc);
      },
      onDelete: onClass,
    },
    node: {
      // Only a taint change matters (out-of-service); heartbeats are dropped by the transform.
      onUpdate: (n, old) => {
        if (hasOutOfService(n) !== hasOutOfService(old)) onNodeChange(n.metadata?.name ?? '');
      },
    },
    nodeFence: {
      onAdd: (nf) => onNodeChange(nf.metadata.name),
      onUpdate: (nf, old) => {
        if (shouldEnqueueNodeFenceChange(nf, old)) onNodeChange(nf.metadata.name);
      },
      onDelete: (nf) => {
        if (nf.metadata.name === c.node) c.onOwnNodeFenceDeleted();
        onNodeChange(nf.metadata.name);
      },
    },
  };
}
