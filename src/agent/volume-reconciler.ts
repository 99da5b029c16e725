/**
 * One level-based reconcile of one PV on this node, returning one result.
 *
 * 1. Read the device (a device that cannot be opened is a DeviceFound=False condition).
 * 2. Remember on the host whether the own key is there; a key found gone that this node
 *    did not remove is a loss: the node treats itself as fenced on that device (S2).
 * 3. Decide from the informer caches. Nothing to do: record what the device says.
 * 4. Anything to do: every PR OUT rests on a FRESH view (consistent API reads, no older
 *    than the bound) that must agree with the caches. A node is protected if either
 *    says it is legitimate; this node acts only if both say it may; a legitimate node
 *    whose key is unknown stops every preempt on the volume (S9). No fresh view: no
 *    command, and the agent is not ready.
 * 5. Before each command, the view is checked again (and re-read when older than the
 *    bound); before each PREEMPT the intent is recorded with a precondition.
 * 6. After the read-back: the fence is completed (Fenced mark only when this node's own
 *    command removed the key and the victim is still not legitimate in a fresh view),
 *    and the volume's status is written once.
 */
import type { Logger } from 'pino';
import type { NodeFence } from '../crd/types.js';
import { readDeviceState, type DeviceState } from '../fence/executor.js';
import {
  classifyKeys,
  decideVolume,
  type FenceAction,
  type FenceInput,
  type NodeKey,
} from '../fence/rule.js';
import { fenceVolume, type VolumeObservation } from '../fence/volume-fencer.js';
import { addedPaths } from '../pr/dm-paths.js';
import { formatKey, type PrKey } from '../pr/key.js';
import type { PrDevice } from '../pr/pr-device.js';
import { isAllRegistrantsType } from '../pr/reservation-type.js';
import { isPrError } from '../pr/errors.js';
import { describeError } from '../obs/logger.js';
import type { V1Node } from '@kubernetes/client-node';
import {
  fenceStands,
  handoverKeys,
  hasOutOfService,
  isFenceRequested,
  knownKeys,
  legitimacy,
  type ClusterCaches,
  type Legitimacy,
} from './cluster-view.js';
import type { DeviceEntry, DeviceRegistry } from './device-registry.js';
import type { FenceMemory } from './fence-memory.js';
import { FenceRecords, fenceToRecord, openFence, toIntentVictim, type OpenIntent } from './fence-records.js';
import type { FreshView, FreshViewSource } from './fresh-view.js';
import type { VolumeViewSource } from './volume-view.js';
import { cond, type StatusWriter } from './status-writer.js';
import { observedVrStatus } from './vr-record.js';
import { describeSource, type VolumePolicy } from '../fence/volume-policy.js';

export interface ReconcileResult {
  /** Reconcile again after this many ms (level-based re-check); undefined: when something changes. */
  requeueAfterMs?: number;
  outcome:
    | VolumeObservation['outcome']
    | 'not-mine'
    | 'no-fresh-view'
    | 'views-disagree'
    | 'device-missing'
    /** prfence.io/fencing: disabled, and this node holds no registration there: nothing opened. */
    | 'opted-out'
    /** An annotation that does not parse: no device command, Configured=False on the VR. */
    | 'invalid-policy';
  /** The stale keys removed or not, for metrics and the benchmark hook. */
  victims: VolumeObservation['victims'];
  /** From the first trigger until now (the caller knows the trigger time). */
  registered: boolean;
  /**
   * Set when this reconcile removed a stale key (read back): what is left is recording it
   * (the volume's status, the Fenced mark, the proof, the event, the fence record; its
   * intent is on record already). The caller runs it off the reconcile worker, and no other
   * reconcile of the PV starts before it ends; its result replaces this one's requeue. If
   * it fails, the next reconcile of the PV writes the fence's record first.
   */
  record?: () => Promise<ReconcileResult>;
}

export interface VolumeReconcilerOptions {
  node: string;
  key: PrKey;
  tag: number;
  /** The informer caches (may lag: never enough alone for a device command). */
  caches: () => ClusterCaches;
  /** The PV's device identity from the PV cache, if prfence can fence it. */
  identityOf: (pv: string) => string | undefined;
  fresh: FreshViewSource;
  /**
   * Views of one volume (volume-view.ts), for the plans they can back; without it every
   * command rests on the full view.
   */
  volumeViews?: VolumeViewSource;
  devices: DeviceRegistry;
  memory: FenceMemory;
  writer: StatusWriter;
  /**
   * Whether the PV is fenced and with which type (PV annotation > StorageClass annotation
   * > agent default; volume-policy.ts), from the caches.
   */
  policyOf: (pv: string) => VolumePolicy;
  foreignKeys: 'leave' | 'preempt';
  /** How long a node that left by a normal detach has to unregister itself before it is fenced. */
  leaveGraceMs: number;
  /**
   * Observer (opt-in, `--observe`): fence the key of a node asked to be fenced on a volume
   * with no legitimate node, where the device resolves here (docs/design.md "Observers").
   */
  observe?: boolean;
  /**
   * The paths under a device (dm-multipath: dm-paths.ts `devicePaths` of its /dev path),
   * undefined for a device with none. Without it, path changes are not looked at.
   */
  pathsOf?: (device: PrDevice) => Promise<readonly string[] | undefined>;
  signal: AbortSignal;
  now?: () => number;
}

/** A fresh view read for one PV (VolumeReconciler's #takeFreshView). */
interface FreshRead {
  view: FreshView;
  /** The view as fence-rule inputs for the PV. */
  caches: ClusterCaches;
  legitimacy: Legitimacy;
}

const isSelf = (l: Legitimacy, node: string) =>
  l.nodes.some((n) => n.node === node) || l.keyless.includes(node);

/** S2 as the API says it: neither a fence request nor a Fenced mark nor out-of-service. */
function apiAllowsRegistration(nf: NodeFence | undefined, node: V1Node | undefined): boolean {
  return !isFenceRequested(nf, node) && nf?.status?.phase !== 'Fenced' && !hasOutOfService(node);
}

function unionKeys(...lists: (readonly NodeKey[])[]): NodeKey[] {
  const out: NodeKey[] = [];
  for (const l of lists) for (const n of l) if (!out.some((o) => o.key === n.key)) out.push(n);
  return out;
}

/**
 * The commands a view of one volume can back (volume-view.ts): this node's register and
 * reserve (its own attachment is read there), and the preempt of a key whose node is asked
 * to be fenced (legitimate nowhere, whatever attachments the view misses). Not a takeover,
 * a release or an unregister.
 */
function volumeViewBacks(a: FenceAction, fenceRequested: (node: string) => boolean): boolean {
  if (a.kind === 'register' || a.kind === 'reserve') return true;
  return (
    a.kind === 'preempt-abort' && !a.takeover && a.victimNode !== undefined && fenceRequested(a.victimNode)
  );
}

/**
 * The device, calling `onNewKey(t)` when a key read (readKeys, or readFullStatus, which the
 * fence's state reads use where the device answers it) that started at `t` shows a key
 * other than `ownKey` that the read before it (first: `before`) did not show.
 */
function stampNewKeys(
  device: PrDevice,
  ownKey: PrKey,
  before: readonly PrKey[],
  now: () => number,
  onNewKey: (startedAt: number) => void,
): PrDevice {
  let previous = new Set(before);
  const seen = (startedAt: number, keys: readonly PrKey[]) => {
    if (keys.some((k) => k !== ownKey && !previous.has(k))) onNewKey(startedAt);
    previous = new Set(keys);
  };
  return new Proxy(device, {
    get(target, prop) {
      const v: unknown = Reflect.get(target, prop, target);
      if (prop === 'readKeys')
        return async (...args: Parameters<PrDevice['readKeys']>) => {
          const startedAt = now();
          const r = await target.readKeys(...args);
          seen(startedAt, r.keys);
          return r;
        };
      if (prop === 'readFullStatus')
        return async (...args: Parameters<PrDevice['readFullStatus']>) => {
          const startedAt = now();
          const r = await target.readFullStatus(...args);
          seen(
            startedAt,
            r.registrants.map((x) => x.key),
          );
          return r;
        };
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

export class VolumeReconciler {
  readonly #o: VolumeReconcilerOptions;
  readonly #now: () => number;
  /** When a stale key was first seen per PV (the leave grace runs from then). */
  readonly #staleSince = new Map<string, Map<PrKey, number>>();
  /** PVs this agent has seen attached here: reconciled (released) after detach too. */
  readonly touched = new Set<string>();
  /** PVs whose device carries this node's key (NodeFence status.volumes). */
  readonly registeredOn = new Set<string>();
  /** PVs where this node's registration is refused (S2), for the node phase. */
  readonly blockedOn = new Set<string>();
  /**
   * PVs this node left but still holds the reservation of, because a fenced node may
   * still write there: held until a legitimate node takes it over (NodeFence
   * status.handingOver). A takeover is no loss of the own key.
   */
  readonly handingOver = new Set<string>();
  /** PVs where a view of the volume did not back a command: the next reconcile takes the full view. */
  readonly #needFullView = new Set<string>();
  /** The last policy problem or opt-out logged per PV (logged once per change, not per resync). */
  readonly #policyLogged = new Map<string, string>();

  /** This node's fences whose record is not written yet (fence-records.ts). */
  readonly #records: FenceRecords;

  constructor(o: VolumeReconcilerOptions) {
    this.#o = o;
    this.#records = new FenceRecords(o);
    this.#now = o.now ?? (() => performance.now());
  }

  /** Volumes whose last fence removed a stale key and whose record is not written yet. */
  get unrecordedFences(): number {
    return this.#records.volumes;
  }

  /** S2 as the caches say it (the metric; a device command also needs a fresh view). */
  mayRegisterCached(): boolean {
    const c = this.#o.caches();
    return apiAllowsRegistration(c.nodeFences(this.#o.node), c.nodes(this.#o.node));
  }

  #forget(pv: string): void {
    this.#staleSince.delete(pv);
    this.#needFullView.delete(pv);
    this.registeredOn.delete(pv);
    this.blockedOn.delete(pv);
    this.handingOver.delete(pv);
    this.touched.delete(pv);
    this.#o.writer.forget(pv);
  }

  #logPolicyOnce(pv: string, what: string, log: () => void): void {
    if (this.#policyLogged.get(pv) === what) return;
    this.#policyLogged.set(pv, what);
    log();
  }

  /**
   * Reconciles PV `pv`. The records of its earlier fences that failed are written first; if
   * they fail again, the reconcile goes on (a record is no reason to leave a volume
   * unattended) and is retried with backoff. A reconcile that fails after it recorded a
   * fence intent keeps that intent to record: the device tells whether its PREEMPT applied.
   */
  async reconcile(pv: string, log: Logger): Promise<ReconcileResult> {
    const retryRecordInMs = await this.#records.retryPending(pv, log);
    // The intents this reconcile records, until their fence is in #records.
    const intended: OpenIntent[] = [];
    let r: ReconcileResult;
    try {
      r = await this.#reconcileVolume(pv, log, intended);
    } catch (e) {
      if (intended.length) this.#records.add(pv, openFence(intended));
      throw e;
    }
    if (retryRecordInMs === undefined) return r;
    const soon = (x: ReconcileResult): ReconcileResult => ({
      ...x,
      requeueAfterMs: Math.min(x.requeueAfterMs ?? retryRecordInMs, retryRecordInMs),
    });
    const record = r.record;
    return record ? { ...soon(r), record: async () => soon(await record()) } : soon(r);
  }

  async #reconcileVolume(pv: string, log: Logger, intended: OpenIntent[]): Promise<ReconcileResult> {
    const o = this.#o;
    const none = { victims: [], registered: false };
    if (o.signal.aborted) return { outcome: 'not-mine', ...none };
    // What the caches showed from here on (e.g. a fence request) is in any view started later.
    const began = o.fresh.now();
    const identity = o.identityOf(pv);
    const cache = o.caches();
    const cLeg = legitimacy(pv, cache);
    const attachedHere = isSelf(cLeg, o.node);
    const policy = o.policyOf(pv);
    const observingCache = !attachedHere && this.#observable(pv, cache, cLeg);
    if (!identity || (!attachedHere && !observingCache && !this.touched.has(pv) && !o.devices.has(pv))) {
      // Not attached here and never was: unless this node's key is there from before a
      // restart and the volume was opted out since (then it leaves, below).
      if (!identity || policy.kind !== 'opted-out' || !o.memory.expects(identity, o.key)) {
        await o.devices.drop(pv);
        this.#forget(pv);
        this.#policyLogged.delete(pv);
        return { outcome: 'not-mine', ...none };
      }
    }
    if (policy.kind === 'invalid') {
      // Never a guess: no device command at all (no register, reserve, fence or leave)
      // until the annotation parses; peers see the same annotation and stay put too.
      this.#logPolicyOnce(pv, policy.message, () => log.warn({ reason: policy.reason }, `${policy.message}`));
      // The device is not read: the entry says what this node last knew, and what it
      // recorded stays when it knows nothing (after a restart).
      await o.writer.writeVolume(
        pv,
        {
          ...(this.registeredOn.has(pv) || o.memory.expects(identity, o.key)
            ? { registrants: [{ node: o.node, key: formatKey(o.key), legitimate: attachedHere }] }
            : {}),
          conditions: [cond('Configured', 'False', policy.reason, policy.message)],
        },
        undefined,
        { unread: true },
      );
      return { outcome: 'invalid-policy', ...none };
    }
    // Opted out: this node takes no part. It leaves (release, unregister: the leaver path of
    // a detach) only where it may still be registered; elsewhere the device is not opened.
    const acting = policy.kind === 'fenced';
    if (policy.kind === 'opted-out') {
      const mayHold =
        this.registeredOn.has(pv) || this.handingOver.has(pv) || o.memory.expects(identity, o.key);
      this.#logPolicyOnce(pv, `opted-out ${mayHold}`, () =>
        log.info(
          { leaving: mayHold },
          `prfence.io/fencing is disabled (${describeSource(policy.fencingFrom)}): ${mayHold ? 'leaving the volume (release, unregister)' : 'not fenced; the device is not opened'}`,
        ),
      );
      if (!mayHold) {
        await o.devices.drop(pv);
        this.#forget(pv);
        return { outcome: 'opted-out', ...none };
      }
      this.touched.add(pv); // looked at on every resync until it has left
    } else this.#policyLogged.delete(pv);
    const desiredType = policy.kind === 'fenced' ? policy.reservationType : 'write-exclusive-reg-only';
    /** This node takes part in the volume: attached here (in `l`) and fenced by policy. */
    const selfIn = (l: Legitimacy) => acting && isSelf(l, o.node);
    const selfLegitCache = selfIn(cLeg);
    if (selfLegitCache) {
      this.touched.add(pv);
      this.handingOver.delete(pv); // legitimate again: it keeps what it holds
    }

    let entry: DeviceEntry;
    try {
      entry = await o.devices.get(pv, identity);
    } catch (e) {
      if (!attachedHere && !this.touched.has(pv)) {
        // An observer that does not see this LU: nothing to say about it.
        log.debug({ err: describeError(e) }, 'observer: the device does not resolve here');
        await o.devices.drop(pv);
        return { outcome: 'not-mine', ...none };
      }
      // Not present yet, ambiguous, or not a block device: a condition, retried with backoff.
      // The device is not read: what this node recorded from its last read stays (its key
      // may still be on the LU).
      const message = `${identity}: ${describeError(e)}`;
      await o.writer.writeVolume(
        pv,
        {
          conditions: [
            cond('DeviceFound', 'False', 'DeviceNotFound', message),
            cond('Ready', 'False', 'DeviceNotFound', `no device on ${o.node}: ${message}`),
          ],
        },
        undefined,
        { fallback: true, unread: true },
      );
      throw e;
    }
    const device = entry.device;
    let state: DeviceState;
    let kind: 'scsi' | 'nvme' | 'memory';
    /** When the key read of `state` started (a PREEMPT rests on a view read after it). */
    let readAt: number;
    try {
      const caps = await device.capabilities({ signal: o.signal });
      kind = caps.kind;
      // The device itself knows it refused PREEMPT AND ABORT (KoffiPrDevice, a model without it).
      if (!caps.preemptAbort) entry.preemptAbortRefused = true;
      readAt = o.fresh.now();
      state = await readDeviceState(device, kind, o.signal);
    } catch (e) {
      if (isPrError(e) && e.kind === 'unsupported') return this.#unsupported(pv, e.message);
      if (isPrError(e) && e.kind !== 'conflict') await o.devices.drop(pv); // re-resolved next time
      throw e;
    }

    // S2 memory on the host: the own key gone without this node removing it is a loss.
    const ownNow = state.keys.keys.includes(o.key);
    if (ownNow) {
      if (!this.handingOver.has(pv)) await o.memory.registered(identity, o.key);
    } else if (o.memory.expects(identity, o.key)) {
      log.warn(
        { key: formatKey(o.key) },
        'own key gone from the device: treating this node as fenced there (S2)',
      );
      await o.memory.lost(
        identity,
        o.key,
        cache.nodeFences(o.node)?.spec?.unfencedAt,
        new Date(),
        state.reservation.key,
      );
    }

    // dm-multipath: paths added under the map since the own key was registered through it
    // carry no registration (docs/design.md "Multipath"). A register of the own key again,
    // planned by the rule and gated like any register (fresh view, S2), covers them.
    const paths = o.pathsOf ? await o.pathsOf(device).catch(() => undefined) : undefined;
    if (!ownNow) entry.keyPaths = undefined;
    // NVMe: the registration is the host's, on every controller (path) of it.
    else if (kind === 'nvme' && paths) entry.keyPaths = paths;
    else if (paths && entry.keyPaths) entry.keyPaths = entry.keyPaths.filter((p) => paths.includes(p));
    const newPaths = paths && ownNow ? (entry.keyPaths ? addedPaths(entry.keyPaths, paths) : [...paths]) : [];

    // A leaving holder needs to know whether the reservation keeps a fenced node out (its
    // release would let that node write again: Handover). Read only then, from the API server.
    const r0 = state.reservation;
    const leavingHolder =
      !selfLegitCache &&
      ownNow &&
      r0.type !== null &&
      (isAllRegistrantsType(r0.type) ? state.keys.keys.every((k) => k === o.key) : r0.key === o.key);
    const fencedHere = leavingHolder ? await o.writer.fencedOn(pv) : [];
    const holdFor = (view: ClusterCaches) => fencedHere.some((e) => fenceStands(e, view));

    const staleSeen = this.#staleSince.get(pv) ?? new Map<PrKey, number>();
    this.#staleSince.set(pv, staleSeen);
    const baseInput = (
      leg: Legitimacy,
      selfLegit: boolean,
      mayRegister: boolean,
      known: NodeKey[],
      fenceRequested: (node: string) => boolean,
      unsure: boolean,
      holdForFenced: boolean,
      handover: PrKey[],
      observe: PrKey[],
    ): Omit<FenceInput, 'device'> & { device: FenceInput['device'] } => {
      const fenceRequestedSelf = isFenceRequested(cache.nodeFences(o.node), cache.nodes(o.node));
      const input: FenceInput = {
        self: {
          node: o.node,
          key: o.key,
          legitimate: selfLegit,
          mayRegister,
          inUse: false,
          fenceRequested: fenceRequestedSelf,
        },
        legitimate: leg.nodes.filter((n) => n.node !== o.node || selfLegit),
        known,
        clusterTag: o.tag,
        // Used only to reserve a device with no reservation or to preempt a stale holder:
        // a type change reaches a reserved volume at its next reservation or takeover.
        // (An opted-out node only leaves: it never reserves.)
        desiredType,
        foreignKeys: o.foreignKeys,
        holderPreemptKeepsVictim: entry.holderPreemptKeepsVictim,
        holdForFenced,
        handover,
        ...(observe.length ? { observe } : {}),
        ...(newPaths.length ? { newPaths } : {}),
        device: { kind, keys: state.keys.keys, holder: state.reservation.key, type: state.reservation.type },
      };
      input.spare = this.#spare(input, staleSeen, fenceRequested, unsure);
      return input;
    };

    // 3. Decide from the caches alone: is there anything to do?
    // A loss on this device holds until an unfence newer than it; the caches may show one,
    // the fresh view confirms it (and only then is the loss forgiven).
    const loss = o.memory.lossOf(identity);
    const cachedUnfence = cache.nodeFences(o.node)?.spec?.unfencedAt ?? null;
    const cacheMay =
      apiAllowsRegistration(cache.nodeFences(o.node), cache.nodes(o.node)) &&
      (!loss || (cachedUnfence !== null && cachedUnfence !== loss.unfencedAtBefore));
    const cacheFenceRequested = (n: string) => isFenceRequested(cache.nodeFences(n), cache.nodes(n));
    const cacheInput = baseInput(
      cLeg,
      selfLegitCache,
      cacheMay,
      knownKeys(cache),
      cacheFenceRequested,
      cLeg.keyless.some((n) => n !== o.node),
      holdFor(cache),
      handoverKeys(pv, cache, o.node),
      observingCache && acting ? this.#observeKeys(knownKeys(cache), cacheFenceRequested) : [],
    );
    const cachePlan = decideVolume(cacheInput);
    let obs: VolumeObservation;
    /** A view of this volume did not back a command: reconciled again soon, on the full view. */
    let refusedByVolumeView = false;
    if (cachePlan.actions.length === 0) {
      const { device: _view, ...rest } = cacheInput;
      // No command: fenceVolume only classifies what was read (one code path for the record).
      obs = await fenceVolume({
        device,
        input: rest,
        log,
        signal: o.signal,
        maxRounds: 1,
        initial: { kind, state },
      });
    } else {
      // 4. A fresh view, which must agree with the caches about this node.
      const noFreshView: ReconcileResult = { outcome: 'no-fresh-view', requeueAfterMs: 2000, ...none };
      // A preempt in sight: the view must be newer than the device read it acts on (shared
      // if one is; else one read, and not a second one right before the command).
      const preemptAhead = cachePlan.actions.some((a) => a.kind === 'preempt-abort');
      // A plan a view of this volume can back takes one (its cost does not grow with the
      // cluster); every command is checked against it again before it is sent.
      const volumeView =
        o.volumeViews !== undefined &&
        selfLegitCache &&
        !observingCache &&
        !this.#needFullView.has(pv) &&
        cachePlan.actions.every((a) => volumeViewBacks(a, cacheFenceRequested));
      if (!volumeView) this.#needFullView.delete(pv);
      const attachments = cache.vasOf(pv).flatMap((va) => va.metadata?.name ?? []);
      // Its reads start after the device read they back (shared ones included).
      const readVolume = (keys: readonly PrKey[], newerThan: number) =>
        o.volumeViews!.read({ pv, self: o.node, attachments, deviceKeys: keys }, newerThan);
      const takeView = (newerThan?: number) =>
        volumeView
          ? this.#takeVolumeView(pv, log, () => readVolume(state.keys.keys, Math.max(readAt, newerThan ?? 0)))
          : this.#takeFreshView(pv, log, newerThan);
      let read = await takeView(preemptAhead ? readAt : undefined);
      if (!read) return noFreshView;
      if (selfIn(read.legitimacy) !== selfLegitCache) {
        // The shared view may predate the change the caches show: read once more.
        read = await takeView(read.view.startedAt);
        if (!read) return noFreshView;
      }
      if (selfIn(read.legitimacy) !== selfLegitCache) {
        log.debug('caches and the fresh view disagree about this node; waiting for the caches');
        return { outcome: 'views-disagree', requeueAfterMs: 1000, ...none };
      }
      let mayRegister =
        cacheMay &&
        (await this.#mayRegisterFresh(identity, read.caches.nodeFences(o.node), read.caches.nodes(o.node)));
      if (cacheMay && !mayRegister) {
        // The caches show an unfence the shared view may predate: read once more, else this
        // volume would stay blocked until the next resync.
        read = await takeView(read.view.startedAt);
        if (!read) return noFreshView;
        if (isSelf(read.legitimacy, o.node) !== selfLegitCache)
          return { outcome: 'views-disagree', requeueAfterMs: 1000, ...none };
        mayRegister = await this.#mayRegisterFresh(
          identity,
          read.caches.nodeFences(o.node),
          read.caches.nodes(o.node),
        );
      }
      const { view, caches: fresh, legitimacy: fLeg } = read;
      const known = unionKeys(knownKeys(cache), knownKeys(fresh, view.keyClaims));
      const unsure = [...cLeg.keyless, ...fLeg.keyless].some((n) => n !== o.node);
      const bothFenceRequested = (n: string) =>
        cacheFenceRequested(n) && isFenceRequested(fresh.nodeFences(n), fresh.nodes(n));
      // An observer acts only if both views show no legitimate node and the request.
      const observing = observingCache && acting && this.#observable(pv, fresh, fLeg);
      const input = baseInput(
        { nodes: unionKeys(cLeg.nodes, fLeg.nodes), keyless: [] },
        selfLegitCache,
        mayRegister,
        known,
        bothFenceRequested,
        unsure,
        // Held if either view shows a fenced node; taken over only as the fresh view says.
        holdFor(cache) || holdFor(fresh),
        handoverKeys(pv, fresh, o.node),
        observing ? this.#observeKeys(known, bothFenceRequested) : [],
      );
      const { device: _d, ...inputNoDevice } = input;
      let current = view;
      // When the last key read that showed a new key started: a PREEMPT rests on a view read
      // after it. A key that appeared on the device after the view started may belong to a
      // node whose attachment the view predates (legitimate, yet absent from both the view
      // and a lagging cache). A read that shows only keys seen before (or the own key, e.g.
      // the read-back of this node's register) needs no new view.
      const reads = { lastAt: readAt };
      const confirm = async (a: FenceAction): Promise<boolean> => {
        const viewPredatesRead = a.kind === 'preempt-abort' && current.startedAt <= reads.lastAt;
        const reread = !o.fresh.isFresh(current) || viewPredatesRead;
        if (reread) {
          try {
            current = volumeView
              ? await readVolume(
                  [...state.keys.keys, ...(a.kind === 'preempt-abort' ? [a.victim] : [])],
                  Math.max(reads.lastAt, current.startedAt),
                )
              : await o.fresh.get(viewPredatesRead ? reads.lastAt : undefined);
          } catch {
            return false;
          }
        }
        if (reread || volumeView) {
          const c2 = await current.cachesFor(pv, [o.node]);
          if (volumeView && !this.#volumeViewConfirms(a, current, c2)) {
            log.info(
              { action: a.kind },
              'a view of this volume does not back this command: the full view decides next',
            );
            this.#needFullView.add(pv);
            refusedByVolumeView = true;
            return false;
          }
          const l2 = legitimacy(pv, c2, current.keyClaims);
          if (selfIn(l2) !== selfLegitCache) return false;
          if (
            (a.kind === 'register' || a.kind === 'reserve') &&
            !apiAllowsRegistration(c2.nodeFences(o.node), c2.nodes(o.node))
          )
            return false;
          if (
            a.kind === 'preempt-abort' &&
            (l2.nodes.some((n) => n.key === a.victim) || l2.keyless.some((n) => n !== o.node))
          )
            return false;
          if (a.kind === 'preempt-abort' && a.takeover && !handoverKeys(pv, c2, o.node).includes(a.victim))
            return false;
          // An observer: still no legitimate node (else that node acts), and the victim
          // still asked to be fenced.
          if (observing && !this.#observable(pv, c2, l2)) return false;
          if (
            observing &&
            a.kind === 'preempt-abort' &&
            !(
              a.victimNode !== undefined &&
              isFenceRequested(c2.nodeFences(a.victimNode), c2.nodes(a.victimNode))
            )
          )
            return false;
        }
        // Recorded before the command: the proof of isolation counts only keys on record.
        if (a.kind === 'register' && !a.reregister) await o.writer.recordRegistering(pv, selfLegitCache);
        if (a.kind === 'unregister') await o.memory.unregistering(identity);
        // A takeover is no fence: no intent (a restart would record it as one).
        if (a.kind === 'preempt-abort' && !a.takeover) {
          // The field holds one intent: this one also names the keys this node removed
          // before and has not recorded (a restart completes them from it).
          const victim: OpenIntent = { key: a.victim, ...(a.victimNode ? { node: a.victimNode } : {}) };
          const earlier = this.#records.notRecorded(pv, intended).filter((v) => v.key !== a.victim);
          const recorded = await o.writer.recordIntent(pv, {
            ...toIntentVictim(victim),
            by: o.node,
            at: new Date().toISOString(),
            basis: current.basis,
            ...(earlier.length ? { earlierVictims: earlier.map(toIntentVictim) } : {}),
          });
          if (recorded) intended.push(victim);
          return recorded;
        }
        return true;
      };
      obs = await fenceVolume({
        device: stampNewKeys(
          device,
          o.key,
          state.keys.keys,
          () => o.fresh.now(),
          (t) => (reads.lastAt = t),
        ),
        input: inputNoDevice,
        log,
        signal: o.signal,
        confirm,
        // The plan starts from the read above (the view is newer than it when a preempt is
        // planned); every later round reads again and is stamped.
        initial: { kind, state },
        preemptAbortRefused: entry.preemptAbortRefused,
      });
      // The fence is known now: its record is kept until written (see reconcile()).
      if (obs.results.some((r) => r.action.kind === 'preempt-abort')) {
        this.#records.add(pv, fenceToRecord(obs.victims, obs.durationMs, obs.state.keys.generation));
        intended.splice(0);
      }
      if (obs.holderPreemptKeepsVictim) entry.holderPreemptKeepsVictim = true;
      if (obs.preemptAbortRefused) entry.preemptAbortRefused = true;
      if (obs.state.keys.keys.includes(o.key)) {
        this.touched.add(pv); // e.g. an observer registered here: looked at until it has left
        if (obs.plan.role !== 'handing-over') await o.memory.registered(identity, o.key);
      }
    }
    await this.#notePaths(pv, entry, obs, paths, newPaths, log);
    if (obs.plan.role === 'handing-over' && obs.state.keys.keys.includes(o.key)) {
      if (!this.handingOver.has(pv)) {
        log.info('detached, holding the reservation for a fenced node until a legitimate node takes it over');
        this.handingOver.add(pv);
      }
      await o.memory.unregistering(identity); // its takeover is no loss
    }
    const fence = this.#records.find(pv, obs.victims);
    const record = async (): Promise<ReconcileResult> => {
      const result = await this.#record(pv, identity, obs, selfLegitCache, entry, staleSeen);
      // The volume's record first, then the fence's: once lastFence shows, so does the holder.
      if (fence) {
        await this.#records.write(pv, fence, log, began);
      }
      return refusedByVolumeView ? { ...result, requeueAfterMs: 100 } : result;
    };
    if (!obs.victims.some((v) => v.result === 'fenced' && !v.takeover)) return record();
    // A stale key is gone: the fence is done; recording it need not hold a worker.
    const own = obs.state.keys.keys.includes(o.key);
    return { outcome: obs.outcome, victims: obs.victims, registered: own, record };
  }

  /**
   * After the commands: the paths the own key is registered through. A REGISTER through
   * the map (first, or again) reached every path it had when read before the plan.
   */
  async #notePaths(
    pv: string,
    entry: DeviceEntry,
    obs: VolumeObservation,
    paths: readonly string[] | undefined,
    newPaths: readonly string[],
    log: Logger,
  ): Promise<void> {
    if (!obs.state.keys.keys.includes(this.#o.key)) {
      entry.keyPaths = undefined;
      return;
    }
    const registered = obs.results.filter((r) => r.action.kind === 'register' && r.result === 'ok');
    if (!paths || registered.length === 0) return;
    entry.keyPaths = paths;
    if (!registered.some((r) => r.action.kind === 'register' && r.action.reregister)) return;
    log.info(
      { key: formatKey(this.#o.key), newPaths, paths },
      'path set changed: re-registered the own key through the new paths',
    );
    await this.#o.writer.pathsReregisteredEvent(pv, newPaths);
  }

  /**
   * A command on a view of one volume: one such a view backs (volumeViewBacks, as this
   * view says), and a preempted key claimed (ReservationKey) by the node the plan names.
   */
  #volumeViewConfirms(a: FenceAction, view: FreshView, c: ClusterCaches): boolean {
    if (!volumeViewBacks(a, (n) => isFenceRequested(c.nodeFences(n), c.nodes(n)))) return false;
    if (a.kind !== 'preempt-abort') return true;
    const hex = formatKey(a.victim);
    return view.keyClaims.some((k) => k.metadata.name === hex && k.spec.node === a.victimNode);
  }

  /**
   * A fresh view (fresh-view.ts) as fence-rule inputs for `pv`, this node's Node read too,
   * and who it shows legitimate there. `newerThan`: a view whose reads started after that
   * time (the shared view may predate a change the caches show). Undefined if none can be
   * read in time (logged): no device command (S9).
   */
  async #takeFreshView(pv: string, log: Logger, newerThan?: number): Promise<FreshRead | undefined> {
    return this.#takeView(pv, log, 'no fresh API view', () => this.#o.fresh.get(newerThan));
  }

  /** A view of this volume alone (volume-view.ts), as #takeFreshView. */
  #takeVolumeView(pv: string, log: Logger, read: () => Promise<FreshView>): Promise<FreshRead | undefined> {
    return this.#takeView(pv, log, 'no fresh read of this volume', read);
  }

  async #takeView(
    pv: string,
    log: Logger,
    what: string,
    read: () => Promise<FreshView>,
  ): Promise<FreshRead | undefined> {
    let view: FreshView;
    try {
      view = await read();
    } catch (e) {
      log.warn({ err: describeError(e) }, `${what}: no device command (S9)`);
      return undefined;
    }
    const caches = await view.cachesFor(pv, [this.#o.node]);
    return { view, caches, legitimacy: legitimacy(pv, caches, view.keyClaims) };
  }

  /**
   * Observer: opted in, no legitimate node (none with a key, none without), and an
   * attachment on a node asked to be fenced (Kubernetes keeps it until out-of-service).
   */
  #observable(pv: string, c: ClusterCaches, l: Legitimacy): boolean {
    if (!this.#o.observe || l.nodes.length > 0 || l.keyless.length > 0) return false;
    return c.vasOf(pv).some((va) => {
      const n = va.spec.nodeName;
      return n !== this.#o.node && isFenceRequested(c.nodeFences(n), c.nodes(n));
    });
  }

  /** Observer: the keys of nodes asked to be fenced (as `fenceRequested` says). */
  #observeKeys(known: readonly NodeKey[], fenceRequested: (node: string) => boolean): PrKey[] {
    return known.filter((n) => n.node !== this.#o.node && fenceRequested(n.node)).map((n) => n.key);
  }

  /** Keys not to preempt now: leavers within their grace; every key while a legitimate node's key is unknown. */
  #spare(
    input: FenceInput,
    staleSeen: Map<PrKey, number>,
    fenceRequested: (node: string) => boolean,
    unsure: boolean,
  ): PrKey[] {
    const now = this.#now();
    const keys = classifyKeys(input);
    const stale = keys.filter((k) => k.class === 'stale');
    for (const k of [...staleSeen.keys()]) if (!stale.some((s) => s.key === k)) staleSeen.delete(k);
    const spare: PrKey[] = [];
    for (const k of stale) {
      if (!staleSeen.has(k.key)) staleSeen.set(k.key, now);
      if (unsure) spare.push(k.key);
      else if (k.node !== undefined && fenceRequested(k.node)) continue;
      else if (now - staleSeen.get(k.key)! < this.#o.leaveGraceMs) spare.push(k.key);
    }
    if (unsure) for (const k of keys) if (k.class === 'foreign') spare.push(k.key);
    return spare;
  }

  /**
   * S2 in a fresh read, and the host memory: a device where this node lost its key is
   * forgiven only after an unfence newer than the loss.
   */
  async #mayRegisterFresh(
    identity: string,
    nf: NodeFence | undefined,
    node: V1Node | undefined,
  ): Promise<boolean> {
    if (!apiAllowsRegistration(nf, node)) return false;
    const loss = this.#o.memory.lossOf(identity);
    if (!loss) return true;
    const unfencedAt = nf?.spec?.unfencedAt ?? null;
    if (unfencedAt !== null && unfencedAt !== loss.unfencedAtBefore) {
      await this.#o.memory.forgive(identity);
      return true;
    }
    return false;
  }

  /**
   * Finishes an intent this node recorded before it restarted, from what the device says
   * (throws if its record fails: it is kept, and written by the volume's next reconcile).
   */
  async completeOpenIntent(pv: string, open: readonly OpenIntent[], log: Logger): Promise<void> {
    this.#records.add(pv, openFence(open));
    await this.#records.writePending(pv, log);
  }

  async #record(
    pv: string,
    identity: string,
    obs: VolumeObservation,
    selfLegit: boolean,
    entry: DeviceEntry,
    staleSeen: Map<PrKey, number>,
  ): Promise<ReconcileResult> {
    const o = this.#o;
    const own = obs.state.keys.keys.includes(o.key);
    if (own) this.registeredOn.add(pv);
    else this.registeredOn.delete(pv);
    if (obs.outcome === 'blocked') this.blockedOn.add(pv);
    else this.blockedOn.delete(pv);
    const { status, actor } = observedVrStatus({
      node: o.node,
      key: o.key,
      identity,
      obs,
      selfLegit,
      holderPreemptKeepsVictim: entry.holderPreemptKeepsVictim,
    });
    await o.writer.writeVolume(
      pv,
      status,
      async () => (await entry.device.readKeys({ signal: o.signal })).generation,
      { fallback: !actor },
    );
    if (!own) this.handingOver.delete(pv);
    if (!selfLegit && !own) {
      this.touched.delete(pv);
      await o.devices.drop(pv); // detached and unregistered: the device is closed
    }
    const spared = obs.keys.some((k) => k.class === 'stale' && staleSeen.has(k.key));
    const graceLeft = spared
      ? Math.max(100, Math.min(...[...staleSeen.values()].map((t) => o.leaveGraceMs - (this.#now() - t))))
      : undefined;
    const base = { outcome: obs.outcome, victims: obs.victims, registered: own };
    // Held for a takeover: looked at again until it is taken over or no longer needed.
    if (this.handingOver.has(pv) && obs.outcome === 'done') return { ...base, requeueAfterMs: 5000 };
    switch (obs.outcome) {
      case 'done':
      case 'blocked':
        return graceLeft !== undefined ? { ...base, requeueAfterMs: graceLeft } : base;
      case 'waiting':
        return { ...base, requeueAfterMs: Math.min(1000, graceLeft ?? 1000) };
      case 'unconfirmed':
        return { ...base, requeueAfterMs: 1000 };
      case 'pending':
        return { ...base, requeueAfterMs: 0 }; // rounds ran out with work left: again at once
      default:
        throw new Error(`volume ${pv}: ${obs.outcome}`);
    }
  }

  /**
   * The device refused a PR command as unsupported: a condition. What this node recorded
   * from an earlier read stays (a path without PR support may front a LU that carries its
   * key).
   */
  async #unsupported(pv: string, message: string): Promise<ReconcileResult> {
    await this.#o.writer.writeVolume(
      pv,
      {
        conditions: [
          cond('Supported', 'False', 'NoPersistentReservations', message),
          cond('Ready', 'False', 'NoPersistentReservations', message),
        ],
      },
      undefined,
      { fallback: true, unread: true },
    );
    return { outcome: 'unsupported', victims: [], registered: false };
  }
}
