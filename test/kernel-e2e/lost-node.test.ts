/**
 * A lost node on a real kernel (inside the QEMU guest, NVMe over nvmet): kube-apiserver +
 * etcd, `prfence controller --auto-fence`, and two `prfence agent --scope=node` processes
 * (they learn of the volume from the controller's desired state), each in its own mount
 * namespace with its own initiator of one namespace (test/kernel-e2e/
 * guest-processes.ts). The test plays the kubelets' Lease renewals and the attach/detach
 * controller.
 *
 * node-a is partitioned: its kubelet stops renewing and its agent's API traffic is
 * blackholed, while the agent runs on with its I/O path. The controller declares it lost
 * and requests the fence; node-b's agent, an observer (node-a is the volume's only
 * attachment), removes node-a's key and records the proof; the controller taints node-a
 * out-of-service; the volume moves to node-b, which writes. On node-a the failfast probe
 * finds its key gone and takes the reboot action: the real sysrq path, with
 * `--sysrq-trigger` naming a plain file the test reads (the guest must not reboot).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { V1Node } from '@kubernetes/client-node';
import { GROUP, NODE_FENCE, VERSION, type NodeFence } from '../../src/crd/types.js';
import { clusterObjectPath, RestClient } from '../../src/kube/rest-client.js';
import { formatKey, parseKey } from '../../src/pr/key.js';
import { KoffiPrDevice } from '../../src/pr/koffi/koffi-pr-device.js';
import { directWrite } from '../../src/pr/koffi/direct-io.js';
import { kernelTopologySpecs } from '../contract/kernel-topology.js';
import type { ControlPlane } from '../envtest/control-plane.js';
import { FaultProxy, kubeConfigVia } from '../envtest/fault-proxy.js';
import { bootNode, Kubelets } from '../integration/node-leases.js';
import {
  guestAttachment,
  guestPv,
  logLines,
  startAgentProcess,
  startGuestControlPlane,
  startControllerProcess,
  stopProcess,
  tails,
  until,
  type GuestProcess,
} from './guest-processes.js';

const RESET_KEY = 0x7e5e700000000004n;
const PROBE_MS = 1000;
const OOS = 'node.kubernetes.io/out-of-service';
const specs = kernelTopologySpecs().filter(
  (s) => s.kind === 'nvme' && !s.readMethod && !s.limitations.includes('preempt-abort-hangs'),
);

describe.skipIf(specs.length === 0)('a lost node on a real kernel: fence, failfast, taint', () => {
  let cp: ControlPlane;
  const procs: GuestProcess[] = [];

  beforeAll(async () => {
    cp = await startGuestControlPlane();
  }, 1_400_000);

  afterAll(async () => {
    for (const p of procs) await stopProcess(p);
    await cp?.stop();
  }, 120_000);

  const spec = specs[0]!;
  const [nodeA, nodeB, pv] = [`${spec.name}-lost-a`, `${spec.name}-lost-b`, `pv-${spec.name}-lost`];
  it(
    `${spec.name}: ${nodeA} partitioned -> lost -> fenced by the observer ${nodeB} (its write refused by the kernel), its failfast reboots within the probe interval, the proof 1/1 -> the out-of-service taint; the volume moved -> ${nodeB} holds and writes; ${nodeA}'s key never comes back`,
    { timeout: 1_400_000 },
    async () => {
      const kc = cp.adminKubeConfig();
      const rest = new RestClient(kc);
      const nf = (n: string) => rest.get<NodeFence>(clusterObjectPath(GROUP, VERSION, NODE_FENCE.plural, n));
      const [devA, devB, devO] = spec.devices as [string, string, string];
      const observer = await KoffiPrDevice.open(devO, { timeoutMs: 20_000 });
      await observer.registerAndIgnore(RESET_KEY);
      await observer.clear(RESET_KEY);
      const proxy = await FaultProxy.start({ target: cp.server });
      const kubelets = new Kubelets(rest);
      const mine: GuestProcess[] = [];
      let sampling = true;
      let sampler: Promise<void> = Promise.resolve();
      try {
        for (const name of [nodeA, nodeB]) {
          await rest.send({ method: 'POST', path: '/api/v1/nodes', body: { metadata: { name } } });
          await bootNode(rest, name, `${name}-boot-1`);
          await kubelets.lease(name);
        }
        const kubeletA = kubelets.renew(nodeA);
        kubelets.renew(nodeB);
        await rest.send({ method: 'POST', path: '/api/v1/persistentvolumes', body: guestPv(pv) });
        const va = (node: string) => guestAttachment(pv, node);
        await rest.send({
          method: 'POST',
          path: '/apis/storage.k8s.io/v1/volumeattachments',
          body: va(nodeA),
        });

        // node-a: failfast reboot, the real sysrq path, into a plain file (the guest must not reboot).
        const sysrq = join(tmpdir(), `sysrq-${nodeA}`);
        writeFileSync(sysrq, '');
        const kcA = join(tmpdir(), `prfence-e2e-${nodeA}.kubeconfig`);
        writeFileSync(kcA, kubeConfigVia(kc, proxy).exportConfig());
        // Both agents node-scoped (the chart's default): they learn of the volume from the
        // controller's desired state (node-b, an observer, watches every VolumeReservation).
        const agentA = startAgentProcess(nodeA, devA, kcA, [
          '--scope',
          'node',
          '--probe-interval',
          `${PROBE_MS}ms`,
          '--failfast-action',
          'reboot',
          '--failfast-allow-reboot',
          '--sysrq-trigger',
          sysrq,
        ]);
        const agentB = startAgentProcess(nodeB, devB, cp.kubeconfigPath, ['--observe', '--scope', 'node']);
        const controller = startControllerProcess(cp.kubeconfigPath, [
          '--auto-fence',
          'true',
          '--node-lost-after',
          '10s',
          '--resync',
          '2s',
        ]);
        mine.push(agentA, agentB, controller);
        procs.push(...mine);

        const keyA = await until(`${nodeA} key in NodeFence`, 300_000, async () => {
          const k = (await nf(nodeA)).status?.key;
          return k ? parseKey(k) : undefined;
        });
        await until(`${nodeA} holds the reservation`, 300_000, async () => {
          const r = await observer.readReservation();
          return r.key === keyA ? r : undefined;
        });
        const keyB = await until(`${nodeB} key in NodeFence`, 300_000, async () => {
          const k = (await nf(nodeB)).status?.key;
          return k ? parseKey(k) : undefined;
        });
        expect(await directWrite(devA)).toBe('ok');

        // The partition. node-a's key is sampled on the device from here to the end:
        // [lastSeenAt, goneSeenAt] brackets its removal; it must never come back.
        let lastSeenAt = Date.now();
        let goneSeenAt: number | undefined;
        let back = 0;
        sampler = (async () => {
          while (sampling) {
            const startedAt = Date.now();
            const k = await observer.readKeys().catch(() => undefined);
            if (k?.keys.includes(keyA)) {
              if (goneSeenAt === undefined) lastSeenAt = startedAt;
              else back += 1;
            } else if (k) goneSeenAt ??= Date.now();
            await new Promise((r) => setTimeout(r, 50));
          }
        })();
        proxy.blackhole('both');
        kubeletA.stop();
        const partitionedAt = Date.now();

        await until(`${nodeA}'s key removed`, 300_000, async () => goneSeenAt);
        expect(await directWrite(devA)).toBe('refused');
        // Failfast: the probe finds the key gone; the reboot path runs to its end ('b').
        await until(`${nodeA} failfast reboot written`, 120_000, async () =>
          readFileSync(sysrq, 'utf8') === 'b' ? true : undefined,
        );
        const lost = logLines(agentA).find((l) => l.msg.startsWith('access lost'));
        const detectionMs = lost!.time - lastSeenAt;

        const taintedAt = await until(`${nodeA} tainted out-of-service`, 300_000, async () => {
          const n = await rest.get<V1Node>(`/api/v1/nodes/${nodeA}`);
          return n.spec?.taints?.some((t) => t.key === OOS) ? Date.now() : undefined;
        });
        const fence = await nf(nodeA);

        // Kubernetes moves the volume after the taint (the attach/detach controller).
        await rest.send({ method: 'DELETE', path: `/apis/storage.k8s.io/v1/volumeattachments/va-${nodeA}` });
        await rest.send({
          method: 'POST',
          path: '/apis/storage.k8s.io/v1/volumeattachments',
          body: va(nodeB),
        });
        await until(`${nodeB} holds the reservation as the attached node`, 300_000, async () => {
          const r = await observer.readReservation();
          return r.key === keyB && !(await nf(nodeB)).status?.handingOver?.includes(pv) ? r : undefined;
        });
        console.log(
          `lost node on ${spec.name}, ms after the partition: key removed ${goneSeenAt! - partitionedAt}, ` +
            `failfast detection ${detectionMs} ms after the last read that saw the key (target probe interval ${PROBE_MS} + 100 ms), ` +
            `taint seen ${taintedAt - partitionedAt}`,
        );
        expect({
          proof: fence.status?.isolation?.summary,
          proofBy: fence.status?.proofs?.map((p) => p.by),
          reason: fence.spec?.reason,
          victimKey: fence.status?.proofs?.map((p) => p.victimKey),
          rebootAction: lost?.action,
          // Generous for an emulated guest on a shared machine: the figure is printed above.
          detectedAfterRemoval: detectionMs > 0,
          detectedWithinProbe: detectionMs <= PROBE_MS + 2000,
          aWrite: await directWrite(devA),
          bWrite: await directWrite(devB),
          keys: (await observer.readKeys()).keys.map(formatKey),
          keyABackAfterRemoval: back,
        }).toEqual({
          proof: '1/1',
          proofBy: [nodeB],
          reason: 'NodeLost',
          victimKey: [formatKey(keyA)],
          rebootAction: 'reboot',
          detectedAfterRemoval: true,
          detectedWithinProbe: true,
          aWrite: 'refused',
          bWrite: 'ok',
          keys: [formatKey(keyB)],
          keyABackAfterRemoval: 0,
        });
      } catch (e) {
        console.log(tails(mine, 40));
        throw e;
      } finally {
        sampling = false;
        await sampler;
        await kubelets.cleanup();
        for (const p of mine) await stopProcess(p);
        await proxy.close();
        await observer.close();
      }
    },
  );
});
