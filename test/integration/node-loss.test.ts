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
import { API_VERSION } from '../../src/crd/types.js';
import { createControllerMetrics } from '../../src/obs/controller-metrics.js';
import { eventually } from '../envtest/kube.js';
import { Cluster } from './agent-harness.js';
import { Kubelets, startController } from './node-leases.js';

const LOST_AFTER = 5000;

describe('controller: node loss (kube-node-lease)', () => {
  const c = new Cluster();
  const log = pino({ level: process.env.PRFENCE_TEST_LOG ?? 'silent' });
  const controllers: Controller[] = [];
  const kubelets = new Kubelets(c.rest);

  afterEach(async () => {
    await Promise.all(controllers.splice(0).map((x) => x.stop()));
    await c.stopAll();
    await kubelets.cleanup();
  });

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
    await kubelets.lease(name, renewTime);
    return name;
  }

  const kubelet = (name: string) => kubelets.renew(name);
  const start = (o: Partial<ControllerOptions>) => startController(c, log, controllers, o);

  it(
    'autoFence, node-lost-after 5s: Lease not renewed -> NodeFence Fenced/NodeLost/prfence-controller after >= 5 s (and >= 5 s after the controller started for a Lease stale from the start), Warning event, metrics; the renewed node untouched; the Lease coming back does not undo it',
    { timeout: 120_000 },
    async () => {
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
        // The spec is not touched again (status.isolation follows the Lease: its own writes).
        specUnchanged: later.metadata.generation === fencedA.metadata.generation,
        requestsForA: r.actions.filter((x) => x.kind === 'fence-request' && x.name === a).length,
      }).toEqual({
        spec: { fenceState: 'Fenced', reason: 'NodeLost', requestedBy: 'prfence-controller' },
        specUnchanged: true,
        requestsForA: 1,
      });
    },
  );

  it(
    'autoFence off: a Lease not renewed for well over 5 s -> no fence request, while the controller does handle an out-of-service taint',
    { timeout: 120_000 },
    async () => {
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
