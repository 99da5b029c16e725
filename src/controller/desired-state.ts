/**
 * The desired state of each volume (docs/design.md "Desired state"): the controller, which
 * watches every PersistentVolume, StorageClass and VolumeAttachment, writes into each
 * VolumeReservation's `spec` what a node agent needs of them (device identity, policy
 * annotations, attachments), and labels it `node.prfence.io/<node>` for every node
 * involved: a node with an attachment, or whose key the volume's record says is on the
 * device (`status.registrants`, `status.holder`), so the node still sees the volume until
 * it has left it. A node agent with `--scope=node` watches only the VolumeReservations
 * labelled with its node.
 *
 * This is no device decision: the agents still read the device and take a fresh view of
 * the API before any command. So the desired state is computed from the caches, and
 * written only when it differs from what the VolumeReservation cache shows.
 */
import type { V1PersistentVolume, V1StorageClass, V1VolumeAttachment } from '@kubernetes/client-node';
import {
  API_VERSION,
  VOLUME_RESERVATION,
  VR_FINALIZER,
  type AttachmentRef,
  type VolumeReservation,
  type VolumeReservationSpec,
} from '../crd/types.js';
import { NODE_LABEL_PREFIX, nodeLabel } from '../crd/node-label.js';
import { deviceOf, storageClassOf } from '../fence/persistent-volume.js';
import { policyAnnotations } from '../fence/volume-policy.js';
import { pvOf } from '../kube/slim.js';
import { FIELD_MANAGER, type Acting } from './acting.js';
import { vrPath } from './api.js';

export interface DesiredStateCaches {
  pv: (name: string) => V1PersistentVolume | undefined;
  vasOfPv: (pv: string) => readonly V1VolumeAttachment[];
  storageClass: (name: string) => V1StorageClass | undefined;
  volumeReservation: (name: string) => VolumeReservation | undefined;
}

export interface DesiredVolume {
  spec: VolumeReservationSpec;
  /** node.prfence.io/<node> of every node involved, value "true". */
  labels: Record<string, string>;
}

/**
 * The desired state of PV `name`, or undefined when it needs none: the PV is not in the
 * cache, names no device prfence can fence, or has neither an attachment nor a
 * VolumeReservation yet.
 */
export function desiredVolume(name: string, c: DesiredStateCaches): DesiredVolume | undefined {
  const pv = c.pv(name);
  const device = deviceOf(pv);
  if (!pv || !device) return undefined;
  const vas = c.vasOfPv(name).filter((va) => pvOf(va) === name);
  const vr = c.volumeReservation(name);
  if (vas.length === 0 && !vr) return undefined;
  const attachments: AttachmentRef[] = vas
    .map((va) => ({
      node: va.spec.nodeName,
      name: va.metadata?.name ?? '',
      ...(va.metadata?.deletionTimestamp ? { deleting: true } : {}),
    }))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const annotations = policyAnnotations(pv.metadata?.annotations);
  const scName = storageClassOf(pv);
  const scAnnotations = scName ? policyAnnotations(c.storageClass(scName)?.metadata?.annotations) : {};
  const spec: VolumeReservationSpec = {
    device,
    ...(Object.keys(annotations).length ? { annotations } : {}),
    ...(scName
      ? {
          storageClass: {
            name: scName,
            ...(Object.keys(scAnnotations).length ? { annotations: scAnnotations } : {}),
          },
        }
      : {}),
    attachments,
  };
  const nodes = new Set<string>(attachments.map((a) => a.node));
  for (const r of vr?.status?.registrants ?? []) nodes.add(r.node);
  if (vr?.status?.holder?.node) nodes.add(vr.status.holder.node);
  const labels: Record<string, string> = {};
  for (const n of [...nodes].sort()) labels[nodeLabel(n)] = 'true';
  return { spec, labels };
}

/** The node labels of a VolumeReservation (the controller's; other labels are not its business). */
export function nodeLabelsOf(vr: VolumeReservation | undefined): Record<string, string> {
  return Object.fromEntries(
    Object.entries(vr?.metadata.labels ?? {}).filter(([k]) => k.startsWith(NODE_LABEL_PREFIX)),
  );
}

/** Whether `vr` carries the controller's finalizer. */
export const hasFinalizer = (vr: VolumeReservation | undefined): boolean =>
  vr?.metadata.finalizers?.includes(VR_FINALIZER) ?? false;

/**
 * Whether the desired state of `vr` carries the controller's finalizer: always, except on
 * a VolumeReservation being deleted without it (a finalizer cannot be added to an object
 * being deleted; one the controller owns is kept, and dropped only by
 * `releaseVolumeReservation`).
 */
export function protects(vr: VolumeReservation | undefined): boolean {
  return !vr?.metadata.deletionTimestamp || hasFinalizer(vr);
}

/**
 * Whether a VolumeReservation update can change its desired state: the nodes of its
 * registrants or holder (they keep their label), or what was written (spec, node labels,
 * the finalizer, e.g. changed by hand), or its deletion. The many status writes that
 * change none of these are not looked at.
 */
export function changesDesiredState(vr: VolumeReservation, old: VolumeReservation): boolean {
  const nodesOf = (v: VolumeReservation) =>
    [...new Set([...(v.status?.registrants ?? []).map((r) => r.node), v.status?.holder?.node ?? ''])]
      .sort()
      .join(',');
  return (
    nodesOf(vr) !== nodesOf(old) ||
    !sameJson(vr.spec ?? {}, old.spec ?? {}) ||
    !sameJson(nodeLabelsOf(vr), nodeLabelsOf(old)) ||
    hasFinalizer(vr) !== hasFinalizer(old) ||
    !vr.metadata.deletionTimestamp !== !old.metadata.deletionTimestamp
  );
}

/** Key-order-independent equality of two JSON values. */
function sameJson(a: unknown, b: unknown): boolean {
  const canon = (v: unknown): unknown =>
    Array.isArray(v)
      ? v.map(canon)
      : v && typeof v === 'object'
        ? Object.fromEntries(
            Object.entries(v as Record<string, unknown>)
              .filter(([, x]) => x !== undefined)
              .sort(([x], [y]) => (x < y ? -1 : 1))
              .map(([k, x]) => [k, canon(x)]),
          )
        : v;
  return JSON.stringify(canon(a)) === JSON.stringify(canon(b));
}

/**
 * Writes PV `name`'s desired state (server-side apply of `spec`, the node labels and the
 * finalizer, field manager prfence-controller) when it differs from the cached
 * VolumeReservation. A label the controller applied before and no longer applies is
 * removed by the apply itself.
 */
export async function reconcileDesiredState(
  a: Acting,
  c: DesiredStateCaches,
  name: string,
): Promise<'written' | 'unchanged' | 'none'> {
  const want = desiredVolume(name, c);
  if (!want) return 'none';
  const vr = c.volumeReservation(name);
  const finalizers = protects(vr) ? [VR_FINALIZER] : undefined;
  if (
    vr &&
    sameJson(vr.spec ?? {}, want.spec) &&
    sameJson(nodeLabelsOf(vr), want.labels) &&
    hasFinalizer(vr) === !!finalizers
  )
    return 'unchanged';
  await a.write({ kind: 'desired-state', resource: VOLUME_RESERVATION.plural, name }, () =>
    a.rest.apply(
      vrPath(name),
      {
        apiVersion: API_VERSION,
        kind: VOLUME_RESERVATION.kind,
        metadata: { name, labels: want.labels, ...(finalizers ? { finalizers } : {}) },
        spec: want.spec,
      },
      FIELD_MANAGER,
    ),
  );
  return 'written';
}
