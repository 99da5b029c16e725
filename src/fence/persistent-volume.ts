/**
 * What prfence reads of a PersistentVolume and its StorageClass, shared by the agent and
 * the controller: the device identity, the StorageClass name and the policy annotations
 * (volume-policy.ts), and the informer transforms that keep only those. Pure; no I/O.
 */
import type { V1PersistentVolume, V1StorageClass } from '@kubernetes/client-node';
import { policyAnnotations } from './volume-policy.js';

/** PV annotation naming the shared device (a path or an identity the resolver maps to a local path). */
export const DEVICE_ANNOTATION = 'prfence.io/device';

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

/** The device identity (under its annotation), the policy annotations and the StorageClass name. */
export function slimPersistentVolume(pv: V1PersistentVolume): V1PersistentVolume {
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
}

/** Only the policy annotations (prfence.io/fencing, prfence.io/reservation-type). */
export function slimStorageClass(sc: V1StorageClass): V1StorageClass {
  const annotations = policyAnnotations(sc.metadata?.annotations);
  return {
    metadata: {
      name: sc.metadata?.name ?? '',
      resourceVersion: sc.metadata?.resourceVersion ?? '',
      ...(Object.keys(annotations).length ? { annotations } : {}),
    },
    provisioner: '',
  };
}
