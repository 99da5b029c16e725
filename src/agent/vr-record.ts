/**
 * What a node records in a VolumeReservation's status from one observation of the device
 * (pure): the status it asks StatusWriter.writeVolume to write, and the lastFence record
 * of a fence it made. The agent's reconciler and `prfence demo` both build them here, so
 * the demo shows what the agent would write.
 */
import type { LastFence, VolumeReservationStatus } from '../crd/types.js';
import type { DeviceState } from '../fence/executor.js';
import type { VolumeObservation } from '../fence/volume-fencer.js';
import { describeInitiator } from '../pr/initiator.js';
import { formatKey, type PrKey } from '../pr/key.js';
import { isAllRegistrantsType } from '../pr/reservation-type.js';
import { cond } from './status-writer.js';

export interface ObservedVrStatus {
  status: VolumeReservationStatus;
  /** This node records the shared fields (it holds the reservation, acted, or is the one to act). */
  actor: boolean;
  /** The own key is registered on the device. */
  own: boolean;
}

/** The status `node` (key `key`) writes for what `obs` says about the device `identity`. */
export function observedVrStatus(a: {
  node: string;
  key: PrKey;
  identity: string;
  obs: VolumeObservation;
  /** This node is legitimate for the volume. */
  selfLegit: boolean;
  holderPreemptKeepsVictim: boolean;
}): ObservedVrStatus {
  const { obs } = a;
  const own = obs.state.keys.keys.includes(a.key);
  const r = obs.state.reservation;
  const allRegs = r.type !== null && isAllRegistrantsType(r.type);
  const initiators = ownInitiators(obs.state, a.key);
  const status: VolumeReservationStatus = {
    registrants: own
      ? [
          {
            node: a.node,
            key: formatKey(a.key),
            legitimate: a.selfLegit,
            ...(initiators ? { initiators } : {}),
          },
        ]
      : [],
  };
  // The shared fields are written by the node that holds the reservation, or acted, and
  // then always, so that server-side apply never drops them while the device says so.
  const lowestLegit = obs.keys
    .filter((k) => k.class === 'own' || k.class === 'legitimate')
    .map((k) => k.key)
    .sort((x, y) => (x < y ? -1 : x > y ? 1 : 0))[0];
  // No node holds it (all-registrants types report key 0; a foreign key; nobody): the
  // registered legitimate node with the lowest key records it, as it is the one to act.
  const nodeHolds =
    !allRegs && obs.keys.some((k) => k.key === r.key && (k.class === 'own' || k.class === 'legitimate'));
  const actor = obs.results.length > 0 || r.key === a.key || (!nodeHolds && own && lowestLegit === a.key);
  if (actor) {
    status.generation = obs.state.keys.generation;
    if (r.type) status.reservationType = r.type;
    if (r.key !== null && !allRegs) {
      const holderNode = obs.keys.find((k) => k.key === r.key)?.node;
      status.holder = holderNode ? { node: holderNode, key: formatKey(r.key) } : { key: formatKey(r.key) };
    }
    status.foreignKeys = obs.keys.filter((k) => k.class === 'foreign').length;
    status.device = {
      identity: a.identity.slice(0, 256),
      ...(obs.kind !== 'memory' ? { kind: obs.kind } : {}),
    };
    if (a.holderPreemptKeepsVictim) status.quirks = ['HolderPreemptKeepsVictim'];
    status.conditions = [
      cond('Reserved', r.type ? 'True' : 'False', r.type ? 'Reserved' : 'NotReserved', `${r.type ?? 'none'}`),
      cond(
        'Ready',
        r.type ? 'True' : 'False',
        r.type ? 'Reserved' : 'NotReserved',
        r.type
          ? `${r.type}${status.holder?.node ? ` held by ${status.holder.node}` : ''}`
          : 'no reservation on the device',
      ),
    ];
  } else if (obs.outcome === 'blocked' && !own) {
    // Nobody may record what the device says for this node: say why it is not ready here
    // (yields to a node that records the device).
    status.conditions = [
      cond('Ready', 'False', 'RegistrationBlocked', `${a.node} may not register (fenced or key removed)`),
    ];
  }
  return { status, actor, own };
}

/** At most this many initiators are recorded per key (the schema's bound). */
const MAX_INITIATORS = 32;

/**
 * The initiators that carry `key`, named as `prfence device status` names them, sorted and
 * without repeats; undefined when the state was read without them (two commands).
 */
function ownInitiators(state: DeviceState, key: PrKey): string[] | undefined {
  if (!state.registrants) return undefined;
  const names = state.registrants
    .filter((r) => r.key === key)
    .map((r) => describeInitiator(r.initiator).slice(0, 256));
  return [...new Set(names)].sort().slice(0, MAX_INITIATORS);
}

/**
 * The lastFence record of a fence `by` made (a victim's key removed, or not: Failed);
 * `aborted: false` when the key was removed with PREEMPT (the device refused PREEMPT AND
 * ABORT), so the victim's queued commands were not aborted.
 */
export function fenceRecord(
  v: { key: PrKey; node?: string; result: string; aborted?: false },
  by: string,
  at: string,
  durationMs: number,
): LastFence {
  return {
    victimKey: formatKey(v.key),
    by,
    at,
    durationMs: Math.round(durationMs),
    result: v.result === 'fenced' ? 'Fenced' : 'Failed',
    ...(v.node ? { victimNode: v.node } : {}),
    ...(v.aborted === false ? { aborted: false } : {}),
  };
}
