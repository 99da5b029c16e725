/**
 * One failover of a StatefulSet's RWO volume on a real control plane (kube-apiserver,
 * kube-controller-manager, kube-scheduler; test/envtest/kube-components.ts), with or
 * without prfence. Used by control-plane-failover.test.ts (with prfence, asserted) and by
 * `npm run bench` (both ways, timed).
 *
 * The scenario plays what a cluster has and the control plane lacks: the kubelets (Node
 * status once, Lease renewals every second) and the CSI external-attacher (a new
 * VolumeAttachment is reported attached). node-a is lost as a partition: its kubelet stops
 * renewing and, with prfence, its agent's API traffic is blackholed while the agent keeps
 * running with its device path.
 */
import type { V1Node, V1Pod, V1VolumeAttachment } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { Controller } from '../../src/controller/controller.js';
import { formatKey } from '../../src/pr/key.js';
import { uniqueName } from '../envtest/kube.js';
import type { Cluster } from './agent-harness.js';
import { startController, type Kubelets } from './node-leases.js';

const OOS = 'node.kubernetes.io/out-of-service';

/** Milestones, in the order a good failover reaches them. */
export const MILESTONES = [
  'fence requested',
  "node-a's key gone",
  "node-a's write refused",
  'out-of-service taint',
  'node-a NotReady',
  'pod bound to node-b',
  "node-a's VA deleted",
  'VA on node-b created',
  'VA on node-b attached',
  'node-b holds the reservation',
] as const;
export type Milestone = (typeof MILESTONES)[number];

export interface FailoverOptions {
  c: Cluster;
  kubelets: Kubelets;
  log: Logger;
  /** Controllers started here (the caller stops them). */
  controllers: Controller[];
  /** False: Kubernetes alone (no agent, no controller, nobody fences or taints). */
  prfence: boolean;
  /** The controller's --node-lost-after (with prfence). */
  nodeLostAfterMs: number;
  /** Give up this long after the partition (the result says the failover did not finish). */
  timeoutMs: number;
}

export interface FailoverResult {
  /** Seconds after the partition when each milestone was first seen (sampled every 100 ms). */
  seen: Partial<Record<Milestone, number>>;
  /** Whether the volume ran on node-b (attached there; with prfence, reserved by node-b) in time. */
  done: boolean;
  /** Unsafe states seen in a sample (e.g. node-b attached while node-a still had its key). */
  violations: string[];
  keyA?: string;
  keyB?: string;
  /** The keys on the LU at the end. */
  keys: string[];
  /** Every victim key a preempt (or preempt-and-abort) named. */
  preempted: string[];
  aWrite: string;
  bWrite: string;
}

export async function runFailover(o: FailoverOptions): Promise<FailoverResult> {
  const { c, kubelets } = o;
  const rest = c.rest;

  /** A Node as the kubelet registers it (attach/detach by the controller), Ready, with room for pods. */
  const kubeletNode = async (prefix: string, unschedulable: boolean) => {
    const name = uniqueName(prefix);
    await rest.send({
      method: 'POST',
      path: '/api/v1/nodes',
      body: {
        metadata: {
          name,
          labels: { 'kubernetes.io/hostname': name },
          // Set at registration, as the kubelet does: added later, the attach/detach
          // controller ignores the node until it restarts.
          annotations: { 'volumes.kubernetes.io/controller-managed-attach-detach': 'true' },
        },
        spec: { unschedulable },
      },
    });
    const now = new Date().toISOString();
    const resources = { cpu: '4', memory: '8Gi', pods: '110' };
    await rest.send({
      method: 'PATCH',
      path: `/api/v1/nodes/${name}/status`,
      contentType: 'application/merge-patch+json',
      body: {
        status: {
          capacity: resources,
          allocatable: resources,
          nodeInfo: { bootID: `${name}-boot-1` },
          conditions: [
            {
              type: 'Ready',
              status: 'True',
              reason: 'KubeletReady',
              message: 'played by the test',
              lastHeartbeatTime: now,
              lastTransitionTime: now,
            },
          ],
        },
      },
    });
    await kubelets.lease(name);
    return { name, kubelet: kubelets.renew(name) };
  };
  const vasOf = async (pv: string) =>
    (
      await rest.get<{ items: V1VolumeAttachment[] }>('/apis/storage.k8s.io/v1/volumeattachments')
    ).items.filter((va) => va.spec.source.persistentVolumeName === pv);
  /** The external-attacher's part: a new VolumeAttachment is reported attached. */
  const attachAll = async (pv: string) => {
    for (const va of await vasOf(pv))
      if (va.status?.attached !== true && !va.metadata?.deletionTimestamp)
        await rest.send({
          method: 'PATCH',
          path: `/apis/storage.k8s.io/v1/volumeattachments/${va.metadata!.name}/status`,
          contentType: 'application/merge-patch+json',
          body: { status: { attached: true } },
        });
  };
  const until = async (what: string, timeoutMs: number, f: () => Promise<boolean> | boolean) => {
    const end = performance.now() + timeoutMs;
    for (;;) {
      if (await f()) return;
      if (performance.now() > end) throw new Error(`failover scenario: ${what} not within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };

  const a = await kubeletNode('fo-a', false);
  const b = await kubeletNode('fo-b', true); // cordoned until the pod runs on node-a
  const pv = await c.pv();
  const claim = uniqueName('data');
  await rest.send({
    method: 'POST',
    path: '/api/v1/namespaces/default/persistentvolumeclaims',
    body: {
      metadata: { name: claim },
      spec: {
        accessModes: ['ReadWriteOnce'],
        storageClassName: '',
        volumeName: pv.name,
        resources: { requests: { storage: '1Gi' } },
      },
    },
  });
  const preempted: string[] = [];
  let partitionA = () => {};
  let keyA: string | undefined;
  let keyB: string | undefined;
  if (o.prfence) {
    const { agent: agentA, proxy } = await c.startProxiedAgent(a.name);
    // RWO: node-a is the volume's only attachment, so only an observer can fence it.
    const agentB = await c.startAgent(b.name, undefined, { observe: true });
    keyA = formatKey(agentA.key);
    keyB = formatKey(agentB.key);
    partitionA = () => proxy.blackhole('both');
    c.deviceCalls.add((call) => {
      if ((call.op === 'preempt' || call.op === 'preemptAndAbort') && call.lu === pv.lu)
        preempted.push(formatKey(call.args[1] as bigint));
    });
    await startController(c, o.log, o.controllers, { autoFence: true, nodeLostAfterMs: o.nodeLostAfterMs });
  }

  const app = uniqueName('app');
  await rest.send({
    method: 'POST',
    path: '/apis/apps/v1/namespaces/default/statefulsets',
    body: {
      metadata: { name: app },
      spec: {
        replicas: 1,
        serviceName: app,
        selector: { matchLabels: { app } },
        template: {
          metadata: { labels: { app } },
          spec: {
            // These two nodes only: other runs' nodes may still be Ready on the same API server.
            affinity: {
              nodeAffinity: {
                requiredDuringSchedulingIgnoredDuringExecution: {
                  nodeSelectorTerms: [
                    {
                      matchExpressions: [
                        { key: 'kubernetes.io/hostname', operator: 'In', values: [a.name, b.name] },
                      ],
                    },
                  ],
                },
              },
            },
            containers: [{ name: 'db', image: 'registry.invalid/db:1' }],
            volumes: [{ name: 'data', persistentVolumeClaim: { claimName: claim } }],
          },
        },
      },
    },
  });
  const pods = async () =>
    (
      await rest.get<{ items: V1Pod[] }>(
        `/api/v1/namespaces/default/pods?labelSelector=${encodeURIComponent(`app=${app}`)}`,
      )
    ).items;
  // Scheduled on node-a, attached there (attach/detach controller + our attacher), reserved by node-a.
  let first: V1Pod | undefined;
  await until('pod bound to node-a', 90_000, async () => {
    first = (await pods()).find((x) => x.spec?.nodeName === a.name);
    return first !== undefined;
  });
  await until('VA on node-a attached', 90_000, async () => {
    await attachAll(pv.name);
    return (await vasOf(pv.name)).some((va) => va.spec.nodeName === a.name && va.status?.attached === true);
  });
  if (o.prfence) await until('node-a reserved', 60_000, () => pv.lu.state().reservation?.holder === a.name);
  await rest.send({
    method: 'PATCH',
    path: `/api/v1/nodes/${b.name}`,
    contentType: 'application/merge-patch+json',
    body: { spec: { unschedulable: false } },
  });

  // node-a is lost: a partition, not a stopped process.
  const t0 = performance.now();
  partitionA();
  a.kubelet.stop();

  const seen: Partial<Record<Milestone, number>> = {};
  const mark = (what: Milestone, cond: boolean) => {
    if (cond) seen[what] ??= (performance.now() - t0) / 1000;
  };
  const violations = new Set<string>();
  const end = t0 + o.timeoutMs;
  let done = false;
  while (!done && performance.now() < end) {
    try {
      await attachAll(pv.name);
      const [nodeA, nf, vas, ps] = await Promise.all([
        rest.get<V1Node>(`/api/v1/nodes/${a.name}`),
        o.prfence ? c.nodeFence(a.name).catch(() => undefined) : undefined,
        vasOf(pv.name),
        pods(),
      ]);
      // The device is read after the API: whatever the API showed had already happened.
      const lu = pv.lu.state();
      const keyAPresent = lu.registrations.some((r) => formatKey(r.key) === keyA);
      const vaB = vas.find((va) => va.spec.nodeName === b.name);
      const tainted = nodeA.spec?.taints?.some((t) => t.key === OOS) === true;
      if (vaB && keyAPresent) violations.add('node-b attached while node-a still had its key');
      if (tainted && keyAPresent) violations.add('tainted while node-a still had its key');
      mark('fence requested', nf?.spec?.fenceState === 'Fenced');
      if (o.prfence) mark("node-a's key gone", !keyAPresent);
      mark("node-a's write refused", pv.lu.write(a.name) !== 'ok');
      mark('out-of-service taint', tainted);
      mark(
        'node-a NotReady',
        nodeA.status?.conditions?.some((x) => x.type === 'Ready' && x.status !== 'True') === true,
      );
      mark(
        'pod bound to node-b',
        ps.some((p) => p.spec?.nodeName === b.name && p.metadata?.uid !== first?.metadata?.uid),
      );
      mark("node-a's VA deleted", !vas.some((va) => va.spec.nodeName === a.name));
      mark('VA on node-b created', vaB !== undefined);
      mark('VA on node-b attached', vaB?.status?.attached === true);
      mark('node-b holds the reservation', lu.reservation?.holder === b.name);
      done =
        seen['VA on node-b attached'] !== undefined &&
        (!o.prfence || seen['node-b holds the reservation'] !== undefined);
    } catch (e) {
      // An API error in one sample (a busy machine) is not a result: sample again.
      o.log.warn({ err: e }, 'failover sample failed');
    }
    if (!done) await new Promise((r) => setTimeout(r, 100));
  }
  // No more pods for this run (its nodes stay, as a lost node does until someone deletes it).
  await rest
    .send({ method: 'DELETE', path: `/apis/apps/v1/namespaces/default/statefulsets/${app}` })
    .catch((e: unknown) => o.log.warn({ err: e }, 'StatefulSet not deleted'));
  return {
    seen,
    done,
    violations: [...violations],
    keyA,
    keyB,
    keys: pv.lu.state().registrations.map((r) => formatKey(r.key)),
    preempted,
    aWrite: pv.lu.write(a.name),
    bWrite: pv.lu.write(b.name),
  };
}

/** The milestones seen, in time order, as lines `  12.3  what`. */
export function formatMilestones(r: FailoverResult): string {
  return Object.entries(r.seen)
    .sort(([, x], [, y]) => x - y)
    .map(([k, v]) => `  ${v.toFixed(1).padStart(6)}  ${k}`)
    .join('\n');
}
