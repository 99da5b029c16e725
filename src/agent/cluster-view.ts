/**
 * Pure helpers that turn informer caches into the fence rule's inputs: which nodes are
 * legitimate for a PV (DESIGN.md "Words"), which keys the cluster knows, which PVs a
 * node shares. No I/O.
 */
import type { V1Node, V1PersistentVolume, V1StorageClass, V1VolumeAttachment } from '@kubernetes/client-node';
import type { NodeFence, ReservationKey } from '../crd/types.js';
import { pvOf, slimNode, slimVolumeAttachment } from '../kube/slim.js';
import { policyAnnotations } from './volume-policy.js';
import { parseKey, type PrKey } from '../pr/key.js';
import type { NodeKey } from '../fence/rule.js';

export const OUT_OF_SERVICE_TAINT = 'node.kubernetes.io/out-of-service';
/** PV annotation naming the shared device (a path or an identity the resolver maps to a local path). */
export const DEVICE_ANNOTATION = 'prfence.io/device';

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
 * what prfence's annotations and the device identity need.
 */
export const slim = {
  volumeAttachment: slimVolumeAttachment,
  node: slimNode,
  /** The device identity (under its annotation), the policy annotations and the StorageClass name. */
  persistentVolume(pv: V1PersistentVolume): V1PersistentVolume {
    const device = deviceOf(pv);
    const annotations = {
      ...policyAnnotations(pv.metadata?.annotations),
      ...(device ? { [DEVICE_ANNOTATION]: device } : {}),
    };
    const sc = pv.spec?.storageClassName;
    return {
      metadata: {
        name: pv.metadata?.name ?? '',
        resourceVersion: pv.metadata?.resourceVersion ?? '',
        ...(Object.keys(annotations).length ? { annotations } : {}),
      },
      ...(sc ? { spec: { storageClassName: sc } } : {}),
    };
  },
  /** Only the policy annotations (prfence.io/fencing, prfence.io/reservation-type). */
  storageClass(sc: V1StorageClass): V1StorageClass {
    const annotations = policyAnnotations(sc.metadata?.annotations);
    return {
      metadata: {
        name: sc.metadata?.name ?? '',
        resourceVersion: sc.metadata?.resourceVersion ?? '',
        ...(Object.keys(annotations).length ? { annotations } : {}),
      },
      provisioner: '',
    };
  },
};

/** The StorageClass a PV names (spec.storageClassName; empty means none). */
export function storageClassOf(pv: V1PersistentVolume | undefined): string | undefined {
  return pv?.spec?.storageClassName || undefined;
}

/**
 * A PV's device identity (DESIGN.md "Device resolution", in order): the annotation
 * prfence.io/device; CSI volumeAttributes (prfence.io/device, wwn / wwid, nguid); the
 * in-tree FC (wwids, or targetWWNs + lun) and iSCSI (portal, iqn, lun) fields. The
 * identity syntax is src/pr/resolve.ts's; undefined: not a volume prfence can fence.
 * (The cached, slimmed PV keeps only this, under the annotation.)
 */
export function deviceOf(pv: V1PersistentVolume | undefined): string | undefined {
  const explicit = pv?.metadata?.annotations?.[DEVICE_ANNOTATION];
  if (explicit) return explicit;
  const spec = pv?.spec;
  const attrs = Object.fromEntries(
    Object.entries(spec?.csi?.volumeAttributes ?? {}).map(([k, v]) => [k.toLowerCase(), v]),
  );
  if (attrs[DEVICE_ANNOTATION]) return attrs[DEVICE_ANNOTATION];
  const wwid = attrs.wwn ?? attrs.wwid;
  if (wwid) return `wwid:${wwid}`;
  if (attrs.nguid) return `nguid:${attrs.nguid}`;
  const fc = spec?.fc;
  if (fc?.wwids?.[0]) return `wwid:${fc.wwids[0]}`;
  if (fc?.targetWWNs?.[0] && fc.lun !== undefined) return `fc:${fc.targetWWNs[0]}/lun/${fc.lun}`;
  const iscsi = spec?.iscsi;
  if (iscsi?.targetPortal && iscsi.iqn) return `iscsi:${iscsi.targetPortal}/${iscsi.iqn}/lun/${iscsi.lun}`;
  return undefined;
}
