/**
 * The prfence node agent: wiring. Informer caches feed a work queue of PV names (the
 * enqueue rules are in enqueue.ts); workers run the VolumeReconciler, which acts on the
 * devices only through a fresh API view (fresh-view.ts) and records through the
 * StatusWriter. The key is claimed in key-claim.ts; what the node must remember across
 * restarts lives on the host (fence-memory.ts).
 *
 * Safety (DESIGN.md): S2 - no registration without a fresh API view saying this node is
 * legitimate and not fenced, and never where the node lost its key until an unfence;
 * S6 - a key claim the API server keeps unique; S8 - stop() closes devices and never
 * releases or unregisters; S9 - a missing or stale object never leads to a fence.
 */
import type {
  V1Namespace,
  V1Node,
  V1PersistentVolume,
  V1StorageClass,
  V1VolumeAttachment,
} from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { NodeFence, VolumeReservation } from '../crd/types.js';
import { clusterTag } from '../fence/keys.js';
import type { ConnectionSource } from '../kube/connection.js';
import { startInformer, type ResilientInformer } from '../kube/informer.js';
import { KubeApiError, RestClient } from '../kube/rest-client.js';
import { WorkQueue } from '../kube/work-queue.js';
import { describeError } from '../obs/logger.js';
import type { AgentMetrics } from '../obs/metrics.js';
import { formatKey, parseKey, type PrKey } from '../pr/key.js';
import type { PrDevice } from '../pr/pr-device.js';
import type { ReservationType } from '../pr/reservation-type.js';
import {
  deviceOf,
  isFenceRequested,
  pvOf,
  slim,
  storageClassOf,
  type ClusterCaches,
} from './cluster-view.js';
import { DeviceRegistry } from './device-registry.js';
import { enqueueRules } from './enqueue.js';
import { FailfastProbe, setAccessLostTaint, sysrqReboot, type FailfastAction } from './failfast.js';
import { FenceMemory, type KeyLoss } from './fence-memory.js';
import { FreshViewSource } from './fresh-view.js';
import { claimKey, ensureNodeFence, nfPath, type KeyClaimOptions } from './key-claim.js';
import { StatusWriter, vrPath } from './status-writer.js';
import { ownNodeStatus } from './nf-status.js';
import { VolumeReconciler } from './volume-reconciler.js';
import { resolveVolumePolicy, type FencingMode, type VolumePolicy } from './volume-policy.js';

export interface AgentOptions {
  /** How to reach the API server (a KubeConnection, or a client-node KubeConfig in tests). */
  kubeConfig: ConnectionSource;
  nodeName: string;
  /** Opens the local block device for a PV's device identity. */
  openDevice: (identity: string, pv: string) => Promise<PrDevice>;
  log: Logger;
  /** The default reservation type (a PV or StorageClass annotation overrides it). */
  reservationType?: ReservationType;
  /** Whether volumes are fenced unless a PV or StorageClass annotation says otherwise. Default enabled. */
  fencingDefault?: FencingMode;
  /** Cluster id for the key tag; default the kube-system namespace UID. */
  clusterId?: string;
  foreignKeys?: 'leave' | 'preempt';
  workers?: number;
  /** Re-check every volume of this node this often (level-based safety net). Default 30 s. */
  resyncMs?: number;
  /** A device command needs API reads no older than this. Default 5 s. */
  freshnessMs?: number;
  /** A node that left by a normal detach has this long to unregister before it is fenced. Default 10 s. */
  leaveGraceMs?: number;
  /** Host directory for what the node must remember across restarts (S2); default: memory only. */
  stateDir?: string;
  /** Failfast probe: read the own key on every device the node expects it on this often; 0: off. Default 2 s. */
  probeIntervalMs?: number;
  /** What the node does when its own key is gone: report (default), taint its Node, or reboot. */
  failfastAction?: FailfastAction;
  /** Must be true for failfastAction 'reboot' (the CLI's --failfast-allow-reboot). */
  allowReboot?: boolean;
  /** What action 'reboot' calls (default: sysrq sync, remount read-only, reboot); tests inject one. */
  rebootTrigger?: (reason: string) => void | Promise<void>;
  /** Dead-watch detection (no event or bookmark for this long). Default 90 s. */
  watchIdleTimeoutMs?: number;
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

export class Agent {
  readonly node: string;
  readonly key: PrKey;
  readonly tag: number;
  readonly #o: AgentOptions;
  readonly #rest: RestClient;
  readonly #queue: WorkQueue<string>;
  readonly #fresh: FreshViewSource;
  readonly #devices: DeviceRegistry;
  readonly #writer: StatusWriter;
  readonly #reconciler: VolumeReconciler;
  readonly #claim: KeyClaimOptions;
  /** When this agent first saw a change that triggers a volume's reconcile (fence latency). */
  readonly #triggeredAt = new Map<string, number>();
  readonly #abort = new AbortController();
  #informers: ResilientInformer<never>[] = [];
  #va!: ResilientInformer<V1VolumeAttachment>;
  #pv!: ResilientInformer<V1PersistentVolume>;
  #nodes!: ResilientInformer<V1Node>;
  #nf!: ResilientInformer<NodeFence>;
  #sc!: ResilientInformer<V1StorageClass>;
  #workers: Promise<void>[] = [];
  #resync: NodeJS.Timeout | undefined;
  #probe: NodeJS.Timeout | undefined;
  #apiProblem: string | undefined;
  readonly #memory: FenceMemory;
  readonly #failfast: FailfastProbe;
  #unlisten: (() => void) | undefined;
  /** Devices (identity) where the own key is gone, until an unfence forgives the loss. */
  readonly #lost = new Map<string, { pv: string | undefined; loss: KeyLoss }>();
  /** Forgiven devices where the key is not registered again yet (the taint stays meanwhile). */
  readonly #reRegistering = new Set<string>();
  /** Best-effort API writes of the failfast, retried every probe round and resync. */
  readonly #pendingEvents: string[] = [];
  #ownStatusDirty = false;
  #taintWanted: boolean | undefined;
  #taintApplied: boolean | undefined;
  #apiRetrying = false;
  #rebootTriggered = false;

  private constructor(
    o: AgentOptions,
    rest: RestClient,
    key: PrKey,
    tag: number,
    claim: KeyClaimOptions,
    memory: FenceMemory,
  ) {
    this.#o = o;
    this.node = o.nodeName;
    this.#rest = rest;
    this.key = key;
    this.tag = tag;
    this.#claim = claim;
    this.#memory = memory;
    this.#queue = new WorkQueue<string>({
      baseDelayMs: 200,
      maxDelayMs: 30_000,
      ...(o.metrics ? { metrics: o.metrics.queue } : {}),
    });
    this.#fresh = new FreshViewSource({ rest, freshnessMs: o.freshnessMs ?? 5000 });
    this.#devices = new DeviceRegistry(o.openDevice);
    this.#writer = new StatusWriter({ rest, node: o.nodeName, key, nodeUid: claim.nodeUid, log: o.log });
    this.#reconciler = new VolumeReconciler({
      node: o.nodeName,
      key,
      tag,
      caches: () => this.#caches(),
      identityOf: (pv) => deviceOf(this.#pv.get(pv)),
      policyOf: (pv) => this.#policyOf(pv),
      fresh: this.#fresh,
      devices: this.#devices,
      memory,
      writer: this.#writer,
      foreignKeys: o.foreignKeys ?? 'leave',
      leaveGraceMs: o.leaveGraceMs ?? 10_000,
      signal: this.#abort.signal,
    });
    this.#failfast = new FailfastProbe({
      key,
      intervalMs: o.probeIntervalMs ?? 2000,
      targets: () => this.#devices.entries(),
      memory,
      unfencedAt: () => this.#nf.get(this.node)?.spec?.unfencedAt,
      log: o.log.child({ component: 'failfast' }),
      onRound: () => {
        if (this.#apiWritesPending()) void this.#retryFailfastApi();
      },
      ...(o.metrics ? { onSkipped: o.metrics.failfastSkipped } : {}),
    });
  }

  /**
   * Starts the agent. Throws, and registers nothing anywhere, if the API server does not
   * answer (S2): a node that cannot learn whether it was fenced must not register.
   */
  static async start(o: AgentOptions): Promise<Agent> {
    if (o.failfastAction === 'reboot' && !o.allowReboot)
      throw new Error('failfast action reboot needs allowReboot (--failfast-allow-reboot)');
    const metrics = o.metrics;
    const rest = new RestClient(o.kubeConfig, {
      userAgent: `prfence-agent/${o.nodeName}`,
      ...(metrics ? { onResponse: metrics.apiRequest } : {}),
    });
    try {
      const node = await rest.get<V1Node>(`/api/v1/nodes/${encodeURIComponent(o.nodeName)}`);
      const nodeUid = node.metadata?.uid ?? '';
      const clusterId =
        o.clusterId ??
        (await rest.get<V1Namespace>('/api/v1/namespaces/kube-system')).metadata?.uid ??
        'default';
      const tag = clusterTag(clusterId);
      const claim: KeyClaimOptions = {
        rest,
        node: o.nodeName,
        nodeUid,
        tag,
        fieldManager: `prfence-agent/${o.nodeName}`,
        log: o.log,
      };
      const key = await claimKey(claim);
      const memory = await FenceMemory.open(o.stateDir);
      const agent = new Agent(o, rest, key, tag, claim, memory);
      o.log.info({ node: o.nodeName, key: formatKey(key) }, 'agent key');
      await agent.#startInformers();
      // Truthful from the start: 1 on a healthy idle node, not only after a first volume.
      metrics?.registrationAllowed(agent.#reconciler.mayRegisterCached());
      await agent.#resumeIntents();
      agent.#resumeHandovers();
      // A node with a key and no volume yet shows a phase, not an empty cell.
      await agent.#writeOwnStatus();
      agent.#startWorkers();
      agent.#startApiProbe();
      agent.#startFailfast();
      return agent;
    } catch (e) {
      rest.close();
      throw e;
    }
  }

  async #startInformers(): Promise<void> {
    const rest = this.#rest;
    const log = this.#o.log;
    const idleTimeoutMs = this.#o.watchIdleTimeoutMs ?? 90_000;
    const rules = enqueueRules({
      node: this.node,
      pvsOf: (n) => this.#pvsOf(n),
      touched: () => this.#reconciler.touched,
      trigger: (pv) => {
        if (!this.#triggeredAt.has(pv)) this.#triggeredAt.set(pv, performance.now());
        this.#queue.add(pv);
      },
      storageClassOf: (pv) => storageClassOf(this.#pv.get(pv)),
      onOwnNodeFenceDeleted: () => {
        // Recreated at once (the key claim keeps the key); peers never act on a node whose
        // key they cannot tell (S9).
        ensureNodeFence(this.#claim, this.key).catch((e: unknown) =>
          log.warn({ err: describeError(e) }, 'NodeFence not recreated yet; retried on resync'),
        );
      },
    });
    const common = { rest, log, idleTimeoutMs };
    this.#va = startInformer<V1VolumeAttachment>({
      ...common,
      path: '/apis/storage.k8s.io/v1/volumeattachments',
      transform: slim.volumeAttachment,
      indexes: { pv: (va) => (pvOf(va) ? [pvOf(va)!] : []), node: (va) => [va.spec.nodeName] },
      handlers: rules.volumeAttachment,
    });
    this.#pv = startInformer<V1PersistentVolume>({
      ...common,
      path: '/api/v1/persistentvolumes',
      transform: slim.persistentVolume,
      handlers: rules.persistentVolume,
    });
    this.#nodes = startInformer<V1Node>({
      ...common,
      path: '/api/v1/nodes',
      transform: slim.node,
      handlers: rules.node,
    });
    this.#nf = startInformer<NodeFence>({ ...common, path: nfPath(), handlers: rules.nodeFence });
    // Only for the policy annotations prfence.io/fencing and prfence.io/reservation-type.
    this.#sc = startInformer<V1StorageClass>({
      ...common,
      path: '/apis/storage.k8s.io/v1/storageclasses',
      transform: slim.storageClass,
      handlers: rules.storageClass,
    });
    this.#informers = [this.#va, this.#pv, this.#nodes, this.#nf, this.#sc] as ResilientInformer<never>[];
    await Promise.all(this.#informers.map((i) => i.synced));
    const resync = this.#o.resyncMs ?? 30_000;
    this.#resync = setInterval(() => {
      for (const pv of this.#pvsOf(this.node)) this.#queue.add(pv);
      for (const pv of this.#reconciler.touched) this.#queue.add(pv);
      if (!this.#nf.get(this.node))
        rules.nodeFence.onDelete?.({ metadata: { name: this.node } } as NodeFence);
      // An idle node (no volume to reconcile) still gets its status written (phase, Ready).
      void this.#writeOwnStatus();
      if (this.#apiWritesPending()) void this.#retryFailfastApi();
    }, resync);
    this.#resync.unref();
  }

  /** Intents this node recorded before it stopped: completed from the device (dm-log replay). */
  async #resumeIntents(): Promise<void> {
    const list = await this.#rest.get<{ items: VolumeReservation[] }>(vrPath());
    for (const vr of list.items) {
      const i = vr.status?.fenceIntent;
      if (i?.by !== this.node) continue;
      const log = this.#o.log.child({ pv: vr.metadata.name });
      log.info(
        { victim: i.victimKey, victimNode: i.victimNode },
        'completing a fence intent from before the restart',
      );
      try {
        await this.#reconciler.completeOpenIntent(vr.metadata.name, parseKey(i.victimKey), i.victimNode, log);
      } catch (e) {
        log.warn({ err: describeError(e) }, 'open intent not completed yet; the volume is reconciled');
      }
      this.#queue.add(vr.metadata.name);
    }
  }

  /** Reservations this node held to hand over before it stopped: held and watched again. */
  #resumeHandovers(): void {
    for (const pv of this.#nf.get(this.node)?.status?.handingOver ?? []) {
      this.#reconciler.handingOver.add(pv);
      this.#reconciler.touched.add(pv);
      this.#queue.add(pv);
    }
  }

  #startWorkers(): void {
    for (let i = 0; i < (this.#o.workers ?? 4); i++) {
      this.#workers.push(
        (async () => {
          for (;;) {
            const pv = await this.#queue.get();
            if (pv === undefined) return;
            await this.#process(pv);
          }
        })(),
      );
    }
  }

  /** One work item: reconcile, then requeue per the result, or back off on an error. */
  async #process(pv: string): Promise<void> {
    const log = this.#o.log.child({ pv });
    const m = this.#o.metrics;
    try {
      const r = await this.#reconciler.reconcile(pv, log);
      log.debug(
        { outcome: r.outcome, registered: r.registered, requeueAfterMs: r.requeueAfterMs },
        'reconciled',
      );
      this.#queue.forget(pv);
      m?.reconciled(r.outcome);
      m?.registrationAllowed(this.#reconciler.mayRegisterCached() && this.#reconciler.blockedOn.size === 0);
      const t = this.#triggeredAt.get(pv);
      const since = t === undefined ? undefined : performance.now() - t;
      m?.handingOver(this.#reconciler.handingOver.size);
      for (const v of r.victims) {
        if (v.takeover && v.result === 'fenced') m?.takeover();
        if (v.result === 'left' || v.takeover) continue;
        m?.fence(v.result, since === undefined ? undefined : since / 1000);
        this.#o.onFence?.({
          pv,
          victimKey: v.key,
          victimNode: v.node,
          result: v.result,
          sinceTriggerMs: since,
        });
      }
      // A volume waiting on another node keeps its trigger time until it is settled.
      if (r.requeueAfterMs === undefined || r.outcome !== 'waiting') this.#triggeredAt.delete(pv);
      if (r.requeueAfterMs !== undefined) this.#queue.addAfter(pv, r.requeueAfterMs);
      await this.#writeOwnStatus();
    } catch (e) {
      m?.reconciled('error');
      if (e instanceof KubeApiError && e.code === 409) this.#queue.addAfter(pv, 1000);
      else {
        log.warn({ err: describeError(e) }, 'reconcile failed; retrying with backoff');
        this.#queue.addRateLimited(pv);
      }
    } finally {
      this.#queue.done(pv);
    }
  }

  /** Writes the own NodeFence status; resolves false if it was not written (retried later). */
  async #writeOwnStatus(): Promise<boolean> {
    const nf = this.#nf.get(this.node);
    const problem = this.notReady();
    const lost = this.#accessLostMessage();
    const { phase, volumes, conditions } = ownNodeStatus({
      recordedPhase: nf?.status?.phase,
      fencedBy: nf?.status?.fencedBy,
      lost,
      fenceRequested: isFenceRequested(nf, this.#nodes.get(this.node)),
      blockedVolumes: this.#reconciler.blockedOn.size,
      registeredVolumes: this.#reconciler.registeredOn.size,
      problem,
    });
    return this.#writer
      .writeOwn(nf, {
        phase,
        volumes,
        handingOver: [...this.#reconciler.handingOver],
        conditions,
      })
      .then(
        () => true,
        (e: unknown) => {
          this.#o.log.debug({ err: describeError(e) }, 'own status not written; next time');
          return false;
        },
      );
  }

  /** The AccessLost message naming the devices and the key holding each now; undefined: none lost. */
  #accessLostMessage(): string | undefined {
    if (this.#lost.size === 0) return undefined;
    const parts = [...this.#lost].map(
      ([identity, { pv, loss }]) =>
        `${pv ?? '?'} (${identity}, reservation held by ${loss.holder ?? 'unknown'})`,
    );
    return `own key ${formatKey(this.key)} removed by another initiator from ${parts.sort().join(', ')}; registers there again only after prfence unfence`;
  }

  /** Failfast: the probe, and the reactions to a loss of the own key (whoever found it). */
  #startFailfast(): void {
    for (const [identity, loss] of Object.entries(this.#memory.losses))
      this.#lost.set(identity, { pv: this.#pvOfIdentity(identity), loss });
    this.#o.metrics?.accessLost(this.#lost.size);
    // After a restart (a reboot): shown again, and the taint kept; never a second reboot.
    if (this.#lost.size > 0) {
      this.#ownStatusDirty = true;
      if (this.#o.failfastAction === 'taint') this.#taintWanted = true;
      void this.#retryFailfastApi();
    }
    this.#unlisten = this.#memory.listen({
      lost: (identity, loss) => this.#onAccessLost(identity, loss),
      forgiven: (identity) => {
        this.#lost.delete(identity);
        this.#reRegistering.add(identity);
        this.#accessChanged();
      },
      registered: (identity) => {
        if (this.#reRegistering.delete(identity)) this.#accessChanged();
      },
    });
    this.#failfast.start();
  }

  #pvOfIdentity(identity: string): string | undefined {
    for (const e of this.#devices.entries()) if (e.identity === identity) return e.pv;
    return undefined;
  }

  /**
   * The own key is gone from a device (recorded in the host memory already): metrics,
   * best-effort API writes (never awaited: a partitioned node cannot make them), then
   * the local action.
   */
  #onAccessLost(identity: string, loss: KeyLoss): void {
    const action = this.#o.failfastAction ?? 'report';
    const pv = this.#pvOfIdentity(identity);
    this.#lost.set(identity, { pv, loss });
    this.#reRegistering.delete(identity);
    this.#o.metrics?.accessLost(this.#lost.size);
    this.#o.metrics?.failfastDetection(action);
    const note = `own key ${loss.key} of ${this.node} gone from ${pv ?? '?'} (${identity}); reservation held by ${loss.holder ?? 'unknown'}; failfast action ${action}`;
    this.#o.log.error(
      { pv, device: identity, key: loss.key, holder: loss.holder, action },
      'access lost: ' + note,
    );
    this.#pendingEvents.push(note);
    this.#ownStatusDirty = true;
    if (action === 'taint') this.#taintWanted = true;
    void this.#retryFailfastApi();
    if (action === 'reboot' && !this.#rebootTriggered) {
      this.#rebootTriggered = true;
      const trigger = this.#o.rebootTrigger ?? (() => sysrqReboot());
      this.#o.log.fatal({ pv, device: identity }, 'failfast: rebooting this node (sysrq)');
      try {
        void Promise.resolve(trigger(note)).catch((e: unknown) =>
          this.#o.log.fatal({ err: describeError(e) }, 'failfast reboot failed'),
        );
      } catch (e) {
        this.#o.log.fatal({ err: describeError(e) }, 'failfast reboot failed');
      }
    }
  }

  /** A loss was forgiven or the key registered again: the phase, and the taint once all are back. */
  #accessChanged(): void {
    this.#o.metrics?.accessLost(this.#lost.size);
    this.#ownStatusDirty = true;
    if (this.#lost.size === 0 && this.#reRegistering.size === 0 && this.#taintWanted)
      this.#taintWanted = false;
    void this.#retryFailfastApi();
  }

  #apiWritesPending(): boolean {
    return (
      this.#ownStatusDirty ||
      this.#pendingEvents.length > 0 ||
      (this.#taintWanted !== undefined && this.#taintWanted !== this.#taintApplied)
    );
  }

  /** The failfast's API writes (status, event, taint), one pass at a time, retried until they land. */
  async #retryFailfastApi(): Promise<void> {
    if (this.#apiRetrying || this.#abort.signal.aborted) return;
    this.#apiRetrying = true;
    const log = this.#o.log;
    try {
      if (this.#ownStatusDirty) {
        this.#ownStatusDirty = false;
        if (!(await this.#writeOwnStatus())) this.#ownStatusDirty = true;
      }
      while (this.#pendingEvents.length > 0 && (await this.#writer.accessLostEvent(this.#pendingEvents[0]!)))
        this.#pendingEvents.shift();
      const want = this.#taintWanted;
      if (want !== undefined && want !== this.#taintApplied) {
        try {
          await setAccessLostTaint(this.#rest, this.node, want);
          this.#taintApplied = want;
          log.warn(
            { taint: 'prfence.io/access-lost:NoExecute' },
            want ? 'node tainted' : 'node taint removed',
          );
        } catch (e) {
          log.warn({ err: describeError(e) }, 'access-lost taint not changed yet; retried');
        }
      }
    } finally {
      this.#apiRetrying = false;
    }
  }

  /**
   * Readiness follows the API server without waiting for a device command: a consistent
   * GET of the own NodeFence every freshness period (a fresh read again after a failed one).
   */
  #startApiProbe(): void {
    const period = this.#o.freshnessMs ?? 5000;
    let running = false;
    this.#probe = setInterval(() => {
      if (running) return;
      running = true;
      const check = this.#fresh.problem()
        ? this.#fresh.get()
        : this.#rest.send({ method: 'GET', path: nfPath(this.node), timeoutMs: period });
      check
        .then(
          () => (this.#apiProblem = undefined),
          (e: unknown) => (this.#apiProblem = `API server not answering: ${describeError(e)}`),
        )
        .finally(() => (running = false));
    }, period);
    this.#probe.unref();
  }

  /** PVs attached (or attaching) to a node: an index lookup. */
  #pvsOf(node: string): Set<string> {
    return new Set(this.#va.byIndex('node', node).flatMap((va) => pvOf(va) ?? []));
  }

  /** PV annotation > StorageClass annotation > agent default (volume-policy.ts), from the caches. */
  #policyOf(name: string): VolumePolicy {
    const pv = this.#pv.get(name);
    const scName = storageClassOf(pv);
    const sc = scName === undefined ? undefined : this.#sc.get(scName);
    return resolveVolumePolicy({
      pv: { name, annotations: pv?.metadata?.annotations },
      storageClass: sc ? { name: sc.metadata?.name ?? '', annotations: sc.metadata?.annotations } : undefined,
      defaults: {
        fencing: this.#o.fencingDefault ?? 'enabled',
        reservationType: this.#o.reservationType ?? 'write-exclusive-reg-only',
      },
    });
  }

  #caches(): ClusterCaches {
    return {
      vasOf: (pv) => this.#va.byIndex('pv', pv),
      nodeFences: (n) => this.#nf.get(n),
      allNodeFences: this.#nf.list(),
      nodes: (n) => this.#nodes.get(n),
    };
  }

  /** S2 as the caches say it (device commands also need a fresh view). */
  mayRegister(): boolean {
    return this.#reconciler.mayRegisterCached();
  }

  /**
   * Undefined while the agent can act safely, else why not (/readyz): the last fresh read
   * of the API failed, or a watch is dead.
   */
  notReady(): string | undefined {
    return (
      this.#apiProblem ??
      this.#fresh.problem() ??
      this.#informers.map((i) => i.problem()).find((p) => p !== undefined)
    );
  }

  /** Asks for a fresh read now (readiness reflects the API server without waiting for a device command). */
  async checkApi(): Promise<void> {
    await this.#fresh.get().catch(() => undefined);
  }

  /** Stops watching and closes devices. Never releases or unregisters (S8). */
  async stop(): Promise<void> {
    this.#abort.abort();
    if (this.#resync) clearInterval(this.#resync);
    if (this.#probe) clearInterval(this.#probe);
    this.#failfast.stop();
    this.#unlisten?.();
    this.#queue.shutDown();
    await Promise.all(this.#informers.map((i) => i.stop()));
    await Promise.allSettled(this.#workers);
    await this.#devices.closeAll();
    this.#rest.close();
  }

  /** The failfast probe (tests and the benchmark look at its reads). */
  get failfast(): FailfastProbe {
    return this.#failfast;
  }

  /** API requests this agent sent (status, marks, events; informer lists and watch starts too). */
  get apiRequests(): number {
    return this.#rest.requests;
  }
}
