/**
 * Failover of a StatefulSet's RWO volume when its node is lost, on a real control plane
 * (kube-apiserver, kube-controller-manager with its default timers, kube-scheduler), the
 * scenario of test/integration/failover-scenario.ts, three ways:
 * - Kubernetes alone, default timers (nobody fences, nobody taints), capped at 15 minutes
 *   (PRFENCE_BENCH_DEFAULT_CAP_S to change it);
 * - prfence with the default --node-lost-after (40 s);
 * - prfence with --node-lost-after 10s.
 * Prints, for each, the seconds from the partition to each milestone.
 */
import pino from 'pino';
import type { Controller } from '../src/controller/controller.js';
import { startControlPlane } from '../test/envtest/control-plane.js';
import { installCrds, waitCrdStorage } from '../test/envtest/crds.js';
import { startControllerManager, startScheduler } from '../test/envtest/kube-components.js';
import { Cluster } from '../test/integration/agent-harness.js';
import { MILESTONES, runFailover, type FailoverResult } from '../test/integration/failover-scenario.js';
import { Kubelets } from '../test/integration/node-leases.js';

export async function failoverBench(): Promise<void> {
  const capS = Number(process.env.PRFENCE_BENCH_DEFAULT_CAP_S ?? 900);
  const cp = await startControlPlane();
  let grace: string | undefined; // kube-controller-manager's default (50 s)
  let kcm = startControllerManager(cp);
  const scheduler = startScheduler(cp);
  const log = pino({ level: process.env.PRFENCE_BENCH_LOG ?? 'silent' });
  const runs: { title: string; r: FailoverResult; timeoutMs: number }[] = [];
  try {
    const kc = cp.adminKubeConfig();
    await waitCrdStorage(kc, await installCrds(kc));
    const plan = [
      { title: 'Kubernetes alone', prfence: false, nodeLostAfterMs: 0, timeoutMs: capS * 1000 },
      { title: 'prfence, lost after 40 s', prfence: true, nodeLostAfterMs: 40_000, timeoutMs: 600_000 },
      { title: 'prfence, lost after 10 s', prfence: true, nodeLostAfterMs: 10_000, timeoutMs: 600_000 },
      // What is left after the taint is Kubernetes' wait for NotReady: a shorter grace period.
      {
        title: 'same, KCM grace 20 s',
        prfence: true,
        nodeLostAfterMs: 10_000,
        timeoutMs: 600_000,
        grace: '20s',
      },
    ];
    for (const p of plan) {
      if (p.grace !== grace) {
        await kcm.stop();
        kcm = startControllerManager(cp, p.grace ? { nodeMonitorGracePeriod: p.grace } : {});
        grace = p.grace;
      }
      const c = new Cluster(kc);
      const kubelets = new Kubelets(c.rest);
      const controllers: Controller[] = [];
      try {
        runs.push({
          title: p.title,
          timeoutMs: p.timeoutMs,
          r: await runFailover({ c, kubelets, log, controllers, ...p }),
        });
      } finally {
        await Promise.all(controllers.map((x) => x.stop()));
        await c.stopAll();
        await kubelets.cleanup();
      }
    }
  } catch (e) {
    console.log(
      `--- kube-controller-manager ---\n${kcm.tail()}\n--- kube-scheduler ---\n${scheduler.tail()}`,
    );
    throw e;
  } finally {
    await kcm.stop();
    await scheduler.stop();
    await cp.stop();
  }
  console.log(
    '\nfailover of a StatefulSet RWO volume, node-a lost (partitioned), real kube-controller-manager (default timers unless said: node-monitor-grace-period 50 s; pod GC every 20 s) and kube-scheduler; seconds after the partition',
  );
  const w = 28;
  console.log(`${'milestone'.padEnd(30)}${runs.map((x) => x.title.padStart(w)).join('')}`);
  for (const m of MILESTONES)
    console.log(
      `${m.padEnd(30)}${runs
        .map((x) => (x.r.seen[m] === undefined ? '-' : x.r.seen[m].toFixed(1)).padStart(w))
        .join('')}`,
    );
  console.log(
    `${'volume running on node-b'.padEnd(30)}${runs
      .map((x) =>
        (x.r.done
          ? `${x.r.seen['VA on node-b attached']!.toFixed(1)} s`
          : `not within ${x.timeoutMs / 1000} s`
        ).padStart(w),
      )
      .join('')}`,
  );
  console.log(
    `unsafe states seen (node-b attached or node-a tainted while node-a still had its key): ${runs.map((x) => x.r.violations.length).join(' / ')}`,
  );
  console.log(
    'Kubernetes alone: the pod on the lost node stays Terminating (no kubelet confirms, nobody may apply the out-of-service taint), so the StatefulSet never replaces it. With prfence the rest after the taint is Kubernetes: pod GC force-deletes the pod once the node is NotReady (grace period) and tainted, on its 20 s period.',
  );
}
