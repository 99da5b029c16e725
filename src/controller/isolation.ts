/**
 * Proof of isolation, then the out-of-service taint; and the taint's removal.
 *
 * For a node asked to be fenced, the controller keeps NodeFence `status.isolation`: the
 * devices it still has a registration on (VolumeReservations), the devices a live peer
 * proved it off (`status.proofs`), and `lost` (its node Lease, with autoFence).
 *
 * With autoFence, a node the controller itself asked to fence for `NodeLost` gets
 * `node.kubernetes.io/out-of-service:NoExecute` once every device has a proof (at least
 * one device): Kubernetes then deletes its pods and detaches its volumes at once. The
 * annotation `prfence.io/out-of-service-by` names the NodeFence. The decision rests on
 * consistent reads (NodeFence, Node, VolumeReservations), the boot ID is recorded in
 * status before the Node is patched, and the patch carries the Node's resourceVersion.
 *
 * The taint prfence applied is removed only when the node was unfenced (by a person), it
 * came back as a new incarnation (`status.nodeInfo.bootID` differs from the one
 * recorded), and no VolumeReservation records a registration of it. A deleted Node takes
 * its taint with it. Each step is an event.
 */
import type { V1Node, V1Taint } from '@kubernetes/client-node';
import {
  API_VERSION,
  NODE_FENCE,
  type IsolationStatus,
  type NodeFence,
  type VolumeReservation,
} from '../crd/types.js';
import { FIELD_MANAGER, type Acting } from './acting.js';
import { nodeFenceEvent } from './fence-request.js';
import { getFresh, listFresh, nfPath, nodePath, REQUEST_TIMEOUT_MS, vrPath } from './api.js';
import {
  evaluateProof,
  fenceRequestedOrMarked,
  hasRegistrationOnRecord,
  isolationStatus,
} from './isolation-proof.js';
import { NODE_LOST_REASON } from './node-loss.js';
import {
  OUT_OF_SERVICE_BY,
  OUT_OF_SERVICE_TAINT,
  outOfServiceTaint,
  type TaintCaches,
} from './taint-fence.js';

export { OUT_OF_SERVICE_BY };

export interface IsolationCaches extends TaintCaches {
  volumeReservations(): readonly VolumeReservation[];
}

export interface IsolationOptions {
  /** Apply the taint after a complete proof (autoFence). */
  autoTaint: boolean;
  /** Whether the leader sees the node lost now; undefined without autoFence. */
  lost(node: string): boolean | undefined;
  /** The last "taint kept" reason recorded per node (one event per change). */
  keptNoted: Map<string, string>;
  now?: () => Date;
}

export type IsolationOutcome =
  'no-nodefence' | 'unchanged' | 'recorded' | 'tainted' | 'taint-removed' | 'taint-kept' | 'proof-changed';

/** The taint on `node` is the one prfence applied for NodeFence `name`. */
export function prfenceTaint(node: V1Node | undefined, name: string): boolean {
  return !!outOfServiceTaint(node) && node?.metadata?.annotations?.[OUT_OF_SERVICE_BY] === name;
}

const bootIdOf = (n: V1Node) => n.status?.nodeInfo?.bootID ?? '';

/** Compares two status.isolation values as written (key order of our own builder). */
const same = (a: IsolationStatus | undefined, b: IsolationStatus | undefined) =>
  JSON.stringify(a ?? {}) === JSON.stringify(b ?? {});

/** What was recorded about the taint prfence applied (kept across status rewrites). */
function taintRecord(s: IsolationStatus | undefined): Pick<IsolationStatus, 'taintedAt' | 'taintedBootID'> {
  return {
    ...(s?.taintedAt ? { taintedAt: s.taintedAt } : {}),
    ...(s?.taintedBootID !== undefined ? { taintedBootID: s.taintedBootID } : {}),
  };
}

async function writeIsolation(a: Acting, name: string, isolation: IsolationStatus, resourceVersion?: string) {
  await a.write({ kind: 'status', resource: NODE_FENCE.plural, name }, () =>
    a.rest.apply(
      `${nfPath(name)}/status`,
      {
        apiVersion: API_VERSION,
        kind: NODE_FENCE.kind,
        metadata: { name, ...(resourceVersion ? { resourceVersion } : {}) },
        status: Object.keys(isolation).length ? { isolation } : {},
      },
      FIELD_MANAGER,
    ),
  );
}

export async function reconcileIsolation(
  a: Acting,
  caches: IsolationCaches,
  o: IsolationOptions,
  name: string,
): Promise<IsolationOutcome> {
  const nf = caches.nodeFence(name);
  if (!nf) return 'no-nodefence';
  const node = caches.node(name);
  const requested = fenceRequestedOrMarked(nf);
  if (!requested && prfenceTaint(node, name)) return removeTaint(a, o, name);
  const lost = o.lost(name);
  const current = nf.status?.isolation;
  const proof = requested ? evaluateProof(nf, caches.volumeReservations()) : undefined;
  const desired: IsolationStatus = {
    ...(proof ? isolationStatus(proof, lost) : lost !== undefined && lost ? { lost } : {}),
    // Kept while the fence stands (the cache may not show a taint just applied); once
    // unfenced, the taint is handled above and the record goes with it.
    ...(requested ? taintRecord(current) : {}),
  };
  // The metric first: whoever reads the written summary finds the metric already set.
  a.metrics?.unprovenDevices(name, proof?.pending.length ?? 0);
  let outcome: IsolationOutcome = 'unchanged';
  if (!same(desired, current)) {
    await writeIsolation(a, name, desired);
    outcome = 'recorded';
    if (proof && current?.summary !== desired.summary)
      a.log.info({ node: name, proof: desired.summary, pending: proof.pending.length }, 'proof of isolation');
  }
  if (
    proof?.complete &&
    o.autoTaint &&
    nf.spec?.fenceState === 'Fenced' &&
    nf.spec.reason === NODE_LOST_REASON &&
    nf.spec.requestedBy === FIELD_MANAGER &&
    node &&
    !outOfServiceTaint(node)
  )
    return applyTaint(a, o, name, lost);
  return outcome;
}

/** After a complete proof, on consistent reads: record the boot ID, then taint the Node. */
async function applyTaint(a: Acting, o: IsolationOptions, name: string, lost: boolean | undefined) {
  const nf = await getFresh<NodeFence>(a.rest, nfPath(name));
  const node = await getFresh<V1Node>(a.rest, nodePath(name));
  if (!nf || !node) return 'proof-changed';
  const proof = evaluateProof(nf, await listFresh<VolumeReservation>(a.rest, vrPath()));
  if (
    !proof.complete ||
    nf.spec?.fenceState !== 'Fenced' ||
    nf.spec.reason !== NODE_LOST_REASON ||
    nf.spec.requestedBy !== FIELD_MANAGER ||
    outOfServiceTaint(node)
  )
    return 'proof-changed';
  const at = (o.now?.() ?? new Date()).toISOString();
  const bootID = bootIdOf(node);
  // The intent first: what the taint's removal will compare with.
  await writeIsolation(
    a,
    name,
    { ...isolationStatus(proof, lost), taintedAt: at, taintedBootID: bootID },
    nf.metadata.resourceVersion,
  );
  const taint: V1Taint = { key: OUT_OF_SERVICE_TAINT, value: 'nodeshutdown', effect: 'NoExecute' };
  await patchNode(a, node, [...(node.spec?.taints ?? []), taint], name);
  a.metrics?.taint('applied');
  a.log.warn(
    { node: name, proof: `${proof.proven}/${proof.total}`, bootID },
    'isolation proven: out-of-service taint applied',
  );
  await nodeFenceEvent(a, name, {
    reason: 'OutOfServiceApplied',
    action: 'Taint',
    type: 'Warning',
    note: `key of ${name} proven gone from all ${proof.total} device(s) it was registered on: ${OUT_OF_SERVICE_TAINT}:NoExecute applied (Kubernetes moves its pods and volumes)`,
  });
  return 'tainted';
}

/**
 * The Node's taints and the annotation, with the resourceVersion read as a precondition
 * (a merge patch with metadata.resourceVersion is refused with 409 if the Node changed).
 */
async function patchNode(a: Acting, node: V1Node, taints: V1Taint[], by: string | null) {
  const name = node.metadata?.name ?? '';
  await a.write({ kind: 'taint', resource: 'nodes', name }, () =>
    a.rest.send({
      method: 'PATCH',
      path: nodePath(name),
      contentType: 'application/merge-patch+json',
      body: {
        metadata: {
          resourceVersion: node.metadata?.resourceVersion,
          annotations: { [OUT_OF_SERVICE_BY]: by },
        },
        spec: { taints },
      },
      timeoutMs: REQUEST_TIMEOUT_MS,
    }),
  );
}

async function keep(a: Acting, o: IsolationOptions, name: string, why: string): Promise<IsolationOutcome> {
  if (o.keptNoted.get(name) !== why) {
    o.keptNoted.set(name, why);
    a.log.info({ node: name, why }, 'out-of-service taint kept');
    await nodeFenceEvent(a, name, {
      reason: 'OutOfServiceKept',
      action: 'Untaint',
      type: 'Normal',
      note: `${OUT_OF_SERVICE_TAINT} applied by prfence stays: ${why}`,
    });
  }
  return 'taint-kept';
}

/** Unfenced: the taint goes once the node is a new incarnation and holds no registration. */
async function removeTaint(a: Acting, o: IsolationOptions, name: string): Promise<IsolationOutcome> {
  const nf = await getFresh<NodeFence>(a.rest, nfPath(name));
  const node = await getFresh<V1Node>(a.rest, nodePath(name));
  if (!nf || !node || !prfenceTaint(node, name)) return 'unchanged';
  if (fenceRequestedOrMarked(nf)) return 'unchanged';
  const recorded = nf.status?.isolation?.taintedBootID;
  if (!recorded)
    return keep(
      a,
      o,
      name,
      'the boot ID at the time of the taint was not recorded: remove the taint by hand once the node was checked',
    );
  if (recorded === bootIdOf(node))
    return keep(a, o, name, `unfenced, but the node has not rebooted since the taint (bootID ${recorded})`);
  const vrs = await listFresh<VolumeReservation>(a.rest, vrPath());
  if (hasRegistrationOnRecord(vrs, name, nf.status?.key))
    return keep(a, o, name, 'a VolumeReservation still records a registration of this node');
  const taints = (node.spec?.taints ?? []).filter((t) => t.key !== OUT_OF_SERVICE_TAINT);
  await patchNode(a, node, taints, null);
  o.keptNoted.delete(name);
  a.metrics?.taint('removed');
  a.log.info(
    { node: name, bootID: bootIdOf(node), was: recorded },
    'out-of-service taint removed: unfenced, new boot, no registration',
  );
  await nodeFenceEvent(a, name, {
    reason: 'OutOfServiceRemoved',
    action: 'Untaint',
    type: 'Normal',
    note: `${name} was unfenced, booted again (bootID ${recorded} -> ${bootIdOf(node)}) and holds no registration: ${OUT_OF_SERVICE_TAINT} removed`,
  });
  await writeIsolation(a, name, o.lost(name) ? { lost: true } : {});
  return 'taint-removed';
}
