/**
 * `prfence controller`: the cluster-level component (a Deployment, kubernetes-csi sidecar
 * style). Replicas campaign for a Lease (leader-election.ts); only the leader acts. While
 * it leads it watches Nodes, PersistentVolumes, NodeFences and VolumeReservations, and a
 * small work queue of keys (`taint/<node>`, `nf/<node>`, `vr/<pv>`) drives level-based
 * reconciles: the out-of-service taint becomes a fence request (taint-fence.ts), objects
 * of deleted Nodes and PVs are collected (garbage-collector.ts). Every write goes through
 * one guard (acting.ts): once the leader's renew deadline passes, nothing more is sent.
 * With `autoFence` it also watches the node Leases in kube-node-lease and requests the
 * fence of a node whose Lease it saw unchanged for `nodeLostAfterMs` (node-loss.ts).
 *
 * With `desiredState` (default on) it also watches VolumeAttachments and StorageClasses and
 * writes each volume's desired state into its VolumeReservation, labelled for each node
 * involved (desired-state.ts), so node agents with `--scope=node` watch only their own.
 */
import { DEFAULT_CONTROLLER_WORKERS } from '../config/controller-config.js';
import type { V1Node, V1PersistentVolume, V1StorageClass, V1VolumeAttachment } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { NodeFence, VolumeReservation } from '../crd/types.js';
import type { ConnectionSource } from '../kube/connection.js';
import { EventRecorder } from '../kube/events.js';
import { startInformer, type ResilientInformer } from '../kube/informer.js';
import { RestClient } from '../kube/rest-client.js';
import { pvOf, slimNode, slimVolumeAttachment } from '../kube/slim.js';
import { slimPersistentVolume, slimStorageClass, storageClassOf } from '../fence/persistent-volume.js';
import { WorkQueue } from '../kube/work-queue.js';
import type { ControllerMetrics } from '../obs/controller-metrics.js';
import { describeError } from '../obs/logger.js';
import { FIELD_MANAGER, NotLeaderError, type Acting, type ControllerAction } from './acting.js';
import { isConflict, nfPath, nodePath, pvPath, vrPath } from './api.js';
import { changesDesiredState, reconcileDesiredState, type DesiredStateCaches } from './desired-state.js';
import { collectNodeFence, collectVolumeReservation, type GcCaches } from './garbage-collector.js';
import { LeaderElector, type ElectionEnd } from './leader-election.js';
import type { LeaderTimings } from './lease.js';
import {
  DEFAULT_NODE_LOST_AFTER_MS,
  NodeLossTracker,
  nodeLeasePath,
  reconcileNodeLoss,
  recordOf,
  slimNodeLease,
  type NodeLease,
} from './node-loss.js';
import { OUT_OF_SERVICE_BY, reconcileIsolation, type IsolationCaches } from './isolation.js';
import { fenceRequestedOrMarked } from './isolation-proof.js';
import { outOfServiceTaint, reconcileTaint } from './taint-fence.js';

export const LEASE_NAME = 'prfence-controller';

/** How long a change waits before the isolation summary of its node is looked at (see `iso`). */
export const ISOLATION_BATCH_MS = 500;

export interface LeaderElectionOptions extends LeaderTimings {
  namespace: string;
  /** Default prfence-controller. */
  leaseName?: string;
}

export interface ControllerOptions {
  kubeConfig: ConnectionSource;
  log: Logger;
  /** Lease holder identity and event reporting instance: pod name + random suffix. */
  identity: string;
  /** false: act at once, alone (one replica only). */
  leaderElection: false | LeaderElectionOptions;
  /** Every object is looked at again this often. Default 60 s. */
  resyncMs?: number;
  /** Default DEFAULT_CONTROLLER_WORKERS. */
  workers?: number;
  metrics?: ControllerMetrics;
  /** Namespace of the events about cluster-scoped objects. Default `default` (as the agents). */
  eventNamespace?: string;
  watchIdleTimeoutMs?: number;
  /**
   * Each write sent, once it settled, with the time it was sent (tests record who acted
   * when); a write refused with 409 Conflict took no effect and is not reported.
   */
  onAction?: (a: ControllerAction & { at: number }) => void;
  /** Called when this replica starts (true) or stops (false) acting; `at` is performance.now(). */
  onActing?: (acting: boolean, at: number) => void;
  onReconciled?: (key: string, outcome: string) => void;
  /**
   * Node loss (opt-in): a node whose kube-node-lease Lease this replica saw unchanged for
   * `nodeLostAfterMs` (default 40 s, on its own clock) gets a NodeLost fence request.
   */
  autoFence?: boolean;
  nodeLostAfterMs?: number;
  /** Monotonic clock of the node-loss tracker (tests). Default performance.now(). */
  now?: () => number;
  /**
   * Write each volume's desired state for node-scoped agents (desired-state.ts). Default
   * true; it costs a cluster-wide VolumeAttachment and StorageClass watch.
   */
  desiredState?: boolean;
}

type Kind = 'taint' | 'nf' | 'vr' | 'lost' | 'iso' | 'ds';
/** The informer caches the reconcilers read. */
type Caches = GcCaches & IsolationCaches & DesiredStateCaches;

export class Controller {
  readonly identity: string;
  readonly #o: ControllerOptions;
  readonly #rest: RestClient;
  readonly #elector: LeaderElector | undefined;
  readonly #events: EventRecorder;
  readonly #acting: Acting;
  #active = false;
  #stopped = false;
  #queue: WorkQueue<string> | undefined;
  #informers: ResilientInformer<never>[] = [];
  #nodes: ResilientInformer<V1Node> | undefined;
  #pvs: ResilientInformer<V1PersistentVolume> | undefined;
  #nfs: ResilientInformer<NodeFence> | undefined;
  #vrs: ResilientInformer<VolumeReservation> | undefined;
  #vas: ResilientInformer<V1VolumeAttachment> | undefined;
  #scs: ResilientInformer<V1StorageClass> | undefined;
  #leases: ResilientInformer<NodeLease> | undefined;
  readonly #loss: NodeLossTracker;
  #lossTick: NodeJS.Timeout | undefined;
  #resync: NodeJS.Timeout | undefined;
  #teardown: Promise<unknown> = Promise.resolve();
  #endAlone: ((e: ElectionEnd) => void) | undefined;
  #onStopActing: (() => void) | undefined;
  /** Isolation: the last "taint kept" reason per node; the nodes seen lost at the last tick. */
  readonly #keptNoted = new Map<string, string>();
  #lostBefore = new Set<string>();
  /** What a work-queue key of each kind (`<kind>/<name>`) runs, and its metric label. */
  readonly #reconcilers: Record<Kind, { label: string; run: (c: Caches, name: string) => Promise<string> }> =
    {
      taint: { label: 'taint', run: (c, n) => reconcileTaint(this.#acting, c, n) },
      nf: { label: 'nodefence', run: (c, n) => collectNodeFence(this.#acting, c, n) },
      vr: { label: 'volumereservation', run: (c, n) => collectVolumeReservation(this.#acting, c, n) },
      lost: { label: 'nodeloss', run: (c, n) => reconcileNodeLoss(this.#acting, this.#loss, c, n) },
      iso: {
        label: 'isolation',
        run: (c, n) =>
          reconcileIsolation(
            this.#acting,
            c,
            {
              autoTaint: this.#loss.enabled,
              lost: (x) => (this.#loss.enabled ? this.#loss.isLost(x) : undefined),
              keptNoted: this.#keptNoted,
            },
            n,
          ),
      },
      ds: { label: 'desiredstate', run: (c, n) => reconcileDesiredState(this.#acting, c, n) },
    };

  constructor(o: ControllerOptions) {
    this.#o = o;
    this.identity = o.identity;
    const m = o.metrics;
    this.#loss = new NodeLossTracker({
      enabled: o.autoFence ?? false,
      nodeLostAfterMs: o.nodeLostAfterMs ?? DEFAULT_NODE_LOST_AFTER_MS,
      now: o.now ?? (() => performance.now()),
    });
    this.#rest = new RestClient(o.kubeConfig, {
      userAgent: `prfence-controller/${o.identity}`,
      ...(m ? { onResponse: m.apiRequest } : {}),
    });
    this.#events = new EventRecorder({
      rest: this.#rest,
      log: o.log,
      controller: 'prfence.io/controller',
      instance: o.identity,
      namespace: o.eventNamespace ?? 'default',
    });
    const le = o.leaderElection;
    this.#elector = le
      ? new LeaderElector({
          rest: this.#rest,
          namespace: le.namespace,
          name: le.leaseName ?? LEASE_NAME,
          identity: o.identity,
          log: o.log,
          leaseDurationMs: le.leaseDurationMs,
          renewDeadlineMs: le.renewDeadlineMs,
          retryPeriodMs: le.retryPeriodMs,
          onStartedLeading: () => this.#startActing(),
          onStoppedLeading: () => this.#stopActing(),
        })
      : undefined;
    this.#acting = {
      rest: this.#rest,
      log: o.log,
      metrics: m,
      write: async (a, fn) => {
        if (!this.mayAct())
          throw new NotLeaderError(`not the leader: ${a.kind} ${a.resource}/${a.name} not sent`);
        // Reported once settled, stamped with the time it was sent: every write that may
        // have taken effect, not one the API server refused on its resourceVersion (409:
        // e.g. a status write changed the NodeFence first; the request is decided again).
        const at = performance.now();
        try {
          const out = await fn();
          this.#o.onAction?.({ ...a, at });
          return out;
        } catch (e) {
          if (!isConflict(e)) this.#o.onAction?.({ ...a, at });
          throw e;
        }
      },
      event: async (e) => {
        if (!this.mayAct()) return;
        this.#o.onAction?.({ kind: 'event', resource: 'events', name: e.reason, at: performance.now() });
        await this.#events.emit(e);
      },
    };
  }

  /** Campaigns (or, without leader election, acts at once) until stop() or the lease is lost. */
  run(): Promise<ElectionEnd> {
    if (!this.#elector) {
      const end = new Promise<ElectionEnd>((r) => (this.#endAlone = r));
      this.#startActing();
      return end;
    }
    return this.#elector.run().then(async (end) => {
      // Lost: nothing may be written any more; requests still in flight are cut at once
      // (their answers no longer matter), so the process exits promptly and restarts.
      if (end === 'lost') this.#rest.close();
      await this.#teardown;
      return end;
    });
  }

  /** True while this replica may send writes: acting, and (with leader election) leading before its deadline. */
  mayAct(): boolean {
    return this.#active && (this.#elector ? this.#elector.isLeader() : true);
  }

  /** The Lease holder this replica last saw (undefined without leader election). */
  observedLeader(): string | undefined {
    return this.#elector?.observedHolder();
  }

  /** Undefined when healthy, else why not (/readyz): the Lease cannot be read, or a watch is dead. */
  notReady(): string | undefined {
    const lease = this.#elector?.problem();
    if (lease && lease !== 'not tried yet') return lease;
    if (!this.#active) return undefined;
    return this.#informers.map((i) => i.problem()).find((p) => p !== undefined);
  }

  /** Stops acting first, then releases the Lease (another replica takes over at once). */
  /** API requests this replica sent (the benchmark's requests per fence). */
  get apiRequests(): number {
    return this.#rest.requests;
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#stopActing();
    await this.#teardown;
    await this.#elector?.stop({ release: true });
    this.#endAlone?.('stopped');
    this.#rest.close();
  }

  #caches(): Caches {
    return {
      vasOfPv: (pv) => this.#vas?.byIndex('pv', pv) ?? [],
      storageClass: (n) => this.#scs?.get(n),
      volumeReservations: () => this.#vrs?.list() ?? [],
      node: (n) => this.#nodes?.get(n),
      pv: (n) => this.#pvs?.get(n),
      nodeFence: (n) => this.#nfs?.get(n),
      volumeReservation: (n) => this.#vrs?.get(n),
    };
  }

  #startActing(): void {
    if (this.#active || this.#stopped) return;
    this.#active = true;
    this.#o.metrics?.isLeader(true);
    this.#o.onActing?.(true, performance.now());
    this.#o.log.info(
      { identity: this.identity, fieldManager: FIELD_MANAGER },
      'acting: watching nodes, volumes, fences',
    );
    const queue = new WorkQueue<string>({
      baseDelayMs: 500,
      maxDelayMs: 60_000,
      ...(this.#o.metrics ? { metrics: this.#o.metrics.queue } : {}),
    });
    this.#queue = queue;
    const add = (kind: Kind, name: string | undefined) => name && queue.add(`${kind}/${name}`);
    // The isolation summary of a node follows the records of its fences: during a failover
    // every fence changes a VolumeReservation and the node's proofs. Looked at once per
    // ISOLATION_BATCH_MS then (the queue keeps the earliest pending time), not at every
    // record: the desired-state writes of the failover share the workers and the API server.
    const iso = (name: string | undefined) => name && queue.addAfter(`iso/${name}`, ISOLATION_BATCH_MS);
    // A VolumeReservation changed: the proof of every node asked to be fenced may have.
    const isoOfFenced = () => {
      for (const nf of this.#nfs?.list() ?? [])
        if (fenceRequestedOrMarked(nf) || nf.status?.isolation) iso(nf.metadata.name);
    };
    const common = {
      rest: this.#rest,
      log: this.#o.log,
      idleTimeoutMs: this.#o.watchIdleTimeoutMs ?? 90_000,
    };
    this.#nodes = startInformer<V1Node>({
      ...common,
      path: nodePath(),
      // The slim Node, plus the annotation that marks a taint prfence applied.
      transform: (n) => {
        const by = n.metadata?.annotations?.[OUT_OF_SERVICE_BY];
        const s = slimNode(n);
        return by === undefined
          ? s
          : { ...s, metadata: { ...s.metadata, annotations: { [OUT_OF_SERVICE_BY]: by } } };
      },
      handlers: {
        onAdd: (n) => add('taint', n.metadata?.name),
        onUpdate: (n, old) => {
          if (!!outOfServiceTaint(n) !== !!outOfServiceTaint(old)) add('taint', n.metadata?.name);
          // A tainted node: its new boot (status) may end the taint prfence applied.
          if (outOfServiceTaint(n) || outOfServiceTaint(old)) add('iso', n.metadata?.name);
        },
        onDelete: (n) => add('nf', n.metadata?.name),
      },
    });
    const desired = this.#o.desiredState ?? true;
    const ds = (pv: string | undefined) => desired && add('ds', pv);
    this.#pvs = startInformer<V1PersistentVolume>({
      ...common,
      path: pvPath(),
      // Name, device identity, StorageClass and policy annotations (the desired state's inputs).
      transform: slimPersistentVolume,
      handlers: {
        onAdd: (pv) => ds(pv.metadata?.name),
        onUpdate: (pv) => ds(pv.metadata?.name),
        onDelete: (pv) => add('vr', pv.metadata?.name),
      },
    });
    this.#nfs = startInformer<NodeFence>({
      ...common,
      path: nfPath(),
      handlers: {
        onAdd: (nf) => (
          add('taint', nf.metadata.name),
          add('nf', nf.metadata.name),
          add('iso', nf.metadata.name)
        ),
        onUpdate: (nf) => (
          add('taint', nf.metadata.name),
          add('nf', nf.metadata.name),
          iso(nf.metadata.name)
        ),
      },
    });
    this.#vrs = startInformer<VolumeReservation>({
      ...common,
      path: vrPath(),
      handlers: {
        onAdd: (vr) => (add('vr', vr.metadata.name), ds(vr.metadata.name), isoOfFenced()),
        onUpdate: (vr, old) => {
          add('vr', vr.metadata.name);
          if (changesDesiredState(vr, old)) ds(vr.metadata.name);
          isoOfFenced();
        },
        onDelete: (vr) => (ds(vr.metadata.name), isoOfFenced()),
      },
    });
    const informers = [this.#nodes, this.#pvs, this.#nfs, this.#vrs] as ResilientInformer<never>[];
    if (desired) {
      const onVa = (va: V1VolumeAttachment) => ds(pvOf(va));
      this.#vas = startInformer<V1VolumeAttachment>({
        ...common,
        path: '/apis/storage.k8s.io/v1/volumeattachments',
        transform: slimVolumeAttachment,
        indexes: { pv: (va) => (pvOf(va) ? [pvOf(va)!] : []) },
        handlers: { onAdd: onVa, onUpdate: onVa, onDelete: onVa },
      });
      // The PVs that name a StorageClass whose policy annotations may have changed.
      const onSc = (sc: V1StorageClass) => {
        for (const pv of this.#pvs?.list() ?? [])
          if (storageClassOf(pv) === sc.metadata?.name) ds(pv.metadata?.name);
      };
      this.#scs = startInformer<V1StorageClass>({
        ...common,
        path: '/apis/storage.k8s.io/v1/storageclasses',
        transform: slimStorageClass,
        handlers: { onAdd: onSc, onUpdate: onSc, onDelete: onSc },
      });
      informers.push(this.#vas as ResilientInformer<never>, this.#scs as ResilientInformer<never>);
    }
    if (this.#loss.enabled) {
      // Observation starts now, with an empty memory: nothing is lost for a full window.
      const loss = this.#loss;
      loss.start();
      // The tick below looks for lost nodes (at most every second).
      const seen = (l: NodeLease) => void loss.observe(l.metadata.name, recordOf(l));
      this.#leases = startInformer<NodeLease>({
        ...common,
        path: nodeLeasePath(),
        transform: slimNodeLease,
        handlers: {
          onAdd: seen,
          onUpdate: seen,
          onDelete: (l) => loss.forget(l.metadata.name),
        },
      });
      informers.push(this.#leases as ResilientInformer<never>);
    }
    this.#informers = informers;
    const resyncAll = () => {
      for (const n of this.#nodes?.list() ?? []) add('taint', n.metadata?.name);
      for (const nf of this.#nfs?.list() ?? []) {
        add('nf', nf.metadata.name);
        add('iso', nf.metadata.name);
      }
      for (const vr of this.#vrs?.list() ?? []) add('vr', vr.metadata.name);
      for (const pv of this.#pvs?.list() ?? []) ds(pv.metadata?.name);
    };
    const stopped = new Promise<void>((r) => (this.#onStopActing = r));
    const workers = (async () => {
      // Caches that never sync (API server unreachable) must not hold up a stop.
      await Promise.race([Promise.all(informers.map((i) => i.synced)), stopped]);
      if (!this.#active) return;
      resyncAll();
      this.#resync = setInterval(resyncAll, this.#o.resyncMs ?? 60_000);
      this.#resync.unref();
      if (this.#loss.enabled) {
        const loss = this.#loss;
        const tick = () => {
          const lost = loss.lostNodes();
          this.#o.metrics?.nodesLost(lost.length);
          for (const n of lost) if (this.#nfs?.get(n)?.spec?.fenceState !== 'Fenced') add('lost', n);
          // LOST in status.isolation follows the tracker.
          const now = new Set(lost);
          for (const n of now) if (!this.#lostBefore.has(n)) add('iso', n);
          for (const n of this.#lostBefore) if (!now.has(n)) add('iso', n);
          this.#lostBefore = now;
        };
        this.#lossTick = setInterval(tick, Math.min(1000, Math.max(100, loss.nodeLostAfterMs / 10)));
        this.#lossTick.unref();
      }
      await Promise.all(
        Array.from({ length: this.#o.workers ?? DEFAULT_CONTROLLER_WORKERS }, async () => {
          for (;;) {
            const key = await queue.get();
            if (key === undefined) return;
            // Stopped acting: what is still queued is dropped, not drained (its reads would
            // only wait out their time limits behind a lost connection).
            if (!this.mayAct()) {
              queue.done(key);
              continue;
            }
            await this.#process(queue, key);
          }
        }),
      );
    })();
    this.#teardown = workers;
  }

  /** Stops acting now (synchronously: no write is sent after this), then tears down. */
  #stopActing(): void {
    if (!this.#active) return;
    this.#active = false;
    this.#o.metrics?.isLeader(false);
    this.#o.onActing?.(false, performance.now());
    this.#o.log.info({ identity: this.identity }, 'stopped acting');
    clearInterval(this.#resync);
    clearInterval(this.#lossTick);
    this.#loss.stop();
    this.#lostBefore = new Set();
    this.#keptNoted.clear();
    this.#o.metrics?.nodesLost(0);
    this.#queue?.shutDown();
    this.#onStopActing?.();
    const informers = this.#informers;
    this.#informers = [];
    const workers = this.#teardown;
    this.#teardown = Promise.allSettled([workers, ...informers.map((i) => i.stop())]);
  }

  async #process(queue: WorkQueue<string>, key: string): Promise<void> {
    const slash = key.indexOf('/');
    const kind = key.slice(0, slash) as Kind;
    const name = key.slice(slash + 1);
    const caches = this.#caches();
    const { label, run } = this.#reconcilers[kind];
    try {
      const outcome = await run(caches, name);
      queue.forget(key);
      this.#o.metrics?.reconciled(label, outcome);
      this.#o.onReconciled?.(key, outcome);
    } catch (e) {
      if (e instanceof NotLeaderError) return;
      this.#o.metrics?.reconciled(label, 'error');
      this.#o.onReconciled?.(key, 'error');
      if (isConflict(e)) queue.addAfter(key, 1000);
      else {
        this.#o.log.warn({ key, err: describeError(e) }, 'reconcile failed; retrying with backoff');
        queue.addRateLimited(key);
      }
    } finally {
      queue.done(key);
    }
  }
}
