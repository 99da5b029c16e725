/**
 * THE FENCE RULE (DESIGN.md "The fence rule"), as a pure function: from what the
 * cluster says (who is legitimate for a volume, with which keys) and what the device
 * says (keys, holder, type), decide what THIS node does next. No I/O, no clock.
 * Reusable by a future cluster-level fencer: "who may act" is an input.
 */
import type { PrKey } from '../pr/key.js';
import { isAllRegistrantsType, type ReservationType } from '../pr/reservation-type.js';
import { isClusterKey } from './keys.js';

export interface NodeKey {
  node: string;
  key: PrKey;
}

/** What the device reported (a KeyList + Reservation read). */
export interface DeviceView {
  kind: 'scsi' | 'nvme' | 'memory';
  keys: readonly PrKey[];
  holder: PrKey | null;
  type: ReservationType | null;
}

export interface FenceInput {
  self: {
    node: string;
    key: PrKey;
    /** Legitimate for this volume (attached/attaching VA, not deleted, not Fenced). */
    legitimate: boolean;
    /**
     * S2: false when this node is marked Fenced, or its key was removed by another node
     * and the cluster has not yet said it may come back.
     */
    mayRegister: boolean;
    /** The device is still in use locally (mounted / open): a leaver waits. */
    inUse: boolean;
    /**
     * This node is asked to be fenced (NodeFence Fenced, out-of-service): it neither acts
     * nor leaves; its peers remove its key and record the proof.
     */
    fenceRequested?: boolean;
  };
  /** Legitimate nodes of the volume and their keys (self included when legitimate). */
  legitimate: readonly NodeKey[];
  /** Every known node key of the cluster (NodeFence records), to name stale keys. */
  known: readonly NodeKey[];
  clusterTag: number;
  device: DeviceView;
  desiredType: ReservationType;
  /** S7: foreign keys are left alone unless the operator opted in. */
  foreignKeys: 'leave' | 'preempt';
  /**
   * Stale keys not to preempt yet: keys of nodes that left by a normal detach and are
   * still within their grace to release and unregister themselves (a leaver is not a
   * victim). Default none.
   */
  spare?: readonly PrKey[];
  /**
   * A fenced node may still write to this volume (a node marked Fenced or asked to be):
   * the reservation must never lapse. A leaver whose release or unregister would drop it
   * holds it instead, until a legitimate node takes it over. Default false.
   */
  holdForFenced?: boolean;
  /**
   * Stale keys of leavers that hold the reservation only to hand it over (their own
   * NodeFence says so): the actor takes the reservation from them at once, and that
   * takeover is no fence. Default none.
   */
  handover?: readonly PrKey[];
  /**
   * This device was seen to keep the victim when its holder preempts (Linux nvmet,
   * nvmet_pr_preempt): only then the holder releases, preempts and reserves again.
   */
  holderPreemptKeepsVictim?: boolean;
  /**
   * Observer (opt-in, for SANs that show every LU to every node): keys of nodes explicitly
   * asked to be fenced (or marked Fenced). A node that is NOT legitimate for the volume
   * removes them when the volume has no legitimate node at all (nobody else would: the
   * fenced node was its only attachment), registering and reserving first as needed; it
   * then holds the reservation until a legitimate node takes it over. Default none.
   */
  observe?: readonly PrKey[];
  /**
   * dm-multipath: paths added under the device (sysfs `slaves`) since this node's key was
   * last registered through it. The kernel registered none of them (a REGISTER through the
   * map reaches the paths it has then), so I/O through them is refused. A node whose own
   * key is still on the device and that may register registers it again (REGISTER AND
   * IGNORE EXISTING KEY of its own key, through the map): a register like any other, gated
   * the same way. A node whose key is gone never does (S2). SCSI only (an NVMe
   * registration belongs to the host, every controller of it included). A node that
   * leaves unregisters so that these paths are left as they are (the `uncovered` of its
   * unregister). Default none.
   */
  newPaths?: readonly string[];
}

export type KeyClass = 'own' | 'legitimate' | 'stale' | 'foreign';

export interface ClassifiedKey {
  key: PrKey;
  class: KeyClass;
  node?: string;
}

export type FenceAction =
  | {
      kind: 'register';
      /**
       * The own key is registered already; it is registered again (REGISTER AND IGNORE
       * EXISTING KEY through the map) so these new paths carry it too. Sent only while
       * the own key is on the device (S2).
       */
      reregister?: readonly string[];
    }
  | { kind: 'reserve'; type: ReservationType }
  | { kind: 'release'; type: ReservationType }
  | {
      kind: 'preempt-abort';
      victim: PrKey;
      victimNode?: string;
      type: ReservationType;
      /** The victim is a leaver handing the reservation over: no fence. */
      takeover?: true;
    }
  | {
      kind: 'unregister';
      /**
       * dm-multipath on SCSI: paths under the map that are not known to carry the own key
       * (the `newPaths` of the input). A plain REGISTER to key 0 through the map conflicts
       * on such a path, and the kernel's dm_pr_register stops at the first failing path
       * (no rollback for key 0): the leave would fail again at every retry. Sent as
       * REGISTER AND IGNORE EXISTING KEY with key 0 instead, which unregisters a registered
       * I_T nexus and leaves an unregistered one as it is (SPC-4 6.16.2). Never registers
       * anything (S2).
       */
      uncovered?: readonly string[];
    };

export type FenceRole =
  /** This node acts on the device. */
  | 'actor'
  /** Another legitimate node acts; re-read later. */
  | 'waiter'
  /** Not legitimate any more: releasing / unregistering. */
  | 'leaver'
  /**
   * Not legitimate any more, but holding the reservation that keeps a fenced node out
   * until a legitimate node takes it over.
   */
  | 'handing-over'
  /** S2 forbids registering. */
  | 'blocked'
  /** Nothing to do. */
  | 'idle';

export interface FencePlan {
  role: FenceRole;
  actions: FenceAction[];
  reason: string;
  keys: ClassifiedKey[];
}

/** Classifies every key on the device (S1/S7 hinge on this). */
export function classifyKeys(input: FenceInput): ClassifiedKey[] {
  const legit = new Map(input.legitimate.map((n) => [n.key, n.node]));
  const known = new Map(input.known.map((n) => [n.key, n.node]));
  return input.device.keys.map((key): ClassifiedKey => {
    if (key === input.self.key) return { key, class: 'own', node: input.self.node };
    const ln = legit.get(key);
    if (ln !== undefined) return { key, class: 'legitimate', node: ln };
    if (!isClusterKey(key, input.clusterTag)) return { key, class: 'foreign' };
    const kn = known.get(key);
    return kn === undefined ? { key, class: 'stale' } : { key, class: 'stale', node: kn };
  });
}

/**
 * The unregister of a leaver: through a SCSI map with paths not known to carry the own key,
 * one that leaves those paths as they are (see the `uncovered` of the action). On NVMe the
 * registration is the host's, on every controller: a plain unregister.
 */
function unregisterOf(input: FenceInput): FenceAction {
  return input.newPaths?.length && input.device.kind !== 'nvme'
    ? { kind: 'unregister', uncovered: [...input.newPaths] }
    : { kind: 'unregister' };
}

/** Decides this node's next actions for one volume. Pure. */
export function decideVolume(input: FenceInput): FencePlan {
  const keys = classifyKeys(input);
  const { self, device, desiredType } = input;
  const ownRegistered = device.keys.includes(self.key);
  const allRegs = device.type !== null && isAllRegistrantsType(device.type);
  const holderIsOwn = device.type !== null && (allRegs ? ownRegistered : device.holder === self.key);

  if (self.fenceRequested) {
    return {
      role: 'blocked',
      actions: [],
      reason: 'this node is to be fenced: its peers remove its key',
      keys,
    };
  }
  // Observer: no legitimate node, and a key of a node asked to be fenced is on the device.
  const observeSet = new Set(input.observe ?? []);
  const observing =
    !self.legitimate &&
    input.legitimate.length === 0 &&
    keys.some((k) => k.class === 'stale' && observeSet.has(k.key)) &&
    self.mayRegister;
  if (!self.legitimate && !observing) {
    if (!ownRegistered)
      return { role: 'idle', actions: [], reason: 'not legitimate and not registered', keys };
    if (self.inUse)
      return { role: 'waiter', actions: [], reason: 'not legitimate; device still in use locally', keys };
    // Leaving would drop the reservation: a release or an unregister of the one holder, or
    // of the last registrant of an all-registrants type. While a fenced node may still
    // write, that would let it in again (SPC-4 5.13.11: no reservation, every write goes).
    const dropsReservation =
      device.type !== null && (allRegs ? device.keys.every((k) => k === self.key) : holderIsOwn);
    // An observer (given `observe`: a node asked to be fenced is attached here) holds too.
    if ((input.holdForFenced || (input.observe?.length ?? 0) > 0) && dropsReservation)
      return {
        role: 'handing-over',
        actions: [],
        reason:
          'detached, but the reservation keeps a fenced node out: held until a legitimate node takes it over',
        keys,
      };
    const actions: FenceAction[] = [];
    // Release first when this node alone holds the reservation, so no stale holder remains.
    if (holderIsOwn && !allRegs && device.type) actions.push({ kind: 'release', type: device.type });
    actions.push(unregisterOf(input));
    return { role: 'leaver', actions, reason: 'detached: release and unregister', keys };
  }

  if (!self.mayRegister && ownRegistered) {
    // S2: a node that may not register keeps no registration (e.g. a REGISTER that timed
    // out and landed after the node lost its key): it leaves, and acts on nobody.
    const actions: FenceAction[] = [];
    if (holderIsOwn && !allRegs && device.type) actions.push({ kind: 'release', type: device.type });
    actions.push(unregisterOf(input));
    return { role: 'leaver', actions, reason: 'S2: registered but may not be: leave', keys };
  }
  const actions: FenceAction[] = [];
  if (!ownRegistered) {
    if (!self.mayRegister) {
      return {
        role: 'blocked',
        actions: [],
        reason: 'S2: this node is fenced and may not register again',
        keys,
      };
    }
    actions.push({ kind: 'register' });
  } else if (input.newPaths?.length && device.kind !== 'nvme') {
    // Registered, may register, and new paths without the key: register again (S2 above:
    // never when the key is gone or the node may not register). Not on NVMe: a
    // registration belongs to the host (its Host Identifier), which every controller of
    // the host shares, so a new path of this host carries it already.
    actions.push({ kind: 'register', reregister: [...input.newPaths] });
  }

  // Who acts: the holder if legitimate; if the holder is own, us; if there is no holder
  // or it is stale, the lowest legitimate key (deterministic: every node computes the same).
  const holderClass = device.holder === null ? null : keys.find((k) => k.key === device.holder)?.class;
  let actor: PrKey | undefined;
  if (holderIsOwn || observing) actor = self.key;
  else if (!allRegs && holderClass === 'legitimate') actor = device.holder ?? undefined;
  else {
    const legitKeys = input.legitimate.map((n) => n.key).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    actor = legitKeys[0];
  }
  if (actor !== self.key) {
    return {
      role: actions.length ? 'actor' : 'waiter',
      actions,
      reason: actions.length
        ? `${actions[0]!.kind === 'register' && actions[0]!.reregister ? 'register again (new paths)' : 'register'}; another legitimate node fences`
        : 'another legitimate node fences',
      keys,
    };
  }

  // A leaver handing the reservation over waits for exactly this: no grace for it.
  const handover = new Set(input.handover ?? []);
  const spare = new Set((input.spare ?? []).filter((k) => !handover.has(k)));
  // An observer removes only the keys of nodes asked to be fenced.
  const stale = keys.filter(
    (k) =>
      !spare.has(k.key) &&
      (observing
        ? k.class === 'stale' && observeSet.has(k.key)
        : k.class === 'stale' || (k.class === 'foreign' && input.foreignKeys === 'preempt')),
  );
  const holderSpared = device.holder !== null && spare.has(device.holder) && holderClass === 'stale';
  // Deduplicate: one key can be registered through several nexuses; one preempt removes all.
  const victims = [...new Map(stale.map((k) => [k.key, k])).values()];
  const preempt = (v: ClassifiedKey, type: ReservationType): FenceAction => ({
    kind: 'preempt-abort',
    victim: v.key,
    type,
    ...(v.node === undefined ? {} : { victimNode: v.node }),
    ...(handover.has(v.key) && v.class === 'stale' ? { takeover: true as const } : {}),
  });
  const foreignHolder = holderClass === 'foreign' && input.foreignKeys === 'leave' && !allRegs;

  if (holderSpared && !allRegs) {
    // The stale holder is a leaver within its grace: it releases by itself; wait for it.
    return {
      role: actions.length ? 'actor' : 'waiter',
      actions,
      reason: 'the holder left by a detach and may still release',
      keys,
    };
  } else if (device.type === null) {
    // Remove stale keys while nobody holds (both targets then remove by key), then reserve.
    for (const v of victims) actions.push(preempt(v, desiredType));
    actions.push({ kind: 'reserve', type: desiredType });
  } else if (foreignHolder) {
    return { role: 'waiter', actions, reason: 'a foreign key holds the reservation; left alone (S7)', keys };
  } else if (!holderIsOwn && !allRegs && victims.some((v) => v.key === device.holder)) {
    // Preempting the stale holder with our key takes the reservation (SPC-4 5.13.11.2.6).
    const h = victims.find((v) => v.key === device.holder)!;
    actions.push(preempt(h, desiredType));
    for (const v of victims) if (v.key !== h.key) actions.push(preempt(v, desiredType));
  } else if (holderIsOwn && !allRegs && victims.length && input.holderPreemptKeepsVictim) {
    // A quirk seen on this device (Linux nvmet, nvmet_pr_preempt): a PREEMPT from the
    // holder only changes the type and removes nobody, against NVMe 2.0 "Preempting a
    // reservation". Only there: release, preempt with no reservation, reserve again.
    actions.push({ kind: 'release', type: device.type });
    for (const v of victims) actions.push(preempt(v, device.type));
    actions.push({ kind: 'reserve', type: device.type });
  } else {
    const t = device.type;
    for (const v of victims) actions.push(preempt(v, t));
  }
  return {
    role: actions.length ? 'actor' : 'idle',
    actions,
    reason: victims.length
      ? observing
        ? `observer: fence ${victims.length} key(s) of nodes asked to be fenced; no legitimate node`
        : `fence ${victims.length} stale key(s)`
      : actions.length === 1 && actions[0]!.kind === 'register' && actions[0]!.reregister
        ? 'new paths under the device: register the own key again'
        : actions.length
          ? 'take the reservation'
          : 'in order',
    keys,
  };
}
