/**
 * Failover on a real control plane: kube-apiserver, etcd, kube-controller-manager and
 * kube-scheduler of the same Kubernetes version, on an API server of this file's own (the
 * controller-manager would act on every other test's objects). The test plays the
 * kubelets (Node status and Lease renewals) and the CSI external-attacher (VolumeAttachment
 * status); everything else is Kubernetes: the node lifecycle controller, the attach/detach
 * controller, the StatefulSet controller, taint eviction, pod GC and the scheduler.
 *
 * node-a is lost as a partition: its kubelet stops renewing and its agent's API traffic is
 * blackholed, while the agent keeps running with its device path.
 */
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Controller } from '../../src/controller/controller.js';
import { startControlPlane, type ControlPlane } from '../envtest/control-plane.js';
import { installCrds, waitCrdStorage } from '../envtest/crds.js';
import { startControllerManager, startScheduler, type KubeComponent } from '../envtest/kube-components.js';
import { Cluster } from './agent-harness.js';
import { formatMilestones, runFailover, type Milestone } from './failover-scenario.js';
import { Kubelets } from './node-leases.js';

/** The controller's --node-lost-after here (the fast setting). */
const LOST_AFTER_MS = 10_000;
/** kube-controller-manager's --node-monitor-grace-period: pod GC needs the node NotReady. */
const GRACE = '20s';

describe('failover on a real control plane (kube-controller-manager, kube-scheduler)', () => {
  let cp: ControlPlane;
  let c: Cluster;
  let kubelets: Kubelets;
  const components: KubeComponent[] = [];
  const controllers: Controller[] = [];
  const log = pino({ level: process.env.PRFENCE_TEST_LOG ?? 'silent' });

  beforeAll(async () => {
    cp = await startControlPlane();
    const kc = cp.adminKubeConfig();
    await waitCrdStorage(kc, await installCrds(kc));
    components.push(startControllerManager(cp, { nodeMonitorGracePeriod: GRACE }), startScheduler(cp));
    c = new Cluster(kc);
    kubelets = new Kubelets(c.rest);
  }, 240_000);

  afterAll(async () => {
    await Promise.all(controllers.splice(0).map((x) => x.stop()));
    await c?.stopAll();
    await kubelets?.cleanup();
    await Promise.all(components.splice(0).map((x) => x.stop()));
    await cp?.stop();
  }, 120_000);

  it(
    'StatefulSet on node-a, node-a partitioned: fenced (its key gone, its write refused) before the taint, the taint before the replacement pod is bound to node-b, and node-b attached only after the key was gone; node-b holds the reservation and writes; the legitimate key is never preempted',
    { timeout: 420_000 },
    async () => {
      const r = await runFailover({
        c,
        kubelets,
        log,
        controllers,
        prfence: true,
        nodeLostAfterMs: LOST_AFTER_MS,
        timeoutMs: 300_000,
      });
      console.log(
        `failover on a real control plane (node-lost-after ${LOST_AFTER_MS / 1000} s, node-monitor-grace-period ${GRACE}), seconds after the partition:\n${formatMilestones(r)}`,
      );
      const at = (m: Milestone) => r.seen[m] ?? Infinity;
      expect({
        done: r.done,
        violations: r.violations,
        keys: r.keys,
        aWrite: r.aWrite,
        bWrite: r.bWrite,
        legitimatePreempted: r.preempted.includes(r.keyB!),
        aPreempted: r.preempted.includes(r.keyA!),
        fenceBeforeTaint: at("node-a's key gone") <= at('out-of-service taint'),
        taintBeforeNewPod: at('out-of-service taint') <= at('pod bound to node-b'),
      }).toEqual({
        done: true,
        violations: [],
        keys: [r.keyB],
        aWrite: 'refused',
        bWrite: 'ok',
        legitimatePreempted: false,
        aPreempted: true,
        fenceBeforeTaint: true,
        taintBeforeNewPod: true,
      });
    },
  );
});
