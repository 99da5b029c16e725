/**
 * `prfence controller` against the real API server: leader election on a Lease (one
 * leader; a partitioned leader stops acting within its renew deadline and the other
 * replica takes over; two never act at once), the out-of-service taint recorded as a
 * fence request, and garbage collection of objects of deleted PVs and Nodes, with the
 * safety rules (registrants left, fenced node, preconditions). A partition goes through a
 * FaultProxy (a real TCP relay), never stop().
 */
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { deleteExact, nfPath, rkPath, vrPath } from '../../src/controller/api.js';
import { Controller, type ControllerOptions } from '../../src/controller/controller.js';
import type { Lease } from '../../src/controller/lease.js';
import { API_VERSION, VR_FINALIZER, type NodeFence, type VolumeReservation } from '../../src/crd/types.js';
import { KubeApiError, RestClient } from '../../src/kube/rest-client.js';
import { createControllerMetrics } from '../../src/obs/controller-metrics.js';
import { FaultProxy, kubeConfigVia } from '../envtest/fault-proxy.js';
import { eventually, uniqueName } from '../envtest/kube.js';
import { Cluster } from './agent-harness.js';
import { startReplica, stopReplicas, type Replica } from './node-leases.js';

const LEASE = { leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2000 };
const KEY_A = 'abcd000000000001';

type Run = Replica;

const gone = async (p: Promise<unknown>) => {
  try {
    await p;
    return false;
  } catch (e) {
    if (e instanceof KubeApiError && e.code === 404) return true;
    throw e;
  }
};

describe('prfence controller', () => {
  const c = new Cluster();
  const runs: Run[] = [];
  const log = pino({ level: process.env.PRFENCE_TEST_LOG ?? 'silent' });

  afterEach(() => stopReplicas(runs));

  async function namespace(): Promise<string> {
    const ns = uniqueName('ctl');
    await c.rest.send({ method: 'POST', path: '/api/v1/namespaces', body: { metadata: { name: ns } } });
    return ns;
  }

  /** A controller replica whose API traffic goes through its own FaultProxy. */
  const start = (ns: string, name: string, o: Partial<ControllerOptions> = {}): Promise<Run> =>
    startReplica(c, log, runs, ns, name, { leaderElection: { namespace: ns, ...LEASE }, ...o });

  const holder = async (ns: string) =>
    (await c.rest.get<Lease>(`/apis/coordination.k8s.io/v1/namespaces/${ns}/leases/prfence-controller`)).spec
      ?.holderIdentity;

  /** Waits until `run` reconciled `key` with `outcome` `times` more times from now. */
  async function reconciledAgain(run: Run, key: string, outcome: string, times = 2): Promise<void> {
    const from = run.reconciled.length;
    await eventually(
      () => run.reconciled.slice(from).filter((r) => r.key === key && r.outcome === outcome).length >= times,
      { timeoutMs: 30_000 },
    );
  }

  async function nodeFence(node: string, spec: NodeFence['spec'] = {}, status?: NodeFence['status']) {
    await c.rest.send({
      method: 'POST',
      path: nfPath(),
      body: { apiVersion: API_VERSION, kind: 'NodeFence', metadata: { name: node }, spec },
    });
    if (status)
      await c.rest.send({
        method: 'PATCH',
        path: `${nfPath(node)}/status`,
        contentType: 'application/merge-patch+json',
        body: { status },
      });
  }

  async function volumeReservation(pv: string, status?: VolumeReservation['status']) {
    await c.rest.send({
      method: 'POST',
      path: vrPath(),
      body: { apiVersion: API_VERSION, kind: 'VolumeReservation', metadata: { name: pv } },
    });
    if (status)
      await c.rest.send({
        method: 'PATCH',
        path: `${vrPath(pv)}/status`,
        contentType: 'application/merge-patch+json',
        body: { status },
      });
  }

  async function keyClaim(key: string, node: string) {
    await c.rest.send({
      method: 'POST',
      path: rkPath(),
      body: {
        apiVersion: API_VERSION,
        kind: 'ReservationKey',
        metadata: { name: key },
        spec: { node, nodeUID: 'u' },
      },
    });
  }

  /** Deletes a PV; the finalizer kubernetes.io/pv-protection is removed as its controller (not running here) would. */
  async function deletePv(name: string) {
    await c.core.deletePersistentVolume({ name });
    await c.rest.send({
      method: 'PATCH',
      path: `/api/v1/persistentvolumes/${name}`,
      contentType: 'application/merge-patch+json',
      body: { metadata: { finalizers: null } },
    });
  }
  const deleteNode = (name: string) => c.core.deleteNode({ name });
  const randomKey = () =>
    `abcd${Math.floor(Math.random() * 2 ** 48)
      .toString(16)
      .padStart(12, '0')}`;

  it(
    'two replicas: exactly one leads; the leader blackholed stops acting within the renew deadline, the other takes over and acts; acting periods never overlap',
    { timeout: 180_000 },
    async () => {
      const ns = await namespace();
      const a = await start(ns, 'a');
      await eventually(() => a.controller.mayAct(), { timeoutMs: 30_000 });
      const b = await start(ns, 'b');
      // b has read the Lease and saw a holding it.
      await eventually(() => b.controller.observedLeader() === a.controller.identity, { timeoutMs: 30_000 });
      expect([a.controller.mayAct(), b.controller.mayAct(), await holder(ns)]).toEqual([
        true,
        false,
        a.controller.identity,
      ]);

      // The leader acts: a VolumeReservation of a PV that never existed is collected by a.
      const vr1 = uniqueName('pv');
      await volumeReservation(vr1);
      await eventually(() => gone(c.vr(vr1)), { timeoutMs: 30_000 });
      expect(a.actions.filter((x) => x.name === vr1).map((x) => x.kind)).toEqual(['delete']);
      expect(b.actions).toEqual([]);

      // Partition: a keeps running, its API traffic goes into a blackhole.
      const cut = performance.now();
      a.proxy.blackhole('both');
      await eventually(() => a.acting[0]?.to !== undefined, { timeoutMs: 30_000 });
      const stoppedAfter = a.acting[0]!.to! - cut;
      await expect(a.ended).resolves.toBe('lost');
      await eventually(async () => (await holder(ns)) === b.controller.identity && b.controller.mayAct(), {
        timeoutMs: 40_000,
      });
      const tookOverAt = b.acting[0]!.from;

      // The new leader acts: the next collection is b's.
      const vr2 = uniqueName('pv');
      await volumeReservation(vr2);
      await eventually(() => gone(c.vr(vr2)), { timeoutMs: 30_000 });

      const actsOf = (r: Run, name: string) => r.actions.filter((x) => x.name === name).map((x) => x.kind);
      const within = (r: Run) =>
        r.actions.every((x) => r.acting.some((p) => x.at >= p.from && (p.to === undefined || x.at < p.to)));
      expect({
        // the last successful renew started before the cut, so the deadline is at most 10 s after it
        aStoppedWithinRenewDeadline: stoppedAfter <= LEASE.renewDeadlineMs + 1000,
        aActingPeriods: a.acting.length,
        bActingPeriods: b.acting.length,
        // never two acting at once (same process clock)
        bStartedAfterAStopped: tookOverAt > a.acting[0]!.to!,
        // at least lease duration - renew deadline between the two (the safety margin)
        gapMs: tookOverAt - a.acting[0]!.to! >= LEASE.leaseDurationMs - LEASE.renewDeadlineMs - 1000,
        vr2ByA: actsOf(a, vr2),
        vr2ByB: actsOf(b, vr2),
        aActedOnlyWhileLeading: within(a),
        bActedOnlyWhileLeading: within(b),
      }).toEqual({
        aStoppedWithinRenewDeadline: true,
        aActingPeriods: 1,
        bActingPeriods: 1,
        bStartedAfterAStopped: true,
        gapMs: true,
        vr2ByA: [],
        vr2ByB: ['delete'],
        aActedOnlyWhileLeading: true,
        bActedOnlyWhileLeading: true,
      });
    },
  );

  it(
    'stop() of the leader releases the Lease: the standby takes over well within the lease duration',
    { timeout: 120_000 },
    async () => {
      const ns = await namespace();
      const a = await start(ns, 'a');
      await eventually(() => a.controller.mayAct(), { timeoutMs: 30_000 });
      const b = await start(ns, 'b');
      await eventually(() => b.controller.observedLeader() === a.controller.identity, { timeoutMs: 30_000 });
      await a.controller.stop();
      const stoppedAt = performance.now();
      await expect(a.ended).resolves.toBe('stopped');
      await eventually(() => b.controller.mayAct(), { timeoutMs: 30_000 });
      expect({
        holder: await holder(ns),
        fastTakeover: b.acting[0]!.from - stoppedAt < LEASE.leaseDurationMs - 3000,
        noOverlap: b.acting[0]!.from > a.acting[0]!.to!,
      }).toEqual({ holder: b.controller.identity, fastTakeover: true, noOverlap: true });
    },
  );

  it(
    'out-of-service taint -> NodeFence spec Fenced / OutOfService / prfence-controller exactly once, Warning event; an untainted node untouched',
    { timeout: 120_000 },
    async () => {
      const ns = await namespace();
      const tainted = await c.node('oos');
      const other = await c.node('ok');
      const agentless = await c.node('oos-no-nf');
      await nodeFence(tainted);
      await nodeFence(other);
      const otherBefore = await c.nodeFence(other);
      const metrics = createControllerMetrics();
      const r = await start(ns, 'a', { metrics });
      await eventually(() => r.controller.mayAct(), { timeoutMs: 30_000 });
      // Any effect counts: NoSchedule here.
      await c.rest.send({
        method: 'PATCH',
        path: `/api/v1/nodes/${tainted}`,
        contentType: 'application/merge-patch+json',
        body: { spec: { taints: [{ key: 'node.kubernetes.io/out-of-service', effect: 'NoSchedule' }] } },
      });
      await c.taintOutOfService(agentless);
      await eventually(async () => (await c.nodeFence(tainted)).spec?.fenceState === 'Fenced', {
        timeoutMs: 30_000,
      });
      const fenced = await c.nodeFence(tainted);
      // Reconciled again and again (resync 1 s) after the request: nothing more is written.
      await reconciledAgain(r, `taint/${tainted}`, 'already-fenced', 3);
      await reconciledAgain(r, `taint/${other}`, 'untainted', 2);
      // A node no agent ever ran on has no NodeFence: none is created (no key to remove).
      await reconciledAgain(r, `taint/${agentless}`, 'no-nodefence', 1);
      const events = (await c.events(tainted)).filter((e) => e.reason === 'OutOfService');
      const after = await c.nodeFence(tainted);
      const otherAfter = await c.nodeFence(other);
      const metricsText = await metrics.registry.metrics();
      expect({
        spec: fenced.spec,
        manager: (fenced.metadata as { managedFields?: { manager: string }[] }).managedFields?.some(
          (m) => m.manager === 'prfence-controller',
        ),
        // The spec was not written again (its status may be: the proof summary, isolation.ts).
        specUnchanged:
          (after.metadata as { generation?: number }).generation ===
          (fenced.metadata as { generation?: number }).generation,
        requests: r.actions.filter((x) => x.kind === 'fence-request').map((x) => x.name),
        events: events.map((e) => [e.reportingInstance, /out-of-service \(NoSchedule\)/.test(e.note)]),
        otherUntouched: otherAfter.metadata.resourceVersion === otherBefore.metadata.resourceVersion,
        otherSpec: otherAfter.spec,
        agentlessNodeFence: await gone(c.nodeFence(agentless)),
        metric: /^prfence_controller_fence_requests_total\{reason="OutOfService"\} 1$/m.test(metricsText),
        leaderGauge: /^prfence_controller_is_leader 1$/m.test(metricsText),
      }).toEqual({
        spec: { fenceState: 'Fenced', reason: 'OutOfService', requestedBy: 'prfence-controller' },
        manager: true,
        specUnchanged: true,
        requests: [tainted],
        events: [[r.controller.identity, true]],
        otherUntouched: true,
        otherSpec: { fenceState: 'Unfenced' },
        agentlessNodeFence: true,
        metric: true,
        leaderGauge: true,
      });
    },
  );

  it(
    'GC: VolumeReservation of a deleted PV without registrants deleted (its finalizer then removed); with registrants kept (event says why) until they are gone; of a live PV untouched',
    { timeout: 120_000 },
    async () => {
      const ns = await namespace();
      const empty = await c.pv();
      const held = await c.pv();
      const live = await c.pv();
      await volumeReservation(empty.name, { foreignKeys: 1 });
      await volumeReservation(held.name, { registrants: [{ node: 'gone-node', key: KEY_A }] });
      await volumeReservation(live.name);
      const metrics = createControllerMetrics();
      const r = await start(ns, 'a', { metrics });
      await eventually(() => r.controller.mayAct(), { timeoutMs: 30_000 });
      // The desired state brings the finalizer: the delete below leaves the object being
      // deleted until the controller, on a fresh read, removes it.
      for (const n of [empty.name, held.name])
        await eventually(async () => (await c.vr(n)).metadata.finalizers?.includes(VR_FINALIZER) === true, {
          timeoutMs: 30_000,
        });
      await deletePv(empty.name);
      await deletePv(held.name);
      await eventually(() => gone(c.vr(empty.name)), { timeoutMs: 30_000 });
      await reconciledAgain(r, `vr/${held.name}`, 'kept', 2);
      await reconciledAgain(r, `vr/${live.name}`, 'in-use', 1);
      const kept = await c.vr(held.name);
      const blocked = (await c.events(held.name)).filter((e) => e.reason === 'GarbageCollectionBlocked');
      expect({
        keptRegistrants: kept.status?.registrants?.length,
        blockedEvents: blocked.length,
        why: blocked[0]?.note,
        liveStillThere: (await c.vr(live.name)).metadata.name,
        deletes: r.actions.filter((x) => x.kind === 'delete').map((x) => x.name),
        releases: r.actions.filter((x) => x.kind === 'release').map((x) => x.name),
        metric: /^prfence_gc_deletions_total\{kind="VolumeReservation"\} 1$/m.test(
          await metrics.registry.metrics(),
        ),
      }).toEqual({
        keptRegistrants: 1,
        blockedEvents: 1,
        why: expect.stringMatching(/1 key\(s\) still registered on the device: gone-node abcd000000000001/),
        liveStillThere: live.name,
        deletes: [empty.name],
        releases: [empty.name],
        metric: true,
      });
      // The last key left the device (the agent removed its entry): collected.
      await c.rest.send({
        method: 'PATCH',
        path: `${vrPath(held.name)}/status`,
        contentType: 'application/merge-patch+json',
        body: { status: { registrants: null } },
      });
      await eventually(() => gone(c.vr(held.name)), { timeoutMs: 30_000 });
    },
  );

  it(
    'GC: NodeFence of a deleted Node deleted with its key claims unless fenced (spec or mark) or its key is still on a device; of a live Node untouched',
    { timeout: 120_000 },
    async () => {
      const ns = await namespace();
      const plain = await c.node('gc');
      const requested = await c.node('gc-req');
      const marked = await c.node('gc-mark');
      const onDevice = await c.node('gc-dev');
      const live = await c.node('gc-live');
      const keys = {
        plain: randomKey(),
        requested: randomKey(),
        marked: randomKey(),
        onDevice: randomKey(),
        live: randomKey(),
      };
      await nodeFence(plain, {}, { key: keys.plain, phase: 'Registered' });
      await nodeFence(requested, { fenceState: 'Fenced', reason: 'test', requestedBy: 'test' });
      await nodeFence(marked, { fenceState: 'Unfenced' }, { phase: 'Fenced', fencedBy: 'peer' });
      await nodeFence(onDevice, {}, { key: keys.onDevice });
      await nodeFence(live);
      for (const [n, k] of [
        [plain, keys.plain],
        [requested, keys.requested],
        [marked, keys.marked],
        [onDevice, keys.onDevice],
        [live, keys.live],
      ] as const)
        await keyClaim(k, n);
      const pvOnDevice = uniqueName('pv-held');
      await volumeReservation(pvOnDevice, { registrants: [{ node: onDevice, key: keys.onDevice }] });
      // The PV of that VolumeReservation exists, so only the node rule is under test.
      await c.core.createPersistentVolume({
        body: {
          metadata: { name: pvOnDevice },
          spec: {
            capacity: { storage: '1Gi' },
            accessModes: ['ReadWriteOnce'],
            csi: { driver: 'test.csi.prfence.io', volumeHandle: pvOnDevice },
          },
        },
      });
      const r = await start(ns, 'a');
      await eventually(() => r.controller.mayAct(), { timeoutMs: 30_000 });
      for (const n of [plain, requested, marked, onDevice]) await deleteNode(n);
      await eventually(
        async () => (await gone(c.nodeFence(plain))) && (await gone(c.rest.get(rkPath(keys.plain)))),
        {
          timeoutMs: 30_000,
        },
      );
      for (const n of [requested, marked, onDevice]) await reconciledAgain(r, `nf/${n}`, 'kept', 2);
      const exists = async (p: Promise<unknown>) => !(await gone(p));
      const blockedNote = async (n: string) =>
        (await c.events(n)).filter((e) => e.reason === 'GarbageCollectionBlocked').map((e) => e.note)[0];
      expect({
        requested: [await exists(c.nodeFence(requested)), await exists(c.rest.get(rkPath(keys.requested)))],
        marked: [await exists(c.nodeFence(marked)), await exists(c.rest.get(rkPath(keys.marked)))],
        onDevice: [await exists(c.nodeFence(onDevice)), await exists(c.rest.get(rkPath(keys.onDevice)))],
        live: [await exists(c.nodeFence(live)), await exists(c.rest.get(rkPath(keys.live)))],
        whyRequested: await blockedNote(requested),
        whyMarked: await blockedNote(marked),
        whyOnDevice: await blockedNote(onDevice),
        deletes: r.actions
          .filter((x) => x.kind === 'delete')
          .map((x) => `${x.resource}/${x.name}`)
          .sort(),
      }).toEqual({
        requested: [true, true],
        marked: [true, true],
        onDevice: [true, true],
        live: [true, true],
        whyRequested: expect.stringMatching(/asked to be fenced/),
        whyMarked: expect.stringMatching(/marked fenced .* by peer/),
        whyOnDevice: expect.stringContaining(`still registered on ${pvOnDevice}`),
        deletes: [`nodefences/${plain}`, `reservationkeys/${keys.plain}`].sort(),
      });
    },
  );

  it('API server unreachable from the start (caches never sync): stop() still returns promptly', async () => {
    const proxy = await FaultProxy.start({ target: c.kc.getCurrentCluster()!.server });
    proxy.blackhole('both');
    const ctl = new Controller({
      kubeConfig: kubeConfigVia(c.kc, proxy),
      log,
      identity: uniqueName('alone'),
      leaderElection: false,
    });
    const ended = ctl.run();
    expect(ctl.mayAct()).toBe(true);
    const t0 = performance.now();
    const bound = new Promise((r) => setTimeout(() => r('still stopping after 10 s'), 10_000));
    const result = await Promise.race([ctl.stop().then(() => 'stopped'), bound]);
    const took = performance.now() - t0;
    await proxy.close();
    expect({ result, end: await ended, mayAct: ctl.mayAct(), quick: took < 10_000 }).toEqual({
      result: 'stopped',
      end: 'stopped',
      mayAct: false,
      quick: true,
    });
  });

  it('a delete rests on the object read: changed or re-created since -> 409, the object stays', async () => {
    const rest = new RestClient(c.kc);
    const name = uniqueName('pv');
    await volumeReservation(name);
    const read = await c.vr(name);
    await c.rest.send({
      method: 'PATCH',
      path: vrPath(name),
      contentType: 'application/merge-patch+json',
      body: { metadata: { labels: { changed: 'yes' } } },
    });
    const changed = await deleteExact(rest, vrPath(name), read.metadata).catch((e: KubeApiError) => e.code);
    await c.rest.send({ method: 'DELETE', path: vrPath(name) });
    await volumeReservation(name);
    const recreated = await deleteExact(rest, vrPath(name), {
      uid: read.metadata.uid!,
      resourceVersion: (await c.vr(name)).metadata.resourceVersion!,
    }).catch((e: KubeApiError) => e.code);
    expect({ changed, recreated, stillThere: (await c.vr(name)).metadata.name }).toEqual({
      changed: 409,
      recreated: 409,
      stillThere: name,
    });
    rest.close();
  });
});
