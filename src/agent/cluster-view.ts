/**
 * Pure helpers that turn informer caches into the fence rule's inputs: which nodes are
 * legitimate for a PV (DESIGN.md "Words"), which keys the cluster knows, which PVs a
 * node shares. No I/O.
 */
import type { V1Node, V1VolumeAttachment } from '@kubernetes/client-node';
import type { FencedKey, NodeFence, ReservationKey } from '../crd/types.js';
import { slimPersistentVolume, slimStorageClass } from '../fence/persistent-volume.js';
import { pvOf, slimNode, slimVolumeAttachment } from '../kube/slim.js';
import { parseKey, type PrKey } from '../pr/key.js';
import type { NodeKey } from '../fence/rule.js';

export const OUT_OF_SERVICE_TAINT = 'node.kubernetes.io/out-of-service';

export function hasOutOfService(node: V1Node | undefined): boolean {
  return !!node?.spec?.taints?.some((t) => t.key === OUT_OF_SERVICE_TAINT);
}

export function nodeFenceKey(nf: NodeFence | undefined): bigint | undefined {
  const k = nf?.status?.key;
  if (!k) return undefined;
  try {
    return parseKey(k);
  } catch {
    return undefined;
  }
}

/**
 * To be fenced, or fenced: spec.fenceState=Fenced, the Fenced mark a peer left when it
 * removed the node's key (a fenced node is not legitimate anywhere until unfenced), or
 * the out-of-service taint.
 */
export function isFenceRequested(nf: NodeFence | undefined, node: V1Node | undefined): boolean {
  return nf?.spec?.fenceState === 'Fenced' || nf?.status?.phase === 'Fenced' || hasOutOfService(node);
}

/**
 * Whether a recorded fence still stands: its node is fenced or asked to be, or unknown
 * (no NodeFence, no node name). Only an unfence lifts it.
 */
export function fenceStands(e: FencedKey, view: ClusterCaches): boolean {
  if (e.node === undefined) return true;
  const nf = view.nodeFences(e.node);
  return !nf || isFenceRequested(nf, view.nodes(e.node));
}

/** Keys of the nodes whose NodeFence says they hold `pv`'s reservation only to hand it over. */
export function handoverKeys(pv: string, c: ClusterCaches, self: string): PrKey[] {
  const out: PrKey[] = [];
  for (const nf of c.allNodeFences) {
    if (nf.metadata.name === self || !nf.status?.handingOver?.includes(pv)) continue;
    const key = nodeFenceKey(nf);
    if (key !== undefined) out.push(key);
  }
  return out;
}

export interface ClusterCaches {
  /** VolumeAttachments of one PV (an index lookup, not a scan). */
  vasOf: (pv: string) => readonly V1VolumeAttachment[];
  nodeFences: (name: string) => NodeFence | undefined;
  allNodeFences: readonly NodeFence[];
  nodes: (name: string) => V1Node | undefined;
}

export interface Legitimacy {
  /** Legitimate nodes whose key is known. */
  nodes: NodeKey[];
  /**
   * Legitimate nodes whose key is not known (NodeFence missing or without a key, no key
   * claim for the node's incarnation): any cluster key could be theirs, so nothing on the
   * volume is preempted while there is one (S9: a missing object never leads to a fence).
   */
  keyless: string[];
}

/**
 * Legitimate nodes of a PV: a VolumeAttachment for it that is attached or attaching,
 * not being deleted, on a node not marked Fenced (NodeFence or out-of-service taint).
 * A node's key: its NodeFence status, else its key claim for the Node's current UID.
 */
export function legitimacy(pv: string, c: ClusterCaches, claims: readonly ReservationKey[] = []): Legitimacy {
  const out: Legitimacy = { nodes: [], keyless: [] };
  for (const va of c.vasOf(pv)) {
    if (pvOf(va) !== pv || va.metadata?.deletionTimestamp) continue;
    const node = va.spec.nodeName;
    if (isFenceRequested(c.nodeFences(node), c.nodes(node))) continue;
    const uid = c.nodes(node)?.metadata?.uid;
    const claim = claims.find((k) => k.spec.node === node && uid !== undefined && k.spec.nodeUID === uid);
    const key = nodeFenceKey(c.nodeFences(node)) ?? (claim ? keyOfClaim(claim) : undefined);
    if (key === undefined) {
      if (!out.keyless.includes(node)) out.keyless.push(node);
    } else if (!out.nodes.some((n) => n.node === node)) out.nodes.push({ node, key });
  }
  return out;
}

/** Legitimate nodes of a PV with a known key (see legitimacy()). */
export function legitimateNodes(pv: string, c: ClusterCaches): NodeKey[] {
  return legitimacy(pv, c).nodes;
}

function keyOfClaim(k: ReservationKey): PrKey | undefined {
  try {
    return parseKey(k.metadata.name);
  } catch {
    return undefined;
  }
}

/** Every node key the cluster knows (to name stale keys): NodeFence records and key claims. */
export function knownKeys(c: ClusterCaches, claims: readonly ReservationKey[] = []): NodeKey[] {
  const fromNf = c.allNodeFences.flatMap((nf) => {
    const key = nodeFenceKey(nf);
    return key === undefined ? [] : [{ node: nf.metadata.name, key }];
  });
  const fromClaims = claims.flatMap((k) => {
    const key = keyOfClaim(k);
    return key === undefined || fromNf.some((n) => n.key === key) ? [] : [{ node: k.spec.node, key }];
  });
  return [...fromNf, ...fromClaims];
}

/**
 * What the agent keeps of each object (informer transforms): only the fields it reads.
 * VolumeAttachments and Nodes as src/kube/slim.ts keeps them; of PVs and StorageClasses,
 * what prfence's annotations and the device identity need (fence/persistent-volume.ts).
 */
export const slim = {
  volumeAttachment: slimVolumeAttachment,
  node: slimNode,
  persistentVolume: slimPersistentVolume,
  storageClass: slimStorageClass,
  nodeFence: slimNodeFence,
};

/**
 * What the agent keeps of a NodeFence: of its own, all but managedFields (its status write
 * keeps the conditions' transition times); of another node's, what the fence rule and the
 * enqueue rules read (key, Fenced mark, fence request, unfence, handover), not its proofs,
 * conditions or isolation summary.
 */
export function slimNodeFence(nf: NodeFence, self: string): NodeFence {
  const { managedFields: _drop, ...metadata } = nf.metadata;
  if (nf.metadata.name === self) return { ...nf, metadata };
  const s = nf.status;
  const spec = {
    ...(nf.spec?.fenceState ? { fenceState: nf.spec.fenceState } : {}),
    ...(nf.spec?.unfencedAt ? { unfencedAt: nf.spec.unfencedAt } : {}),
  };
  const status = {
    ...(s?.key ? { key: s.key } : {}),
    ...(s?.phase ? { phase: s.phase } : {}),
    ...(s?.fencedBy ? { fencedBy: s.fencedBy } : {}),
    ...(s?.handingOver?.length ? { handingOver: s.handingOver } : {}),
  };
  return {
    apiVersion: nf.apiVersion,
    kind: nf.kind,
    metadata: {
      name: metadata.name,
      ...(metadata.resourceVersion ? { resourceVersion: metadata.resourceVersion } : {}),
    },
    ...(Object.keys(spec).length ? { spec } : {}),
    ...(Object.keys(status).length ? { status } : {}),
  };
}

export { DEVICE_ANNOTATION, deviceOf, storageClassOf } from '../fence/persistent-volume.js';
