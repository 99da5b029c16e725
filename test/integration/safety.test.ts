/**
 * Safety defects of the first slice, each against the real API server (memory LUs):
 * key claims the API server keeps unique (A4), intent recorded before the PREEMPT and a
 * restarted agent completing it (A5), status that survives idle reconciles under the
 * all-registrants types and a foreign holder (A7, A11), a PR generation that went back
 * at a power cycle (A8).
 */
import type { V1Namespace, V1Node } from '@kubernetes/client-node';
import { afterEach, describe, expect, it } from 'vitest';
import { API_VERSION, GROUP, RESERVATION_KEY, VERSION, type ReservationKey } from '../../src/crd/types.js';
import { intentVictims } from '../../src/crd/fence-intent.js';
import { evaluateProof } from '../../src/controller/isolation-proof.js';
import { allocateSlot, clusterTag, makeKey } from '../../src/fence/keys.js';
import { clusterObjectPath } from '../../src/kube/rest-client.js';
import { createAgentMetrics } from '../../src/obs/metrics.js';
import { formatKey } from '../../src/pr/key.js';
import type { MemoryLogicalUnit } from '../../src/pr/memory/index.js';
import { eventually } from '../envtest/kube.js';
import { Cluster } from './agent-harness.js';

const keysOf = (lu: MemoryLogicalUnit) => lu.state().registrations.map((r) => r.key);
const rkPath = (name?: string) => clusterObjectPath(GROUP, VERSION, RESERVATION_KEY.plural, name);
const FOREIGN = 0x0f0f0f0f00000002n;
/** A sampling window (several resyncs happen in it); never used to wait for a condition. */
const observeFor = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('safety of the agent against a real API server', () => {
  const c = new Cluster();
  afterEach(async () => {
    await c.stopAll();
  });

  /** node-a held a volume's reservation, then its agent went (its key stays: S8); node-b is new. */
  async function holderGone() {
    const [na, nb] = [await c.node('node-a'), await c.node('node-b')];
    const { name: pv, lu } = await c.pv();
    const a = await c.startAgent(na);
    await c.attach(pv, na);
    await eventually(() => lu.state().reservation?.holder === na, { timeoutMs: 30_000 });
    await a.stop();
    return { na, nb, pv, lu, a };
  }

  it('A4: the key this node would take is claimed by another node -> the API server refuses it and the node claims another', async () => {
    const na = await c.node('node-a');
    const node = await c.rest.get<V1Node>(`/api/v1/nodes/${na}`);
    const ns = await c.rest.get<V1Namespace>('/api/v1/namespaces/kube-system');
    const wanted = makeKey(clusterTag(ns.metadata!.uid!), allocateSlot(na, node.metadata!.uid!, new Map()));
    await c.rest.send({
      method: 'POST',
      path: rkPath(),
      body: {
        apiVersion: API_VERSION,
        kind: RESERVATION_KEY.kind,
        metadata: { name: formatKey(wanted) },
        spec: { node: 'another-node', nodeUID: 'another-uid' },
      },
    });
    const a = await c.startAgent(na);
    expect(a.key).not.toBe(wanted);
    const mine = await c.rest.get<ReservationKey>(rkPath(formatKey(a.key)));
    expect(mine.spec).toEqual({ node: na, nodeUID: node.metadata!.uid });
    const theirs = await c.rest.get<ReservationKey>(rkPath(formatKey(wanted)));
    expect(theirs.spec.node).toBe('another-node');
    // Restart: the same incarnation finds its own claim again (stable, S6).
    await a.stop();
    const again = await c.startAgent(na);
    expect(again.key).toBe(a.key);
  });

  it('A5: a node loses the API right after its first REGISTER on a volume -> its registrant entry was recorded before the command: the proof of isolation counts the volume as pending', async () => {
    const na = await c.node('node-a');
    const { name: pv, lu } = await c.pv();
    const { agent: a, proxy } = await c.startProxiedAgent(na);
    c.deviceCalls.add((call) => {
      if (call.node === na && call.op === 'register' && call.outcome === 'ok') proxy.blackhole('both');
    });
    await c.attach(pv, na);
    await eventually(() => keysOf(lu).includes(a.key), { timeoutMs: 30_000 });
    const vr = await c.vr(pv);
    const proof = evaluateProof(await c.nodeFence(na), [vr]);
    expect({
      registrants: vr.status?.registrants?.map((r) => [r.node, r.key]),
      pending: proof.pending.map((p) => p.volume),
    }).toEqual({ registrants: [[na, formatKey(a.key)]], pending: [pv] });
  });

  it('A5: the fencer loses the API right after its PREEMPT -> the intent was recorded before it; restarted, it records the fence from the device', async () => {
    const { na, nb, pv, lu, a } = await holderGone();
    const { agent: b, proxy } = await c.startProxiedAgent(nb);
    // The moment node-b's preempt answers, its API connection is reset: nothing after the
    // preempt reaches the API server.
    let intentAtPreempt: unknown;
    c.deviceCalls.add((call) => {
      if (call.node !== nb || call.op !== 'preemptAndAbort' || call.outcome !== 'ok') return;
      proxy.reset('both');
      void c.vr(pv).then((v) => (intentAtPreempt = v.status?.fenceIntent));
    });
    await c.setFenceState(na, 'Fenced');
    await c.attach(pv, nb);
    await eventually(() => !keysOf(lu).includes(a.key), { timeoutMs: 30_000 });
    await eventually(() => intentAtPreempt !== undefined, { timeoutMs: 10_000 });
    expect(intentAtPreempt).toMatchObject({ victimKey: formatKey(a.key), victimNode: na, by: nb });
    expect((await c.nodeFence(na)).status?.phase).not.toBe('Fenced'); // not recorded yet
    await b.stop();
    await proxy.heal();
    const b2 = await c.startAgent(nb);
    expect(b2.key).toBe(b.key);
    const vr = await eventually(async () => {
      const v = await c.vr(pv);
      if (v.status?.fenceIntent || v.status?.lastFence?.victimNode !== na)
        throw new Error('not completed yet');
      return v;
    });
    expect(vr.status?.lastFence).toMatchObject({ victimKey: formatKey(a.key), by: nb, result: 'Fenced' });
    expect((await c.nodeFence(na)).status).toMatchObject({ phase: 'Fenced', fencedBy: nb });
  });

  it('A5: the fencer removes two stale keys from one volume and loses the API at the second PREEMPT -> its open intent names both; restarted, it marks both nodes Fenced', async () => {
    const [na, nb, nc] = [await c.node('node-a'), await c.node('node-b'), await c.node('node-c')];
    const { name: pv, lu } = await c.pv();
    const [a, cc] = [await c.startAgent(na), await c.startAgent(nc)];
    await c.attach(pv, na);
    await c.attach(pv, nc);
    await eventually(() => keysOf(lu).length === 2 && lu.state().reservation !== null, { timeoutMs: 30_000 });
    await a.stop();
    await cc.stop();
    const { agent: b, proxy } = await c.startProxiedAgent(nb);
    let preempts = 0;
    c.deviceCalls.add((call) => {
      if (call.node !== nb || call.op !== 'preemptAndAbort' || call.outcome !== 'ok') return;
      if (++preempts === 2) proxy.reset('both');
    });
    await c.setFenceState(na, 'Fenced');
    await c.setFenceState(nc, 'Fenced');
    await c.attach(pv, nb);
    await eventually(() => !keysOf(lu).includes(a.key) && !keysOf(lu).includes(cc.key), {
      timeoutMs: 30_000,
    });
    await b.stop();
    await proxy.heal();
    const open = (await c.vr(pv)).status?.fenceIntent;
    const named = open ? intentVictims(open).map((v) => v.victimNode) : [];
    expect({ preempts, named: named.sort() }).toEqual({ preempts: 2, named: [na, nc].sort() });
    await c.startAgent(nb);
    await eventually(
      async () => {
        if ((await c.vr(pv)).status?.fenceIntent) throw new Error('intent still open');
        for (const n of [na, nc])
          expect((await c.nodeFence(n)).status).toMatchObject({ phase: 'Fenced', fencedBy: nb });
      },
      { timeoutMs: 60_000 },
    );
  });

  it('A5: the fencer loses the API right after its PREEMPT and keeps running -> once the API is back, it records the fence (Fenced mark, lastFence) and closes its intent, without a restart; prfence_unrecorded_fences is 1 meanwhile, then 0', async () => {
    const { na, nb, pv, lu, a } = await holderGone();
    const metrics = createAgentMetrics();
    const { proxy } = await c.startProxiedAgent(nb, { metrics });
    c.deviceCalls.add((call) => {
      if (call.node === nb && call.op === 'preemptAndAbort' && call.outcome === 'ok') proxy.reset('both');
    });
    await c.setFenceState(na, 'Fenced');
    await c.attach(pv, nb);
    await eventually(() => !keysOf(lu).includes(a.key), { timeoutMs: 30_000 });
    // The record was tried during the partition, and failed.
    await eventually(
      async () => /prfence_reconciles_total\{outcome="error"\} [1-9]/.test(await metrics.registry.metrics()),
      { timeoutMs: 30_000 },
    );
    expect((await c.nodeFence(na)).status?.phase).not.toBe('Fenced');
    expect(await metrics.registry.metrics()).toContain('prfence_unrecorded_fences 1');
    await proxy.heal();
    const vr = await eventually(
      async () => {
        const v = await c.vr(pv);
        if (v.status?.fenceIntent || v.status?.lastFence?.victimNode !== na)
          throw new Error('not recorded yet');
        return v;
      },
      { timeoutMs: 60_000 },
    );
    expect(vr.status?.lastFence).toMatchObject({ victimKey: formatKey(a.key), by: nb, result: 'Fenced' });
    expect((await c.nodeFence(na)).status).toMatchObject({ phase: 'Fenced', fencedBy: nb });
    await eventually(async () => (await metrics.registry.metrics()).includes('prfence_unrecorded_fences 0'));
  });

  it('A7: write-exclusive-all-regs (holder reads as key 0) -> type and generation stay recorded across idle reconciles; each registrant entry names the initiators carrying its key', async () => {
    const [na, nb] = [await c.node('node-a'), await c.node('node-b')];
    const { name: pv, lu } = await c.pv();
    const type = 'write-exclusive-all-regs' as const;
    await c.startAgent(na, c.kc, { reservationType: type });
    await c.startAgent(nb, c.kc, { reservationType: type });
    await c.attach(pv, na);
    await c.attach(pv, nb);
    await eventually(() => lu.state().registrations.length === 2, { timeoutMs: 30_000 });
    await eventually(async () => (await c.vr(pv)).status?.reservationType === type, { timeoutMs: 30_000 });
    await observeFor(3 * 2000); // three resyncs of both agents
    const vr = await c.vr(pv);
    expect(vr.status).toMatchObject({ reservationType: type, generation: lu.state().generation });
    expect(vr.status?.holder).toBeUndefined();
    expect(vr.status?.registrants?.map((r) => r.node).sort()).toEqual([na, nb].sort());
    // Each node names the initiators that carry its key, as the device's one read (READ FULL
    // STATUS on this SCSI model) names them.
    for (const r of vr.status?.registrants ?? [])
      expect(r.initiators, r.node).toEqual(
        lu
          .state()
          .registrations.filter((x) => formatKey(x.key) === r.key)
          .map((x) => `memory ${x.initiator}`),
      );
  });

  it('A11: a foreign key holds the reservation -> status writes succeed (no 422), the holder and foreign count stay recorded', async () => {
    const [na, nb] = [await c.node('node-a'), await c.node('node-b')];
    const { name: pv, lu } = await c.pv();
    const admin = lu.initiator('admin-host');
    await admin.register(0n, FOREIGN);
    await admin.reserve(FOREIGN, 'write-exclusive-reg-only');
    const ma = createAgentMetrics();
    const mb = createAgentMetrics();
    await c.startAgent(na, c.kc, { metrics: ma });
    await c.startAgent(nb, c.kc, { metrics: mb });
    await c.attach(pv, na);
    await c.attach(pv, nb);
    await eventually(() => lu.state().registrations.length === 3, { timeoutMs: 30_000 });
    await observeFor(3 * 2000);
    const vr = await c.vr(pv);
    expect(vr.status).toMatchObject({ holder: { key: formatKey(FOREIGN) }, foreignKeys: 1 });
    for (const m of [ma, mb]) expect(await m.registry.metrics()).not.toMatch(/code="422"/);
    expect(lu.state().reservation?.holder).toBe('admin-host'); // S7: left alone
  });

  it('A6: status writes refused by the API server -> nothing registered without its record, and the writes retried with growing backoff, not every 200 ms', async () => {
    const na = await c.node('node-a');
    const { name: pv, lu } = await c.pv();
    const name = `deny-status-${pv}`;
    const adm = '/apis/admissionregistration.k8s.io/v1';
    await c.rest.send({
      method: 'POST',
      path: `${adm}/validatingadmissionpolicies`,
      body: {
        apiVersion: 'admissionregistration.k8s.io/v1',
        kind: 'ValidatingAdmissionPolicy',
        metadata: { name },
        spec: {
          failurePolicy: 'Fail',
          matchConstraints: {
            resourceRules: [
              {
                apiGroups: [GROUP],
                apiVersions: ['*'],
                operations: ['CREATE', 'UPDATE'],
                resources: ['volumereservations/status'],
              },
            ],
          },
          matchConditions: [{ name: 'this-volume', expression: `object.metadata.name == '${pv}'` }],
          validations: [{ expression: 'false', message: 'status writes of this volume are refused (test)' }],
        },
      },
    });
    await c.rest.send({
      method: 'POST',
      path: `${adm}/validatingadmissionpolicybindings`,
      body: {
        apiVersion: 'admissionregistration.k8s.io/v1',
        kind: 'ValidatingAdmissionPolicyBinding',
        metadata: { name },
        spec: { policyName: name, validationActions: ['Deny'] },
      },
    });
    try {
      // The policy is in force once a status write of this volume is refused.
      const vrPath = clusterObjectPath(GROUP, VERSION, 'volumereservations', pv);
      await c.rest.send({
        method: 'POST',
        path: clusterObjectPath(GROUP, VERSION, 'volumereservations'),
        body: { apiVersion: API_VERSION, kind: 'VolumeReservation', metadata: { name: pv } },
      });
      await eventually(
        () =>
          c.rest
            .apply(
              `${vrPath}/status`,
              {
                apiVersion: API_VERSION,
                kind: 'VolumeReservation',
                metadata: { name: pv },
                status: { foreignKeys: 0 },
              },
              'test',
            )
            .then(
              () => false,
              () => true,
            ),
        { timeoutMs: 30_000 },
      );
      const metrics = createAgentMetrics();
      await c.startAgent(na, c.kc, { metrics });
      await c.attach(pv, na);
      const refused = async () => {
        const text = await metrics.registry.metrics();
        return [
          ...text.matchAll(/prfence_kube_api_requests_total\{method="PATCH",code="4\d\d"\} (\d+)/g),
        ].reduce((n, m) => n + Number(m[1]), 0);
      };
      await eventually(async () => (await refused()) > 0, { timeoutMs: 30_000 });
      const first = await refused();
      await observeFor(12_000);
      const inWindow = (await refused()) - first;
      // Backoff from 200 ms doubling: about 6 attempts in 12 s; every 200 ms would be 60.
      expect(inWindow).toBeGreaterThan(0);
      expect(inWindow).toBeLessThanOrEqual(12);
      // The registrant entry goes on record before the REGISTER: refused, no REGISTER.
      expect(keysOf(lu)).toEqual([]);
    } finally {
      await c.rest.send({ method: 'DELETE', path: `${adm}/validatingadmissionpolicybindings/${name}` });
      await c.rest.send({ method: 'DELETE', path: `${adm}/validatingadmissionpolicies/${name}` });
    }
  });

  it('A8: a power cycle resets the PR generation -> after the unfence the record follows the device down', async () => {
    const { na, nb, pv, lu } = await holderGone();
    const b = await c.startAgent(nb);
    await c.setFenceState(na, 'Fenced');
    await c.attach(pv, nb);
    await eventually(async () => (await c.vr(pv)).status?.lastFence?.victimNode === na, {
      timeoutMs: 30_000,
    });
    const before = (await c.vr(pv)).status?.generation ?? 0;
    expect(before).toBeGreaterThan(1);
    lu.powerCycle(); // APTPL off: registrations gone, generation from 0
    // node-b lost its key without removing it: it treats itself as fenced there (S2)...
    await observeFor(3 * 2000);
    expect(keysOf(lu)).toEqual([]);
    // ...until it is unfenced; then it registers and the record follows the device.
    await c.setFenceState(nb, 'Unfenced', true);
    await eventually(() => lu.state().reservation?.holder === nb, { timeoutMs: 30_000 });
    const vr = await eventually(async () => {
      const v = await c.vr(pv);
      if (v.status?.generation !== lu.state().generation) throw new Error(`recorded ${v.status?.generation}`);
      return v;
    });
    expect(vr.status?.generation).toBeLessThan(before);
    expect(vr.status?.holder).toMatchObject({ node: nb, key: formatKey(b.key) });
  });
});
