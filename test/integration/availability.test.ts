/**
 * Availability of the controller against the real API server, with real agents on memory
 * LUs and two controller replicas (`--auto-fence --node-lost-after 5s`), each through its
 * own FaultProxy. A killed replica is a blackholed one: its process keeps running, it sends
 * nothing more the cluster sees and does not release its Lease (as after SIGKILL or a
 * partition). A lost node is a partition too: its agent keeps running with its devices.
 *
 * - The leader dies right after its fence request for a lost node with 50 volumes: the
 *   other replica leads within 15 s, the proof of isolation completes, the taint goes on
 *   once, the volumes move, and no fence runs twice or against a legitimate node. The
 *   agents run `--scope=node` (the chart's default): what they act on is the desired state
 *   the replicas write, so the volumes move only once the new leader has written it.
 * - The controller is gone for 60 s, with agents of either scope: the agents keep every
 *   registration and reservation and release nothing. A volume attached meanwhile is
 *   registered at once by a cluster-scoped agent (it needs no controller); a node-scoped
 *   one registers it only once the controller is back and wrote its desired state. The
 *   restarted controller then requests no fence, taints nothing and deletes nothing.
 */
import pino from 'pino';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { V1Node } from '@kubernetes/client-node';
import { formatKey } from '../../src/pr/key.js';
import type { MemoryLogicalUnit } from '../../src/pr/memory/index.js';
import { eventually, uniqueName } from '../envtest/kube.js';
import type { AgentScope } from '../../src/agent/cluster-informers.js';
import { Cluster, type DeviceCall } from './agent-harness.js';
import {
  ensureNamespace,
  Kubelets,
  liveNode,
  startReplica,
  stopReplicas,
  type Replica,
} from './node-leases.js';

const OOS = 'node.kubernetes.io/out-of-service';
/** Short enough that a takeover fits in 15 s with room: at most lease + retry after the kill. */
const LEASE = { leaseDurationMs: 6000, renewDeadlineMs: 4000, retryPeriodMs: 1000 };
const CONTROLLER = { autoFence: true, nodeLostAfterMs: 5000 };
const VOLUMES = 50;
const REMOVALS = new Set(['preempt', 'preemptAndAbort', 'clear', 'release']);

const keysOf = (lu: MemoryLogicalUnit) => lu.state().registrations.map((r) => r.key);

describe('controller availability: the leader killed mid-failover, the controller down for 60 s', () => {
  const c = new Cluster();
  const log = pino({ level: process.env.PRFENCE_TEST_LOG ?? 'silent' });
  const replicas: Replica[] = [];
  const kubelets = new Kubelets(c.rest);

  beforeAll(() => c.unfenceAll());
  afterEach(async () => {
    await stopReplicas(replicas);
    await c.stopAll();
    await kubelets.cleanup();
    await c.unfenceAll(); // no taint or Fenced node left for the next test files
  });

  const getNode = (n: string) => c.rest.get<V1Node>(`/api/v1/nodes/${n}`);
  const oos = (n: V1Node) => n.spec?.taints?.find((t) => t.key === OOS);
  const options = (ns: string) => ({ ...CONTROLLER, leaderElection: { namespace: ns, ...LEASE } });
  /** Two replicas campaigning in a namespace of their own; the first leads. */
  async function replicaPair(): Promise<[Replica, Replica, string]> {
    const ns = uniqueName('avail');
    await ensureNamespace(c.rest, ns);
    const o = options(ns);
    const first = await startReplica(c, log, replicas, ns, 'first', o);
    await eventually(() => first.controller.mayAct(), { timeoutMs: 30_000 });
    const second = await startReplica(c, log, replicas, ns, 'second', o);
    await eventually(() => second.controller.observedLeader() === first.controller.identity, {
      timeoutMs: 30_000,
    });
    return [first, second, ns];
  }
  /** Every PR call that can take a key off a device, as the agents made it. */
  function removalsRecorded(): DeviceCall[] {
    const calls: DeviceCall[] = [];
    c.deviceCalls.add((x) => {
      if (REMOVALS.has(x.op)) calls.push(x);
    });
    return calls;
  }

  it(
    `node-scoped agents, the leader killed right after its fence request for a lost node with ${VOLUMES} volumes: the other replica leads within 15 s (never both), completes the proof (${VOLUMES}/${VOLUMES}) and taints once; one fence request; each stale key removed exactly once; the legitimate key never touched; the volumes move`,
    { timeout: 300_000 },
    async () => {
      const a = await liveNode(c, kubelets, 'av-a');
      const b = await liveNode(c, kubelets, 'av-b');
      // The replicas first: node-scoped agents learn of their volumes from the leader.
      const [first, second] = await replicaPair();
      const { agent: agentA, proxy: pa } = await c.startProxiedAgent(a.name, { scope: 'node' });
      const pvs: { name: string; lu: MemoryLogicalUnit }[] = [];
      for (let i = 0; i < VOLUMES; i++) pvs.push(await c.pv());
      const vas = await Promise.all(pvs.map((pv) => c.attach(pv.name, a.name)));
      await eventually(() => pvs.every((pv) => pv.lu.state().reservation?.holder === a.name), {
        timeoutMs: 60_000,
      });
      // node-b sees every LU (an observer): it proves node-a's isolation on each.
      const agentB = await c.startAgent(b.name, undefined, { observe: true, scope: 'node' });
      const removals = removalsRecorded();

      pa.blackhole('both'); // node-a keeps running with its devices; its API traffic is gone
      a.kubelet.stop();
      await eventually(async () => (await c.nodeFence(a.name)).spec?.fenceState === 'Fenced', {
        timeoutMs: 60_000,
      });
      first.proxy.blackhole('both'); // the leader dies the moment its request is seen
      const killedAt = performance.now();
      const proofsAtKill = (await c.nodeFence(a.name)).status?.proofs?.length ?? 0;

      await eventually(() => second.controller.mayAct(), { timeoutMs: 60_000 });
      const takeoverMs = second.acting[0]!.from - killedAt;
      const tainted = await eventually(
        async () => {
          const n = await getNode(a.name);
          if (!oos(n)) throw new Error('not tainted yet');
          return n;
        },
        { timeoutMs: 120_000 },
      );
      const nf = await c.nodeFence(a.name);

      // The attach-detach controller moves the volumes once the node is out of service.
      await Promise.all(vas.map((va) => c.detach(va)));
      await Promise.all(pvs.map((pv) => c.attach(pv.name, b.name)));
      await eventually(
        () =>
          pvs.every(
            (pv) => pv.lu.state().reservation?.holder === b.name && keysOf(pv.lu).join() === `${agentB.key}`,
          ),
        { timeoutMs: 60_000 },
      );

      const all = [...first.actions, ...second.actions];
      const removedOk = (key: bigint) =>
        removals.filter((x) => x.outcome === 'ok' && x.op !== 'clear' && x.args[1] === key);
      const perLu = new Map<string, number>();
      for (const x of removedOk(agentA.key)) perLu.set(x.lu.id, (perLu.get(x.lu.id) ?? 0) + 1);
      expect({
        killedMidFailover: proofsAtKill < VOLUMES && first.actions.every((x) => x.kind !== 'taint'),
        firstStopped: first.acting.length === 1 && first.acting[0]!.to !== undefined,
        neverBoth: second.acting[0]!.from > (first.acting[0]!.to ?? Infinity),
        takeoverWithin15s: takeoverMs < 15_000,
        fenceRequests: all.filter((x) => x.kind === 'fence-request' && x.name === a.name).length,
        taintsBySecond: second.actions.filter((x) => x.kind === 'taint' && x.name === a.name).length,
        taintsByFirst: first.actions.filter((x) => x.kind === 'taint').length,
        taint: oos(tainted)?.effect,
        summary: nf.status?.isolation?.summary,
        // each LU: node-a's key taken off exactly once, by node-b
        staleRemovedOncePerLu: pvs.every((pv) => perLu.get(pv.lu.id) === 1),
        removedByOthers: removedOk(agentA.key).filter((x) => x.node !== b.name).length,
        // node-b's key is legitimate everywhere: no call ever named it as a victim, none cleared
        legitimateTouched: removals.filter((x) => x.args[1] === agentB.key || x.op === 'clear').length,
        aRefused: pvs.every((pv) => pv.lu.write(a.name) !== 'ok'),
      }).toEqual({
        killedMidFailover: true,
        firstStopped: true,
        neverBoth: true,
        takeoverWithin15s: true,
        fenceRequests: 1,
        taintsBySecond: 1,
        taintsByFirst: 0,
        taint: 'NoExecute',
        summary: `${VOLUMES}/${VOLUMES}`,
        staleRemovedOncePerLu: true,
        removedByOthers: 0,
        legitimateTouched: 0,
        aRefused: true,
      });
      await expect(first.ended).resolves.toBe('lost');
    },
  );

  it.for<[AgentScope, string]>([
    ['cluster', 'is registered and reserved by its agent while the controller is down'],
    ['node', 'is not registered while the controller is down, and is registered once it is back'],
  ])(
    'agents --scope=%s, the controller down for 60 s: every registration and reservation stays, no key is removed or released; a volume attached meanwhile %s; the restarted controller requests no fence, taints nothing, deletes nothing',
    { timeout: 240_000 },
    async ([scope]) => {
      const a = await liveNode(c, kubelets, `av-c-${scope}`);
      const b = await liveNode(c, kubelets, `av-d-${scope}`);
      // Node-scoped agents need the controller's desired state from the start.
      const early = scope === 'node' ? await replicaPair() : undefined;
      const agentA = await c.startAgent(a.name, undefined, { scope });
      const agentB = await c.startAgent(b.name, undefined, { scope });
      const rwoA = await c.pv();
      const rwoB = await c.pv();
      const shared = await c.pv();
      await c.attach(rwoA.name, a.name);
      await c.attach(rwoB.name, b.name);
      await c.attach(shared.name, a.name);
      await c.attach(shared.name, b.name);
      const lus = [rwoA.lu, rwoB.lu, shared.lu];
      await eventually(
        () =>
          rwoA.lu.state().reservation?.holder === a.name &&
          rwoB.lu.state().reservation?.holder === b.name &&
          keysOf(shared.lu).length === 2 &&
          shared.lu.state().reservation !== undefined,
        { timeoutMs: 30_000 },
      );
      const [first, , ns] = early ?? (await replicaPair());
      const picture = () =>
        lus.map((lu) => ({ keys: keysOf(lu).map(formatKey).sort(), holder: lu.state().reservation?.holder }));
      const before = picture();
      const removals = removalsRecorded();

      // Down: no request of the controllers reaches the API server any more.
      for (const r of replicas) r.proxy.blackhole('both');
      const downAt = performance.now();
      const changed: unknown[] = [];
      const sampler = setInterval(() => {
        const now = picture();
        if (JSON.stringify(now) !== JSON.stringify(before)) changed.push(now);
      }, 250);
      // Meanwhile a new volume is attached to node-b: a cluster-scoped agent needs no
      // controller for it; a node-scoped one does not see it (no desired state for it).
      const late = await c.pv();
      await c.attach(late.name, b.name);
      if (scope === 'cluster')
        await eventually(() => late.lu.state().reservation?.holder === b.name, { timeoutMs: 30_000 });
      await expect(first.ended).resolves.toBe('lost');
      await new Promise((r) => setTimeout(r, Math.max(0, 60_000 - (performance.now() - downAt))));
      clearInterval(sampler);
      const lateWhileDown = keysOf(late.lu);
      const nfs = await Promise.all([a.name, b.name].map((n) => c.nodeFence(n)));
      const nodes = await Promise.all([a.name, b.name].map(getNode));
      expect({
        changed,
        removals: removals.map((x) => `${x.node} ${x.op}`),
        after: picture(),
        late: lateWhileDown,
        fenced: nfs.map((x) => x.spec?.fenceState === 'Fenced' || x.status?.phase === 'Fenced'),
        tainted: nodes.map((n) => !!oos(n)),
      }).toEqual({
        changed: [],
        removals: [],
        after: before,
        late: scope === 'cluster' ? [agentB.key] : [],
        fenced: [false, false],
        tainted: [false, false],
      });

      // The controller restarts (a new pod, same Lease): it leads once the old Lease
      // expired, reconciles both nodes repeatedly, and finds nothing to do.
      await stopReplicas(replicas);
      const again = await startReplica(c, log, replicas, ns, 'restarted', options(ns));
      await eventually(() => again.controller.mayAct(), { timeoutMs: 30_000 });
      // Node loss is judged no sooner than nodeLostAfter after the start (every second, on
      // the loss tracker's tick): wait past that, until both nodes' isolation and taint were
      // reconciled (resync: every second) twice more.
      const startedAt = performance.now();
      const judged = (key: string) =>
        again.reconciled.filter((r) => r.key === key && r.at - startedAt > CONTROLLER.nodeLostAfterMs + 2000)
          .length >= 2;
      await eventually(() => [a.name, b.name].every((n) => judged(`iso/${n}`) && judged(`taint/${n}`)), {
        timeoutMs: 60_000,
      });
      // A node-scoped agent registers the late volume from the desired state written now.
      await eventually(() => late.lu.state().reservation?.holder === b.name, { timeoutMs: 30_000 });
      expect({
        actions: again.actions.filter((x) => ['fence-request', 'taint', 'delete'].includes(x.kind)),
        after: picture(),
        late: keysOf(late.lu),
        aStillRegistered: keysOf(rwoA.lu).includes(agentA.key),
      }).toEqual({ actions: [], after: before, late: [agentB.key], aStillRegistered: true });
    },
  );
});
