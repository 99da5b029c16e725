/**
 * "Is my view of the API fresh?" (medik8s self-node-remediation's apicheck, in spirit).
 * Every irreversible device command rests on a FreshView: consistent reads from the API
 * server (a LIST or GET without resourceVersion is served at the current etcd revision,
 * never from a stale cache) that started no longer ago than `freshnessMs`. A read that
 * fails or does not answer in time gives no view: the caller does nothing (S9), and the
 * agent reports not ready with the reason.
 *
 * One read serves every volume that asks within the bound (a burst of attachments costs
 * one LIST, not one per volume). Nodes are read by name, on demand, once per view.
 */
import type { V1Node, V1VolumeAttachment } from '@kubernetes/client-node';
import type { NodeFence, ReservationKey } from '../crd/types.js';
import { KubeApiError, type RestClient } from '../kube/rest-client.js';
import { describeError } from '../obs/logger.js';
import { nfPath, rkPath } from './key-claim.js';
import { pvOf } from '../kube/slim.js';
import { slim, type ClusterCaches } from './cluster-view.js';

const VA_PATH = '/apis/storage.k8s.io/v1/volumeattachments';

export interface FreshView {
  /** performance.now() when the reads started: the view is as old as that. */
  readonly startedAt: number;
  /**
   * `volume`: the objects of one volume only (volume-view.ts), which backs fewer commands;
   * absent: the whole cluster (this module).
   */
  readonly scope?: 'volume';
  /** The resourceVersions the view was read at (recorded with a fence intent). */
  readonly basis: string;
  readonly nodeFences: ReadonlyMap<string, NodeFence>;
  readonly keyClaims: readonly ReservationKey[];
  /** The view as fence-rule inputs for one PV (its nodes are read first). */
  cachesFor(pv: string, extraNodes?: readonly string[]): Promise<ClusterCaches>;
}

export interface FreshViewOptions {
  rest: RestClient;
  /** A view older than this is not used for a device command. */
  freshnessMs: number;
  now?: () => number;
}

export class FreshViewSource {
  readonly #o: FreshViewOptions;
  readonly #now: () => number;
  #view: FreshView | undefined;
  #inFlight: Promise<FreshView> | undefined;
  #lastError: string | undefined;
  #lastOkAt: number | undefined;

  constructor(o: FreshViewOptions) {
    this.#o = o;
    this.#now = o.now ?? (() => performance.now());
  }

  /** The clock of `startedAt` (to compare a view with the time of a device read). */
  now(): number {
    return this.#now();
  }

  /** Whether `v` may still back a device command. */
  isFresh(v: FreshView): boolean {
    return this.#now() - v.startedAt < this.#o.freshnessMs;
  }

  /**
   * A fresh view (shared with other callers within the bound); throws if none can be read
   * in time. `newerThan`: a view whose reads started after that time (the caller saw a
   * change in its caches that an older view may not have).
   */
  async get(newerThan?: number): Promise<FreshView> {
    const ok = (v: FreshView | undefined) =>
      v !== undefined && this.isFresh(v) && (newerThan === undefined || v.startedAt > newerThan);
    if (ok(this.#view)) return this.#view!;
    const pending = this.#inFlight;
    if (pending) {
      const v = await pending;
      if (ok(v)) return v;
    }
    this.#inFlight ??= this.#read().finally(() => (this.#inFlight = undefined));
    return this.#inFlight;
  }

  /** Undefined while the last read succeeded, else why not (for /readyz and conditions). */
  problem(): string | undefined {
    return this.#lastError;
  }

  /** performance.now() of the last successful read, if any. */
  get lastOkAt(): number | undefined {
    return this.#lastOkAt;
  }

  async #read(): Promise<FreshView> {
    const startedAt = this.#now();
    const timeoutMs = this.#o.freshnessMs;
    const rest = this.#o.rest;
    const list = <T>(path: string) =>
      rest.send<{ metadata?: { resourceVersion?: string }; items: T[] }>({ method: 'GET', path, timeoutMs });
    try {
      const [vas, nfs, rks] = await Promise.all([
        list<V1VolumeAttachment>(VA_PATH),
        list<NodeFence>(nfPath()),
        list<ReservationKey>(rkPath()),
      ]);
      if (this.#now() - startedAt >= timeoutMs) throw new Error(`API reads took over ${timeoutMs} ms`);
      const byPv = new Map<string, V1VolumeAttachment[]>();
      for (const va of vas.items) {
        const s = slim.volumeAttachment(va);
        const pv = pvOf(s);
        if (pv) byPv.set(pv, [...(byPv.get(pv) ?? []), s]);
      }
      const nodeFences = new Map(nfs.items.map((nf) => [nf.metadata.name, nf]));
      const nodes = new Map<string, Promise<V1Node | undefined>>();
      const getNode = (name: string) => {
        let p = nodes.get(name);
        if (!p) {
          p = rest
            .send<V1Node>({ method: 'GET', path: `/api/v1/nodes/${encodeURIComponent(name)}`, timeoutMs })
            .then(slim.node, (e: unknown) => {
              if (e instanceof KubeApiError && e.code === 404) return undefined;
              throw e;
            });
          nodes.set(name, p);
        }
        return p;
      };
      const view: FreshView = {
        startedAt,
        basis: `volumeattachments=${vas.metadata?.resourceVersion ?? '?'},nodefences=${nfs.metadata?.resourceVersion ?? '?'}`,
        nodeFences,
        keyClaims: rks.items,
        cachesFor: async (pv, extraNodes = []) => {
          const vasOfPv = byPv.get(pv) ?? [];
          const names = new Set([...vasOfPv.map((va) => va.spec.nodeName), ...extraNodes]);
          const got = new Map<string, V1Node | undefined>();
          await Promise.all([...names].map(async (n) => got.set(n, await getNode(n))));
          return {
            vasOf: (p) => (p === pv ? vasOfPv : (byPv.get(p) ?? [])),
            nodeFences: (n) => nodeFences.get(n),
            allNodeFences: [...nodeFences.values()],
            nodes: (n) => got.get(n),
          };
        },
      };
      this.#view = view;
      this.#lastError = undefined;
      this.#lastOkAt = this.#now();
      return view;
    } catch (e) {
      this.#lastError = `no fresh read of the API server: ${describeError(e)}`;
      throw e;
    }
  }
}
