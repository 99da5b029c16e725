/**
 * The agent's informers: VolumeAttachments (indexed by PV and by node), PersistentVolumes,
 * Nodes, NodeFences and StorageClasses, each slimmed before it is cached
 * (cluster-view.ts) and wired to the enqueue rules (enqueue.ts); and the lookups the rest
 * of the agent makes on their caches. The caches may lag: they select the work, and are
 * never enough alone for a device command (fresh-view.ts).
 */
import type { V1Node, V1PersistentVolume, V1StorageClass, V1VolumeAttachment } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { NodeFence } from '../crd/types.js';
import { startInformer, type ResilientInformer } from '../kube/informer.js';
import type { RestClient } from '../kube/rest-client.js';
import { pvOf } from '../kube/slim.js';
import { deviceOf, slim, storageClassOf, type ClusterCaches } from './cluster-view.js';
import { enqueueRules } from './enqueue.js';
import { nfPath } from './key-claim.js';
import { resolveVolumePolicy, type PolicyInputs, type VolumePolicy } from './volume-policy.js';

export interface ClusterInformersOptions {
  rest: RestClient;
  log: Logger;
  /** This node. */
  node: string;
  /** Dead-watch detection (no event or bookmark for this long). */
  idleTimeoutMs: number;
  /** PVs this node is still involved in (released after a detach). */
  touched: () => Iterable<string>;
  /** A change concerns this PV: reconcile it. */
  trigger: (pv: string) => void;
  /** This node's own NodeFence was deleted (or is missing at a resync). */
  onOwnNodeFenceDeleted: () => void;
  /** The agent defaults under the PV and StorageClass annotations (volume-policy.ts). */
  policyDefaults: PolicyInputs['defaults'];
}

export class ClusterInformers {
  readonly #o: ClusterInformersOptions;
  readonly #rules: ReturnType<typeof enqueueRules>;
  #all: ResilientInformer<never>[] = [];
  #va!: ResilientInformer<V1VolumeAttachment>;
  #pv!: ResilientInformer<V1PersistentVolume>;
  #nodes!: ResilientInformer<V1Node>;
  #nf!: ResilientInformer<NodeFence>;
  #sc!: ResilientInformer<V1StorageClass>;

  constructor(o: ClusterInformersOptions) {
    this.#o = o;
    this.#rules = enqueueRules({
      node: o.node,
      pvsOf: (n) => this.pvsOf(n),
      touched: o.touched,
      trigger: o.trigger,
      storageClassOf: (pv) => storageClassOf(this.#pv.get(pv)),
      onOwnNodeFenceDeleted: o.onOwnNodeFenceDeleted,
    });
  }

  /** Starts every informer; resolves once each has listed (its cache is complete). */
  async start(): Promise<void> {
    const { rest, log, idleTimeoutMs } = this.#o;
    const rules = this.#rules;
    const common = { rest, log, idleTimeoutMs };
    this.#va = startInformer<V1VolumeAttachment>({
      ...common,
      path: '/apis/storage.k8s.io/v1/volumeattachments',
      transform: slim.volumeAttachment,
      indexes: { pv: (va) => (pvOf(va) ? [pvOf(va)!] : []), node: (va) => [va.spec.nodeName] },
      handlers: rules.volumeAttachment,
    });
    this.#pv = startInformer<V1PersistentVolume>({
      ...common,
      path: '/api/v1/persistentvolumes',
      transform: slim.persistentVolume,
      handlers: rules.persistentVolume,
    });
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
    this.#nf = startInformer<NodeFence>({ ...common, path: nfPath(), handlers: rules.nodeFence });
    // Only for the policy annotations prfence.io/fencing and prfence.io/reservation-type.
    this.#sc = startInformer<V1StorageClass>({
      ...common,
      path: '/apis/storage.k8s.io/v1/storageclasses',
      transform: slim.storageClass,
      handlers: rules.storageClass,
    });
    this.#all = [this.#va, this.#pv, this.#nodes, this.#nf, this.#sc] as ResilientInformer<never>[];
    await Promise.all(this.#all.map((i) => i.synced));
  }

  /** PVs attached (or attaching) to a node: an index lookup. */
  pvsOf(node: string): Set<string> {
    return new Set(this.#va.byIndex('node', node).flatMap((va) => pvOf(va) ?? []));
  }

  /** The PV's device identity from the PV cache, if prfence can fence it. */
  identityOf(pv: string): string | undefined {
    return deviceOf(this.#pv.get(pv));
  }

  /** PV annotation > StorageClass annotation > agent default (volume-policy.ts), from the caches. */
  policyOf(name: string): VolumePolicy {
    const pv = this.#pv.get(name);
    const scName = storageClassOf(pv);
    const sc = scName === undefined ? undefined : this.#sc.get(scName);
    return resolveVolumePolicy({
      pv: { name, annotations: pv?.metadata?.annotations },
      storageClass: sc ? { name: sc.metadata?.name ?? '', annotations: sc.metadata?.annotations } : undefined,
      defaults: this.#o.policyDefaults,
    });
  }

  /** The caches as fence-rule inputs (cluster-view.ts). */
  caches(): ClusterCaches {
    return {
      vasOf: (pv) => this.#va.byIndex('pv', pv),
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
