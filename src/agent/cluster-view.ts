/**
 * Pure helpers that turn informer caches into the fence rule's inputs: which nodes are
 * legitimate for a PV (DESIGN.md "Words"), which keys the cluster knows, which PVs a
 * node shares. No I/O.
 */
import type { V1Node, V1PersistentVolume, V1VolumeAttachment } from '@kubernetes/client-node';
import type { NodeFence } from '../crd/types.js';
import { parseKey } from '../pr/key.js';
import type { NodeKey } from '../fence/rule.js';

export const OUT_OF_SERVICE_TAINT = 'node.kubernetes.io/out-of-service';
/** PV annotation naming the shared device (a path or an identity the resolver maps to a local path). */
export const DEVICE_ANNOTATION = 'prfence.io/device';

/** The PV a VolumeAttachment is for (only PV-backed attachments matter). */
export function pvOf(va: V1VolumeAttachment): string | undefined {
  return va.spec?.source?.persistentVolumeName ?? undefined;
}

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

/** Fenced by request: spec.fenceState=Fenced or the out-of-service taint. */
export function isFenceRequested(nf: NodeFence | undefined, node: V1Node | undefined): boolean {
  return nf?.spec?.fenceState === 'Fenced' || hasOutOfService(node);
}

export interface ClusterCaches {
  vas: readonly V1VolumeAttachment[];
  nodeFences: (name: string) => NodeFence | undefined;
  allNodeFences: readonly NodeFence[];
  nodes: (name: string) => V1Node | undefined;
}

/**
 * Legitimate nodes of a PV: a VolumeAttachment for it that is attached or attaching,
 * not being deleted, on a node not marked Fenced (NodeFence or out-of-service taint).
 */
export function legitimateNodes(pv: string, c: ClusterCaches): NodeKey[] {
  const out: NodeKey[] = [];
  for (const va of c.vas) {
    if (pvOf(va) !== pv || va.metadata?.deletionTimestamp) continue;
    const node = va.spec.nodeName;
    if (isFenceRequested(c.nodeFences(node), c.nodes(node))) continue;
    const key = nodeFenceKey(c.nodeFences(node));
    if (key === undefined) continue; // no key yet: nothing of it can be on the device
    if (!out.some((n) => n.node === node)) out.push({ node, key });
  }
  return out;
}

/** Every node key the cluster knows (to name stale keys). */
export function knownKeys(c: ClusterCaches): NodeKey[] {
  return c.allNodeFences.flatMap((nf) => {
    const key = nodeFenceKey(nf);
    return key === undefined ? [] : [{ node: nf.metadata.name, key }];
  });
}

/** PVs with a VolumeAttachment on `node` (fencing that node touches these). */
export function pvsOfNode(node: string, vas: readonly V1VolumeAttachment[]): string[] {
  return [...new Set(vas.filter((v) => v.spec.nodeName === node).flatMap((v) => pvOf(v) ?? []))];
}

export function deviceOf(pv: V1PersistentVolume | undefined): string | undefined {
  return pv?.metadata?.annotations?.[DEVICE_ANNOTATION];
}
