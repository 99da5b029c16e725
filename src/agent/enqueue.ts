/**
 * Which informer events concern which volumes of this node (the enqueue predicates).
 * Handlers only enqueue PV names; the reconcile reads the current state (level-based).
 * Changes that the fence rule does not read (heartbeats, status the agent itself wrote)
 * enqueue nothing.
 */
import type { V1Node, V1PersistentVolume, V1VolumeAttachment } from '@kubernetes/client-node';
import type { NodeFence } from '../crd/types.js';
import type { InformerHandlers } from '../kube/informer.js';
import { deviceOf, hasOutOfService, pvOf } from './cluster-view.js';

export interface EnqueueContext {
  node: string;
  /** PVs with an attachment on a node. */
  pvsOf: (node: string) => Iterable<string>;
  /** PVs this node is still involved in (released after a detach). */
  touched: () => Iterable<string>;
  trigger: (pv: string) => void;
  onOwnNodeFenceDeleted: () => void;
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
} {
  const onVa = (va: V1VolumeAttachment) => {
    const pv = pvOf(va);
    if (pv) c.trigger(pv);
  };
  const onNodeChange = (name: string) => {
    for (const pv of c.pvsOf(name)) c.trigger(pv);
    if (name === c.node) for (const pv of c.touched()) c.trigger(pv);
  };
  return {
    volumeAttachment: { onAdd: onVa, onUpdate: onVa, onDelete: onVa },
    persistentVolume: {
      onAdd: (p) => c.trigger(p.metadata?.name ?? ''),
      onUpdate: (p, old) => {
        if (deviceOf(p) !== deviceOf(old)) c.trigger(p.metadata?.name ?? '');
      },
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
