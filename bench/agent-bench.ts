/**
 * Agent benchmark against a real kube-apiserver + etcd (test/envtest) with memory LUs:
 * fence latency until the stale key is gone from the device (read back), measured from
 * the new VolumeAttachment's create request and from the moment it is visible to
 * agents, for 1 and for 200 PVs failing over at once; API requests per fence; and the
 * agent's RSS with many VolumeAttachments and Nodes in its caches.
 */
import { CoreV1Api, StorageV1Api } from '@kubernetes/client-node';
import type { KubeConfig } from '@kubernetes/client-node';
import pino from 'pino';
import { StatusWriter } from '../src/agent/status-writer.js';
import { RestClient } from '../src/kube/rest-client.js';
import { startControlPlane } from '../test/envtest/control-plane.js';
import { installCrds, waitCrdStorage } from '../test/envtest/crds.js';
import {
  IMAGE_NODE_FLAGS,
  measureFenceLatency,
  pct,
  pool,
  rssAnonKib,
  rssKib,
  sleep,
  spawnPrfence,
} from './bench-util.js';

export async function agentBench(): Promise<void> {
  const cp = await startControlPlane();
  try {
    const kc = cp.adminKubeConfig();
    await waitCrdStorage(kc, await installCrds(kc));
    const core = kc.makeApiClient(CoreV1Api);
    const storage = kc.makeApiClient(StorageV1Api);
    console.log(
      '\nagent fence latency (real API server, memory devices): until the stale key is gone (read back)',
    );
    console.log(
      'PVs at once   measured from                          p50 ms    p99 ms    max ms   API requests/fence   target p99 < 100 ms at 200 PVs',
    );
    const runs = process.env.PRFENCE_BENCH_SKIP_LATENCY
      ? []
      : [
          ...[1, 200].flatMap((n) => [
            { n, lostNode: false, how: 'detached', scope: 'cluster' as const },
            { n, lostNode: true, how: 'lost', scope: 'cluster' as const },
          ]),
          { n: 200, lostNode: true, how: 'lost, node scope', scope: 'node' as const },
        ];
    console.log(
      '(detached: the old node left by a plain detach, the fence rests on the full view; lost: its fence was requested, the fence rests on a view of each volume.',
    );
    console.log(
      ' Agents watch the VolumeAttachments themselves (--scope=cluster), except "node scope": as the chart ships, a controller writes each volume\'s desired state and the agents watch that;',
    );
    console.log(
      " there the fence is measured from the VA create request, before the controller sees the VA, and the controller's requests count too)",
    );
    for (const { n, lostNode, how, scope } of runs) {
      const r = await measureFenceLatency(kc, n, {
        prefix: `bench-${how.replace(/\W+/g, '-')}-${n}`,
        lostNode,
        scope,
      });
      const rows: [string, number[]][] = [
        ...(scope === 'cluster'
          ? [[`${how}: VA visible to the agent`, r.fromVisible] as [string, number[]]]
          : []),
        [`${how}: VA create request sent`, r.fromCreate],
      ];
      for (const [what, lat] of rows) {
        console.log(
          `${String(n).padStart(11)}   ${what.padEnd(36)}${pct(lat, 50).toFixed(1).padStart(10)}${pct(lat, 99)
            .toFixed(1)
            .padStart(10)}${Math.max(...lat)
            .toFixed(1)
            .padStart(10)}${r.requestsPerFence.toFixed(1).padStart(21)}   ${lat.length}/${n} fenced`,
        );
      }
    }

    if (runs.length) {
      const n = 200;
      const workers = Number(process.env.PRFENCE_BENCH_WORKERS ?? 8);
      const ms = await intentFloor(kc, n, workers);
      console.log(
        `floor: ${n} per-volume fence intents alone (StatusWriter.recordIntent: one unforced apply each), ${workers} at once: ${ms.toFixed(0)} ms.` +
          ` A ${n}-PV p99 below it needs one intent per victim node, not per volume.`,
      );
    }

    // Memory: an agent holding many VolumeAttachments and Nodes in its caches.
    const NODES = Number(process.env.PRFENCE_BENCH_NODES ?? 1000);
    const VAS = Number(process.env.PRFENCE_BENCH_VAS ?? 10_000);
    await pool(
      Array.from({ length: NODES }, (_, i) => `cache-node-${i}`),
      32,
      (name) => core.createNode({ body: { metadata: { name } } }),
    );
    await pool(
      Array.from({ length: VAS }, (_, i) => i),
      32,
      (i) =>
        storage.createVolumeAttachment({
          body: {
            metadata: { name: `cache-va-${i}` },
            spec: {
              attacher: 'b',
              nodeName: `cache-node-${i % NODES}`,
              source: { persistentVolumeName: `cache-pv-${i}` },
            },
          },
        }),
    );
    // The real agent process (`prfence agent`): RSS from /proc and heap from its own
    // /metrics once it is ready (caches synced) and settled; with Node's default V8 flags
    // and with the image's node flags (Dockerfile ENTRYPOINT).
    console.log(
      `\nagent process memory with ${VAS} VolumeAttachments and ${NODES} Nodes in its caches (target RSS < 100 MiB)`,
    );
    console.log('node flags                          RSS MiB   of which anonymous MiB   V8 heap used MiB');
    // PRFENCE_BENCH_NODE_FLAGS="a b;c" measures more flag sets (one per `;`).
    const extra = (process.env.PRFENCE_BENCH_NODE_FLAGS ?? '')
      .split(';')
      .filter((x) => x.trim())
      .map((x) => x.trim().split(/\s+/));
    for (const flags of [[], IMAGE_NODE_FLAGS.split(' '), ...extra]) {
      const agent = await spawnPrfence(
        ['agent', '--node-name', 'cache-node-0', '--kubeconfig', cp.kubeconfigPath, '--log-level', 'warn'],
        { nodeFlags: flags },
      );
      try {
        await agent.ready().catch((e: Error) => console.log(`  (${e.message}; measured anyway)`));
        await sleep(5000); // settled
        const heap = Number(/^nodejs_heap_size_used_bytes (\S+)$/m.exec(await agent.metrics())?.[1] ?? NaN);
        console.log(
          `${(flags.join(' ') || '(defaults)').padEnd(34)}${(rssKib(agent.pid) / 1024).toFixed(0).padStart(8)}${(rssAnonKib(agent.pid) / 1024).toFixed(0).padStart(25)}${(heap / 1048576).toFixed(1).padStart(19)}`,
        );
      } finally {
        await agent.stop();
      }
    }
  } finally {
    await cp.stop();
  }
}

/**
 * How long `n` fence intents take on this API server with nothing else going on: each is
 * what a fence writes before its PREEMPT (the agent's own StatusWriter: one server-side
 * apply, not forced, that another node's open intent would refuse). Every volume's
 * fence waits for its own, so the p99 of a per-volume intent design cannot go below this.
 */
async function intentFloor(kc: KubeConfig, n: number, workers: number): Promise<number> {
  const rest = new RestClient(kc);
  const writer = new StatusWriter({
    rest,
    node: 'floor-node',
    key: 0x0e153df0c4afa1cfn,
    nodeUid: 'floor-uid',
    log: pino({ level: 'silent' }),
  });
  try {
    const pvs = Array.from({ length: n }, (_, i) => `floor-pv-${i}`);
    await pool(pvs, workers, (pv) => writer.readVr(pv)); // created beforehand, as in a fence
    const t0 = performance.now();
    await pool(pvs, workers, (pv) =>
      writer.recordIntent(pv, {
        victimKey: '0e153df0c4afa1d0',
        victimNode: 'floor-victim',
        by: 'floor-node',
        at: new Date().toISOString(),
        basis: 'bench',
      }),
    );
    return performance.now() - t0;
  } finally {
    rest.close();
  }
}
