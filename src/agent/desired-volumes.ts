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
import type { Logger } from 'pino';
import { nodeLabel } from '../crd/node-label.js';
import type { VolumeReservation } from '../crd/types.js';
import type { PolicyInputs } from '../fence/volume-policy.js';
import { startInformer, type InformerHandlers, type ResilientInformer } from '../kube/informer.js';
import type { RestClient } from '../kube/rest-client.js';
import type { VolumeSource } from './cluster-informers.js';
import { vrPath } from './status-writer.js';

/** What is kept of a VolumeReservation: its name and spec (its status is the agents' record, read fresh). */
export function slimDesired(vr: VolumeReservation): VolumeReservation {
  return {
    apiVersion: vr.apiVersion,
    kind: vr.kind,
    metadata: { name: vr.metadata.name, resourceVersion: vr.metadata.resourceVersion ?? '' },
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

export class DesiredVolumes implements VolumeSource {
  #vr!: ResilientInformer<VolumeReservation>;
  constructor(
    private readonly node: string,
    private readonly handlers: InformerHandlers<VolumeReservation>,
  ) {}

  start(common: { rest: RestClient; log: Logger; idleTimeoutMs: number }): ResilientInformer<never>[] {
    this.#vr = startInformer<VolumeReservation>({
      ...common,
      path: vrPath(),
      labelSelector: nodeLabel(this.node),
      transform: slimDesired,
      indexes: { node: (vr) => (vr.spec?.attachments ?? []).map((a) => a.node) },
      handlers: this.handlers,
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
    return this.#vr.get(pv)?.spec?.device;
  }

  policyInputs(name: string): Omit<PolicyInputs, 'defaults'> {
    const spec = this.#vr.get(name)?.spec;
    return {
      pv: { name, annotations: spec?.annotations },
      storageClass: spec?.storageClass,
    };
  }
}
