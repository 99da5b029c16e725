/**
 * The controller's fence request and its events: NodeFence `spec.fenceState: Fenced` with
 * a reason and `requestedBy: prfence-controller` (server-side apply, field manager
 * prfence-controller), carrying the resourceVersion of the consistent read the decision
 * rests on (a NodeFence changed since, e.g. an unfence, is a 409 and looked at again),
 * then the metric and a Warning event. Events about a node go on its NodeFence, with the
 * Node as the related object.
 */
import { API_VERSION, NODE_FENCE, type NodeFence } from '../crd/types.js';
import { FIELD_MANAGER, type Acting } from './acting.js';
import { nfPath } from './api.js';

export interface NodeEvent {
  reason: string;
  action: string;
  type: 'Normal' | 'Warning';
  note: string;
}

/** An event regarding NodeFence `name`, related to the Node of the same name. */
export function nodeFenceEvent(a: Acting, name: string, e: NodeEvent): Promise<void> {
  return a.event({
    regarding: { apiVersion: API_VERSION, kind: NODE_FENCE.kind, name },
    related: { apiVersion: 'v1', kind: 'Node', name },
    ...e,
  });
}

/** Requests the fence of the node whose NodeFence `nf` was just read; `note` goes in the event. */
export async function requestFence(a: Acting, nf: NodeFence, reason: string, note: string): Promise<void> {
  const name = nf.metadata.name;
  await a.write({ kind: 'fence-request', resource: NODE_FENCE.plural, name }, () =>
    a.rest.apply(
      nfPath(name),
      {
        apiVersion: API_VERSION,
        kind: NODE_FENCE.kind,
        metadata: { name, resourceVersion: nf.metadata.resourceVersion },
        spec: { fenceState: 'Fenced', reason, requestedBy: FIELD_MANAGER },
      },
      FIELD_MANAGER,
    ),
  );
  a.metrics?.fenceRequested(reason);
  await nodeFenceEvent(a, name, {
    reason,
    action: 'RequestFence',
    type: 'Warning',
    note: `${note}: NodeFence spec.fenceState set to Fenced; every legitimate peer removes its key`,
  });
}
