/** Helpers for agent integration tests: nodes, PVs, VolumeAttachments on the real API server, memory LUs. */
import { CoreV1Api, KubeConfig, StorageV1Api } from '@kubernetes/client-node';
import pino from 'pino';
import { Agent, type FenceEvent } from '../../src/agent/agent.js';
import type { AgentMetrics } from '../../src/obs/metrics.js';
import { DEVICE_ANNOTATION } from '../../src/agent/cluster-view.js';
import { API_VERSION, GROUP, VERSION, type NodeFence, type VolumeReservation } from '../../src/crd/types.js';
import { clusterObjectPath, RestClient } from '../../src/kube/rest-client.js';
import { MemoryLogicalUnit } from '../../src/pr/memory/index.js';
import { adminKubeConfig, uniqueName } from '../envtest/kube.js';

export class Cluster {
  readonly kc: KubeConfig = adminKubeConfig();
  readonly core = this.kc.makeApiClient(CoreV1Api);
  readonly storage = this.kc.makeApiClient(StorageV1Api);
  readonly rest = new RestClient(this.kc);
  readonly lus = new Map<string, MemoryLogicalUnit>();
  readonly agents: Agent[] = [];
  readonly log = pino({ level: process.env.PRFENCE_TEST_LOG ?? 'silent' });

  async node(prefix: string): Promise<string> {
    const name = uniqueName(prefix);
    await this.core.createNode({ body: { metadata: { name } } });
    return name;
  }

  async pv(kind: 'scsi' | 'nvme' = 'scsi'): Promise<{ name: string; lu: MemoryLogicalUnit }> {
    const name = uniqueName('pv');
    const lu = new MemoryLogicalUnit({ kind, id: `lu-${name}` });
    this.lus.set(lu.id, lu);
    await this.core.createPersistentVolume({
      body: {
        metadata: { name, annotations: { [DEVICE_ANNOTATION]: lu.id } },
        spec: {
          capacity: { storage: '1Gi' },
          accessModes: ['ReadWriteOnce'],
          csi: { driver: 'test.csi.prfence.io', volumeHandle: name },
        },
      },
    });
    return { name, lu };
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

  async startAgent(
    node: string,
    kc: KubeConfig = this.kc,
    opts: {
      resyncMs?: number;
      metrics?: AgentMetrics;
      onFence?: (e: FenceEvent) => void;
      leaveGraceMs?: number;
      freshnessMs?: number;
      stateDir?: string;
    } = {},
  ): Promise<Agent> {
    const agent = await Agent.start({
      kubeConfig: kc,
      nodeName: node,
      log: this.log.child({ node }),
      openDevice: async (identity) => {
        const lu = this.lus.get(identity);
        if (!lu) throw new Error(`no LU ${identity}`);
        return lu.initiator(node);
      },
      resyncMs: opts.resyncMs ?? 2000,
      leaveGraceMs: opts.leaveGraceMs ?? 3000,
      ...(opts.freshnessMs ? { freshnessMs: opts.freshnessMs } : {}),
      ...(opts.stateDir ? { stateDir: opts.stateDir } : {}),
      ...(opts.metrics ? { metrics: opts.metrics } : {}),
      ...(opts.onFence ? { onFence: opts.onFence } : {}),
    });
    this.agents.push(agent);
    return agent;
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.agents.splice(0).map((a) => a.stop()));
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
            : { fenceState: 'Unfenced' },
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
