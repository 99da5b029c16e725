/**
 * A fresh view of ONE volume (thin agents, docs/design.md "Freshness gate"): consistent
 * GETs of only the objects a fence of that volume involves, so its cost does not grow
 * with the cluster (the full view, fresh-view.ts, LISTs every VolumeAttachment).
 *
 * - the volume's VolumeAttachments the informer cache knows, each read by name (gone or
 *   deleting ones drop out);
 * - the ReservationKey of each key on the device (who claimed it);
 * - the NodeFence and the Node of this node, of those attachments' nodes and of those
 *   keys' owners.
 *
 * What it cannot see: an attachment the cache has not seen yet. So it backs only commands
 * that no such attachment can make wrong (the reconciler's volume-view gate): registering
 * and reserving with this node's key, where this node's own attachment is read here, and
 * preempting the key of a node asked to be fenced, which is legitimate nowhere whatever
 * its attachments. Anything else takes the full view.
 */
import type { V1Node, V1VolumeAttachment } from '@kubernetes/client-node';
import type { NodeFence, ReservationKey } from '../crd/types.js';
import { KubeApiError, type RestClient } from '../kube/rest-client.js';
import { pvOf } from '../kube/slim.js';
import { formatKey, type PrKey } from '../pr/key.js';
import { slim, type ClusterCaches } from './cluster-view.js';
import type { FreshView } from './fresh-view.js';
import { nfPath, rkPath } from './key-claim.js';

const vaPath = (name: string) => `/apis/storage.k8s.io/v1/volumeattachments/${encodeURIComponent(name)}`;
const nodePath = (name: string) => `/api/v1/nodes/${encodeURIComponent(name)}`;

/** The intent's basis field holds at most 1024 characters (VolumeReservation schema). */
const BASIS_MAX = 1024;
const capped = (s: string) => (s.length <= BASIS_MAX ? s : `${s.slice(0, BASIS_MAX - 3)}...`);

export interface VolumeViewRequest {
  pv: string;
  /** This node (its NodeFence and Node are always read). */
  self: string;
  /** Names of the volume's VolumeAttachments in the informer cache. */
  attachments: readonly string[];
  /** The keys the device showed (each one's ReservationKey is read). */
  deviceKeys: readonly PrKey[];
}

export interface VolumeViewOptions {
  rest: RestClient;
  /** A view whose reads took this long is not used (the full view's bound). */
  freshnessMs: number;
  now?: () => number;
}

interface Read {
  /** performance.now() when the GET was sent; undefined while it waits for the one before it. */
  startedAt: number | undefined;
  /** The object, undefined if it does not exist (404). */
  object: Promise<{ metadata?: { resourceVersion?: string } } | undefined>;
  settled: boolean;
}

/**
 * Reads volume views (see the module comment). The GETs of one object are shared by the
 * views that ask for it, as long as the GET started after what they need (the device read
 * they rest on) and is within the bound. One GET of an object is in flight at a time: a
 * view that needs a newer one than the GET in flight waits for it to end and shares the
 * next one with every view that asked meanwhile. The reconciles of many volumes fencing
 * one lost node thus read its NodeFence, Node and key claim about once per round trip, not
 * once per volume: the API server's throughput goes to the fences.
 */
export class VolumeViewSource {
  readonly #o: VolumeViewOptions;
  readonly #now: () => number;
  readonly #reads = new Map<string, Read>();

  constructor(o: VolumeViewOptions) {
    this.#o = o;
    this.#now = o.now ?? (() => performance.now());
  }

  /** A GET of `path` that started, or will start, after `newerThan` (see the class comment). */
  #get(path: string, newerThan: number): Read {
    const now = this.#now();
    const have = this.#reads.get(path);
    if (have) {
      if (have.startedAt === undefined) return have; // waiting: it starts after this call
      if (have.startedAt > newerThan && now - have.startedAt < this.#o.freshnessMs) return have;
    }
    for (const [p, r] of this.#reads)
      if (r.settled && now - r.startedAt! >= this.#o.freshnessMs) this.#reads.delete(p);
    const read: Read = { startedAt: undefined, settled: false, object: Promise.resolve(undefined) };
    const send = () => {
      read.startedAt = this.#now();
      return this.#o.rest
        .send<{ metadata?: { resourceVersion?: string } }>({
          method: 'GET',
          path,
          timeoutMs: this.#o.freshnessMs,
        })
        .catch((e: unknown) => {
          if (this.#reads.get(path) === read) this.#reads.delete(path);
          if (e instanceof KubeApiError && e.code === 404) return undefined;
          throw e;
        })
        .finally(() => (read.settled = true));
    };
    const before = have && !have.settled ? have.object : undefined;
    read.object = before ? before.then(send, send) : send();
    this.#reads.set(path, read);
    return read;
  }

  /**
   * A view of one volume whose reads all started after `newerThan` (default: now);
   * throws if it cannot be read within the bound.
   */
  async read(req: VolumeViewRequest, newerThan = this.#now()): Promise<FreshView> {
    const timeoutMs = this.#o.freshnessMs;
    const basis: string[] = [];
    /** The view is as old as its oldest read (each started after `newerThan`). */
    let startedAt = Infinity;
    const get = async <T>(path: string): Promise<T | undefined> => {
      const r = this.#get(path, newerThan);
      const o = await r.object;
      startedAt = Math.min(startedAt, r.startedAt!);
      if (o) basis.push(`${path.split('/').slice(-2).join('/')}=${o.metadata?.resourceVersion ?? '?'}`);
      return o as T | undefined;
    };
    const [vas, claims] = await Promise.all([
      Promise.all(req.attachments.map((n) => get<V1VolumeAttachment>(vaPath(n)))),
      Promise.all(req.deviceKeys.map((k) => get<ReservationKey>(rkPath(formatKey(k))))),
    ]);
    const attached = vas.flatMap((va) =>
      va && pvOf(va) === req.pv && !va.metadata?.deletionTimestamp ? [slim.volumeAttachment(va)] : [],
    );
    const keyClaims = claims.flatMap((k) => (k ? [k] : []));
    const nodeFences = new Map<string, NodeFence>();
    const nodes = new Map<string, V1Node | undefined>();
    const readNodes = async (names: Iterable<string>) => {
      const fresh = [...new Set(names)].filter((n) => !nodes.has(n));
      for (const n of fresh) nodes.set(n, undefined);
      await Promise.all(
        fresh.map(async (n) => {
          const [nf, node] = await Promise.all([get<NodeFence>(nfPath(n)), get<V1Node>(nodePath(n))]);
          if (nf) nodeFences.set(n, nf);
          nodes.set(n, node ? slim.node(node) : undefined);
        }),
      );
    };
    await readNodes([
      req.self,
      ...attached.map((va) => va.spec.nodeName),
      ...keyClaims.map((k) => k.spec.node),
    ]);
    if (this.#now() - startedAt >= timeoutMs) throw new Error(`API reads took over ${timeoutMs} ms`);
    return {
      startedAt,
      scope: 'volume',
      basis: capped(`volume ${req.pv}: ${basis.sort().join(',')}`),
      nodeFences,
      keyClaims,
      cachesFor: async (pv, extraNodes = []) => {
        await readNodes(extraNodes);
        return {
          vasOf: (p) => (p === pv && pv === req.pv ? attached : []),
          nodeFences: (n) => nodeFences.get(n),
          allNodeFences: [...nodeFences.values()],
          nodes: (n) => nodes.get(n),
        } satisfies ClusterCaches;
      },
    };
  }
}
