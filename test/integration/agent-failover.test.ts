import { afterEach, describe, expect, it } from 'vitest';
import { KubeConfig } from '@kubernetes/client-node';
import { Agent, type FenceEvent } from '../../src/agent/agent.js';
import { vrPath } from '../../src/agent/status-writer.js';
import { createAgentMetrics } from '../../src/obs/metrics.js';
import { formatKey } from '../../src/pr/key.js';
import { KubeApiError } from '../../src/kube/rest-client.js';
import { eventually } from '../envtest/kube.js';
import type { Controller } from '../../src/controller/controller.js';
import { evaluateProof } from '../../src/controller/isolation-proof.js';
import { Cluster } from './agent-harness.js';
import { startController } from './node-leases.js';

const keysOf = (lu: { state(): { registrations: { key: bigint }[] } }) =>
  lu.state().registrations.map((r) => r.key);

describe('agent against a real API server (memory LUs)', () => {
  const c = new Cluster();
  const controllers: Controller[] = [];
  afterEach(async () => {
    await Promise.all(controllers.splice(0).map((x) => x.stop()));
    await c.stopAll();
  });

  it('RWO failover a -> b while a is partitioned: a fenced at the storage, status recorded (S3)', async () => {
    const [na, nb] = [await c.node('node-a'), await c.node('node-b')];
    const { name: pv, lu } = await c.pv();
    const a = await c.startAgent(na);
    const metrics = createAgentMetrics();
    const fences: FenceEvent[] = [];
    const b = await c.startAgent(nb, c.kc, { metrics, onFence: (e) => fences.push(e) });
    const vaA = await c.attach(pv, na);
    await eventually(() => lu.state().reservation?.holder === na, { timeoutMs: 20_000 });
    expect(lu.write(na)).toBe('ok');
    await a.stop(); // partition: node-a's agent sees nothing more, node-a keeps writing
    expect(lu.state().registrations.map((r) => r.initiator)).toEqual([na]); // S8: stop released nothing
    await c.detach(vaA);
    await c.attach(pv, nb);
    await eventually(() => lu.state().reservation?.holder === nb, { timeoutMs: 20_000 });
    expect(keysOf(lu)).toEqual([b.key]);
    expect(lu.write(na)).toBe('refused');
    expect(lu.write(nb)).toBe('ok');
    const vr = await eventually(async () => {
      const v = await c.vr(pv);
      if (v.status?.lastFence?.victimNode !== na) throw new Error('no lastFence yet');
      if (v.status.registrants?.length !== 1) throw new Error('stale registrant not dropped yet');
      return v;
    });
    expect(vr.status).toMatchObject({
      holder: { node: nb, key: formatKey(b.key) },
      reservationType: 'write-exclusive-reg-only',
      lastFence: { victimKey: formatKey(a.key), by: nb, result: 'Fenced' },
      registrants: [{ node: nb, key: formatKey(b.key), legitimate: true }],
      device: { identity: lu.id },
    });
    const nfA = await eventually(async () => {
      const nf = await c.nodeFence(na);
      if (nf.status?.phase !== 'Fenced') throw new Error(`phase ${nf.status?.phase}`);
      return nf;
    });
    expect(nfA.status?.fencedBy).toBe(nb);
    // VOLUMES: node-b's key is on one device.
    await eventually(async () => (await c.nodeFence(nb)).status?.volumes === 1);
    // One Warning event per fence, on the victim's NodeFence, written by the fencing node.
    const events = await eventually(async () => {
      const e = await c.events(na);
      if (e.length === 0) throw new Error('no event yet');
      return e;
    });
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ reason: 'Fenced', reportingInstance: nb });
    expect(events[0]!.note).toContain(formatKey(a.key));
    // Observable: one fence, timed from the VolumeAttachment node-b saw until the key was gone.
    expect(fences).toHaveLength(1);
    expect(fences[0]).toMatchObject({ pv, victimKey: a.key, victimNode: na, result: 'fenced' });
    expect(fences[0]!.sinceTriggerMs).toBeGreaterThan(0);
    const text = await metrics.registry.metrics();
    expect(text).toContain('prfence_fences_total{result="fenced"} 1');
    expect(text).toContain('prfence_fence_duration_seconds_count 1');
    expect(text).toMatch(/prfence_kube_api_requests_total\{method="PATCH",code="20\d"\} [1-9]/);
  });

  it('S1: RWX with three legitimate nodes, one goes stale -> only its key goes; legitimate keys never leave, not for an instant', async () => {
    const [na, nb, nc] = [await c.node('node-a'), await c.node('node-b'), await c.node('node-c')];
    const { name: pv, lu } = await c.pv();
    const agents = [await c.startAgent(na), await c.startAgent(nb), await c.startAgent(nc)];
    const vas = [await c.attach(pv, na), await c.attach(pv, nb), await c.attach(pv, nc)];
    const [ka, kb, kc] = agents.map((x) => x.key) as [bigint, bigint, bigint];
    await eventually(() => keysOf(lu).length === 3 && lu.state().reservation !== null, { timeoutMs: 20_000 });
    // Watch the device on every tick from here on: a legitimate key that disappears even
    // briefly (preempted and re-registered) breaks S1.
    const lost: string[] = [];
    const probe = setInterval(() => {
      const keys = keysOf(lu);
      for (const [n, k] of [
        [na, ka],
        [nb, kb],
      ] as const)
        if (!keys.includes(k)) lost.push(n);
    }, 1);
    try {
      // node-c is cut off (its agent stops) and its attachment is removed: it is stale.
      await agents[2]!.stop();
      await c.detach(vas[2]!);
      await eventually(() => !keysOf(lu).includes(kc), { timeoutMs: 20_000 });
      await eventually(async () => (await c.nodeFence(nc)).status?.phase === 'Fenced');
      await new Promise((r) => setTimeout(r, 1000)); // both survivors reconcile again (resync)
    } finally {
      clearInterval(probe);
    }
    expect(lost).toEqual([]);
    expect(keysOf(lu).sort()).toEqual([ka, kb].sort());
    expect([lu.write(na), lu.write(nb), lu.write(nc)]).toEqual(['ok', 'ok', 'refused']);
    expect([na, nb]).toContain(lu.state().reservation?.holder);
  });

  it('S2: the fenced node restarts with an attachment and the Fenced mark -> no re-registration until unfenced', async () => {
    const [na, nb] = [await c.node('node-a'), await c.node('node-b')];
    const { name: pv, lu } = await c.pv();
    const a = await c.startAgent(na);
    await c.startAgent(nb);
    await c.attach(pv, na);
    await c.attach(pv, nb); // RWX: both legitimate
    await eventually(() => keysOf(lu).length === 2, { timeoutMs: 20_000 });
    await a.stop(); // node-a is cut off; a person fences it
    await c.setFenceState(na, 'Fenced');
    await eventually(() => !keysOf(lu).includes(a.key), { timeoutMs: 20_000 }).catch((e: unknown) => {
      throw new Error(
        `key of a still on the device: ${JSON.stringify(lu.state(), (_k, v) => (typeof v === 'bigint' ? v.toString(16) : v))}; ${String(e)}`,
      );
    });
    expect(lu.write(na)).toBe('refused');
    await eventually(async () => (await c.nodeFence(na)).status?.phase === 'Fenced');
    // The request is withdrawn but the node was fenced by a peer: it stays off the device.
    await c.setFenceState(na, 'Unfenced');
    const a2 = await c.startAgent(na);
    expect(a2.key).toBe(a.key); // S6: stable across restarts
    expect(a2.mayRegister()).toBe(false);
    await new Promise((r) => setTimeout(r, 1500)); // give it time to (wrongly) act
    expect(keysOf(lu)).not.toContain(a.key);
    // Unfence clears the mark: now it registers again.
    await c.setFenceState(na, 'Unfenced', true);
    await eventually(() => keysOf(lu).includes(a.key), { timeoutMs: 20_000 });
  });

  it('S2: API server unreachable at start -> the agent does not start and registers nothing', async () => {
    const na = await c.node('node-a');
    const { lu } = await c.pv();
    const bad = new KubeConfig();
    bad.loadFromOptions({
      clusters: [{ name: 'x', server: 'https://127.0.0.1:1', skipTLSVerify: true }],
      users: [{ name: 'u', token: 't' }],
      contexts: [{ name: 'x', cluster: 'x', user: 'u' }],
      currentContext: 'x',
    });
    await expect(
      Agent.start({ kubeConfig: bad, nodeName: na, log: c.log, openDevice: async () => lu.initiator(na) }),
    ).rejects.toThrow();
    expect(lu.state().registrations).toEqual([]);
  });

  it('device not present yet -> DeviceFound=False condition, retried with backoff; it appears -> reserved', async () => {
    const na = await c.node('node-a');
    const { name: pv, lu } = await c.pv();
    c.lus.delete(lu.id); // the node cannot see the logical unit yet
    await c.startAgent(na);
    await c.attach(pv, na);
    const vr = await eventually(async () => {
      const v = await c.vr(pv);
      if (!v.status?.conditions?.length) throw new Error('no condition yet');
      return v;
    });
    expect(vr.status?.conditions).toEqual([
      expect.objectContaining({ type: 'DeviceFound', status: 'False', reason: 'DeviceNotFound' }),
      expect.objectContaining({ type: 'Ready', status: 'False', reason: 'DeviceNotFound' }),
    ]);
    expect(vr.status?.conditions?.[0]?.message).toContain(lu.id);
    c.lus.set(lu.id, lu); // the path comes up (e.g. a rescan)
    await eventually(() => lu.state().reservation?.holder === na, { timeoutMs: 30_000 });
    await eventually(async () => {
      const v = await c.vr(pv);
      return !v.status?.conditions?.some((x) => x.type === 'DeviceFound') && v.status?.holder?.node === na;
    });
  });

  it('the device disappears from a registered node (path loss) -> DeviceFound=False and Ready=False, and the record still names its key (registrant entry, holder): its proof of isolation counts the volume as pending', async () => {
    const na = await c.node('node-a');
    const { name: pv, lu } = await c.pv();
    const a = await c.startAgent(na);
    await c.attach(pv, na);
    await eventually(async () => (await c.vr(pv)).status?.holder?.node === na, { timeoutMs: 30_000 });
    // Every call of node-a fails and the LU no longer resolves there; the key stays on it.
    lu.inject({ kind: 'not-sent', initiator: na, op: 'any', times: Infinity });
    c.lus.delete(lu.id);
    const vr = await eventually(
      async () => {
        const v = await c.vr(pv);
        if (!v.status?.conditions?.some((x) => x.type === 'DeviceFound' && x.status === 'False'))
          throw new Error('no DeviceFound=False yet');
        return v;
      },
      { timeoutMs: 30_000 },
    );
    const proof = evaluateProof(await c.nodeFence(na), [vr]);
    const ready = vr.status?.conditions?.find((x) => x.type === 'Ready');
    expect({
      ready: `${ready?.status} ${ready?.reason}`,
      onDevice: keysOf(lu),
      registrants: vr.status?.registrants?.map((r) => [r.node, r.key]),
      holder: vr.status?.holder,
      pending: proof.pending.map((p) => p.volume),
      complete: proof.complete,
    }).toEqual({
      ready: 'False DeviceNotFound', // its own earlier Ready (Reserved) is replaced
      onDevice: [a.key],
      registrants: [[na, formatKey(a.key)]],
      holder: { node: na, key: formatKey(a.key) },
      pending: [pv],
      complete: false,
    });
  });

  it('a device without PR support -> Supported=False and Ready=False (NoPersistentReservations), the agent keeps running; a registered device that starts refusing PR -> the same, and its recorded registration stays', async () => {
    const na = await c.node('node-a');
    const [plain, later] = [await c.pv(), await c.pv()];
    plain.lu.setSupported(false);
    await c.startAgent(na);
    await c.attach(later.name, na);
    await eventually(async () => (await c.vr(later.name)).status?.holder?.node === na, { timeoutMs: 30_000 });
    await c.attach(plain.name, na);
    later.lu.setSupported(false); // e.g. the LU now resolves through a path without PR support
    const unsupported = async (pv: string) => {
      const v = await c.vr(pv);
      const s = v.status?.conditions?.find((x) => x.type === 'Supported');
      const r = v.status?.conditions?.find((x) => x.type === 'Ready');
      if (s?.status !== 'False') throw new Error(`${pv}: no Supported=False yet`);
      return {
        supported: s.reason,
        ready: `${r?.status} ${r?.reason}`,
        registrants: v.status?.registrants?.length ?? 0,
      };
    };
    expect({
      plain: await eventually(() => unsupported(plain.name), { timeoutMs: 30_000 }),
      later: await eventually(() => unsupported(later.name), { timeoutMs: 30_000 }),
    }).toEqual({
      plain: {
        supported: 'NoPersistentReservations',
        ready: 'False NoPersistentReservations',
        registrants: 0,
      },
      later: {
        supported: 'NoPersistentReservations',
        ready: 'False NoPersistentReservations',
        registrants: 1,
      },
    });
  });

  /** The VolumeReservation once it records `node` as holder and carries the controller's finalizer. */
  const heldAndProtected = (pv: string, node: string) =>
    eventually(
      async () => {
        const v = await c.vr(pv);
        if (v.status?.holder?.node !== node || !v.metadata.finalizers?.length)
          throw new Error('not recorded or protected yet');
        return v;
      },
      { timeoutMs: 30_000 },
    );

  // Node scope (as the chart ships: the controller writes the desired state, and with it
  // the finalizer).
  it.skipIf(c.defaultScope === 'cluster')(
    "the VolumeReservation of a reserved volume is deleted (kubectl delete vr) -> it stays, being deleted, with the holder's record (the controller's finalizer); the node detaches and leaves -> it goes",
    async () => {
      const na = await c.node('node-a');
      const { name: pv, lu } = await c.pv();
      const a = await c.startAgent(na, c.kc, { resyncMs: 500 });
      const va = await c.attach(pv, na);
      const first = await heldAndProtected(pv, na);
      await c.rest.send({ method: 'DELETE', path: vrPath(pv) });
      // The controller decided to keep it (its event says why): still there, record intact.
      await eventually(
        async () =>
          (await c.events(pv)).some((e) => e.reason === 'GarbageCollectionBlocked' && e.note.includes(na)),
        { timeoutMs: 30_000 },
      );
      const kept = await c.vr(pv);
      expect({
        uid: kept.metadata.uid,
        deleting: !!kept.metadata.deletionTimestamp,
        finalizers: kept.metadata.finalizers,
        holder: kept.status?.holder?.node,
        registrants: kept.status?.registrants?.map((r) => [r.node, r.key]),
      }).toEqual({
        uid: first.metadata.uid,
        deleting: true,
        finalizers: ['prfence.io/reservation-protection'],
        holder: na,
        registrants: [[na, formatKey(a.key)]],
      });
      await c.detach(va);
      await eventually(() => lu.state().registrations.length === 0, { timeoutMs: 30_000 });
      const gone = () =>
        c.vr(pv).then(
          () => false,
          (e: unknown) => e instanceof KubeApiError && e.code === 404,
        );
      await eventually(gone, { timeoutMs: 30_000 });
    },
  );

  // Node scope: with --scope=cluster the agents do not watch VolumeReservations
  // (docs/design.md, trade-offs of --scope=node).
  it.skipIf(c.defaultScope === 'cluster')(
    'the VolumeReservation of a reserved volume is deleted and its finalizer taken off by hand -> created again by the controller, and the holder records its registration and the reservation there again',
    async () => {
      const na = await c.node('node-a');
      const { name: pv } = await c.pv();
      const a = await c.startAgent(na, c.kc, { resyncMs: 500 });
      await c.attach(pv, na);
      const first = await heldAndProtected(pv, na);
      await c.rest.send({ method: 'DELETE', path: vrPath(pv) });
      await c.rest.send({
        method: 'PATCH',
        path: vrPath(pv),
        contentType: 'application/merge-patch+json',
        body: { metadata: { finalizers: null } },
      });
      const again = await eventually(
        async () => {
          const v = await c.vr(pv);
          if (v.metadata.uid === first.metadata.uid || v.status?.holder?.node !== na)
            throw new Error('not recorded again yet');
          return v;
        },
        { timeoutMs: 30_000 },
      );
      expect(again.status?.registrants?.map((r) => [r.node, r.key])).toEqual([[na, formatKey(a.key)]]);
    },
  );

  it('graceful detach -> the node releases and unregisters', async () => {
    const na = await c.node('node-a');
    const { name: pv, lu } = await c.pv();
    await c.startAgent(na);
    const va = await c.attach(pv, na);
    await eventually(() => lu.state().reservation?.holder === na, { timeoutMs: 20_000 });
    await c.detach(va);
    await eventually(() => lu.state().registrations.length === 0 && lu.state().reservation === null, {
      timeoutMs: 20_000,
    });
  });

  it("out-of-service taint -> the controller's fence request -> peers remove the tainted node's key (agents watch no other Node)", async () => {
    const [na, nb] = [await c.node('node-a'), await c.node('node-b')];
    controllers.push((await startController(c, c.log, [], {})).controller);
    const { name: pv, lu } = await c.pv();
    const a = await c.startAgent(na);
    await c.startAgent(nb);
    await c.attach(pv, na);
    await c.attach(pv, nb);
    await eventually(() => keysOf(lu).length === 2, { timeoutMs: 20_000 });
    await c.taintOutOfService(na);
    // node-a's key leaves (its own agent may step down first) and node-b holds the LU.
    await eventually(() => !keysOf(lu).includes(a.key) && lu.state().reservation?.holder === nb, {
      timeoutMs: 20_000,
    });
    expect(lu.write(na)).toBe('refused');
  });

  it('S7 + S4: a foreign key is left alone while two legitimate agents race to fence a stale node', async () => {
    const [na, nb, nc] = [await c.node('node-a'), await c.node('node-b'), await c.node('node-c')];
    const { name: pv, lu } = await c.pv();
    const foreign = 0x0f0f0f0f00000001n;
    await lu.initiator('outside-host').register(0n, foreign);
    const a = await c.startAgent(na);
    const b = await c.startAgent(nb);
    const cc = await c.startAgent(nc);
    const vas = [await c.attach(pv, na), await c.attach(pv, nb), await c.attach(pv, nc)];
    await eventually(() => keysOf(lu).length === 4, { timeoutMs: 20_000 });
    await a.stop();
    await c.detach(vas[0]!); // a goes stale while b and c both watch
    await eventually(() => !keysOf(lu).includes(a.key), { timeoutMs: 20_000 });
    expect(new Set(keysOf(lu))).toEqual(new Set([foreign, b.key, cc.key]));
    expect(lu.write('outside-host')).toBe('ok');
    // Status is recorded after the device work (and retried after a concurrent write).
    const vr = await eventually(async () => {
      const v = await c.vr(pv);
      if (v.status?.foreignKeys === undefined) throw new Error('not recorded yet');
      return v;
    });
    expect(vr.status?.foreignKeys).toBe(1);
  });

  it('S6: keys of distinct nodes are distinct, tagged with the cluster, never 0', async () => {
    const names = [await c.node('k1'), await c.node('k2'), await c.node('k3')];
    const agents = [];
    for (const n of names) agents.push(await c.startAgent(n));
    const keys = agents.map((x) => x.key);
    expect(new Set(keys).size).toBe(3);
    for (const k of keys) {
      expect(k).not.toBe(0n);
      expect(Number(k >> 32n)).toBe(agents[0]!.tag);
    }
    for (const n of names) expect((await c.nodeFence(n)).status?.key).toMatch(/^[0-9a-f]{16}$/);
    // An idle node (a key, no volume) shows a phase and its volume count, not empty cells.
    for (const n of names)
      expect((await c.nodeFence(n)).status).toMatchObject({ phase: 'Registered', volumes: 0 });
  });
  it('a volume detached while its agent was down (a rollout during a migration) -> the restarted agent leaves it by itself: reservation released, key gone, its registrant entry gone; no fence, no Fenced mark', async () => {
    const na = await c.node('node-a');
    const { name: pv, lu } = await c.pv();
    const a = await c.startAgent(na);
    const va = await c.attach(pv, na);
    await eventually(() => lu.state().reservation?.holder === na, { timeoutMs: 30_000 });
    await eventually(async () => (await c.vr(pv)).status?.registrants?.some((r) => r.node === na) === true, {
      timeoutMs: 30_000,
    });
    await a.stop();
    await c.detach(va);
    const again = await c.startAgent(na);
    expect(again.key).toBe(a.key);
    await eventually(() => keysOf(lu).length === 0 && lu.state().reservation === null, { timeoutMs: 30_000 });
    await eventually(async () => !(await c.vr(pv)).status?.registrants?.some((r) => r.node === na), {
      timeoutMs: 30_000,
    });
    expect({
      phase: (await c.nodeFence(na)).status?.phase,
      lastFence: (await c.vr(pv)).status?.lastFence,
    }).toEqual({ phase: 'Registered', lastFence: undefined });
  });
});
