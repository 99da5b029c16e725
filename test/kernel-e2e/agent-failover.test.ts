/**
 * The whole of prfence on a real kernel (inside the QEMU guest, test/kernel/run.mjs):
 * kube-apiserver + etcd started here, the chart's CRDs, and two `prfence agent` processes
 * as node-a and node-b. Each agent runs in its own mount namespace where the PV's device
 * path (/run/prfence-dev/vol) leads to its own initiator of one logical unit, as two
 * machines would see one LUN. node-a's agent reaches the API server through a TCP fault
 * proxy. The test partitions node-a (its API traffic blackholed; the agent runs on and its
 * I/O path still works), moves the VolumeAttachment to node-b, and shows node-a's write
 * refused by the kernel while node-b writes; node-a never registers again, neither while
 * partitioned nor after the partition heals. It runs once per topology where PREEMPT AND
 * ABORT works (LIO over iSCSI, nvmet over loop), against one API server, with node, PV and
 * VolumeAttachment names of that topology's own (<topology>-a, <topology>-b).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { FaultProxy, kubeConfigVia } from '../envtest/fault-proxy.js';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CoreV1Api, StorageV1Api } from '@kubernetes/client-node';
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
import type { ControlPlane } from '../envtest/control-plane.js';
import {
  guestAttachment,
  guestPv,
  startAgentProcess,
  startGuestControlPlane,
  stopProcess,
  tails,
  until,
  type GuestProcess,
} from './guest-processes.js';

const RESET_KEY = 0x7e5e700000000003n;

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
  let cp: ControlPlane;
  const agents: GuestProcess[] = [];

  const startAgent = (node: string, device: string, kubeconfig = cp.kubeconfigPath) => {
    const agent = startAgentProcess(node, device, kubeconfig);
    agents.push(agent);
    return agent;
  };

  beforeAll(async () => {
    cp = await startGuestControlPlane();
  }, 1_400_000);

  afterAll(async () => {
    for (const a of agents) await stopProcess(a);
    await cp?.stop();
  }, 120_000);

  for (const spec of runnable) {
    // Names of this topology's own (one API server for all): <topology>-a, <topology>-b.
    const [nodeA, nodeB, pv] = [`${spec.name}-a`, `${spec.name}-b`, `pv-${spec.name}`];
    it(
      `${spec.name}: ${nodeA} partitioned, VolumeAttachment moves ${nodeA} -> ${nodeB} -> ${nodeA}'s write refused by the kernel; it never registers again, partitioned or healed`,
      { timeout: 1_400_000 },
      async () => {
        const observer = await KoffiPrDevice.open(spec.devices[2]!, { timeoutMs: 20_000 });
        await observer.registerAndIgnore(RESET_KEY);
        await observer.clear(RESET_KEY);
        // node A reaches the API server only through a TCP fault proxy: a partition is its
        // API traffic blackholed while the agent runs on and keeps its path to the LU.
        const proxy = await FaultProxy.start({ target: cp.server });
        const mine: GuestProcess[] = [];
        try {
          await failover(spec, observer, proxy, mine, nodeA, nodeB, pv);
        } catch (e) {
          console.log(tails(mine));
          throw e;
        } finally {
          for (const a of mine) await stopProcess(a);
          await proxy.close();
          await observer.close();
        }
      },
    );
  }

  async function failover(
    spec: KernelTopologySpec,
    observer: PrDevice,
    proxy: FaultProxy,
    mine: GuestProcess[],
    nodeA: string,
    nodeB: string,
    pv: string,
  ): Promise<void> {
    const kc = cp.adminKubeConfig();
    const core = kc.makeApiClient(CoreV1Api);
    const storage = kc.makeApiClient(StorageV1Api);
    const rest = new RestClient(kc);
    const nf = (n: string) => rest.get<NodeFence>(clusterObjectPath(GROUP, VERSION, NODE_FENCE.plural, n));
    const vrOf = () =>
      rest.get<VolumeReservation>(clusterObjectPath(GROUP, VERSION, VOLUME_RESERVATION.plural, pv));
    const [devA, devB] = spec.devices as [string, string];
    for (const name of [nodeA, nodeB]) await core.createNode({ body: { metadata: { name } } });
    await core.createPersistentVolume({ body: guestPv(pv) });
    const va = (node: string) => guestAttachment(pv, node);
    await storage.createVolumeAttachment({ body: va(nodeA) });
    const kcA = join(tmpdir(), `prfence-e2e-${nodeA}.kubeconfig`);
    writeFileSync(kcA, kubeConfigVia(kc, proxy).exportConfig());
    const agentA = startAgent(nodeA, devA, kcA);
    mine.push(agentA, startAgent(nodeB, devB));

    // node A's agent registers and reserves: the device itself says so.
    const keyA = await until(`${nodeA} key in NodeFence`, 300_000, async () => {
      const k = (await nf(nodeA)).status?.key;
      return k ? parseKey(k) : undefined;
    });
    await until(`${nodeA} holds the reservation`, 300_000, async () => {
      const r = await observer.readReservation();
      return r.key === keyA && r.type === 'write-exclusive-reg-only' ? r : undefined;
    });
    expect(await directWrite(devA)).toBe('ok');
    expect(await directWrite(devB)).toBe('refused'); // not registered: WERO refuses it

    // node A is partitioned: its agent runs on, its I/O path still works, its API traffic
    // goes nowhere. Its key is sampled on the device throughout.
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
    try {
      await storage.deleteVolumeAttachment({ name: `va-${nodeA}` });
      const t0 = Date.now();
      await storage.createVolumeAttachment({ body: va(nodeB) });
      const keyB = await until(`${nodeB} key in NodeFence`, 300_000, async () => {
        const k = (await nf(nodeB)).status?.key;
        return k ? parseKey(k) : undefined;
      });
      await until(`${nodeA} key gone, ${nodeB} holds the reservation`, 300_000, async () => {
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

      const fenced = await until(`NodeFence ${nodeA} Fenced`, 120_000, async () => {
        const o = await nf(nodeA);
        return o.status?.phase === 'Fenced' ? o : undefined;
      });
      expect(fenced.status?.fencedBy).toBe(nodeB);
      const vr = await until(`VolumeReservation records ${nodeB} as holder`, 120_000, async () => {
        const o = await vrOf();
        return o.status?.holder?.node === nodeB && o.status.lastFence ? o : undefined;
      });
      expect(vr.status?.holder?.key).toBe(formatKey(keyB));
      expect(vr.status?.lastFence).toMatchObject({ victimNode: nodeA, by: nodeB, result: 'Fenced' });

      // S2 on the kernel: while partitioned (several of its 2 s resyncs) node A never
      // registers again; after the partition heals it reads that it was fenced and still
      // does not.
      await new Promise((r) => setTimeout(r, 10_000)); // a sampling window
      const logBefore = readFileSync(agentA.log, 'utf8').length;
      await proxy.heal();
      await until(`${nodeA} agent reconciled ${pv} after the partition healed`, 300_000, async () => {
        const since = readFileSync(agentA.log, 'utf8').slice(logBefore);
        return /"msg":"reconciled"/.test(since) && /"outcome":"blocked"/.test(since) ? true : undefined;
      });
      await new Promise((r) => setTimeout(r, 5000)); // a sampling window after healing
    } finally {
      sampling = false;
      await sampler;
    }
    expect(aBack).toBe(0);
    expect((await observer.readKeys()).keys).not.toContain(keyA);
    expect(await directWrite(devA)).toBe('refused');

    const get = spawnSync('kubectl', ['--kubeconfig', cp.kubeconfigPath, 'get', 'nf,vr', '-o', 'wide'], {
      encoding: 'utf8',
      timeout: 120_000,
    });
    console.log(`kubectl get nf,vr -o wide (in the guest):\n${get.stdout}${get.stderr}`);
    expect(get.stdout).toMatch(new RegExp(`${nodeA}\\s+[0-9a-f]{16}\\s+Fenced`));
    // The late writer (node A, healed) settles on the device's answer: its registrants
    // entry goes, and it never puts its old view (itself as holder) back.
    const after = await until(`${nodeA} out of the registrants`, 120_000, async () => {
      const o = await vrOf();
      return o.status?.registrants?.some((r) => r.node === nodeA) ? undefined : o;
    });
    expect(after.status?.holder?.node).toBe(nodeB);
    expect(after.status?.registrants?.map((r) => r.node)).toEqual([nodeB]);
  }
});
