/** Helpers for agent integration tests: nodes, PVs, VolumeAttachments on the real API server, memory LUs. */
import { CoreV1Api, KubeConfig, StorageV1Api } from '@kubernetes/client-node';
import pino from 'pino';
import { Agent, type FenceEvent } from '../../src/agent/agent.js';
import { Controller } from '../../src/controller/controller.js';
import type { AgentMetrics } from '../../src/obs/metrics.js';
import { DEVICE_ANNOTATION } from '../../src/agent/cluster-view.js';
import { API_VERSION, GROUP, VERSION, type NodeFence, type VolumeReservation } from '../../src/crd/types.js';
import { clusterObjectPath, RestClient } from '../../src/kube/rest-client.js';
import type { ReservationType } from '../../src/pr/reservation-type.js';
import type { FencingMode } from '../../src/fence/volume-policy.js';
import type { FailfastAction } from '../../src/agent/failfast.js';
import type { AgentScope } from '../../src/agent/cluster-informers.js';
import { MemoryLogicalUnit } from '../../src/pr/memory/index.js';
import type { PrDevice } from '../../src/pr/pr-device.js';
import { adminKubeConfig, uniqueName } from '../envtest/kube.js';
import { FaultProxy, kubeConfigVia } from '../envtest/fault-proxy.js';

/** One PR call an agent made on a memory LU, seen when it settled (for samplers and recorders). */
export interface DeviceCall {
  node: string;
  lu: MemoryLogicalUnit;
  op: string;
  args: unknown[];
  /** 'ok', or the error's class name. */
  outcome: string;
  result?: unknown;
  startedAt: number;
  endedAt: number;
}

/** Options of {@link Cluster.startAgent} (all optional; the defaults are the original ones). */
export interface StartAgentOptions {
  resyncMs?: number;
  metrics?: AgentMetrics;
  onFence?: (e: FenceEvent) => void;
  /** Per-call time limit of the node's memory devices (MemoryPrDeviceOptions.timeoutMs). */
  deviceTimeoutMs?: number;
  /** Default 3 s here (the agent's default is 10 s). */
  leaveGraceMs?: number;
  reservationType?: ReservationType;
  fencingDefault?: FencingMode;
  freshnessMs?: number;
  stateDir?: string;
  /** Failfast (AgentOptions): probe period (default here: off unless given), action, injected reboot. */
  probeIntervalMs?: number;
  failfastAction?: FailfastAction;
  rebootTrigger?: (reason: string) => void | Promise<void>;
  /** Observer (AgentOptions.observe); every memory LU is visible to every node here. */
  observe?: boolean;
  /** AgentOptions.scope: `node` reads the controller's desired state (a controller must run). */
  scope?: AgentScope;
}

const PR_METHODS = new Set([
  'register',
  'registerAndIgnore',
  'reserve',
  'release',
  'preempt',
  'preemptAndAbort',
  'clear',
  'readKeys',
  'readReservation',
  'readFullStatus',
  'capabilities',
]);

/** `dev` with every PR call reported to `report` once it settles (the call itself is unchanged). */
function observed(dev: PrDevice, report: (c: Omit<DeviceCall, 'node' | 'lu'>) => void): PrDevice {
  return new Proxy(dev, {
    // The target is the receiver: MemoryPrDevice's private fields are not reachable through a Proxy.
    get(target, prop) {
      const v: unknown = Reflect.get(target, prop, target);
      if (typeof v !== 'function') return v;
      if (typeof prop !== 'string' || !PR_METHODS.has(prop)) return (v as () => unknown).bind(target);
      return async (...args: unknown[]) => {
        const startedAt = performance.now();
        try {
          const result: unknown = await (v as (...a: unknown[]) => Promise<unknown>).apply(target, args);
          report({ op: prop, args, outcome: 'ok', result, startedAt, endedAt: performance.now() });
          return result;
        } catch (e) {
          const outcome = e instanceof Error ? e.constructor.name : 'throw';
          report({ op: prop, args, outcome, startedAt, endedAt: performance.now() });
          throw e;
        }
      };
    },
  });
}

export class Cluster {
  readonly kc: KubeConfig;
  readonly core: CoreV1Api;
  readonly storage: StorageV1Api;
  readonly rest: RestClient;
  readonly lus = new Map<string, MemoryLogicalUnit>();
  readonly agents: Agent[] = [];
  /** Fault proxies of agents started with {@link startProxiedAgent}; closed by stopAll. */
  readonly proxies: FaultProxy[] = [];
  /** Called after every PR call any agent of this cluster makes (tests add samplers here). */
  readonly deviceCalls = new Set<(c: DeviceCall) => void>();
  readonly log = pino({ level: process.env.PRFENCE_TEST_LOG ?? 'silent' });

  /** Nodes this cluster created: their NodeFences are deleted by stopAll. */
  readonly #nodes: string[] = [];
  /**
   * The agents' scope by default: PRFENCE_TEST_AGENT_SCOPE (`node` if unset, as the chart
   * ships). With `node`, the first agent started also starts an in-process controller (no
   * leader election) that writes the desired state, stopped by stopAll, or as soon as the
   * test starts a controller of its own (`ownController`).
   */
  readonly defaultScope: AgentScope = process.env.PRFENCE_TEST_AGENT_SCOPE === 'cluster' ? 'cluster' : 'node';
  #controller: Controller | undefined;
  /** The test runs its own controllers until stopAll: the harness starts none. */
  #ownControllers = false;

  /** `kc`: the run's shared API server by default; a test with its own control plane passes its own. */
  constructor(kc: KubeConfig = adminKubeConfig()) {
    this.kc = kc;
    this.core = kc.makeApiClient(CoreV1Api);
    this.storage = kc.makeApiClient(StorageV1Api);
    this.rest = new RestClient(kc);
  }

  async node(prefix: string): Promise<string> {
    const name = uniqueName(prefix);
    await this.core.createNode({ body: { metadata: { name } } });
    this.#nodes.push(name);
    return name;
  }

  /** A PV on a new memory LU; `annotations` are added to the device annotation. */
  async pv(
    kind: 'scsi' | 'nvme' = 'scsi',
    opts: { annotations?: Record<string, string>; storageClassName?: string } = {},
  ): Promise<{ name: string; lu: MemoryLogicalUnit }> {
    const name = uniqueName('pv');
    const lu = new MemoryLogicalUnit({ kind, id: `lu-${name}` });
    this.lus.set(lu.id, lu);
    await this.core.createPersistentVolume({
      body: {
        metadata: { name, annotations: { ...opts.annotations, [DEVICE_ANNOTATION]: lu.id } },
        spec: {
          capacity: { storage: '1Gi' },
          accessModes: ['ReadWriteOnce'],
          csi: { driver: 'test.csi.prfence.io', volumeHandle: name },
          ...(opts.storageClassName ? { storageClassName: opts.storageClassName } : {}),
        },
      },
    });
    return { name, lu };
  }

  /** Sets (string) or removes (null) annotations of a PV (a merge patch). */
  async annotatePv(name: string, annotations: Record<string, string | null>): Promise<void> {
    await this.rest.send({
      method: 'PATCH',
      path: `/api/v1/persistentvolumes/${name}`,
      contentType: 'application/merge-patch+json',
      body: { metadata: { annotations } },
    });
  }

  /** A StorageClass of the test CSI driver with these annotations; returns its name. */
  async storageClass(annotations: Record<string, string>): Promise<string> {
    const name = uniqueName('sc');
    await this.storage.createStorageClass({
      body: { metadata: { name, annotations }, provisioner: 'test.csi.prfence.io' },
    });
    return name;
  }

  /** Sets (string) or removes (null) annotations of a StorageClass (a merge patch). */
  async annotateStorageClass(name: string, annotations: Record<string, string | null>): Promise<void> {
    await this.rest.send({
      method: 'PATCH',
      path: `/apis/storage.k8s.io/v1/storageclasses/${name}`,
      contentType: 'application/merge-patch+json',
      body: { metadata: { annotations } },
    });
  }

  async attach(pv: string, node: string): Promise<string> {
    const name = uniqueName('va');
    await this.storage.createVolumeAttachment({
      body: {
        metadata: { name },
        spec: { attacher: 'test.csi.prfence.io', nodeName: node, source: { persistentVolumeName: pv } },
      },
    });
    return name;
  }

  async detach(va: string): Promise<void> {
    await this.storage.deleteVolumeAttachment({ name: va });
  }

  async startAgent(node: string, kc: KubeConfig = this.kc, opts: StartAgentOptions = {}): Promise<Agent> {
    const scope = opts.scope ?? this.defaultScope;
    if (scope === 'node' && !this.#controller && !this.#ownControllers && opts.scope === undefined) {
      this.#controller = new Controller({
        kubeConfig: this.kc,
        log: this.log.child({ component: 'controller' }),
        identity: uniqueName('harness-ctl'),
        leaderElection: false,
      });
      void this.#controller.run();
    }
    const agent = await Agent.start({
      kubeConfig: kc,
      nodeName: node,
      log: this.log.child({ node }),
      openDevice: async (identity) => {
        const lu = this.lus.get(identity);
        if (!lu) throw new Error(`no LU ${identity}`);
        const dev =
          opts.deviceTimeoutMs === undefined
            ? lu.initiator(node)
            : lu.initiator(node, { timeoutMs: opts.deviceTimeoutMs });
        return observed(dev, (c) => {
          for (const f of this.deviceCalls) f({ ...c, node, lu });
        });
      },
      resyncMs: opts.resyncMs ?? 2000,
      leaveGraceMs: opts.leaveGraceMs ?? 3000,
      ...(opts.reservationType ? { reservationType: opts.reservationType } : {}),
      ...(opts.fencingDefault ? { fencingDefault: opts.fencingDefault } : {}),
      ...(opts.freshnessMs ? { freshnessMs: opts.freshnessMs } : {}),
      ...(opts.stateDir ? { stateDir: opts.stateDir } : {}),
      ...(opts.metrics ? { metrics: opts.metrics } : {}),
      ...(opts.onFence ? { onFence: opts.onFence } : {}),
      // Off unless a test asks: the other tests' device-call samplers see no probe reads.
      probeIntervalMs: opts.probeIntervalMs ?? 0,
      ...(opts.failfastAction ? { failfastAction: opts.failfastAction } : {}),
      ...(opts.failfastAction === 'reboot' ? { allowReboot: true } : {}),
      ...(opts.rebootTrigger ? { rebootTrigger: opts.rebootTrigger } : {}),
      ...(opts.observe ? { observe: true } : {}),
      scope,
    });
    this.agents.push(agent);
    return agent;
  }

  /**
   * An agent whose API traffic goes through its own {@link FaultProxy} (TLS end to end):
   * `proxy.blackhole()` partitions the node while its agent keeps running with its device.
   */
  async startProxiedAgent(
    node: string,
    opts: StartAgentOptions = {},
  ): Promise<{ agent: Agent; proxy: FaultProxy }> {
    const proxy = await FaultProxy.start({ target: this.kc.getCurrentCluster()!.server });
    this.proxies.push(proxy);
    const agent = await this.startAgent(node, kubeConfigVia(this.kc, proxy), opts);
    return { agent, proxy };
  }

  /**
   * The test starts a controller of its own: the harness's stops (two controllers acting at
   * once would be no cluster prfence runs in), and the test's writes the desired state.
   */
  async ownController(): Promise<void> {
    this.#ownControllers = true;
    await this.#controller?.stop();
    this.#controller = undefined;
  }

  async stopAll(): Promise<void> {
    this.#ownControllers = false;
    // Partitioned agents would wait for their requests to time out: their connections are
    // reset first so stop() returns at once.
    for (const p of this.proxies) p.reset('both');
    await Promise.all(this.agents.splice(0).map((a) => a.stop()));
    await this.#controller?.stop();
    this.#controller = undefined;
    await Promise.all(this.proxies.splice(0).map((p) => p.close()));
    this.deviceCalls.clear();
    // Each test starts with no fenced node in the cluster: a Fenced mark left behind would
    // make every later leaver hold its reservation for a takeover (docs/design.md Handover).
    await Promise.all(
      this.#nodes
        .splice(0)
        .map((n) =>
          this.rest
            .send({ method: 'DELETE', path: clusterObjectPath(GROUP, VERSION, 'nodefences', n) })
            .catch(() => undefined),
        ),
    );
  }

  /** events.k8s.io/v1 events about `regarding` (a NodeFence), newest last. */
  async events(regarding: string): Promise<{ reason: string; note: string; reportingInstance: string }[]> {
    const list = await this.rest.get<{
      items: {
        reason: string;
        note: string;
        reportingInstance: string;
        eventTime: string;
        regarding?: { name?: string };
      }[];
    }>('/apis/events.k8s.io/v1/namespaces/default/events');
    return list.items
      .filter((e) => e.regarding?.name === regarding)
      .sort((x, y) => x.eventTime.localeCompare(y.eventTime));
  }

  nodeFence(name: string): Promise<NodeFence> {
    return this.rest.get<NodeFence>(clusterObjectPath(GROUP, VERSION, 'nodefences', name));
  }

  vr(name: string): Promise<VolumeReservation> {
    return this.rest.get<VolumeReservation>(clusterObjectPath(GROUP, VERSION, 'volumereservations', name));
  }

  /** What `prfence fence NODE` / `unfence NODE` do: set spec (and clear phase on unfence). */
  async setFenceState(node: string, state: 'Fenced' | 'Unfenced', clearPhase = false): Promise<void> {
    const path = clusterObjectPath(GROUP, VERSION, 'nodefences', node);
    await this.rest.apply(
      path,
      {
        apiVersion: API_VERSION,
        kind: 'NodeFence',
        metadata: { name: node },
        spec:
          state === 'Fenced'
            ? { fenceState: 'Fenced', reason: 'test', requestedBy: 'test' }
            : // as `prfence unfence`: a new unfencedAt every time (a node that lost its key
              // registers again only after an unfence newer than the loss)
              { fenceState: 'Unfenced', unfencedAt: new Date().toISOString() },
      },
      'prfence-cli',
    );
    if (clearPhase) {
      // Unfence removes the mark (a merge patch with null deletes the fields and their owners).
      await this.rest.send({
        method: 'PATCH',
        path: clusterObjectPath(GROUP, VERSION, 'nodefences', node, 'status'),
        contentType: 'application/merge-patch+json',
        body: { status: { phase: null, fencedBy: null, fencedAt: null } },
      });
    }
  }

  /**
   * No node is fenced any more in this API server: earlier test files (run one after the
   * other on the same API server) leave Fenced nodes behind, and while one exists a leaver
   * holding a reservation hands it over instead of releasing (DESIGN.md "Handover").
   */
  async unfenceAll(): Promise<void> {
    const nfs = await this.rest.get<{ items: NodeFence[] }>(clusterObjectPath(GROUP, VERSION, 'nodefences'));
    for (const nf of nfs.items)
      if (nf.spec?.fenceState === 'Fenced' || nf.status?.phase === 'Fenced')
        await this.setFenceState(nf.metadata.name, 'Unfenced', true);
    const nodes = await this.core.listNode();
    for (const n of nodes.items)
      if (n.spec?.taints?.some((t) => t.key === 'node.kubernetes.io/out-of-service'))
        await this.rest.send({
          method: 'PATCH',
          path: `/api/v1/nodes/${n.metadata!.name}`,
          contentType: 'application/merge-patch+json',
          body: { spec: { taints: null } },
        });
  }

  async taintOutOfService(node: string): Promise<void> {
    await this.rest.send({
      method: 'PATCH',
      path: `/api/v1/nodes/${node}`,
      contentType: 'application/merge-patch+json',
      body: {
        spec: {
          taints: [{ key: 'node.kubernetes.io/out-of-service', value: 'nodeshutdown', effect: 'NoExecute' }],
        },
      },
    });
  }
}
