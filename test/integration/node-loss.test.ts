/**
 * Node loss against the real API server: the test renews node Leases in kube-node-lease
 * itself, as kubelets would (every second); the controller runs in-process with
 * `--auto-fence --node-lost-after 5s`. A Lease that stops being renewed gets its node a
 * NodeLost fence request, no sooner than 5 s after the last renew (and no sooner than 5 s
 * after the controller started, whatever renewTime says); a renewed node is untouched; a
 * Lease that comes back does not undo the request. Without autoFence nothing happens.
 */
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { nfPath } from '../../src/controller/api.js';
import { Controller, type ControllerOptions } from '../../src/controller/controller.js';
import { nodeLeasePath } from '../../src/controller/node-loss.js';
import { API_VERSION } from '../../src/crd/types.js';
import { KubeApiError } from '../../src/kube/rest-client.js';
import { createControllerMetrics } from '../../src/obs/controller-metrics.js';
import { eventually, uniqueName } from '../envtest/kube.js';
import { Cluster } from './agent-harness.js';

const LOST_AFTER = 5000;
const LEASE = { leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2000 };

/** A MicroTime (RFC 3339 with microseconds), as the kubelet writes it. */
const microTime = (d: Date) => d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');

describe('controller: node loss (kube-node-lease)', () => {
  const c = new Cluster();
  const log = pino({ level: process.env.PRFENCE_TEST_LOG ?? 'silent' });
  const controllers: Controller[] = [];
  const timers: NodeJS.Timeout[] = [];
  const leases: string[] = [];

  afterEach(async () => {
    for (const t of timers.splice(0)) clearInterval(t);
    await Promise.all(controllers.splice(0).map((x) => x.stop()));
    await c.stopAll();
    await Promise.all(
      leases
        .splice(0)
        .map((n) => c.rest.send({ method: 'DELETE', path: nodeLeasePath(n) }).catch(() => undefined)),
    );
  });

  async function ensureNamespace(name: string) {
    await c.rest
      .send({ method: 'POST', path: '/api/v1/namespaces', body: { metadata: { name } } })
      .catch((e: unknown) => {
        if (!(e instanceof KubeApiError && e.code === 409)) throw e;
      });
  }

  /** A node with its NodeFence (as its agent would create it) and its Lease. */
  async function node(prefix: string, renewTime = new Date()): Promise<string> {
    const name = await c.node(prefix);
    await c.rest.send({
      method: 'POST',
      path: nfPath(),
      body: {
        apiVersion: API_VERSION,
        kind: 'NodeFence',
        metadata: { name },
        spec: { fenceState: 'Unfenced' },
      },
    });
    await c.rest.send({
      method: 'POST',
      path: nodeLeasePath(),
      body: {
        apiVersion: 'coordination.k8s.io/v1',
        kind: 'Lease',
        metadata: { name },
        spec: { holderIdentity: name, leaseDurationSeconds: 40, renewTime: microTime(renewTime) },
      },
    });
    leases.push(name);
    return name;
  }

  /**
   * Renews the Lease every second, as a kubelet. `lastRenewAt`: when the last successful
   * renew was sent (the controller cannot have seen it change earlier).
   */
  function kubelet(name: string) {
    const k = { lastRenewAt: performance.now(), stop: () => clearInterval(t) };
    const t = setInterval(() => {
      const sentAt = performance.now();
      void c.rest
        .send({
          method: 'PATCH',
          path: nodeLeasePath(name),
          contentType: 'application/merge-patch+json',
          body: { spec: { renewTime: microTime(new Date()) } },
        })
        .then(() => (k.lastRenewAt = Math.max(k.lastRenewAt, sentAt)))
        .catch(() => undefined);
    }, 1000);
    timers.push(t);
    return k;
  }

  async function start(o: Partial<ControllerOptions>) {
    const ns = uniqueName('nl');
    await ensureNamespace(ns);
    const run = {
      actions: [] as { kind: string; resource: string; name: string; at: number }[],
      actingFrom: undefined as number | undefined,
      controller: undefined as unknown as Controller,
    };
    run.controller = new Controller({
      kubeConfig: c.kc,
      log,
      identity: uniqueName('nl-ctl'),
      leaderElection: { namespace: ns, ...LEASE },
      resyncMs: 1000,
      onAction: (a) => run.actions.push(a),
      onActing: (on, at) => {
        if (on) run.actingFrom ??= at;
      },
      ...o,
    });
    void run.controller.run();
    controllers.push(run.controller);
    await eventually(() => run.controller.mayAct(), { timeoutMs: 30_000 });
    return run;
  }

  it(
    'autoFence, node-lost-after 5s: Lease not renewed -> NodeFence Fenced/NodeLost/prfence-controller after >= 5 s (and >= 5 s after the controller started for a Lease stale from the start), Warning event, metrics; the renewed node untouched; the Lease coming back does not undo it',
    { timeout: 120_000 },
    async () => {
      await ensureNamespace('kube-node-lease');
      const a = await node('nl-a');
      const b = await node('nl-b');
      // Written by a kubelet whose clock is an hour behind, and never renewed.
      const stale = await node('nl-stale', new Date(Date.now() - 3600_000));
      const ka = kubelet(a);
      kubelet(b);
      const bBefore = await c.nodeFence(b);
      const metrics = createControllerMetrics();
      const r = await start({ autoFence: true, nodeLostAfterMs: LOST_AFTER, metrics });
      const actingFrom = r.actingFrom!;

      // Let the controller see node-a renew a few times, then node-a's kubelet stops.
      await new Promise((res) => setTimeout(res, 2500));
      ka.stop();
      await new Promise((res) => setTimeout(res, 300)); // a renew in flight lands
      const lastRenewA = ka.lastRenewAt;
      const fenceAt = (n: string) => r.actions.find((x) => x.kind === 'fence-request' && x.name === n)?.at;
      await eventually(async () => (await c.nodeFence(a)).spec?.fenceState === 'Fenced', {
        timeoutMs: 30_000,
      });
      await eventually(async () => (await c.nodeFence(stale)).spec?.fenceState === 'Fenced', {
        timeoutMs: 30_000,
      });
      const fencedA = await c.nodeFence(a);
      const fencedStale = await c.nodeFence(stale);
      const bAfter = await c.nodeFence(b);
      const events = (await c.events(a)).filter((e) => e.reason === 'NodeLost');
      const text = await metrics.registry.metrics();
      expect({
        spec: fencedA.spec,
        staleSpec: fencedStale.spec,
        aNotBeforeWindow: fenceAt(a)! - lastRenewA >= LOST_AFTER,
        aWithinBound: fenceAt(a)! - lastRenewA <= LOST_AFTER + 10_000,
        // renewTime an hour old at start: still a full window observed first
        staleNotBeforeWindow: fenceAt(stale)! - actingFrom >= LOST_AFTER,
        bUntouched: bAfter.metadata.resourceVersion === bBefore.metadata.resourceVersion,
        bSpec: bAfter.spec,
        requests: r.actions
          .filter((x) => x.kind === 'fence-request')
          .map((x) => x.name)
          .sort(),
        events: events.map((e) => [e.reportingInstance, /was not renewed for 5000 ms/.test(e.note)]),
        metricRequests: /^prfence_controller_fence_requests_total\{reason="NodeLost"\} 2$/m.test(text),
        metricLost: /^prfence_controller_nodes_lost 2$/m.test(text),
      }).toEqual({
        spec: { fenceState: 'Fenced', reason: 'NodeLost', requestedBy: 'prfence-controller' },
        staleSpec: { fenceState: 'Fenced', reason: 'NodeLost', requestedBy: 'prfence-controller' },
        aNotBeforeWindow: true,
        aWithinBound: true,
        staleNotBeforeWindow: true,
        bUntouched: true,
        bSpec: { fenceState: 'Unfenced' },
        requests: [a, stale].sort(),
        events: [[r.controller.identity, true]],
        metricRequests: true,
        metricLost: true,
      });

      // node-a's kubelet is back: the controller sees the renew (not lost any more) but
      // does not unfence (a lost node may have kept writing; a person unfences).
      kubelet(a);
      await eventually(
        async () => /^prfence_controller_nodes_lost 1$/m.test(await metrics.registry.metrics()),
        {
          timeoutMs: 15_000,
        },
      );
      await new Promise((res) => setTimeout(res, 3000));
      const later = await c.nodeFence(a);
      expect({
        spec: later.spec,
        unchanged: later.metadata.resourceVersion === fencedA.metadata.resourceVersion,
        requestsForA: r.actions.filter((x) => x.kind === 'fence-request' && x.name === a).length,
      }).toEqual({
        spec: { fenceState: 'Fenced', reason: 'NodeLost', requestedBy: 'prfence-controller' },
        unchanged: true,
        requestsForA: 1,
      });
    },
  );

  it(
    'autoFence off: a Lease not renewed for well over 5 s -> no fence request, while the controller does handle an out-of-service taint',
    { timeout: 120_000 },
    async () => {
      await ensureNamespace('kube-node-lease');
      const a = await node('nl-off');
      const tainted = await node('nl-oos');
      kubelet(tainted);
      const before = await c.nodeFence(a);
      const r = await start({ nodeLostAfterMs: LOST_AFTER });
      await new Promise((res) => setTimeout(res, LOST_AFTER + 3000));
      // The controller is running and acting: the taint becomes a fence request.
      await c.taintOutOfService(tainted);
      await eventually(async () => (await c.nodeFence(tainted)).spec?.reason === 'OutOfService', {
        timeoutMs: 30_000,
      });
      const after = await c.nodeFence(a);
      expect({
        spec: after.spec,
        unchanged: after.metadata.resourceVersion === before.metadata.resourceVersion,
        requests: r.actions.filter((x) => x.kind === 'fence-request').map((x) => x.name),
      }).toEqual({ spec: { fenceState: 'Unfenced' }, unchanged: true, requests: [tainted] });
    },
  );
});
