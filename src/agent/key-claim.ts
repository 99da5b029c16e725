/**
 * The key of this node incarnation (S6), claimed so that the API server itself enforces
 * uniqueness: a ReservationKey object named after the key is created (create-only; a
 * second create of the same name is 409 AlreadyExists), then the key is written into the
 * node's NodeFence status. Stable across restarts (the existing claim of the same node
 * and Node UID is found again), new for a new incarnation (a new Node UID).
 */
import type { Logger } from 'pino';
import {
  API_VERSION,
  GROUP,
  NODE_FENCE,
  RESERVATION_KEY,
  VERSION,
  type NodeFence,
  type ReservationKey,
} from '../crd/types.js';
import { allocateSlot, makeKey, slotOf } from '../fence/keys.js';
import { clusterObjectPath, KubeApiError, type RestClient } from '../kube/rest-client.js';
import { formatKey, parseKey, type PrKey } from '../pr/key.js';

export const nfPath = (name?: string, sub?: 'status') =>
  clusterObjectPath(GROUP, VERSION, NODE_FENCE.plural, name, sub);
export const rkPath = (name?: string) => clusterObjectPath(GROUP, VERSION, RESERVATION_KEY.plural, name);

export interface KeyClaimOptions {
  rest: RestClient;
  node: string;
  nodeUid: string;
  tag: number;
  fieldManager: string;
  log: Logger;
}

const notFound = (e: unknown) => e instanceof KubeApiError && e.code === 404;

async function getOrUndefined<T>(rest: RestClient, path: string): Promise<T | undefined> {
  try {
    return await rest.get<T>(path);
  } catch (e) {
    if (notFound(e)) return undefined;
    throw e;
  }
}

/**
 * Claims (or finds again) this incarnation's key and records it in the NodeFence.
 * Throws on API errors: a node that cannot claim a key registers nothing.
 */
export async function claimKey(o: KeyClaimOptions): Promise<PrKey> {
  const { rest, node, nodeUid, tag } = o;
  const mine = (rk: ReservationKey | undefined) => rk?.spec.node === node && rk.spec.nodeUID === nodeUid;
  const nf = await getOrUndefined<NodeFence>(rest, nfPath(node));
  let key: PrKey | undefined;
  // The key recorded for this incarnation, if its claim is still ours.
  const recorded = nf?.status?.nodeUID === nodeUid ? nf.status.key : undefined;
  if (recorded && mine(await getOrUndefined<ReservationKey>(rest, rkPath(recorded))))
    key = parseKey(recorded);
  if (key === undefined) {
    const taken = new Map<number, { node: string; nodeUid: string }>();
    for (let attempt = 0; attempt < 64 && key === undefined; attempt++) {
      const candidate = makeKey(tag, allocateSlot(node, nodeUid, taken));
      const name = formatKey(candidate);
      try {
        await rest.send({
          method: 'POST',
          path: rkPath(),
          body: {
            apiVersion: API_VERSION,
            kind: RESERVATION_KEY.kind,
            metadata: { name },
            spec: { node, nodeUID: nodeUid },
          },
        });
        key = candidate;
      } catch (e) {
        if (!(e instanceof KubeApiError && e.code === 409)) throw e;
        const holder = await getOrUndefined<ReservationKey>(rest, rkPath(name));
        if (mine(holder))
          key = candidate; // our own earlier claim (a restart after the create)
        else {
          o.log.info(
            { key: name, holder: holder?.spec.node },
            'key claimed by another node; trying the next',
          );
          taken.set(slotOf(candidate), {
            node: holder?.spec.node ?? '',
            nodeUid: holder?.spec.nodeUID ?? '',
          });
        }
      }
    }
    if (key === undefined) throw new Error('could not claim a unique reservation key');
  }
  await ensureNodeFence(o, key);
  return key;
}

/** Creates the NodeFence if it is missing and records the key in its status. */
export async function ensureNodeFence(o: KeyClaimOptions, key: PrKey): Promise<void> {
  const { rest, node, nodeUid, fieldManager } = o;
  let nf = await getOrUndefined<NodeFence>(rest, nfPath(node));
  if (!nf) {
    try {
      nf = await rest.send<NodeFence>({
        method: 'POST',
        path: nfPath(),
        body: { apiVersion: API_VERSION, kind: NODE_FENCE.kind, metadata: { name: node }, spec: {} },
      });
    } catch (e) {
      if (!(e instanceof KubeApiError && e.code === 409)) throw e;
      nf = await rest.get<NodeFence>(nfPath(node));
    }
  }
  if (nf.status?.key === formatKey(key) && nf.status.nodeUID === nodeUid) return;
  await rest.apply(
    nfPath(node, 'status'),
    {
      apiVersion: API_VERSION,
      kind: NODE_FENCE.kind,
      metadata: { name: node },
      // Never `phase`: a Fenced mark is owned by the peer that fenced this node and only
      // an unfence may clear it (S2).
      status: { key: formatKey(key), nodeUID: nodeUid },
    },
    fieldManager,
  );
}
