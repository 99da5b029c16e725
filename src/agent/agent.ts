/**
 * The prfence node agent: wiring only. Informer caches feed a work queue of PV names;
 * each reconcile reads the caches and the device and runs the fence logic
 * (src/fence/volume-fencer.ts), then records the device's answer in VolumeReservation
 * and NodeFence status with server-side apply under this node's field manager.
 *
 * Safety (DESIGN.md): S2 - no registration unless the API server answered at start-up and
 * this node is not Fenced; S6 - keys from src/fence/keys.ts, recorded in NodeFence and
 * checked unique; S8 - stop() closes devices and never releases or unregisters.
 */
import type {
  KubernetesListObject,
  V1Namespace,
  V1Node,
  V1PersistentVolume,
  V1VolumeAttachment,
} from '@kubernetes/client-node';
import type { ConnectionSource } from '../kube/connection.js';
import type { Logger } from 'pino';
import {
  API_VERSION,
  GROUP,
  NODE_FENCE,
  VERSION,
  VOLUME_RESERVATION,
  type NodeFence,
  type NodePhase,
  type VolumeReservation,
  type VolumeReservationStatus,
} from '../crd/types.js';
import { allocateSlot, clusterTag, isClusterKey, makeKey, slotOf, type SlotOwner } from '../fence/keys.js';
import { fenceVolume, type VolumeObservation } from '../fence/volume-fencer.js';
import { startInformer, type ResilientInformer } from '../kube/informer.js';
import { clusterObjectPath, KubeApiError, RestClient } from '../kube/rest-client.js';
import { EventRecorder } from '../kube/events.js';
import { WorkQueue } from '../kube/work-queue.js';
import type { AgentMetrics } from '../obs/metrics.js';
import { describeError } from '../obs/logger.js';
import { formatKey, type PrKey } from '../pr/key.js';
import type { PrDevice } from '../pr/pr-device.js';
import type { ReservationType } from '../pr/reservation-type.js';
import { isPrError } from '../pr/errors.js';
import { hasSharedFields, vrStatusToWrite } from './vr-status.js';
import {
  deviceOf,
  hasOutOfService,
  knownKeys,
  legitimateNodes,
  pvOf,
  slim,
  type ClusterCaches,
} from './cluster-view.js';

export interface AgentOptions {
  /** How to reach the API server (a KubeConnection, or a client-node KubeConfig in tests). */
  kubeConfig: ConnectionSource;
  nodeName: string;
  /** Opens the local block device for a PV's device identity (annotation prfence.io/device). */
  openDevice: (identity: string, pv: string) => Promise<PrDevice>;
  log: Logger;
  reservationType?: ReservationType;
  /** Cluster id for the key tag; default the kube-system namespace UID. */
  clusterId?: string;
  foreignKeys?: 'leave' | 'preempt';
  workers?: number;
  /** Re-check every volume of this node this often (level-based safety net). Default 30 s. */
  resyncMs?: number;
  metrics?: AgentMetrics;
  /** Called for each stale key this agent removed (or failed to), e.g. by the benchmark. */
  onFence?: (e: FenceEvent) => void;
}

export interface FenceEvent {
  pv: string;
  victimKey: PrKey;
  victimNode: string | undefined;
  result: 'fenced' | 'failed';
  /** From the first trigger this agent saw for the volume until the key was gone (read back). */
  sinceTriggerMs: number | undefined;
}

const nfPath = (name?: string, sub?: 'status') =>
  clusterObjectPath(GROUP, VERSION, NODE_FENCE.plural, name, sub);
const vrPath = (name?: string, sub?: 'status') =>
  clusterObjectPath(GROUP, VERSION, VOLUME_RESERVATION.plural, name, sub);

export class Agent {
  readonly node: string;
  readonly key: PrKey;
  readonly tag: number;
  readonly #o: AgentOptions;
  readonly #rest: RestClient;
  readonly #fm: string;
  readonly #queue: WorkQueue<string>;
  /** When this agent first saw a change that triggers a volume's reconcile (fence latency). */
  readonly #triggeredAt = new Map<string, number>();
  readonly #devices = new Map<string, PrDevice>();
  /** PVs this agent has seen attached here: reconciled (released) after detach too. */
  readonly #touched = new Set<string>();
  readonly #lastStatus = new Map<string, string>();
  /** The last fence this agent did per PV: re-applied with every status (server-side apply drops omitted fields). */
  readonly #lastFence = new Map<string, NonNullable<VolumeReservationStatus['lastFence']>>();
  readonly #nodeUid: string;
  readonly #events: EventRecorder;
  readonly #abort = new AbortController();
  #informers: ResilientInformer<never>[] = [];
  #va!: ResilientInformer<V1VolumeAttachment>;
  #pv!: ResilientInformer<V1PersistentVolume>;
  #nodes!: ResilientInformer<V1Node>;
  #nf!: ResilientInformer<NodeFence>;
  #workers: Promise<void>[] = [];
  #resync: NodeJS.Timeout | undefined;

  private constructor(o: AgentOptions, rest: RestClient, key: PrKey, tag: number, nodeUid: string) {
    this.#o = o;
    this.#nodeUid = nodeUid;
    this.node = o.nodeName;
    this.#rest = rest;
    this.key = key;
    this.tag = tag;
    this.#fm = `prfence-agent/${o.nodeName}`;
    this.#queue = new WorkQueue<string>({
      baseDelayMs: 200,
      maxDelayMs: 30_000,
      ...(o.metrics ? { metrics: o.metrics.queue } : {}),
    });
    this.#events = new EventRecorder({
      rest,
      log: o.log,
      controller: 'prfence.io/agent',
      instance: o.nodeName,
    });
  }

  /**
   * Starts the agent. Throws, and registers nothing anywhere, if the API server does not
   * answer (S2): a node that cannot learn whether it was fenced must not register.
   */
  static async start(o: AgentOptions): Promise<Agent> {
    const metrics = o.metrics;
    const rest = new RestClient(o.kubeConfig, metrics ? { onResponse: metrics.apiRequest } : {});
    const node = await rest.get<V1Node>(`/api/v1/nodes/${encodeURIComponent(o.nodeName)}`);
    const nodeUid = node.metadata?.uid ?? '';
    const clusterId =
      o.clusterId ??
      (await rest.get<V1Namespace>('/api/v1/namespaces/kube-system')).metadata?.uid ??
      'default';
    const tag = clusterTag(clusterId);
    const key = await Agent.#ensureKey(rest, o, nodeUid, tag);
    const agent = new Agent(o, rest, key, tag, nodeUid);
    o.log.info({ node: o.nodeName, key: formatKey(key) }, 'agent key');
    await agent.#startInformers();
    agent.#startWorkers();
    return agent;
  }

  /** S6: the key of this node incarnation, unique among NodeFence records, stable across restarts. */
  static async #ensureKey(rest: RestClient, o: AgentOptions, nodeUid: string, tag: number): Promise<PrKey> {
    const fm = `prfence-agent/${o.nodeName}`;
    for (let attempt = 0; attempt < 5; attempt++) {
      const list = await rest.get<KubernetesListObject<NodeFence>>(nfPath());
      const taken = new Map<number, SlotOwner>();
      let mine: NodeFence | undefined;
      for (const nf of list.items) {
        if (nf.metadata.name === o.nodeName) mine = nf;
        const k = nf.status?.key;
        if (!k) continue;
        const key = BigInt(`0x${k}`);
        if (!isClusterKey(key, tag)) continue;
        taken.set(slotOf(key), { node: nf.metadata.name, nodeUid: nf.status?.nodeUID ?? '' });
      }
      const slot = allocateSlot(o.nodeName, nodeUid, taken);
      const key = makeKey(tag, slot);
      if (!mine) {
        await rest.apply(
          nfPath(o.nodeName),
          { apiVersion: API_VERSION, kind: NODE_FENCE.kind, metadata: { name: o.nodeName }, spec: {} },
          fm,
        );
      }
      const sameIncarnation = mine?.status?.nodeUID === nodeUid && mine?.status?.key === formatKey(key);
      if (!sameIncarnation) {
        await rest.apply(
          nfPath(o.nodeName, 'status'),
          {
            apiVersion: API_VERSION,
            kind: NODE_FENCE.kind,
            metadata: { name: o.nodeName },
            // Never `phase`: a Fenced mark is owned by the peer that fenced this node and
            // only an unfence may clear it (S2).
            status: { key: formatKey(key), nodeUID: nodeUid },
          },
          fm,
        );
      }
      // Verify: if another node took the same key concurrently, the larger name moves on.
      const after = await rest.get<KubernetesListObject<NodeFence>>(nfPath());
      const clash = after.items.find(
        (nf) => nf.metadata.name !== o.nodeName && nf.status?.key === formatKey(key),
      );
      if (!clash || clash.metadata.name > o.nodeName) return key;
      o.log.warn(
        { key: formatKey(key), clash: clash.metadata.name },
        'key taken by another node; choosing again',
      );
    }
    throw new Error('could not allocate a unique key');
  }

  async #startInformers(): Promise<void> {
    const rest = this.#rest;
    const log = this.#o.log;
    const trigger = (pv: string) => {
      if (!this.#triggeredAt.has(pv)) this.#triggeredAt.set(pv, performance.now());
      this.#queue.add(pv);
    };
    const onVa = (va: V1VolumeAttachment) => {
      const pv = pvOf(va);
      if (!pv) return;
      if (va.spec.nodeName === this.node) this.#touched.add(pv);
      trigger(pv);
    };
    const onNodeChange = (name: string) => {
      for (const pv of this.#pvsOf(name)) trigger(pv);
      if (name === this.node) for (const pv of this.#touched) trigger(pv);
    };
    this.#va = startInformer<V1VolumeAttachment>({
      rest,
      log,
      path: '/apis/storage.k8s.io/v1/volumeattachments',
      transform: slim.volumeAttachment,
      indexes: { pv: (va) => (pvOf(va) ? [pvOf(va)!] : []), node: (va) => [va.spec.nodeName] },
      handlers: { onAdd: onVa, onUpdate: onVa, onDelete: onVa },
    });
    this.#pv = startInformer<V1PersistentVolume>({
      rest,
      log,
      path: '/api/v1/persistentvolumes',
      transform: slim.persistentVolume,
      handlers: {
        onAdd: (p) => trigger(p.metadata?.name ?? ''),
        onUpdate: (p, old) => {
          if (deviceOf(p) !== deviceOf(old)) trigger(p.metadata?.name ?? '');
        },
      },
    });
    this.#nodes = startInformer<V1Node>({
      rest,
      log,
      path: '/api/v1/nodes',
      transform: slim.node,
      handlers: {
        // Only a taint change matters (out-of-service); heartbeats are dropped by the transform.
        onUpdate: (n, old) => {
          if (hasOutOfService(n) !== hasOutOfService(old)) onNodeChange(n.metadata?.name ?? '');
        },
      },
    });
    this.#nf = startInformer<NodeFence>({
      rest,
      log,
      path: nfPath(),
      handlers: {
        onAdd: (nf) => onNodeChange(nf.metadata.name),
        // What the fence rule reads of a NodeFence: its key, the Fenced mark and the request.
        onUpdate: (nf, old) => {
          if (
            nf.status?.key !== old.status?.key ||
            nf.status?.phase !== old.status?.phase ||
            nf.spec?.fenceState !== old.spec?.fenceState
          )
            onNodeChange(nf.metadata.name);
        },
      },
    });
    this.#informers = [this.#va, this.#pv, this.#nodes, this.#nf] as ResilientInformer<never>[];
    await Promise.all(this.#informers.map((i) => i.synced));
    const resync = this.#o.resyncMs ?? 30_000;
    this.#resync = setInterval(() => {
      for (const pv of this.#pvsOf(this.node)) this.#queue.add(pv);
      for (const pv of this.#touched) this.#queue.add(pv);
    }, resync);
    this.#resync.unref();
  }

  #startWorkers(): void {
    for (let i = 0; i < (this.#o.workers ?? 2); i++) {
      this.#workers.push(
        (async () => {
          for (;;) {
            const pv = await this.#queue.get();
            if (pv === undefined) return;
            const log = this.#o.log.child({ pv });
            try {
              const requeueMs = await this.#reconcile(pv, log);
              this.#queue.forget(pv);
              if (requeueMs !== undefined) this.#queue.addAfter(pv, requeueMs);
            } catch (e) {
              this.#o.metrics?.reconciled('error');
              if (e instanceof KubeApiError && e.code === 409) this.#queue.addAfter(pv, 1000);
              else {
                log.warn({ err: String(e) }, 'reconcile failed; retrying with backoff');
                this.#queue.addRateLimited(pv);
              }
            } finally {
              this.#queue.done(pv);
            }
          }
        })(),
      );
    }
  }

  /** PVs attached (or attaching) to a node: an index lookup. */
  #pvsOf(node: string): Set<string> {
    return new Set(this.#va.byIndex('node', node).flatMap((va) => pvOf(va) ?? []));
  }

  #caches(): ClusterCaches {
    return {
      vasOf: (pv) => this.#va.byIndex('pv', pv),
      nodeFences: (n) => this.#nf.get(n),
      allNodeFences: this.#nf.list(),
      nodes: (n) => this.#nodes.get(n),
    };
  }

  /** S2: this node may register only while it is neither marked Fenced nor was fenced by a peer. */
  mayRegister(): boolean {
    const nf = this.#nf.get(this.node);
    return (
      nf?.spec?.fenceState !== 'Fenced' &&
      nf?.status?.phase !== 'Fenced' &&
      !hasOutOfService(this.#nodes.get(this.node))
    );
  }

  /** One level-based reconcile of one PV; returns a requeue delay or undefined. */
  async #reconcile(pv: string, log: Logger): Promise<number | undefined> {
    if (this.#abort.signal.aborted) return undefined;
    const notMine = () => {
      this.#triggeredAt.delete(pv);
      return undefined;
    };
    const identity = deviceOf(this.#pv.get(pv));
    if (!identity) return notMine();
    const caches = this.#caches();
    const legitimate = legitimateNodes(pv, caches);
    const selfLegit = legitimate.some((n) => n.node === this.node);
    if (!selfLegit && !this.#touched.has(pv)) return notMine();
    let device = this.#devices.get(pv);
    if (!device) {
      try {
        device = await this.#o.openDevice(identity, pv);
      } catch (e) {
        // Not present yet, ambiguous, or not a block device: a condition, and the volume
        // is retried with backoff (a device may appear later).
        await this.#applyVr(pv, {
          conditions: [cond('DeviceFound', 'False', 'DeviceNotFound', `${identity}: ${describeError(e)}`)],
        });
        throw e;
      }
      this.#devices.set(pv, device);
    }
    const mayRegister = this.mayRegister();
    this.#o.metrics?.registrationAllowed(mayRegister);
    let obs: VolumeObservation;
    try {
      obs = await fenceVolume({
        device,
        input: {
          self: { node: this.node, key: this.key, legitimate: selfLegit, mayRegister, inUse: false },
          legitimate,
          known: knownKeys(caches),
          clusterTag: this.tag,
          desiredType: this.#o.reservationType ?? 'write-exclusive-reg-only',
          foreignKeys: this.#o.foreignKeys ?? 'leave',
        },
        log,
        signal: this.#abort.signal,
      });
    } catch (e) {
      if (isPrError(e) && e.kind === 'unsupported') {
        this.#o.metrics?.reconciled('unsupported');
        this.#triggeredAt.delete(pv);
        await this.#applyVr(pv, {
          conditions: [cond('Supported', 'False', 'NoPersistentReservations', e.message)],
        });
        return undefined; // terminal: reported as a condition, not retried
      }
      throw e;
    }
    // Recording is decoupled from fencing: the device work of the next volume does not
    // wait for this one's API writes. The latest observation per PV wins; a failed write
    // re-runs the reconcile (which reads the device again, S3).
    log.debug(
      { outcome: obs.outcome, kind: obs.kind, keys: obs.state.keys.keys.map(formatKey), rounds: obs.rounds },
      'reconciled',
    );
    this.#observe(pv, obs);
    this.#recordLater(pv, obs, selfLegit);
    if (!selfLegit && !obs.state.keys.keys.includes(this.key)) this.#touched.delete(pv);
    switch (obs.outcome) {
      case 'done':
      case 'blocked':
        return undefined;
      case 'waiting':
        return 1000;
      default:
        throw new Error(`volume ${pv}: ${obs.outcome}`);
    }
  }

  /** Metrics and the onFence hook for one observation. */
  #observe(pv: string, obs: VolumeObservation): void {
    const t = this.#triggeredAt.get(pv);
    const since = t === undefined ? undefined : performance.now() - t;
    for (const v of obs.victims) {
      this.#o.metrics?.fence(v.result, since === undefined ? undefined : since / 1000);
      this.#o.onFence?.({
        pv,
        victimKey: v.key,
        victimNode: v.node,
        result: v.result,
        sinceTriggerMs: since,
      });
    }
    this.#o.metrics?.reconciled(obs.outcome);
    // A volume waiting on another node keeps its trigger time until it is settled.
    if (obs.outcome !== 'waiting') this.#triggeredAt.delete(pv);
  }

  readonly #pendingRecords = new Map<string, { obs: VolumeObservation; selfLegit: boolean }>();
  readonly #owedVictims = new Map<string, VolumeObservation['victims']>();
  readonly #recording = new Set<string>();
  #recorders = 0;

  #recordLater(pv: string, obs: VolumeObservation, selfLegit: boolean): void {
    const prev = this.#pendingRecords.get(pv);
    // Keep victims of an earlier, not yet recorded observation.
    if (prev && prev.obs.victims.length && !obs.victims.length) obs = { ...obs, victims: prev.obs.victims };
    this.#pendingRecords.set(pv, { obs, selfLegit });
    const eligible = () => [...this.#pendingRecords.keys()].some((p) => !this.#recording.has(p));
    while (this.#recorders < 4 && eligible()) {
      this.#recorders += 1;
      void (async () => {
        try {
          for (;;) {
            // One record per PV at a time, in order: a newer observation waits for the
            // write in flight, or the older write could land last.
            const next = [...this.#pendingRecords].find(([pv]) => !this.#recording.has(pv));
            if (!next) return;
            const [p, r] = next;
            this.#pendingRecords.delete(p);
            this.#recording.add(p);
            try {
              await this.#record(p, r.obs, r.selfLegit);
            } catch (e) {
              if (e instanceof KubeApiError && e.code === 409)
                this.#o.log.debug({ pv: p }, 'status changed concurrently; reconciling again');
              else this.#o.log.warn({ pv: p, err: String(e) }, 'status not recorded; will reconcile again');
              this.#queue.addRateLimited(p);
            } finally {
              this.#recording.delete(p);
            }
          }
        } finally {
          this.#recorders -= 1;
        }
      })();
    }
  }

  /** Records the device's answer (S3): own registrant entry, and what the actor did. */
  async #record(pv: string, obs: VolumeObservation, selfLegit: boolean): Promise<void> {
    // Victims stay owed until recorded: a failed write (409, API down) must not lose the
    // Fenced mark, and the next observation no longer sees the victim's key.
    const owed = this.#owedVictims.get(pv) ?? [];
    const victims = [...owed.filter((o) => !obs.victims.some((v) => v.key === o.key)), ...obs.victims];
    if (victims.length) this.#owedVictims.set(pv, victims);
    obs = { ...obs, victims };
    const now = new Date().toISOString();
    const own = obs.state.keys.keys.includes(this.key);
    if (own) this.#registeredOn.add(pv);
    else this.#registeredOn.delete(pv);
    const r = obs.state.reservation;
    const status: VolumeReservationStatus = {
      registrants: own ? [{ node: this.node, key: formatKey(this.key), legitimate: selfLegit }] : [],
    };
    const acted = obs.results.length > 0;
    if (acted || r.key === this.key) {
      status.generation = obs.state.keys.generation;
      if (r.type) status.reservationType = r.type;
      if (r.key !== null) {
        const holderNode = obs.keys.find((k) => k.key === r.key)?.node;
        status.holder = holderNode ? { node: holderNode, key: formatKey(r.key) } : { key: formatKey(r.key) };
      }
      status.foreignKeys = obs.keys.filter((k) => k.class === 'foreign').length;
      // The PV's identity (the same for every node; a path annotation is shown as is).
      const identity = deviceOf(this.#pv.get(pv))?.slice(0, 256);
      status.device = {
        ...(identity ? { identity } : {}),
        ...(obs.kind !== 'memory' ? { kind: obs.kind } : {}),
      };
      status.conditions = [
        cond(
          'Reserved',
          r.type ? 'True' : 'False',
          r.type ? 'Reserved' : 'NotReserved',
          `${r.type ?? 'none'}`,
        ),
      ];
    }
    const victim = obs.victims.at(-1);
    if (victim) {
      this.#lastFence.set(pv, {
        victimKey: formatKey(victim.key),
        by: this.node,
        at: now,
        durationMs: Math.round(obs.durationMs),
        result: victim.result === 'fenced' ? 'Fenced' : 'Failed',
        ...(victim.node ? { victimNode: victim.node } : {}),
      });
    }
    const lastFence = this.#lastFence.get(pv);
    if (lastFence) status.lastFence = lastFence;
    const fenced = obs.victims.filter((v) => v.result === 'fenced' && v.node !== undefined);
    // The Fenced mark first: it is what keeps the victim's agent from registering again (S2).
    for (const v of fenced) {
      await this.#rest.apply(
        nfPath(v.node!, 'status'),
        {
          apiVersion: API_VERSION,
          kind: NODE_FENCE.kind,
          metadata: { name: v.node! },
          status: { phase: 'Fenced', fencedBy: this.node, fencedAt: now },
        },
        this.#fm,
      );
    }
    let known = await this.#applyVr(pv, status);
    for (const v of fenced) {
      await this.#dropRegistrant(pv, v.node!, known);
      known = undefined;
      await this.#events.emit({
        regarding: { apiVersion: API_VERSION, kind: NODE_FENCE.kind, name: v.node! },
        related: { apiVersion: 'v1', kind: 'PersistentVolume', name: pv },
        reason: 'Fenced',
        action: 'Fence',
        type: 'Warning',
        note: `removed key ${formatKey(v.key)} of ${v.node} from ${pv} (by ${this.node})`,
      });
    }
    this.#owedVictims.delete(pv);
    const phase: NodePhase =
      obs.outcome === 'blocked'
        ? this.#nf.get(this.node)?.status?.phase === 'Fenced'
          ? 'Fenced'
          : 'Blocked'
        : 'Registered';
    await this.#applyOwnStatus(phase);
  }

  /**
   * Writes this node's view of a volume (what, see vr-status.ts). A write with shared
   * fields carries the resourceVersion it was decided on: a concurrent writer makes it
   * fail with 409 and the volume is reconciled again (the device is read again, S3).
   */
  async #applyVr(pv: string, status: VolumeReservationStatus): Promise<VolumeReservation | undefined> {
    // Nothing new, no write (condition times are set on every observation: not compared).
    const body = JSON.stringify(status, (k, v: unknown) => (k === 'lastTransitionTime' ? undefined : v));
    if (this.#lastStatus.get(pv) === body) return undefined;
    const shared = hasSharedFields(status);
    let current: VolumeReservation | undefined;
    if (shared || !this.#lastStatus.has(pv)) {
      current = await this.#rest.get<VolumeReservation>(vrPath(pv)).catch((e: unknown) => {
        if (e instanceof KubeApiError && e.code === 404) return undefined;
        throw e;
      });
      // Created here if missing; the created object's resourceVersion is the precondition
      // of the status write too (a peer may write between the two).
      current ??= await this.#rest.apply<VolumeReservation>(
        vrPath(pv),
        { apiVersion: API_VERSION, kind: VOLUME_RESERVATION.kind, metadata: { name: pv } },
        this.#fm,
      );
    }
    const { status: out, stale } = vrStatusToWrite(status, current?.status);
    if (stale)
      this.#o.log.debug(
        { pv, observed: status.generation, recorded: current?.status?.generation },
        'observation older than the recorded one; writing only this node',
      );
    const rv = current?.metadata?.resourceVersion;
    const applied = await this.#rest.apply<VolumeReservation>(
      vrPath(pv, 'status'),
      {
        apiVersion: API_VERSION,
        kind: VOLUME_RESERVATION.kind,
        metadata: { name: pv, ...(shared && rv ? { resourceVersion: rv } : {}) },
        status: out,
      },
      this.#fm,
    );
    this.#lastStatus.set(pv, body);
    return applied;
  }

  /**
   * Removes a fenced node's registrants entry (its own agent owns it and may be cut off).
   * A JSON patch with a test op: it removes exactly that entry or nothing.
   */
  async #dropRegistrant(pv: string, node: string, known?: VolumeReservation): Promise<void> {
    // `known`: the object the status write just returned (saves a GET); if it is already
    // out of date the test op fails and the entry is looked up once more.
    for (const fresh of known ? [false, true] : [true]) {
      const vr = fresh ? await this.#rest.get<VolumeReservation>(vrPath(pv)) : known!;
      const i = vr.status?.registrants?.findIndex((r) => r.node === node) ?? -1;
      if (i < 0) return;
      try {
        await this.#rest.send({
          method: 'PATCH',
          path: vrPath(pv, 'status'),
          contentType: 'application/json-patch+json',
          body: [
            { op: 'test', path: `/status/registrants/${i}/node`, value: node },
            { op: 'remove', path: `/status/registrants/${i}` },
          ],
        });
        return;
      } catch (e) {
        if (!(e instanceof KubeApiError && (e.code === 422 || e.code === 409))) throw e;
      }
    }
  }

  /** PVs whose device carries this node's key (NodeFence status.volumes, the VOLUMES column). */
  readonly #registeredOn = new Set<string>();

  async #applyOwnStatus(phase: NodePhase): Promise<void> {
    const nf = this.#nf.get(this.node);
    const volumes = this.#registeredOn.size;
    // Only an unfence clears a Fenced mark (S2): then phase is left to its owner.
    const writePhase = !(nf?.status?.phase === 'Fenced' && phase !== 'Fenced');
    if ((!writePhase || nf?.status?.phase === phase) && nf?.status?.volumes === volumes) return;
    try {
      // Not forced: once a peer has marked this node Fenced it owns `phase`, and this
      // agent's write conflicts instead of clearing the mark (S2). Only an unfence,
      // which removes the field, lets this node own it again.
      await this.#rest.apply(
        nfPath(this.node, 'status'),
        {
          apiVersion: API_VERSION,
          kind: NODE_FENCE.kind,
          metadata: { name: this.node },
          status: {
            key: formatKey(this.key),
            nodeUID: this.#nodeUid,
            volumes,
            ...(writePhase ? { phase } : {}),
          },
        },
        this.#fm,
        false,
      );
    } catch (e) {
      if (!(e instanceof KubeApiError && e.code === 409)) throw e;
      this.#o.log.info({ phase }, 'phase owned by another manager (fenced); not overwritten');
    }
  }

  /** Stops watching and closes devices. Never releases or unregisters (S8). */
  async stop(): Promise<void> {
    this.#abort.abort();
    if (this.#resync) clearInterval(this.#resync);
    this.#queue.shutDown();
    await Promise.all(this.#informers.map((i) => i.stop()));
    await Promise.allSettled(this.#workers);
    for (const d of this.#devices.values()) await d.close();
    this.#rest.close();
  }

  /** API requests this agent sent (status, marks, events; informer lists and watch starts too). */
  get apiRequests(): number {
    return this.#rest.requests;
  }
}

function cond<T extends string>(
  type: T,
  status: 'True' | 'False' | 'Unknown',
  reason: string,
  message: string,
) {
  return { type, status, reason, message, lastTransitionTime: new Date().toISOString() };
}
