/**
 * Agent benchmark against a real kube-apiserver + etcd (test/envtest) with memory LUs:
 * fence latency until the stale key is gone from the device (read back), measured from
 * the new VolumeAttachment's create request and from the moment it is visible to
 * agents, for 1 and for 200 PVs failing over at once; API requests per fence; and the
 * agent's RSS with many VolumeAttachments and Nodes in its caches.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { CoreV1Api, StorageV1Api } from '@kubernetes/client-node';
import { RestClient } from '../src/kube/rest-client.js';
import pino from 'pino';
import { Agent } from '../src/agent/agent.js';
import { DEVICE_ANNOTATION } from '../src/agent/cluster-view.js';
import { MemoryLogicalUnit } from '../src/pr/memory/index.js';
import { startControlPlane } from '../test/envtest/control-plane.js';
import { installCrds, waitCrdStorage } from '../test/envtest/crds.js';
import { freePort } from '../test/envtest/net.js';

const log = pino({ level: 'silent' });
/** The node flags of the Dockerfile's ENTRYPOINT (keep the two equal). */
const IMAGE_NODE_FLAGS = '--max-semi-space-size=1 --optimize-for-size';

const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

async function pool<T>(items: T[], n: number, f: (x: T) => Promise<unknown>): Promise<void> {
  let i = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (i < items.length) await f(items[i++]!);
    }),
  );
}

export async function agentBench(): Promise<void> {
  const cp = await startControlPlane();
  try {
    const kc = cp.adminKubeConfig();
    await waitCrdStorage(kc, await installCrds(kc));
    const core = kc.makeApiClient(CoreV1Api);
    const storage = kc.makeApiClient(StorageV1Api);
    const lus = new Map<string, MemoryLogicalUnit>();
    // The load generator talks over kept-alive connections, like a real client elsewhere.
    const api = new RestClient(kc);
    const createVa = (name: string, node: string, pv: string) =>
      api.send({
        method: 'POST',
        path: '/apis/storage.k8s.io/v1/volumeattachments',
        body: {
          apiVersion: 'storage.k8s.io/v1',
          kind: 'VolumeAttachment',
          metadata: { name },
          spec: { attacher: 'b', nodeName: node, source: { persistentVolumeName: pv } },
        },
      });
    console.log(
      '\nagent fence latency (real API server, memory devices): until the stale key is gone (read back)',
    );
    console.log(
      'PVs at once   measured from                    p50 ms    p99 ms    max ms   API requests/fence   target p99 < 50 ms',
    );
    for (const n of process.env.PRFENCE_BENCH_SKIP_LATENCY ? [] : [1, 200]) {
      const [na, nb] = [`bench-a-${n}`, `bench-b-${n}`];
      for (const name of [na, nb]) await core.createNode({ body: { metadata: { name } } });
      // The agent's own measurement: from its informer delivering the new VolumeAttachment
      // (the trigger) until the victim's key was gone on read-back.
      const agentSeen = new Map<string, number>();
      const start = (node: string) =>
        Agent.start({
          kubeConfig: kc,
          nodeName: node,
          log,
          workers: 8,
          // The mechanics of a fence, without the grace a node that detached normally
          // gets to unregister by itself (a lost node is fenced by request, at once).
          leaveGraceMs: 0,
          openDevice: async (id) => lus.get(id)!.initiator(node),
          onFence: (e) => {
            if (e.result === 'fenced' && e.sinceTriggerMs !== undefined)
              agentSeen.set(e.pv, e.sinceTriggerMs);
          },
        });
      const a = await start(na);
      const b = await start(nb);
      const pvs = Array.from({ length: n }, (_, i) => `bench-pv-${n}-${i}`);
      await pool(pvs, 16, async (pv) => {
        const lu = new MemoryLogicalUnit({ id: pv });
        lus.set(pv, lu);
        await core.createPersistentVolume({
          body: {
            metadata: { name: pv, annotations: { [DEVICE_ANNOTATION]: pv } },
            spec: {
              capacity: { storage: '1Gi' },
              accessModes: ['ReadWriteOnce'],
              csi: { driver: 'b', volumeHandle: pv },
            },
          },
        });
        await createVa(`va-a-${pv}`, na, pv);
      });
      while (![...pvs].every((pv) => lus.get(pv)!.state().reservation?.holder === na))
        await new Promise((r) => setTimeout(r, 20));
      await a.stop(); // partitioned
      const reqBefore = b.apiRequests;
      const t0 = new Map<string, number>();
      const done = new Map<string, number>();
      const watcher = setInterval(() => {
        for (const pv of pvs) {
          if (done.has(pv) || !t0.has(pv)) continue;
          if (
            !lus
              .get(pv)!
              .state()
              .registrations.some((r) => r.key === a.key)
          )
            done.set(pv, performance.now());
        }
      }, 1);
      // The attach-detach controller deletes the partitioned node's attachment and creates
      // the new node's: for all volumes at once.
      await Promise.all(
        pvs.map(async (pv) => {
          await api.send({ method: 'DELETE', path: `/apis/storage.k8s.io/v1/volumeattachments/va-a-${pv}` });
          t0.set(pv, performance.now());
          await createVa(`va-b-${pv}`, nb, pv);
        }),
      );
      const deadline = performance.now() + 120_000;
      while (done.size < n && performance.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      clearInterval(watcher);
      // Let b finish recording (status, marks, events) before counting its requests.
      await new Promise((r) => setTimeout(r, 3000));
      const perFence = (b.apiRequests - reqBefore) / n;
      const fenced = pvs.filter((pv) => done.has(pv));
      const rows: [string, number[]][] = [
        ['VA visible to the agent', [...agentSeen.values()]],
        ['VA create request sent', fenced.map((pv) => done.get(pv)! - t0.get(pv)!)],
      ];
      for (const [what, lat] of rows) {
        console.log(
          `${String(n).padStart(11)}   ${what.padEnd(30)}${pct(lat, 50).toFixed(1).padStart(10)}${pct(lat, 99)
            .toFixed(1)
            .padStart(10)}${Math.max(...lat)
            .toFixed(1)
            .padStart(10)}${perFence.toFixed(1).padStart(21)}   ${lat.length}/${n} fenced`,
        );
      }
      await b.stop();
    }
    api.close();

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
    console.log('node flags                          RSS MiB   V8 heap used MiB');
    // PRFENCE_BENCH_NODE_FLAGS="a b;c" measures more flag sets (one per `;`).
    const extra = (process.env.PRFENCE_BENCH_NODE_FLAGS ?? '')
      .split(';')
      .filter((x) => x.trim())
      .map((x) => x.trim().split(/\s+/));
    for (const flags of [[], IMAGE_NODE_FLAGS.split(' '), ...extra]) {
      const port = await freePort();
      const child = spawn(
        process.execPath,
        [
          ...flags,
          'dist/src/cli/main.js',
          'agent',
          '--node-name',
          'cache-node-0',
          '--kubeconfig',
          cp.kubeconfigPath,
          '--log-level',
          'warn',
          '--http-endpoint',
          `127.0.0.1:${port}`,
        ],
        { stdio: 'inherit' },
      );
      try {
        const t0 = performance.now();
        while (performance.now() - t0 < 120_000) {
          const ready = await fetch(`http://127.0.0.1:${port}/readyz`).then(
            (r) => r.status === 200,
            () => false,
          );
          if (ready) break;
          await new Promise((r) => setTimeout(r, 200));
        }
        await new Promise((r) => setTimeout(r, 5000)); // settled
        const rssKb = Number(
          /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1] ?? 0,
        );
        const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        const heap = Number(/^nodejs_heap_size_used_bytes (\S+)$/m.exec(metrics)?.[1] ?? NaN);
        console.log(
          `${(flags.join(' ') || '(defaults)').padEnd(34)}${(rssKb / 1024).toFixed(0).padStart(8)}${(heap / 1048576).toFixed(1).padStart(20)}`,
        );
      } finally {
        child.kill('SIGTERM');
        await new Promise((r) => child.once('exit', r));
      }
    }
  } finally {
    await cp.stop();
  }
}
