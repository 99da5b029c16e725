/**
 * The volumes of a node-scoped agent (`--scope=node`): only the VolumeReservations labelled
 * `node.prfence.io/<this node>`, whose `spec` is the desired state the controller writes
 * (controller/desired-state.ts). Their attachments stand in for the VolumeAttachment cache,
 * their device and policy annotations for the PersistentVolume and StorageClass caches. A
 * volume the controller has not described yet is unknown here: nothing is registered on it
 * (the same as a volume whose attachment the caches have not seen).
 *
 * A device command still takes a fresh view (fresh-view.ts, volume-view.ts): the view of
 * one volume GETs each attachment named here, the full view LISTs them all.
 */
import type { V1VolumeAttachment } from '@kubernetes/client-node';
import { nodeLabel } from '../crd/node-label.js';
import type { VolumeReservation } from '../crd/types.js';
import type { PolicyInputs } from '../fence/volume-policy.js';
import { startInformer, type InformerHandlers, type ResilientInformer } from '../kube/informer.js';
import type { InformerCommon, VolumeSource } from './cluster-informers.js';
import { vrPath } from './status-writer.js';

/**
 * What is kept of a VolumeReservation: its name, uid (a new one: the object was created
 * again) and spec (its status is the agents' record, read fresh).
 */
export function slimDesired(vr: VolumeReservation): VolumeReservation {
  return {
    apiVersion: vr.apiVersion,
    kind: vr.kind,
    metadata: {
      name: vr.metadata.name,
      resourceVersion: vr.metadata.resourceVersion ?? '',
      ...(vr.metadata.uid ? { uid: vr.metadata.uid } : {}),
    },
    ...(vr.spec ? { spec: vr.spec } : {}),
  };
}

/** The spec's attachments as the slim VolumeAttachments the fence rule reads. */
export function attachmentsOf(vr: VolumeReservation | undefined): V1VolumeAttachment[] {
  const pv = vr?.metadata.name ?? '';
  return (vr?.spec?.attachments ?? []).map((a) => ({
    metadata: { name: a.name, ...(a.deleting ? { deletionTimestamp: new Date(0) } : {}) },
    spec: { attacher: '', nodeName: a.node, source: { persistentVolumeName: pv } },
  }));
}

/** How many volumes that left the cache keep their desired state (see DesiredVolumes). */
export const GONE_KEPT = 1024;

/**
 * Informer handlers that also remember, newest last and at most `max`, the last object of
 * each name deleted from the cache (until it is added again).
 */
export function rememberDeleted<T extends { metadata: { name: string } }>(
  handlers: InformerHandlers<T>,
  max: number,
): { handlers: InformerHandlers<T>; gone: ReadonlyMap<string, T> } {
  const gone = new Map<string, T>();
  return {
    gone,
    handlers: {
      onAdd: (o) => (gone.delete(o.metadata.name), handlers.onAdd?.(o)),
      onUpdate: (o, old) => (gone.delete(o.metadata.name), handlers.onUpdate?.(o, old)),
      onDelete: (o) => {
        gone.delete(o.metadata.name);
        gone.set(o.metadata.name, o);
        if (gone.size > max) gone.delete(gone.keys().next().value!);
        handlers.onDelete?.(o);
      },
    },
  };
}

export class DesiredVolumes implements VolumeSource {
  #vr!: ResilientInformer<VolumeReservation>;
  /**
   * The last desired state of volumes no longer labelled for this node, newest last: the
   * label goes once the attachment is gone and no key of this node is recorded, but the
   * key may still be on the device (a status write that did not land). The node can then
   * still find the device to leave it; it has no attachment there.
   */
  readonly #gone: ReadonlyMap<string, VolumeReservation>;
  readonly #handlers: InformerHandlers<VolumeReservation>;

  /**
   * `everyVolume`: an observer (`--observe`) looks at volumes it is not attached to, so it
   * watches every VolumeReservation, not only those labelled for its node.
   */
  constructor(
    private readonly node: string,
    handlers: InformerHandlers<VolumeReservation>,
    private readonly everyVolume = false,
  ) {
    const r = rememberDeleted(handlers, GONE_KEPT);
    this.#handlers = r.handlers;
    this.#gone = r.gone;
  }

  start(common: InformerCommon): ResilientInformer<never>[] {
    this.#vr = startInformer<VolumeReservation>({
      ...common,
      path: vrPath(),
      ...(this.everyVolume ? {} : { labelSelector: nodeLabel(this.node) }),
      transform: slimDesired,
      indexes: { node: (vr) => (vr.spec?.attachments ?? []).map((a) => a.node) },
      handlers: this.#handlers,
    });
    return [this.#vr as ResilientInformer<never>];
  }

  pvsOf(node: string): Set<string> {
    return new Set(this.#vr.byIndex('node', node).map((vr) => vr.metadata.name));
  }

  vasOf(pv: string): readonly V1VolumeAttachment[] {
    return attachmentsOf(this.#vr.get(pv));
  }

  identityOf(pv: string): string | undefined {
    return (this.#vr.get(pv) ?? this.#gone.get(pv))?.spec?.device;
  }

  policyInputs(name: string): Omit<PolicyInputs, 'defaults'> {
    const spec = (this.#vr.get(name) ?? this.#gone.get(name))?.spec;
    return {
      pv: { name, annotations: spec?.annotations },
      storageClass: spec?.storageClass,
    };
  }
}
