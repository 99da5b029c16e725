/**
 * Informer transforms for Kubernetes objects (client-go's SetTransform), shared by the agent
 * and the controller: only the fields prfence reads are kept; managedFields, status and
 * everything else are dropped before caching. No fencing knowledge here.
 */
import type { V1Node, V1VolumeAttachment } from '@kubernetes/client-node';

/** The PV a VolumeAttachment is for (only PV-backed attachments matter). */
export function pvOf(va: V1VolumeAttachment): string | undefined {
  return va.spec?.source?.persistentVolumeName ?? undefined;
}

/** Name, resourceVersion, deletionTimestamp, the node, and the PV it is for. */
export function slimVolumeAttachment(va: V1VolumeAttachment): V1VolumeAttachment {
  const pv = pvOf(va);
  return {
    metadata: {
      name: va.metadata?.name ?? '',
      resourceVersion: va.metadata?.resourceVersion ?? '',
      ...(va.metadata?.deletionTimestamp ? { deletionTimestamp: va.metadata.deletionTimestamp } : {}),
    },
    spec: {
      attacher: '',
      nodeName: va.spec.nodeName,
      source: pv ? { persistentVolumeName: pv } : {},
    },
  };
}

/** Name, resourceVersion, UID, and the taints (key and effect); heartbeats and status are dropped. */
export function slimNode(n: V1Node): V1Node {
  return {
    metadata: {
      name: n.metadata?.name ?? '',
      resourceVersion: n.metadata?.resourceVersion ?? '',
      uid: n.metadata?.uid ?? '',
    },
    ...(n.spec?.taints?.length
      ? { spec: { taints: n.spec.taints.map((t) => ({ key: t.key, effect: t.effect })) } }
      : {}),
  };
}
