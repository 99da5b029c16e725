/**
 * The agent's informers: NodeFences and its own Node, and the volumes, from one of two
 * sources (`scope`):
 * - `cluster`: VolumeAttachments (indexed by PV and by node), PersistentVolumes and
 *   StorageClasses, cluster-wide, as below;
 * - `node`: only the VolumeReservations labelled for this node, whose spec is the desired
 *   state the controller writes (desired-volumes.ts).
 * Each object is slimmed before it is cached (cluster-view.ts) and wired to the enqueue
 * rules (enqueue.ts). The caches may lag: they select the work, and are never enough
 * alone for a device command (fresh-view.ts).
 */
import type { V1Node, V1PersistentVolume, V1StorageClass, V1VolumeAttachment } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { NodeFence } from '../crd/types.js';
import {
  startInformer,
  type InformerHandlers,
  type InformerOptions,
  type ResilientInformer,
} from '../kube/informer.js';
import type { RestClient } from '../kube/rest-client.js';
import { pvOf } from '../kube/slim.js';
import { deviceOf, slim, storageClassOf, type ClusterCaches } from './cluster-view.js';
import { DesiredVolumes } from './desired-volumes.js';
import { enqueueRules } from './enqueue.js';
import { nfPath } from './key-claim.js';
import { resolveVolumePolicy, type PolicyInputs, type VolumePolicy } from '../fence/volume-policy.js';

/** The agents' re-lists after an API error are spread over this long (informer.ts). */
export const RELIST_SPREAD_MS = 5000;

/** Where an agent learns of its volumes. */
export type AgentScope = 'cluster' | 'node';
export const AGENT_SCOPES: readonly AgentScope[] = ['cluster', 'node'];

export interface ClusterInformersOptions {
  rest: RestClient;
  log: Logger;
  /** This node. */
  node: string;
  /** Default `cluster`. */
  scope?: AgentScope;
  /** An observer (`--observe`): with scope `node`, it still watches every volume. */
  observe?: boolean;
  /** Dead-watch detection (no event or bookmark for this long). */
  idleTimeoutMs: number;
  /** PVs this node is still involved in (released after a detach). */
  touched: () => Iterable<string>;
  /** A change concerns this PV: reconcile it. */
  trigger: (pv: string) => void;
  /** This node's own NodeFence was deleted (or is missing at a resync). */
  onOwnNodeFenceDeleted: () => void;
  /** A volume's VolumeReservation was added or went away (enqueue.ts). */
  onRecordReplaced?: (pv: string) => void;
  /** The agent defaults under the PV and StorageClass annotations (volume-policy.ts). */
  policyDefaults: PolicyInputs['defaults'];
}

/** The options every informer of the agent shares. */
export type InformerCommon = Pick<
  InformerOptions<never>,
  'rest' | 'log' | 'idleTimeoutMs' | 'relistSpreadMs'
>;

/** What the agent reads of its volumes, from either source. */
export interface VolumeSource {
  /** Starts the source's informers (returned, to wait on and stop). */
  start(common: InformerCommon): ResilientInformer<never>[];
  /** PVs attached (or attaching) to a node, among those this source shows. */
  pvsOf(node: string): Set<string>;
  vasOf(pv: string): readonly V1VolumeAttachment[];
  identityOf(pv: string): string | undefined;
  policyInputs(pv: string): Omit<PolicyInputs, 'defaults'>;
}

/** Every VolumeAttachment, PersistentVolume and StorageClass of the cluster. */
class ClusterVolumes implements VolumeSource {
  #va!: ResilientInformer<V1VolumeAttachment>;
  #pv!: ResilientInformer<V1PersistentVolume>;
  #sc!: ResilientInformer<V1StorageClass>;
  constructor(
    private readonly handlers: {
      volumeAttachment: InformerHandlers<V1VolumeAttachment>;
      persistentVolume: InformerHandlers<V1PersistentVolume>;
      storageClass: InformerHandlers<V1StorageClass>;
    },
  ) {}

  start(common: InformerCommon): ResilientInformer<never>[] {
    this.#va = startInformer<V1VolumeAttachment>({
      ...common,
      path: '/apis/storage.k8s.io/v1/volumeattachments',
      transform: slim.volumeAttachment,
      indexes: { pv: (va) => (pvOf(va) ? [pvOf(va)!] : []), node: (va) => [va.spec.nodeName] },
      handlers: this.handlers.volumeAttachment,
    });
    this.#pv = startInformer<V1PersistentVolume>({
      ...common,
      path: '/api/v1/persistentvolumes',
      transform: slim.persistentVolume,
      handlers: this.handlers.persistentVolume,
    });
    // Only for the policy annotations prfence.io/fencing and prfence.io/reservation-type.
    this.#sc = startInformer<V1StorageClass>({
      ...common,
      path: '/apis/storage.k8s.io/v1/storageclasses',
      transform: slim.storageClass,
      handlers: this.handlers.storageClass,
    });
    return [this.#va, this.#pv, this.#sc] as ResilientInformer<never>[];
  }

  pvsOf(node: string): Set<string> {
    return new Set(this.#va.byIndex('node', node).flatMap((va) => pvOf(va) ?? []));
  }

  vasOf(pv: string): readonly V1VolumeAttachment[] {
    return this.#va.byIndex('pv', pv);
  }

  identityOf(pv: string): string | undefined {
    return deviceOf(this.#pv.get(pv));
  }

  policyInputs(name: string): Omit<PolicyInputs, 'defaults'> {
    const pv = this.#pv.get(name);
    const scName = storageClassOf(pv);
    const sc = scName === undefined ? undefined : this.#sc.get(scName);
    return {
      pv: { name, annotations: pv?.metadata?.annotations },
      storageClass: sc ? { name: sc.metadata?.name ?? '', annotations: sc.metadata?.annotations } : undefined,
    };
  }
}

export class ClusterInformers {
  readonly #o: ClusterInformersOptions;
  readonly #rules: ReturnType<typeof enqueueRules>;
  readonly #volumes: VolumeSource;
  #all: ResilientInformer<never>[] = [];
  #nodes!: ResilientInformer<V1Node>;
  #nf!: ResilientInformer<NodeFence>;

  constructor(o: ClusterInformersOptions) {
    this.#o = o;
    this.#rules = enqueueRules({
      node: o.node,
      pvsOf: (n) => this.pvsOf(n),
      touched: o.touched,
      trigger: o.trigger,
      storageClassOf: (pv) => this.#volumes.policyInputs(pv).storageClass?.name,
      onOwnNodeFenceDeleted: o.onOwnNodeFenceDeleted,
      ...(o.onRecordReplaced ? { onRecordReplaced: o.onRecordReplaced } : {}),
    });
    this.#volumes =
      (o.scope ?? 'cluster') === 'node'
        ? new DesiredVolumes(o.node, this.#rules.volumeReservation, o.observe ?? false)
        : new ClusterVolumes(this.#rules);
  }

  /** Starts every informer; resolves once each has listed (its cache is complete). */
  async start(): Promise<void> {
    const { rest, log, idleTimeoutMs } = this.#o;
    const rules = this.#rules;
    // After an API server restart every agent's watches break at once: their re-lists are
    // spread over 5 s (at 1,000 nodes, about 200 a second instead of 1,000 in one).
    const common = { rest, log, idleTimeoutMs, relistSpreadMs: RELIST_SPREAD_MS };
    // This node's Node only: every Node's status heartbeat (~13 KiB every 10 s) would reach
    // every agent otherwise (731 KiB/s per agent with 1,000 nodes, `npm run bench`). Other
    // nodes' out-of-service taints reach the agents as the controller's fence request on
    // their NodeFence; the fresh view GETs the Nodes a device command involves.
    this.#nodes = startInformer<V1Node>({
      ...common,
      path: '/api/v1/nodes',
      fieldSelector: `metadata.name=${this.#o.node}`,
      transform: slim.node,
      handlers: rules.node,
    });
    this.#nf = startInformer<NodeFence>({
      ...common,
      path: nfPath(),
      transform: (nf) => slim.nodeFence(nf, this.#o.node),
      handlers: rules.nodeFence,
    });
    this.#all = [this.#nodes, this.#nf, ...this.#volumes.start(common)] as ResilientInformer<never>[];
    await Promise.all(this.#all.map((i) => i.synced));
  }

  /** PVs attached (or attaching) to a node: an index lookup. */
  pvsOf(node: string): Set<string> {
    return this.#volumes.pvsOf(node);
  }

  /** The PV's device identity, if prfence can fence it. */
  identityOf(pv: string): string | undefined {
    return this.#volumes.identityOf(pv);
  }

  /** PV annotation > StorageClass annotation > agent default (volume-policy.ts), from the caches. */
  policyOf(name: string): VolumePolicy {
    return resolveVolumePolicy({ ...this.#volumes.policyInputs(name), defaults: this.#o.policyDefaults });
  }

  /** The caches as fence-rule inputs (cluster-view.ts). */
  caches(): ClusterCaches {
    return {
      vasOf: (pv) => this.#volumes.vasOf(pv),
      nodeFences: (n) => this.#nf.get(n),
      allNodeFences: this.#nf.list(),
      nodes: (n) => this.#nodes.get(n),
    };
  }

  nodeFence(name: string): NodeFence | undefined {
    return this.#nf.get(name);
  }

  node(name: string): V1Node | undefined {
    return this.#nodes.get(name);
  }

  /** A missing own NodeFence is handled as its delete event: recreated, this node's volumes enqueued. */
  recheckOwnNodeFence(): void {
    const node = this.#o.node;
    if (!this.#nf.get(node)) this.#rules.nodeFence.onDelete?.({ metadata: { name: node } } as NodeFence);
  }

  /** Undefined while every watch is alive, else why not. */
  problem(): string | undefined {
    return this.#all.map((i) => i.problem()).find((p) => p !== undefined);
  }

  async stop(): Promise<void> {
    await Promise.all(this.#all.map((i) => i.stop()));
  }
}
