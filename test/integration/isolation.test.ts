/**
 * Proof of isolation, then the out-of-service taint, against the real API server, with
 * real agents on memory LUs and the controller in-process (`--auto-fence
 * --node-lost-after 5s`). The lost node is a partition: its agent keeps running and keeps
 * its device, only its API traffic (and its kubelet's Lease renewals) stop.
 */
import pino from 'pino';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { V1Node } from '@kubernetes/client-node';
import { ISOLATION_BATCH_MS, type Controller } from '../../src/controller/controller.js';
import { OUT_OF_SERVICE_BY } from '../../src/controller/isolation.js';
import { API_VERSION, VOLUME_RESERVATION } from '../../src/crd/types.js';
import { vrPath } from '../../src/agent/status-writer.js';
import { createControllerMetrics } from '../../src/obs/controller-metrics.js';
import { formatKey } from '../../src/pr/key.js';
import type { MemoryLogicalUnit } from '../../src/pr/memory/index.js';
import { eventually } from '../envtest/kube.js';
import { Cluster } from './agent-harness.js';
import { bootNode, Kubelets, liveNode as liveNodeOf, startController } from './node-leases.js';

const LOST_AFTER = 5000;
const OOS = 'node.kubernetes.io/out-of-service';
const keysOf = (lu: MemoryLogicalUnit) => lu.state().registrations.map((r) => r.key);

describe('controller: proof of isolation, then the out-of-service taint', () => {
  const c = new Cluster();
  const log = pino({ level: process.env.PRFENCE_TEST_LOG ?? 'silent' });
  const controllers: Controller[] = [];
  const kubelets = new Kubelets(c.rest);

  beforeAll(() => c.unfenceAll());
  afterEach(async () => {
    await Promise.all(controllers.splice(0).map((x) => x.stop()));
    await c.stopAll();
    await kubelets.cleanup();
  });

  const getNode = (n: string) => c.rest.get<V1Node>(`/api/v1/nodes/${n}`);
  const oos = (n: V1Node) => n.spec?.taints?.find((t) => t.key === OOS);
  const boot = (node: string, bootID: string) => bootNode(c.rest, node, bootID);
  /** The NodeFence once the controller's summary reads `summary` (proven/total). */
  const proofIs = (node: string, summary: string) =>
    eventually(
      async () => {
        const x = await c.nodeFence(node);
        if (x.status?.isolation?.summary !== summary)
          throw new Error(`proof ${x.status?.isolation?.summary}`);
        return x;
      },
      { timeoutMs: 90_000 },
    );
  const liveNode = (prefix: string) => liveNodeOf(c, kubelets, prefix);

  it(
    'a partitioned node sharing a volume with a live peer: fenced (NodeLost), the peer records the proof (device, key, generation), 1/1 -> the taint with the annotation and the boot ID; unfenced but not rebooted -> the taint stays and the fence is not requested again; new boot -> the taint is removed',
    { timeout: 180_000 },
    async () => {
      const a = await liveNode('iso-a');
      const b = await liveNode('iso-b');
      const { agent: agentA, proxy: pa } = await c.startProxiedAgent(a.name);
      await c.startAgent(b.name);
      const pv = await c.pv();
      await c.attach(pv.name, a.name);
      await c.attach(pv.name, b.name);
      const keyA = agentA.key;
      await eventually(async () => (await c.vr(pv.name)).status?.registrants?.length === 2, {
        timeoutMs: 30_000,
      });
      const metrics = createControllerMetrics();
      const r = await startController(c, log, controllers, {
        autoFence: true,
        nodeLostAfterMs: LOST_AFTER,
        metrics,
      });

      pa.blackhole('both'); // node-a keeps running and keeps its device
      a.kubelet.stop();
      const node = await eventually(
        async () => {
          const n = await getNode(a.name);
          if (!oos(n)) throw new Error('not tainted yet');
          return n;
        },
        { timeoutMs: 90_000 },
      );
      const nf = await c.nodeFence(a.name);
      const proof = nf.status?.proofs?.find((p) => p.volume === pv.name);
      const events = (await c.events(a.name)).map((e) => e.reason);
      expect({
        spec: nf.spec,
        taint: oos(node),
        annotation: node.metadata?.annotations?.[OUT_OF_SERVICE_BY],
        keyGone: !keysOf(pv.lu).includes(keyA),
        proof: proof && { ...proof, at: typeof proof.at, generation: typeof proof.generation },
        // The proof existed before the taint was applied.
        proofBeforeTaint:
          !!proof && Date.parse(proof.at) <= Date.parse(nf.status?.isolation?.taintedAt ?? ''),
        isolation: { ...nf.status?.isolation, taintedAt: typeof nf.status?.isolation?.taintedAt },
        events: ['NodeLost', 'Fenced', 'OutOfServiceApplied'].map((x) => events.includes(x)),
        taintsApplied: /^prfence_controller_taints_total\{action="applied"\} 1$/m.test(
          await metrics.registry.metrics(),
        ),
      }).toEqual({
        spec: { fenceState: 'Fenced', reason: 'NodeLost', requestedBy: 'prfence-controller' },
        taint: { key: OOS, value: 'nodeshutdown', effect: 'NoExecute' },
        annotation: a.name,
        keyGone: true,
        proof: {
          volume: pv.name,
          identity: pv.lu.id,
          victimKey: formatKey(keyA),
          result: 'Fenced',
          generation: 'number',
          by: b.name,
          at: 'string',
        },
        proofBeforeTaint: true,
        isolation: {
          lost: true,
          proven: 1,
          total: 1,
          summary: '1/1',
          complete: true,
          taintedAt: 'string',
          taintedBootID: `${a.name}-boot-1`,
        },
        events: [true, true, true],
        taintsApplied: true,
      });

      // The node is back (its kubelet renews) and a person unfences it, but it has not
      // rebooted: the taint stays, and the taint does not become a new fence request.
      kubelets.renew(a.name);
      // Unfenced only once the controller sees the Lease renewed (LOST false): an unfence
      // while the node still looks lost is followed by a new NodeLost request.
      await eventually(async () => (await c.nodeFence(a.name)).status?.isolation?.lost === false, {
        timeoutMs: 30_000,
      });
      await c.setFenceState(a.name, 'Unfenced', true);
      await eventually(async () => (await c.events(a.name)).some((e) => e.reason === 'OutOfServiceKept'), {
        timeoutMs: 30_000,
      });
      const kept = await getNode(a.name);
      const keptNf = await c.nodeFence(a.name);
      expect({
        taint: !!oos(kept),
        spec: keptNf.spec?.fenceState,
        note: (await c.events(a.name)).find((e) => e.reason === 'OutOfServiceKept')?.note,
      }).toEqual({
        taint: true,
        spec: 'Unfenced',
        note: expect.stringMatching(/has not rebooted since the taint/) as unknown,
      });

      // A new boot: the taint and the annotation go, and status forgets the taint.
      await boot(a.name, `${a.name}-boot-2`);
      const untainted = await eventually(
        async () => {
          const n = await getNode(a.name);
          if (oos(n)) throw new Error('still tainted');
          return n;
        },
        { timeoutMs: 30_000 },
      );
      await eventually(async () => (await c.events(a.name)).some((e) => e.reason === 'OutOfServiceRemoved'), {
        timeoutMs: 30_000,
      });
      const after = await eventually(
        async () => {
          const x = await c.nodeFence(a.name);
          if (x.status?.isolation?.taintedAt) throw new Error('taint still recorded');
          return x;
        },
        { timeoutMs: 30_000 },
      );
      expect({
        annotation: untainted.metadata?.annotations?.[OUT_OF_SERVICE_BY],
        spec: after.spec?.fenceState,
        requestsForA: r.actions.filter((x) => x.kind === 'fence-request' && x.name === a.name).length,
        taints: r.actions.filter((x) => x.kind === 'taint' && x.name === a.name).length,
      }).toEqual({ annotation: undefined, spec: 'Unfenced', requestsForA: 1, taints: 2 });
    },
  );

  it(
    'a lost node with a device no live peer reconciles: proof 1/2, that volume pending with the reason, the metric names the node, and no taint',
    { timeout: 180_000 },
    async () => {
      const a = await liveNode('iso-c');
      const b = await liveNode('iso-d');
      const { agent: agentA, proxy: pa } = await c.startProxiedAgent(a.name);
      await c.startAgent(b.name);
      const shared = await c.pv();
      const alone = await c.pv();
      await c.attach(shared.name, a.name);
      await c.attach(shared.name, b.name);
      await c.attach(alone.name, a.name);
      await eventually(
        async () =>
          (await c.vr(shared.name)).status?.registrants?.length === 2 &&
          (await c.vr(alone.name)).status?.registrants?.length === 1,
        { timeoutMs: 30_000 },
      );
      const metrics = createControllerMetrics();
      const r = await startController(c, log, controllers, {
        autoFence: true,
        nodeLostAfterMs: LOST_AFTER,
        metrics,
      });

      pa.blackhole('both');
      a.kubelet.stop();
      // The controller writes the summary in the same reconcile that would apply the taint.
      const nf = await proofIs(a.name, '1/2');
      const text = await metrics.registry.metrics();
      expect({
        isolation: nf.status?.isolation,
        sharedKeyGone: !keysOf(shared.lu).includes(agentA.key),
        aloneKeyStays: keysOf(alone.lu).includes(agentA.key),
        taint: oos(await getNode(a.name)),
        taintActions: r.actions.filter((x) => x.kind === 'taint').length,
        metric: text.includes(`prfence_controller_unproven_devices{node="${a.name}"} 1`),
      }).toEqual({
        isolation: {
          lost: true,
          proven: 1,
          total: 2,
          summary: '1/2',
          complete: false,
          pending: [
            { volume: alone.name, reason: expect.stringMatching(/registered there on record/) as unknown },
          ],
        },
        sharedKeyGone: true,
        aloneKeyStays: true,
        taint: undefined,
        taintActions: 0,
        metric: true,
      });
    },
  );
  it(
    'RWO, its only attachment on the lost node: without an observer 0/1 and no taint; an observer that sees the LU fences it (proof by the observer), holds the reservation, 1/1 -> the taint; the volume then attached to a new node -> that node takes the reservation over from the observer, which leaves',
    { timeout: 180_000 },
    async () => {
      const a = await liveNode('iso-e');
      const b = await liveNode('iso-f');
      const n = await liveNode('iso-g');
      const { agent: agentA, proxy: pa } = await c.startProxiedAgent(a.name);
      const pv = await c.pv();
      const vaA = await c.attach(pv.name, a.name);
      await eventually(() => pv.lu.state().reservation?.holder === a.name, { timeoutMs: 30_000 });
      const metrics = createControllerMetrics();
      await startController(c, log, controllers, { autoFence: true, nodeLostAfterMs: LOST_AFTER, metrics });

      pa.blackhole('both');
      a.kubelet.stop();
      // No live node has the device: the proof cannot be made, so no taint.
      const unproven = await proofIs(a.name, '0/1');
      expect({
        pending: unproven.status?.isolation?.pending?.map((p) => p.volume),
        taint: oos(await getNode(a.name)),
        keyStays: keysOf(pv.lu).includes(agentA.key),
      }).toEqual({ pending: [pv.name], taint: undefined, keyStays: true });

      // An observer starts on node-b (the LU is visible there): it fences node-a.
      const observer = await c.startAgent(b.name, undefined, { observe: true });
      const tainted = await eventually(
        async () => {
          const x = await getNode(a.name);
          if (!oos(x)) throw new Error('not tainted yet');
          return x;
        },
        { timeoutMs: 90_000 },
      );
      const nf = await c.nodeFence(a.name);
      expect({
        annotation: tainted.metadata?.annotations?.[OUT_OF_SERVICE_BY],
        proofBy: nf.status?.proofs?.find((p) => p.volume === pv.name)?.by,
        summary: nf.status?.isolation?.summary,
        keys: keysOf(pv.lu),
        holder: pv.lu.state().reservation?.holder,
      }).toEqual({
        annotation: a.name,
        proofBy: b.name,
        summary: '1/1',
        keys: [observer.key],
        holder: b.name,
      });
      // node-a is refused by the storage, though it kept its path.
      expect(pv.lu.write(a.name)).not.toBe('ok');
      // The observer hands the reservation over (it is not attached there).
      await eventually(
        async () => (await c.nodeFence(b.name)).status?.handingOver?.includes(pv.name) === true,
        {
          timeoutMs: 30_000,
        },
      );

      // Kubernetes moves the volume (the attach-detach controller after the taint).
      const agentN = await c.startAgent(n.name);
      await c.detach(vaA);
      await c.attach(pv.name, n.name);
      await eventually(() => pv.lu.state().reservation?.holder === n.name, { timeoutMs: 30_000 });
      await eventually(() => !keysOf(pv.lu).includes(observer.key), { timeoutMs: 30_000 });
      const observerNf = await c.nodeFence(b.name);
      expect({
        keys: keysOf(pv.lu),
        write: pv.lu.write(n.name),
        aWrite: pv.lu.write(a.name) === 'ok',
        // A takeover, not a fence: the observer is not marked Fenced.
        observerFenced: observerNf.status?.phase === 'Fenced',
        lastFenced: (await c.vr(pv.name)).status?.lastFence?.victimNode,
      }).toEqual({
        keys: [agentN.key],
        write: 'ok',
        aWrite: false,
        observerFenced: false,
        lastFenced: a.name,
      });
    },
  );

  it(
    '40 volume records naming a node asked to be fenced, written one after the other -> its isolation summary reaches 0/40 in a few writes, not one per record',
    { timeout: 120_000 },
    async () => {
      const node = await c.node('iso-burst');
      await c.setFenceState(node, 'Fenced');
      const r = await startController(c, log, controllers, { resyncMs: 600_000 });
      await eventually(async () => r.actingFrom !== undefined, { timeoutMs: 30_000 });
      const n = 40;
      const key = formatKey(0x0e1500000000b001n);
      // The volumes exist (a VolumeReservation whose PV is gone is collected).
      const pvs = await Promise.all(Array.from({ length: n }, () => c.pv()));
      await Promise.all(
        pvs.map(({ name }) =>
          c.rest.send({
            method: 'POST',
            path: vrPath(),
            body: { apiVersion: API_VERSION, kind: VOLUME_RESERVATION.kind, metadata: { name } },
          }),
        ),
      );
      // One record after the other, as the fences of a failover are recorded.
      const t0 = performance.now();
      for (const { name } of pvs)
        await c.rest.apply(
          vrPath(name, 'status'),
          {
            apiVersion: API_VERSION,
            kind: VOLUME_RESERVATION.kind,
            metadata: { name },
            status: { registrants: [{ node, key }] },
          },
          'test-burst',
        );
      await proofIs(node, `0/${n}`);
      const windows = Math.ceil((performance.now() - t0) / ISOLATION_BATCH_MS);
      const writes = r.actions.filter((x) => x.kind === 'status' && x.name === node).length;
      // At most one write per batch window of the burst (and one at each end).
      expect({ writes, perWindow: writes <= windows + 2 }).toEqual({ writes, perWindow: true });
    },
  );
});
