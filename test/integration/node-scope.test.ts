/**
 * Node-scoped agents (`--scope=node`) against the real API server, with the controller
 * in-process: the agents watch no VolumeAttachment, PersistentVolume or StorageClass; they
 * learn of an attachment from the desired state the controller writes into the
 * VolumeReservation (labelled for their node), register and fence from it, and while the
 * controller is down nothing new is registered and nothing is released.
 */
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { Agent } from '../../src/agent/agent.js';
import type { Controller } from '../../src/controller/controller.js';
import { nodeLabel } from '../../src/crd/node-label.js';
import { RestClient } from '../../src/kube/rest-client.js';
import { formatKey } from '../../src/pr/key.js';
import type { MemoryLogicalUnit } from '../../src/pr/memory/index.js';
import { eventually } from '../envtest/kube.js';
import { Cluster } from './agent-harness.js';
import { startController } from './node-leases.js';

const keysOf = (lu: MemoryLogicalUnit) =>
  lu
    .state()
    .registrations.map((r) => formatKey(r.key))
    .sort();

describe('node-scoped agents and the controller desired state', () => {
  const c = new Cluster();
  const log = pino({ level: process.env.PRFENCE_TEST_LOG ?? 'silent' });
  const controllers: Controller[] = [];

  afterEach(async () => {
    await Promise.all(controllers.splice(0).map((x) => x.stop()));
    await c.stopAll();
  });

  it(
    'agents watch only their Node, NodeFences and their labelled VolumeReservations; an attachment made while no controller runs registers nothing until the controller wrote it; then the agents register, reserve and fence a node asked to be fenced',
    { timeout: 180_000 },
    async () => {
      await c.unfenceAll();
      const [na, nb] = [await c.node('ns-a'), await c.node('ns-b')];
      // Every list and watch the agents open while they start (no controller runs yet).
      const opened: string[] = [];
      const record = (path: string, query?: Record<string, string>) =>
        opened.push(`${path}?${new URLSearchParams(query ?? {}).toString()}`);
      const orig = RestClient.prototype.watch;
      RestClient.prototype.watch = function (this: RestClient, ...args: Parameters<typeof orig>) {
        record(args[0], args[1]);
        return orig.apply(this, args);
      } as typeof orig;
      let agentA: Agent, agentB: Agent;
      try {
        agentA = await c.startAgent(na, c.kc, { scope: 'node' });
        agentB = await c.startAgent(nb, c.kc, { scope: 'node' });
      } finally {
        RestClient.prototype.watch = orig;
      }
      const paths = [...new Set(opened.map((p) => p.slice(0, p.indexOf('?'))))].sort();
      expect(paths).toEqual([
        '/api/v1/nodes',
        '/apis/prfence.io/v1alpha1/nodefences',
        '/apis/prfence.io/v1alpha1/volumereservations',
      ]);
      const vrWatches = opened.filter((p) => p.startsWith('/apis/prfence.io/v1alpha1/volumereservations?'));
      expect(vrWatches.map((p) => new URLSearchParams(p.split('?')[1]).get('labelSelector')).sort()).toEqual(
        [nodeLabel(na), nodeLabel(nb)].sort(),
      );

      // Attached while no controller runs: no desired state, so nothing is registered.
      const { name: pv, lu } = await c.pv('nvme');
      let firstRegister: number | undefined;
      c.deviceCalls.add((x) => {
        if (x.lu === lu && x.op === 'register' && x.outcome === 'ok') firstRegister ??= x.startedAt;
      });
      await c.attach(pv, na);
      // Two of the agents' resyncs (2 s each) go by.
      await new Promise((r) => setTimeout(r, 5000));
      expect(lu.state().registrations).toEqual([]);

      const run = await startController(c, log, controllers, {});
      await eventually(() => lu.state().reservation?.holder === na, { timeoutMs: 30_000 });
      const written = run.actions.find((x) => x.kind === 'desired-state' && x.name === pv)!.at;
      const vr = await c.vr(pv);
      expect({
        writtenBeforeRegistered: firstRegister !== undefined && written < firstRegister,
        labels: Object.keys(vr.metadata.labels ?? {}).filter((k) => k.startsWith('node.prfence.io/')),
        attachments: vr.spec?.attachments?.map((x) => x.node),
        device: vr.spec?.device,
      }).toEqual({
        writtenBeforeRegistered: true,
        labels: [nodeLabel(na)],
        attachments: [na],
        device: lu.id,
      });

      // A second attachment reaches node-b only through the desired state: it registers.
      await c.attach(pv, nb);
      await eventually(() => keysOf(lu).length === 2, { timeoutMs: 30_000 });
      expect(keysOf(lu)).toEqual([formatKey(agentA.key), formatKey(agentB.key)].sort());

      // node-a asked to be fenced: node-b removes its key.
      await c.setFenceState(na, 'Fenced');
      await eventually(() => keysOf(lu).join() === formatKey(agentB.key), { timeoutMs: 30_000 });
      expect(lu.state().reservation?.holder).toBe(nb);
      await eventually(async () => (await c.nodeFence(na)).status?.phase === 'Fenced', { timeoutMs: 30_000 });
      await c.setFenceState(na, 'Unfenced', true);
    },
  );

  it(
    'controller down: a detach is not acted on (nothing released, the leaver stays registered); the controller back -> the leaver unregisters and its label goes',
    { timeout: 180_000 },
    async () => {
      await c.unfenceAll();
      const [na, nb] = [await c.node('ns-a'), await c.node('ns-b')];
      const run = await startController(c, log, controllers, {});
      const agentA = await c.startAgent(na, c.kc, { scope: 'node' });
      const agentB = await c.startAgent(nb, c.kc, { scope: 'node' });
      const { name: pv, lu } = await c.pv('nvme');
      await c.attach(pv, na);
      const vaB = await c.attach(pv, nb);
      await eventually(() => keysOf(lu).length === 2 && lu.state().reservation !== null, {
        timeoutMs: 30_000,
      });

      // The controller stops; node-b's attachment goes.
      await run.controller.stop();
      await c.detach(vaB);
      // Longer than the leave grace (3 s) and two resyncs: node-b's desired state still shows
      // its attachment, so it neither leaves nor is fenced, and nothing is released.
      await new Promise((r) => setTimeout(r, 8000));
      expect({ keys: keysOf(lu), reserved: lu.state().reservation !== null }).toEqual({
        keys: [formatKey(agentA.key), formatKey(agentB.key)].sort(),
        reserved: true,
      });

      await startController(c, log, controllers, {});
      await eventually(() => keysOf(lu).join() === formatKey(agentA.key), { timeoutMs: 30_000 });
      await eventually(
        async () => {
          const labels = Object.keys((await c.vr(pv)).metadata.labels ?? {});
          return labels.includes(nodeLabel(na)) && !labels.includes(nodeLabel(nb));
        },
        { timeoutMs: 30_000 },
      );
      expect(lu.state().reservation?.holder).toBe(na);
    },
  );

  it(
    'a node-scoped observer (not attached) still sees every volume: it removes the key of the only attached node once that node is asked to be fenced, and holds the reservation',
    { timeout: 180_000 },
    async () => {
      await c.unfenceAll();
      const [na, no] = [await c.node('ns-a'), await c.node('ns-obs')];
      await startController(c, log, controllers, {});
      const agentA = await c.startAgent(na, c.kc, { scope: 'node' });
      const observer = await c.startAgent(no, c.kc, { scope: 'node', observe: true });
      const { name: pv, lu } = await c.pv('nvme');
      await c.attach(pv, na);
      await eventually(() => lu.state().reservation?.holder === na, { timeoutMs: 30_000 });
      // The observer is neither attached nor registered: no label names it.
      expect(Object.keys((await c.vr(pv)).metadata.labels ?? {})).not.toContain(nodeLabel(no));
      expect(keysOf(lu)).toEqual([formatKey(agentA.key)]);

      await c.setFenceState(na, 'Fenced');
      await eventually(() => !keysOf(lu).includes(formatKey(agentA.key)), { timeoutMs: 30_000 });
      expect({ keys: keysOf(lu), holder: lu.state().reservation?.holder }).toEqual({
        keys: [formatKey(observer.key)],
        holder: no,
      });
      await c.setFenceState(na, 'Unfenced', true);
    },
  );
});
