/**
 * The whole of prfence on a real kernel (inside the QEMU guest, test/kernel/run.mjs):
 * kube-apiserver + etcd started here, the chart's CRDs, and two `prfence agent` processes
 * as node-a and node-b. Each agent runs in its own mount namespace where the PV's device
 * path (/run/prfence-dev/vol) leads to its own initiator of one logical unit, as two
 * machines would see one LUN. node-a's agent reaches the API server through a TCP fault
 * proxy. The test partitions node-a (its API traffic blackholed; the agent runs on and its
 * I/O path still works), moves the VolumeAttachment to node-b, and shows node-a's write
 * refused by the kernel while node-b writes; node-a never registers again, neither while
 * partitioned nor after the partition heals.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { FaultProxy, kubeConfigVia } from '../envtest/fault-proxy.js';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CoreV1Api, StorageV1Api } from '@kubernetes/client-node';
import { DEVICE_ANNOTATION } from '../../src/agent/cluster-view.js';
import {
  GROUP,
  NODE_FENCE,
  VERSION,
  VOLUME_RESERVATION,
  type NodeFence,
  type VolumeReservation,
} from '../../src/crd/types.js';
import { clusterObjectPath, RestClient } from '../../src/kube/rest-client.js';
import { formatKey, parseKey } from '../../src/pr/key.js';
import { KoffiPrDevice } from '../../src/pr/koffi/koffi-pr-device.js';
import { directWrite } from '../../src/pr/koffi/direct-io.js';
import type { PrDevice } from '../../src/pr/pr-device.js';
import { kernelTopologySpecs, type KernelTopologySpec } from '../contract/kernel-topology.js';
import { startControlPlane, type ControlPlane } from '../envtest/control-plane.js';
import { installCrds, waitCrdStorage } from '../envtest/crds.js';

const DEVICE_PATH = '/run/prfence-dev/vol';
const RESET_KEY = 0x7e5e700000000003n;

async function until<T>(what: string, timeoutMs: number, fn: () => Promise<T | undefined>): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`${what}: not after ${timeoutMs} ms (${String(last ?? '')})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * PREEMPT AND ABORT through tcm_loop hangs the guest (known kernel limitation, see the
 * contract suite): the agent always fences with it, so the failover runs where it works.
 */
const specs = kernelTopologySpecs().filter((s) => !s.readMethod);
const runnable = specs.filter((s) => !s.limitations.includes('preempt-abort-hangs'));

describe.skipIf(runnable.length === 0)('prfence agent failover on a real kernel', () => {
  for (const s of specs.filter((x) => !runnable.includes(x))) {
    it.skip(`${s.name}: skipped, PREEMPT AND ABORT hangs this target`, () => {});
  }
  const spec = runnable[0] as KernelTopologySpec;
  let cp: ControlPlane;
  const agents: { node: string; proc: ChildProcess; log: string }[] = [];
  let observer: PrDevice;

  const startAgent = (node: string, device: string, kubeconfig = cp.kubeconfigPath) => {
    const log = join(tmpdir(), `prfence-agent-${node}.log`);
    const out = createWriteStream(log);
    // Own mount namespace: /run/prfence-dev/vol is this node's path to the shared LU.
    const script = [
      'mount -t tmpfs prfence-dev /run/prfence-dev',
      `ln -s ${device} ${DEVICE_PATH}`,
      `exec ${process.execPath} dist/src/cli/main.js agent --node-name ${node} --kubeconfig ${kubeconfig} --log-level debug --resync 2s --ioctl-timeout 20s --leave-grace 2s --state-dir ${join(tmpdir(), `prfence-state-${node}`)}`,
    ].join(' && ');
    const proc = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    proc.stdout?.pipe(out);
    proc.stderr?.pipe(out);
    agents.push({ node, proc, log });
    return proc;
  };
  const tails = () =>
    agents
      .filter((a) => existsSync(a.log))
      .map((a) => `--- ${a.node} ---\n${readFileSync(a.log, 'utf8').split('\n').slice(-25).join('\n')}`)
      .join('\n');

  beforeAll(async () => {
    mkdirSync('/run/prfence-dev', { recursive: true });
    observer = await KoffiPrDevice.open(spec.devices[2]!, { timeoutMs: 20_000 });
    await observer.registerAndIgnore(RESET_KEY);
    await observer.clear(RESET_KEY);
    const t0 = Date.now();
    cp = await startControlPlane({ readyTimeoutMs: 420_000 });
    const kc = cp.adminKubeConfig();
    await waitCrdStorage(kc, await installCrds(kc, undefined, 240_000), 240_000);
    console.log(`control plane up in the guest after ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  }, 1_400_000);

  afterAll(async () => {
    for (const a of agents) {
      a.proc.kill('SIGCONT');
      a.proc.kill('SIGTERM');
    }
    await observer?.close();
    await cp?.stop();
  }, 120_000);

  it(
    `${spec?.name}: node-a partitioned, VolumeAttachment moves a -> b -> node-a's write refused by the kernel; it never registers again, partitioned or healed`,
    {
      timeout: 1_400_000,
    },
    async () => {
      const kc = cp.adminKubeConfig();
      const core = kc.makeApiClient(CoreV1Api);
      const storage = kc.makeApiClient(StorageV1Api);
      const rest = new RestClient(kc);
      const nf = (n: string) => rest.get<NodeFence>(clusterObjectPath(GROUP, VERSION, NODE_FENCE.plural, n));
      const [devA, devB] = spec.devices as [string, string];
      for (const name of ['node-a', 'node-b']) await core.createNode({ body: { metadata: { name } } });
      await core.createPersistentVolume({
        body: {
          metadata: { name: 'pv-e2e', annotations: { [DEVICE_ANNOTATION]: DEVICE_PATH } },
          spec: {
            capacity: { storage: '32Mi' },
            accessModes: ['ReadWriteOnce'],
            csi: { driver: 'e2e.csi.prfence.io', volumeHandle: 'pv-e2e' },
          },
        },
      });
      const va = (node: string) => ({
        metadata: { name: `va-${node}` },
        spec: { attacher: 'e2e.csi.prfence.io', nodeName: node, source: { persistentVolumeName: 'pv-e2e' } },
      });
      await storage.createVolumeAttachment({ body: va('node-a') });
      // node-a reaches the API server only through a TCP fault proxy: a partition is its
      // API traffic blackholed while the agent runs on and keeps its path to the LU.
      const proxy = await FaultProxy.start({ target: cp.server });
      const kcA = join(tmpdir(), 'prfence-e2e-node-a.kubeconfig');
      writeFileSync(kcA, kubeConfigVia(kc, proxy).exportConfig());
      startAgent('node-a', devA, kcA);
      startAgent('node-b', devB);

      try {
        // node-a's agent registers and reserves: the device itself says so.
        const keyA = await until('node-a key in NodeFence', 300_000, async () => {
          const k = (await nf('node-a')).status?.key;
          return k ? parseKey(k) : undefined;
        });
        await until('node-a holds the reservation', 300_000, async () => {
          const r = await observer.readReservation();
          return r.key === keyA && r.type === 'write-exclusive-reg-only' ? r : undefined;
        });
        expect(await directWrite(devA)).toBe('ok');
        expect(await directWrite(devB)).toBe('refused'); // not registered: WERO refuses it

        // node-a is partitioned: its agent runs on, its I/O path still works, its API
        // traffic goes nowhere. Its key is sampled on the device throughout.
        proxy.blackhole('both');
        let aBack = 0;
        let sampling = true;
        let fencedSeen = false;
        const sampler = (async () => {
          while (sampling) {
            const k = await observer.readKeys().catch(() => undefined);
            if (k?.keys.includes(keyA) && fencedSeen) aBack += 1;
            await new Promise((r) => setTimeout(r, 200));
          }
        })();
        await storage.deleteVolumeAttachment({ name: 'va-node-a' });
        const t0 = Date.now();
        await storage.createVolumeAttachment({ body: va('node-b') });
        const keyB = await until('node-b key in NodeFence', 300_000, async () => {
          const k = (await nf('node-b')).status?.key;
          return k ? parseKey(k) : undefined;
        });
        await until('node-a key gone, node-b holds the reservation', 300_000, async () => {
          const [keys, r] = [await observer.readKeys(), await observer.readReservation()];
          return !keys.keys.includes(keyA) && r.key === keyB ? true : undefined;
        });
        fencedSeen = true;
        console.log(
          `failover on ${spec.name}: VolumeAttachment created -> ${formatKey(keyA)} gone, ${formatKey(keyB)} holds: ${Date.now() - t0} ms`,
        );

        // The point of it all: the kernel refuses the stale node's write.
        expect(await directWrite(devA)).toBe('refused');
        expect(await directWrite(devB)).toBe('ok');

        const fenced = await until('NodeFence node-a Fenced', 120_000, async () => {
          const o = await nf('node-a');
          return o.status?.phase === 'Fenced' ? o : undefined;
        });
        expect(fenced.status?.fencedBy).toBe('node-b');
        const vr = await until('VolumeReservation records node-b as holder', 120_000, async () => {
          const o = await rest.get<VolumeReservation>(
            clusterObjectPath(GROUP, VERSION, VOLUME_RESERVATION.plural, 'pv-e2e'),
          );
          return o.status?.holder?.node === 'node-b' && o.status.lastFence ? o : undefined;
        });
        expect(vr.status?.holder?.key).toBe(formatKey(keyB));
        expect(vr.status?.lastFence).toMatchObject({ victimNode: 'node-a', by: 'node-b', result: 'Fenced' });

        // S2 on the kernel: while partitioned (several of its 2 s resyncs) node-a never
        // registers again; after the partition heals it reads that it was fenced and still
        // does not.
        await new Promise((r) => setTimeout(r, 10_000)); // a sampling window
        const logBefore = readFileSync(agents[0]!.log, 'utf8').length;
        await proxy.heal();
        await until('node-a agent reconciled pv-e2e after the partition healed', 300_000, async () =>
          /"msg":"reconciled"/.test(readFileSync(agents[0]!.log, 'utf8').slice(logBefore)) &&
          /"outcome":"blocked"/.test(readFileSync(agents[0]!.log, 'utf8').slice(logBefore))
            ? true
            : undefined,
        );
        await new Promise((r) => setTimeout(r, 5000)); // a sampling window after healing
        sampling = false;
        await sampler;
        expect(aBack).toBe(0);
        expect((await observer.readKeys()).keys).not.toContain(keyA);
        expect(await directWrite(devA)).toBe('refused');

        const get = spawnSync('kubectl', ['--kubeconfig', cp.kubeconfigPath, 'get', 'nf,vr', '-o', 'wide'], {
          encoding: 'utf8',
          timeout: 120_000,
        });
        console.log(`kubectl get nf,vr -o wide (in the guest):\n${get.stdout}${get.stderr}`);
        expect(get.stdout).toMatch(/node-a\s+[0-9a-f]{16}\s+Fenced/);
        // The late writer (node-a, resumed) settles on the device's answer: its registrants
        // entry goes, and it never puts its old view (itself as holder) back.
        const after = await until('node-a out of the registrants', 120_000, async () => {
          const o = await rest.get<VolumeReservation>(
            clusterObjectPath(GROUP, VERSION, VOLUME_RESERVATION.plural, 'pv-e2e'),
          );
          return o.status?.registrants?.some((r) => r.node === 'node-a') ? undefined : o;
        });
        expect(after.status?.holder?.node).toBe('node-b');
        expect(after.status?.registrants?.map((r) => r.node)).toEqual(['node-b']);
      } catch (e) {
        console.log(tails());
        throw e;
      }
    },
  );
});
