/**
 * Node loss (opt-in, `--auto-fence`): a node whose `kube-node-lease` Lease has not been
 * renewed for `--node-lost-after` is declared lost, and its NodeFence gets
 * `spec.fenceState: Fenced`, `reason: NodeLost`, `requestedBy: prfence-controller`.
 *
 * Clock rule (as client-go's leader election and the node lifecycle controller): the
 * renewTime written in the Lease comes from the kubelet's clock and is never compared with
 * this controller's clock. {@link NodeLossTracker} only remembers, on this process's
 * monotonic clock, when it last saw the Lease's renewTime or resourceVersion CHANGE. A node
 * is lost when that has not happened for nodeLostAfter. Observation starts when this
 * replica starts acting: a fresh leader (empty memory) watches for a full nodeLostAfter
 * before it calls anything lost, whatever the Lease says.
 *
 * Freshness gate ({@link reconcileNodeLoss}): the tracker only selects the node. Right
 * before the apply the Lease is read again with a consistent GET; if it changed since the
 * stale observation, no fence. A missing or unreadable Lease, Node or NodeFence never
 * leads to a fence. The controller never unfences: a lease that comes back after the
 * request leaves it in place (a lost node may have kept writing; a person unfences, S2).
 */
import type { V1Node } from '@kubernetes/client-node';
import type { NodeFence } from '../crd/types.js';
import type { Acting } from './acting.js';
import { getFresh, nfPath, nodePath } from './api.js';
import { requestFence } from './fence-request.js';
import { fenceRequested } from './taint-fence.js';

export const NODE_LEASE_NAMESPACE = 'kube-node-lease';
export const NODE_LOST_REASON = 'NodeLost';
export const DEFAULT_NODE_LOST_AFTER_MS = 40_000;

export const nodeLeasePath = (name?: string) =>
  `/apis/coordination.k8s.io/v1/namespaces/${NODE_LEASE_NAMESPACE}/leases${name ? `/${encodeURIComponent(name)}` : ''}`;

/** What the controller keeps of a node Lease. */
export interface NodeLease {
  metadata: { name: string; resourceVersion?: string };
  spec?: { renewTime?: string | null };
}

/** The informer's transform: name, resourceVersion and renewTime only. */
export function slimNodeLease(l: NodeLease): NodeLease {
  return {
    metadata: { name: l.metadata?.name ?? '', resourceVersion: l.metadata?.resourceVersion ?? '' },
    spec: { renewTime: l.spec?.renewTime ?? null },
  };
}

/** The Lease's record as compared: renewTime and resourceVersion (any change is a renew). */
export interface LeaseRecord {
  renewTime: string | undefined;
  resourceVersion: string | undefined;
}

export const recordOf = (l: NodeLease): LeaseRecord => ({
  renewTime: l.spec?.renewTime ?? undefined,
  resourceVersion: l.metadata.resourceVersion || undefined,
});

export const sameRecord = (a: LeaseRecord, b: LeaseRecord) =>
  a.renewTime === b.renewTime && a.resourceVersion === b.resourceVersion;

export interface NodeLossOptions {
  enabled: boolean;
  nodeLostAfterMs: number;
  /** Monotonic milliseconds (performance.now()); never the wall clock. */
  now: () => number;
}

export interface Observation {
  record: LeaseRecord;
  /** Local time the record was last seen to change (or first seen, or observation start). */
  changedAt: number;
}

/**
 * Pure decision logic, no I/O: remembers the last record of each node Lease and when it
 * last changed on the local clock.
 */
export class NodeLossTracker {
  readonly #o: NodeLossOptions;
  readonly #seen = new Map<string, Observation>();
  #startedAt: number | undefined;

  constructor(o: NodeLossOptions) {
    this.#o = o;
  }

  get enabled(): boolean {
    return this.#o.enabled;
  }

  get nodeLostAfterMs(): number {
    return this.#o.nodeLostAfterMs;
  }

  /** Starts (or restarts) observing with an empty memory: nothing is lost for a full window. */
  start(): void {
    this.#seen.clear();
    this.#startedAt = this.#o.now();
  }

  /** Stops observing (not acting any more): nothing is lost until start() again. */
  stop(): void {
    this.#seen.clear();
    this.#startedAt = undefined;
  }

  /** A Lease as seen now (informer add/update, or a fresh read). Returns true if it changed. */
  observe(name: string, record: LeaseRecord): boolean {
    if (this.#startedAt === undefined) return false;
    const prev = this.#seen.get(name);
    if (prev && sameRecord(prev.record, record)) return false;
    this.#seen.set(name, { record, changedAt: this.#o.now() });
    return true;
  }

  /**
   * Looks at `name` again only after another full window (its record unchanged): for a
   * lost Lease whose Node or NodeFence does not exist, so it is not re-read every tick.
   */
  defer(name: string): void {
    const obs = this.#seen.get(name);
    if (obs) obs.changedAt = this.#o.now();
  }

  /** The Lease is gone: no record, so never lost (a missing Lease never leads to a fence). */
  forget(name: string): void {
    this.#seen.delete(name);
  }

  observation(name: string): Observation | undefined {
    return this.#seen.get(name);
  }

  /** Milliseconds until `name` is lost if nothing changes (0: lost now); undefined: never (off, unknown). */
  lostIn(name: string): number | undefined {
    if (!this.#o.enabled || this.#startedAt === undefined) return undefined;
    const obs = this.#seen.get(name);
    if (!obs) return undefined;
    const since = Math.max(obs.changedAt, this.#startedAt);
    return Math.max(0, since + this.#o.nodeLostAfterMs - this.#o.now());
  }

  isLost(name: string): boolean {
    return this.lostIn(name) === 0;
  }

  lostNodes(): string[] {
    return [...this.#seen.keys()].filter((n) => this.isLost(n));
  }
}

export type NodeLossOutcome =
  | 'disabled'
  | 'not-lost'
  | 'renewed'
  | 'no-lease'
  | 'no-node'
  | 'no-nodefence'
  | 'already-fenced'
  | 'fence-requested';

export interface NodeLossCaches {
  nodeFence(name: string): NodeFence | undefined;
}

/**
 * One node: if the tracker calls it lost, re-reads its Lease (consistent GET) and fences
 * only if that read shows the very record that went stale; then Node and NodeFence must
 * exist (consistent GETs), and the apply carries the NodeFence's resourceVersion.
 */
export async function reconcileNodeLoss(
  a: Acting,
  tracker: NodeLossTracker,
  caches: NodeLossCaches,
  name: string,
): Promise<NodeLossOutcome> {
  if (!tracker.enabled) return 'disabled';
  const stale = tracker.observation(name);
  if (!stale || !tracker.isLost(name)) return 'not-lost';
  if (fenceRequested(caches.nodeFence(name))) return 'already-fenced';
  // Freshness gate: the stale view must still be the API server's.
  const lease = await getFresh<NodeLease>(a.rest, nodeLeasePath(name));
  if (!lease) {
    tracker.forget(name);
    return 'no-lease';
  }
  const fresh = recordOf(lease);
  if (!sameRecord(fresh, stale.record)) {
    tracker.observe(name, fresh);
    return 'renewed';
  }
  const node = await getFresh<V1Node>(a.rest, nodePath(name));
  if (!node) {
    tracker.defer(name);
    return 'no-node';
  }
  const nf = await getFresh<NodeFence>(a.rest, nfPath(name));
  // No NodeFence: no agent ever ran there, so no key of it to remove (and no create right).
  if (!nf) {
    tracker.defer(name);
    return 'no-nodefence';
  }
  if (fenceRequested(nf)) return 'already-fenced';
  // The tracker may have seen a renew while we read.
  if (!tracker.isLost(name)) return 'renewed';
  await requestFence(
    a,
    nf,
    NODE_LOST_REASON,
    `node ${name}: its Lease in ${NODE_LEASE_NAMESPACE} was not renewed for ${tracker.nodeLostAfterMs} ms as seen by the controller`,
  );
  a.log.warn(
    { node: name, renewTime: fresh.renewTime, nodeLostAfterMs: tracker.nodeLostAfterMs },
    'node lost (Lease not renewed): NodeFence set to Fenced',
  );
  return 'fence-requested';
}
