/**
 * The out-of-service taint becomes a recorded fence request: a Node with the taint
 * `node.kubernetes.io/out-of-service` (any effect) gets its NodeFence
 * `spec.fenceState: Fenced`, `reason: OutOfService`, `requestedBy: prfence-controller`
 * (server-side apply, field manager prfence-controller), once, and a Warning event. The
 * agents already treat the taint as a fence request; this makes it visible in
 * `kubectl get nf` and keeps it after the taint is removed. Never unfences.
 *
 * Caches only select the work: the decision rests on consistent GETs of the Node and the
 * NodeFence, and the apply carries the NodeFence's resourceVersion (409 if it changed).
 */
import type { V1Node } from '@kubernetes/client-node';
import type { NodeFence } from '../crd/types.js';
import type { Acting } from './acting.js';
import { getFresh, nfPath, nodePath } from './api.js';
import { requestFence } from './fence-request.js';

export const OUT_OF_SERVICE_TAINT = 'node.kubernetes.io/out-of-service';
export const OUT_OF_SERVICE_REASON = 'OutOfService';

export function outOfServiceTaint(node: V1Node | undefined): { effect: string } | undefined {
  const t = node?.spec?.taints?.find((x) => x.key === OUT_OF_SERVICE_TAINT);
  return t ? { effect: t.effect } : undefined;
}

export const fenceRequested = (nf: NodeFence | undefined) => nf?.spec?.fenceState === 'Fenced';

export type TaintOutcome = 'untainted' | 'already-fenced' | 'no-nodefence' | 'fence-requested' | 'own-taint';

/** Node annotation: the NodeFence whose complete proof made prfence apply the out-of-service taint. */
export const OUT_OF_SERVICE_BY = 'prfence.io/out-of-service-by';

export interface TaintCaches {
  node(name: string): V1Node | undefined;
  nodeFence(name: string): NodeFence | undefined;
}

export async function reconcileTaint(a: Acting, caches: TaintCaches, name: string): Promise<TaintOutcome> {
  if (!outOfServiceTaint(caches.node(name))) return 'untainted';
  if (fenceRequested(caches.nodeFence(name))) return 'already-fenced';
  const node = await getFresh<V1Node>(a.rest, nodePath(name));
  const taint = outOfServiceTaint(node);
  if (!taint) return 'untainted';
  // The taint prfence applied after a complete proof of isolation: the fence was requested
  // before it, and an unfence while it stays is not undone (isolation.ts removes it).
  if (node?.metadata?.annotations?.[OUT_OF_SERVICE_BY] === name) return 'own-taint';
  const nf = await getFresh<NodeFence>(a.rest, nfPath(name));
  // No NodeFence: no agent ever ran there, so no key of it to remove; the controller does
  // not create one (no `create` right). When an agent creates it, this runs again.
  if (!nf) return 'no-nodefence';
  if (fenceRequested(nf)) return 'already-fenced';
  await requestFence(
    a,
    nf,
    OUT_OF_SERVICE_REASON,
    `node ${name} has the taint ${OUT_OF_SERVICE_TAINT} (${taint.effect})`,
  );
  a.log.warn({ node: name, effect: taint.effect }, 'out-of-service taint: NodeFence set to Fenced');
  return 'fence-requested';
}
