/**
 * The prfence node agent: startup and wiring. At start the agent claims its key
 * (key-claim.ts) and opens what the node must remember across restarts (fence-memory.ts);
 * then the parts run:
 *
 * - cluster-informers.ts: the informer caches, whose events enqueue PV names (enqueue.ts);
 * - reconcile-workers.ts: workers that run the VolumeReconciler on each PV, which acts on
 *   the devices only through a fresh API view (fresh-view.ts) and records through the
 *   StatusWriter;
 * - resume.ts: what the node was in the middle of when it stopped;
 * - resync.ts: the periodic resync;
 * - own-status.ts: the own NodeFence status;
 * - failfast.ts and failfast-reactions.ts: the probe of the own key, and the reactions to
 *   its loss;
 * - readiness.ts: whether the agent can act safely (/readyz).
 *
 * Safety (DESIGN.md): S2 - no registration without a fresh API view saying this node is
 * legitimate and not fenced, and never where the node lost its key until an unfence;
 * S6 - a key claim the API server keeps unique; S8 - stop() closes devices and never
 * releases or unregisters; S9 - a missing or stale object never leads to a fence.
 */
import type { V1Namespace, V1Node } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { clusterTag } from '../fence/keys.js';
import type { ConnectionSource } from '../kube/connection.js';
import { RestClient } from '../kube/rest-client.js';
import { WorkQueue } from '../kube/work-queue.js';
import { describeError } from '../obs/logger.js';
import type { AgentMetrics } from '../obs/metrics.js';
import { formatKey, type PrKey } from '../pr/key.js';
import type { PrDevice } from '../pr/pr-device.js';
import type { ReservationType } from '../pr/reservation-type.js';
import { ClusterInformers, type AgentScope } from './cluster-informers.js';
import { nodeLabel } from '../crd/node-label.js';
import { DeviceRegistry } from './device-registry.js';
import { FailfastProbe, type FailfastAction } from './failfast.js';
import { PathWatch } from './path-watch.js';
import { FailfastReactions } from './failfast-reactions.js';
import { FenceMemory } from './fence-memory.js';
import { FreshViewSource } from './fresh-view.js';
import { VolumeViewSource } from './volume-view.js';
import { claimKey, ensureNodeFence, type KeyClaimOptions } from './key-claim.js';
import { OwnStatus } from './own-status.js';
import { Readiness } from './readiness.js';
import { ReconcileWorkers, type FenceEvent } from './reconcile-workers.js';
import { resumeHandovers, resumeVolumes } from './resume.js';
import { startResync } from './resync.js';
import { StatusWriter } from './status-writer.js';
import { VolumeReconciler } from './volume-reconciler.js';
import type { FencingMode } from '../fence/volume-policy.js';

export type { FenceEvent } from './reconcile-workers.js';

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
  /** Observer (docs/design.md "Observers"). Default false. */
  observe?: boolean;
  /**
   * Where the agent learns of its volumes (cluster-informers.ts): `cluster` (default) watches
   * every VolumeAttachment, PV and StorageClass; `node` only the VolumeReservations that
   * prfence controller labels for this node, with their desired state.
   */
  scope?: AgentScope;
  /** Host directory for what the node must remember across restarts (S2); default: memory only. */
  stateDir?: string;
  /** Failfast probe: read the own key on every device the node expects it on this often; 0: off. Default 2 s. */
  probeIntervalMs?: number;
  /**
   * The paths under a device (dm-multipath: dm-paths.ts `devicePaths`); a path added to a
   * map gets the own key registered again (docs/design.md "Multipath"). Default: not looked at.
   */
  devicePaths?: (device: PrDevice) => Promise<readonly string[] | undefined>;
  /** How often the paths under open devices are read between reconciles; 0: only on reconcile. Default 10 s. */
  pathPollMs?: number;
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

export class Agent {
  readonly node: string;
  readonly key: PrKey;
  readonly tag: number;
  readonly #rest: RestClient;
  readonly #queue: WorkQueue<string>;
  readonly #fresh: FreshViewSource;
  readonly #devices: DeviceRegistry;
  readonly #informers: ClusterInformers;
  readonly #reconciler: VolumeReconciler;
  readonly #workers: ReconcileWorkers;
  readonly #ownStatus: OwnStatus;
  readonly #readiness: Readiness;
  readonly #failfast: FailfastProbe;
  readonly #reactions: FailfastReactions;
  readonly #pathWatch: PathWatch | undefined;
  readonly #abort = new AbortController();
  #stopResync: (() => void) | undefined;

  private constructor(
    o: AgentOptions,
    rest: RestClient,
    key: PrKey,
    tag: number,
    claim: KeyClaimOptions,
    memory: FenceMemory,
  ) {
    this.node = o.nodeName;
    this.#rest = rest;
    this.key = key;
    this.tag = tag;
    const log = o.log;
    const queue = new WorkQueue<string>({
      baseDelayMs: 200,
      maxDelayMs: 30_000,
      ...(o.metrics ? { metrics: o.metrics.queue } : {}),
    });
    this.#queue = queue;
    const fresh = new FreshViewSource({ rest, freshnessMs: o.freshnessMs ?? 5000 });
    this.#fresh = fresh;
    const devices = new DeviceRegistry(o.openDevice);
    this.#devices = devices;
    const writer = new StatusWriter({ rest, node: o.nodeName, key, nodeUid: claim.nodeUid, log });
    const informers = new ClusterInformers({
      rest,
      log,
      node: o.nodeName,
      scope: o.scope ?? 'cluster',
      observe: o.observe ?? false,
      idleTimeoutMs: o.watchIdleTimeoutMs ?? 90_000,
      touched: () => this.#reconciler.touched,
      trigger: (pv) => this.#workers.trigger(pv),
      onRecordReplaced: (pv) => writer.forget(pv),
      onOwnNodeFenceDeleted: () => {
        // Recreated at once (the key claim keeps the key); peers never act on a node whose
        // key they cannot tell (S9).
        ensureNodeFence(claim, key).catch((e: unknown) =>
          log.warn({ err: describeError(e) }, 'NodeFence not recreated yet; retried on resync'),
        );
      },
      policyDefaults: {
        fencing: o.fencingDefault ?? 'enabled',
        reservationType: o.reservationType ?? 'write-exclusive-reg-only',
      },
    });
    this.#informers = informers;
    const reconciler = new VolumeReconciler({
      node: o.nodeName,
      key,
      tag,
      caches: () => informers.caches(),
      identityOf: (pv) => informers.identityOf(pv),
      policyOf: (pv) => informers.policyOf(pv),
      fresh,
      volumeViews: new VolumeViewSource({ rest, freshnessMs: o.freshnessMs ?? 5000 }),
      devices,
      memory,
      writer,
      foreignKeys: o.foreignKeys ?? 'leave',
      leaveGraceMs: o.leaveGraceMs ?? 10_000,
      observe: o.observe ?? false,
      ...(o.devicePaths ? { pathsOf: o.devicePaths } : {}),
      signal: this.#abort.signal,
    });
    this.#reconciler = reconciler;
    this.#readiness = new Readiness({
      rest,
      node: o.nodeName,
      fresh,
      periodMs: o.freshnessMs ?? 5000,
      watchProblem: () => informers.problem(),
    });
    this.#ownStatus = new OwnStatus({
      node: o.nodeName,
      writer,
      log,
      informers,
      reconciler,
      notReady: () => this.notReady(),
      accessLost: () => this.#reactions.accessLostMessage(),
    });
    this.#workers = new ReconcileWorkers({
      queue,
      reconciler,
      log,
      workers: o.workers ?? 4,
      metrics: o.metrics,
      onFence: o.onFence,
      writeOwnStatus: () => this.#ownStatus.write(),
    });
    this.#reactions = new FailfastReactions({
      node: o.nodeName,
      key,
      memory,
      devices,
      writer,
      rest,
      log,
      metrics: o.metrics,
      action: o.failfastAction ?? 'report',
      rebootTrigger: o.rebootTrigger,
      writeOwnStatus: () => this.#ownStatus.write(),
      signal: this.#abort.signal,
    });
    this.#pathWatch = o.devicePaths
      ? new PathWatch({
          intervalMs: o.pathPollMs ?? 10_000,
          entries: () => devices.entries(),
          pathsOf: o.devicePaths,
          trigger: (pv) => this.#workers.trigger(pv),
          log: log.child({ component: 'paths' }),
        })
      : undefined;
    this.#failfast = new FailfastProbe({
      key,
      intervalMs: o.probeIntervalMs ?? 2000,
      targets: () => devices.entries(),
      memory,
      unfencedAt: () => informers.nodeFence(this.node)?.spec?.unfencedAt,
      log: log.child({ component: 'failfast' }),
      onRound: () => this.#reactions.retryPendingWrites(),
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
      await agent.#informers.start();
      agent.#stopResync = startResync({
        intervalMs: o.resyncMs ?? 30_000,
        node: agent.node,
        queue: agent.#queue,
        informers: agent.#informers,
        touched: () => agent.#reconciler.touched,
        ownStatus: agent.#ownStatus,
        failfast: agent.#reactions,
      });
      // Truthful from the start: 1 on a healthy idle node, not only after a first volume.
      metrics?.registrationAllowed(agent.#reconciler.mayRegisterCached());
      const resume = {
        rest,
        node: agent.node,
        key: agent.key,
        log: o.log,
        reconciler: agent.#reconciler,
        queue: agent.#queue,
        labelSelector: o.scope === 'node' && !o.observe ? nodeLabel(agent.node) : undefined,
      };
      await resumeVolumes(resume);
      resumeHandovers(resume, agent.#informers.nodeFence(agent.node));
      // A node with a key and no volume yet shows a phase, not an empty cell.
      await agent.#ownStatus.write();
      agent.#workers.start();
      agent.#readiness.start();
      agent.#reactions.start();
      agent.#failfast.start();
      agent.#pathWatch?.start();
      return agent;
    } catch (e) {
      rest.close();
      throw e;
    }
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
    return this.#readiness.notReady();
  }

  /** Asks for a fresh read now (readiness reflects the API server without waiting for a device command). */
  async checkApi(): Promise<void> {
    await this.#fresh.get().catch(() => undefined);
  }

  /** Stops watching and closes devices. Never releases or unregisters (S8). */
  async stop(): Promise<void> {
    this.#abort.abort();
    this.#stopResync?.();
    this.#readiness.stop();
    this.#failfast.stop();
    this.#pathWatch?.stop();
    this.#reactions.stop();
    this.#queue.shutDown();
    await this.#informers.stop();
    await this.#workers.stopped();
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
