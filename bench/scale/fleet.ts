/**
 * The objects the agents of the rest of the fleet would have written: a scale run starts
 * real agents on a few nodes only, yet the controller (and every agent's NodeFence cache)
 * sees a NodeFence and a ReservationKey per node and a VolumeReservation per PV in a real
 * cluster. Each is a copy of one a real agent of this run wrote, with the node, its key
 * and UID, the PV and its device put in; static (those agents' later status writes are
 * not replayed: the benchmark extrapolates them from the real agents' rate).
 */
import { createHash } from 'node:crypto';
import {
  API_VERSION,
  GROUP,
  NODE_FENCE,
  RESERVATION_KEY,
  VERSION,
  VOLUME_RESERVATION,
  type NodeFence,
  type VolumeReservation,
} from '../../src/crd/types.js';
import { clusterObjectPath, KubeApiError, type RestClient } from '../../src/kube/rest-client.js';

export interface FleetTemplates {
  nf: NodeFence;
  vr: VolumeReservation;
  /** The PV of `vr`, and the device identity it recorded. */
  pv: string;
  device: string;
}

/** Replaces every string value equal to a key of `exact`, and `sub` inside strings. */
function rewrite<T>(o: T, exact: Map<string, string>, sub: [string, string]): T {
  return JSON.parse(JSON.stringify(o), (_k, v: unknown) =>
    typeof v === 'string' ? (exact.get(v) ?? v.replaceAll(sub[0], sub[1])) : v,
  ) as T;
}

/** A key of this cluster's tag (from `agentKey`) for a node that runs no agent here. */
export function fleetKey(agentKey: string, node: string): string {
  const slot = createHash('sha256').update(node).digest('hex').slice(0, 8);
  return `${agentKey.slice(0, 8)}${slot === '00000000' ? '00000001' : slot}`;
}

const path = (plural: string, name?: string, sub?: 'status') =>
  clusterObjectPath(GROUP, VERSION, plural, name, sub);

async function createWithStatus(
  api: RestClient,
  plural: string,
  kind: string,
  name: string,
  status: unknown,
  manager: string,
): Promise<void> {
  // The controller may have created it first (a VolumeReservation with its desired state).
  await api
    .send({
      method: 'POST',
      path: path(plural),
      body: { apiVersion: API_VERSION, kind, metadata: { name } },
      query: { fieldManager: manager },
    })
    .catch((e: unknown) => {
      if (!(e instanceof KubeApiError && e.code === 409)) throw e;
    });
  await api.apply(
    path(plural, name, 'status'),
    { apiVersion: API_VERSION, kind, metadata: { name }, status },
    manager,
  );
}

/** The ReservationKey and NodeFence of a node without an agent here. */
export async function createFleetNode(
  api: RestClient,
  t: FleetTemplates,
  node: string,
  nodeUid: string,
  volumes: number,
): Promise<void> {
  const tk = t.nf.status!.key!;
  const key = fleetKey(tk, node);
  const manager = `prfence-agent/${node}`;
  await api.send({
    method: 'POST',
    path: path(RESERVATION_KEY.plural),
    body: {
      apiVersion: API_VERSION,
      kind: RESERVATION_KEY.kind,
      metadata: { name: key },
      spec: { node, nodeUID: nodeUid },
    },
    query: { fieldManager: manager },
  });
  const exact = new Map([
    [t.nf.metadata.name!, node],
    [tk, key],
    [t.nf.status!.nodeUID!, nodeUid],
  ]);
  const status = { ...rewrite(t.nf.status!, exact, [t.pv, t.pv]), volumes };
  await createWithStatus(api, NODE_FENCE.plural, NODE_FENCE.kind, node, status, manager);
}

/** The VolumeReservation of a PV attached to a node without an agent here. */
export async function createFleetVolume(
  api: RestClient,
  t: FleetTemplates,
  pv: string,
  node: string,
  device: string,
): Promise<void> {
  const tk = t.nf.status!.key!;
  const exact = new Map([
    [t.nf.metadata.name!, node],
    [tk, fleetKey(tk, node)],
    [t.device, device],
  ]);
  const status = rewrite(t.vr.status!, exact, [t.pv, pv]);
  await createWithStatus(
    api,
    VOLUME_RESERVATION.plural,
    VOLUME_RESERVATION.kind,
    pv,
    status,
    `prfence-agent/${node}`,
  );
}
