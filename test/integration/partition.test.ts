/**
 * Partition defects, against the real API server. A lost node is a PARTITION: its agent
 * keeps running with its device, only its API traffic goes into a blackhole (a FaultProxy
 * between that agent and the API server; STYLE.md "Acting under failure"). Never stop() or
 * SIGSTOP to model it.
 *
 * Each test asserts the CORRECT behaviour (DESIGN.md S1, S2, S9, freshness) and is named
 * by the defect it catches (A1, A2, A3, A10, A12). Each collects every symptom and asserts
 * them in one expectation, so a failure shows the whole picture.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { GROUP, VERSION } from '../../src/crd/types.js';
import { clusterObjectPath, KubeApiError } from '../../src/kube/rest-client.js';
import { formatKey } from '../../src/pr/key.js';
import type { MemoryLogicalUnit } from '../../src/pr/memory/index.js';
import { FaultProxy, kubeConfigVia } from '../envtest/fault-proxy.js';
import { eventually } from '../envtest/kube.js';
import { freePort } from '../envtest/net.js';
import { Cluster } from './agent-harness.js';
import { KeySampler } from './key-sampler.js';

const keysOf = (lu: MemoryLogicalUnit) => lu.state().registrations.map((r) => r.key);
/** A sampling window (the samplers record what happens in it); never used to wait for a condition. */
const observeFor = (ms: number) => new Promise((r) => setTimeout(r, ms));
const RESYNC_MS = 2000;
const FOREIGN = 0x0f0f0f0f00000001n;

/** Polls NodeFence `node` while a window runs and collects every phase other than the allowed ones. */
function watchPhase(c: Cluster, node: string, everyMs = 250): { stop: () => Promise<string[]> } {
  const seen: string[] = [];
  let on = true;
  const loop = (async () => {
    while (on) {
      try {
        const nf = await c.nodeFence(node);
        const p = nf.status?.phase;
        if (p === 'Fenced' && seen.at(-1) !== `Fenced by ${nf.status?.fencedBy}`)
          seen.push(`Fenced by ${nf.status?.fencedBy}`);
      } catch (e) {
        if (!(e instanceof KubeApiError && e.code === 404)) throw e;
      }
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    stop: async () => {
      on = false;
      await loop;
      return seen;
    },
  };
}

describe('partitions: a lost node is a running agent whose API traffic is blackholed', () => {
  const c = new Cluster();
  afterEach(async () => {
    await c.stopAll();
  });

  it(
    'A1: a partitioned node whose key a peer removed never registers again while partitioned, and not after healing until unfenced',
    { timeout: 180_000 },
    async () => {
      const [na, nb] = [await c.node('node-a'), await c.node('node-b')];
      const { name: pv, lu } = await c.pv();
      const { agent: a, proxy: pa } = await c.startProxiedAgent(na, { resyncMs: RESYNC_MS });
      const b = await c.startAgent(nb, c.kc, { resyncMs: RESYNC_MS });
      const vaA = await c.attach(pv, na);
      await eventually(() => lu.state().reservation?.holder === na, { timeoutMs: 30_000 });
      await eventually(async () => (await c.nodeFence(na)).status?.phase === 'Registered', {
        timeoutMs: 30_000,
      });
      const s = new KeySampler(c, lu, { [na]: a.key, [nb]: b.key });
      pa.blackhole('both'); // node-a keeps running and keeps its device
      // The volume moves (RWO): node-b is attached, node-a is not any more.
      await c.detach(vaA);
      await c.attach(pv, nb);
      await eventually(
        () => s.timeline(na).some((t) => !t.present) && s.timeline(nb).some((t) => t.present),
        {
          timeoutMs: 30_000,
        },
      );
      // ~20 of node-a's resyncs while partitioned.
      await observeFor(40_000);
      const duringPartition = { aReturned: s.returns(na).length, bLost: s.losses(nb).length };
      const caughtUp = pa.stats['server-to-client'].forwarded;
      await pa.heal();
      // node-a's agent talks to the API server again (it relists / rewatches), then a few resyncs.
      await eventually(() => pa.stats['server-to-client'].forwarded > caughtUp + 1000, { timeoutMs: 60_000 });
      await observeFor(5 * RESYNC_MS);
      s.stop();
      const nfA = await c.nodeFence(na);
      expect(
        {
          aReturnedWhilePartitioned: duringPartition.aReturned,
          bLostWhilePartitioned: duringPartition.bLost,
          aReturned: s.returns(na).map((t) => `${t.at}ms ${t.by ?? ''}`),
          bLost: s.losses(nb).map((t) => `${t.at}ms ${t.by ?? ''}`),
          aWrite: lu.write(na),
          bWrite: lu.write(nb),
          aPhase: nfA.status?.phase,
          aFencedBy: nfA.status?.fencedBy,
        },
        s.describe(),
      ).toEqual({
        aReturnedWhilePartitioned: 0,
        bLostWhilePartitioned: 0,
        aReturned: [],
        bLost: [],
        aWrite: 'refused',
        bWrite: 'ok',
        aPhase: 'Fenced',
        aFencedBy: nb,
      });
    },
  );

  it(
    'A1: a key removed by a party outside the cluster is not registered again (S2) until the node is unfenced',
    { timeout: 120_000 },
    async () => {
      const na = await c.node('node-a');
      const { name: pv, lu } = await c.pv();
      const a = await c.startAgent(na, c.kc, { resyncMs: RESYNC_MS });
      await c.attach(pv, na);
      await eventually(() => lu.state().reservation?.holder === na, { timeoutMs: 30_000 });
      const s = new KeySampler(c, lu, { [na]: a.key });
      // An administrator on another host removes node-a with a foreign key.
      const admin = lu.initiator('admin-host');
      await admin.register(0n, FOREIGN);
      await admin.preemptAndAbort(FOREIGN, a.key, 'write-exclusive-reg-only');
      s.sample('admin preempt-abort');
      expect(keysOf(lu)).toEqual([FOREIGN]);
      await observeFor(8 * RESYNC_MS); // several resyncs of node-a: it must stay off
      const before = {
        aReturned: s.returns(na).map((t) => `${t.at}ms ${t.by ?? ''}`),
        aWrite: lu.write(na),
        foreignKept: keysOf(lu).includes(FOREIGN),
      };
      // `prfence unfence`: the request withdrawn, the status mark cleared.
      await c.setFenceState(na, 'Unfenced', true);
      const back = await eventually(() => keysOf(lu).includes(a.key), { timeoutMs: 30_000 }).catch(
        () => false,
      );
      s.stop();
      expect({ ...before, registeredAfterUnfence: back }, s.describe()).toEqual({
        aReturned: [],
        aWrite: 'refused',
        foreignKept: true,
        registeredAfterUnfence: true,
      });
    },
  );

  it.each([
    ['both directions', 'both'],
    ['server-to-client only: its requests still reach the API server', 'server-to-client'],
  ] as const)(
    'A2: a new legitimate node is never preempted by a fencer whose watch is dead (blackhole %s)',
    { timeout: 150_000 },
    async (_what, dir) => {
      const [nb, nc] = [await c.node('node-b'), await c.node('node-c')];
      const { name: pv, lu } = await c.pv();
      // node-c's agent first: node-b's caches know node-c's key before the partition.
      const cc = await c.startAgent(nc, c.kc, { resyncMs: RESYNC_MS });
      const { agent: b, proxy: pb } = await c.startProxiedAgent(nb, { resyncMs: RESYNC_MS });
      await c.attach(pv, nb);
      await eventually(() => lu.state().reservation?.holder === nb, { timeoutMs: 30_000 });
      const s = new KeySampler(c, lu, { [nb]: b.key, [nc]: cc.key });
      pb.blackhole(dir); // node-b's watch is dead; it keeps its device and its resyncs
      const phases = watchPhase(c, nc);
      await c.attach(pv, nc); // RWX: node-c is legitimate too
      const registered = await eventually(() => s.timeline(nc).some((t) => t.present), {
        timeoutMs: 30_000,
      }).catch(() => false);
      await observeFor(10 * RESYNC_MS);
      const caughtUp = pb.stats['server-to-client'].forwarded;
      await pb.heal();
      await eventually(() => pb.stats['server-to-client'].forwarded > caughtUp + 1000, { timeoutMs: 60_000 });
      await observeFor(5 * RESYNC_MS);
      s.stop();
      const marks = await phases.stop();
      const nfC = await c.nodeFence(nc);
      expect(
        {
          cRegistered: registered,
          cLost: s.losses(nc).map((t) => `${t.at}ms ${t.by ?? ''}`),
          bLost: s.losses(nb).map((t) => `${t.at}ms ${t.by ?? ''}`),
          cMarkedFenced: marks,
          cPhaseNow: nfC.status?.phase,
          cWrite: lu.write(nc),
        },
        s.describe(),
      ).toEqual({
        cRegistered: true,
        cLost: [],
        bLost: [],
        cMarkedFenced: [],
        cPhaseNow: 'Registered',
        cWrite: 'ok',
      });
    },
  );

  it(
    'A3: deleting a NodeFence never makes that node or its peers fence it; the NodeFence comes back',
    { timeout: 120_000 },
    async () => {
      const [na, nb] = [await c.node('node-a'), await c.node('node-b')];
      const { name: pv, lu } = await c.pv();
      const a = await c.startAgent(na, c.kc, { resyncMs: RESYNC_MS });
      const b = await c.startAgent(nb, c.kc, { resyncMs: RESYNC_MS });
      await c.attach(pv, na);
      await c.attach(pv, nb);
      await eventually(() => keysOf(lu).length === 2 && lu.state().reservation !== null, {
        timeoutMs: 30_000,
      });
      await eventually(async () => (await c.nodeFence(na)).status?.phase === 'Registered', {
        timeoutMs: 30_000,
      });
      const s = new KeySampler(c, lu, { [na]: a.key, [nb]: b.key });
      await c.rest.send({ method: 'DELETE', path: clusterObjectPath(GROUP, VERSION, 'nodefences', na) });
      await observeFor(8 * RESYNC_MS);
      const back = await eventually(
        async () => {
          const nf = await c.nodeFence(na);
          if (nf.status?.key !== formatKey(a.key)) throw new Error(`key ${nf.status?.key}`);
          return nf;
        },
        { timeoutMs: 30_000 },
      ).catch(() => undefined);
      s.stop();
      expect(
        {
          aLost: s.losses(na).map((t) => `${t.at}ms ${t.by ?? ''}`),
          bLost: s.losses(nb).map((t) => `${t.at}ms ${t.by ?? ''}`),
          aWrite: lu.write(na),
          nodeFenceBack: back !== undefined,
          nodeFenceBackFenced: back?.status?.phase === 'Fenced',
        },
        s.describe(),
      ).toEqual({ aLost: [], bLost: [], aWrite: 'ok', nodeFenceBack: true, nodeFenceBackFenced: false });
    },
  );

  it(
    'A10: a graceful detach is not recorded as a fence; the node later attaches and registers elsewhere',
    { timeout: 120_000 },
    async () => {
      const [na, nb] = [await c.node('node-a'), await c.node('node-b')];
      const a = await c.startAgent(na, c.kc, { resyncMs: RESYNC_MS });
      await c.startAgent(nb, c.kc, { resyncMs: RESYNC_MS });
      // Three shared volumes, node-b holding each (three chances for a race to show).
      const vols = [await c.pv(), await c.pv(), await c.pv()];
      const vasA: string[] = [];
      for (const v of vols) {
        await c.attach(v.name, nb);
        await eventually(() => v.lu.state().reservation?.holder === nb, { timeoutMs: 30_000 });
        vasA.push(await c.attach(v.name, na));
      }
      for (const v of vols) await eventually(() => keysOf(v.lu).includes(a.key), { timeoutMs: 30_000 });
      await eventually(async () => (await c.nodeFence(na)).status?.phase === 'Registered', {
        timeoutMs: 30_000,
      });
      const phases = watchPhase(c, na);
      await Promise.all(vasA.map((va) => c.detach(va))); // graceful: node-a's agent is up and connected
      for (const v of vols) await eventually(() => !keysOf(v.lu).includes(a.key), { timeoutMs: 30_000 });
      await observeFor(3 * RESYNC_MS);
      const elsewhere = await c.pv();
      await c.attach(elsewhere.name, na);
      const registered = await eventually(() => keysOf(elsewhere.lu).includes(a.key), {
        timeoutMs: 30_000,
      }).catch(() => false);
      const marks = await phases.stop();
      const lastFences = [];
      for (const v of vols) {
        const lf = (await c.vr(v.name)).status?.lastFence;
        if (lf?.victimNode === na) lastFences.push(`${v.name}: ${lf.result} by ${lf.by}`);
      }
      const fenceEvents = (await c.events(na)).filter((e) => e.reason === 'Fenced').map((e) => e.note);
      expect({ marks, lastFences, fenceEvents, registeredElsewhere: registered }).toEqual({
        marks: [],
        lastFences: [],
        fenceEvents: [],
        registeredElsewhere: true,
      });
    },
  );
});

describe('A12: the agent process under a partition', () => {
  const c = new Cluster();
  let child: ChildProcess | undefined;
  let proxy: FaultProxy | undefined;
  const out: string[] = [];

  beforeAll(() => {
    execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json'], {
      stdio: 'inherit',
    });
  });
  afterAll(async () => {
    child?.kill('SIGKILL');
    await proxy?.close();
  });

  it(
    'A12: /readyz is not 200 while the API server is unreachable, and 200 again after healing',
    {
      timeout: 180_000,
    },
    async () => {
      const node = await c.node('node-r');
      const diagPort = await freePort();
      proxy = await FaultProxy.start({ target: c.kc.getCurrentCluster()!.server });
      const kubeconfig = join(mkdtempSync(join(tmpdir(), 'prfence-kc-')), 'kubeconfig');
      writeFileSync(kubeconfig, kubeConfigVia(c.kc, proxy).exportConfig());
      child = spawn(
        process.execPath,
        [
          'dist/src/cli/main.js',
          'agent',
          '--node-name',
          node,
          '--kubeconfig',
          kubeconfig,
          '--http-endpoint',
          `127.0.0.1:${diagPort}`,
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      child.stdout!.on('data', (b: Buffer) => out.push(b.toString()));
      child.stderr!.on('data', (b: Buffer) => out.push(b.toString()));
      const readyz = async () => (await fetch(`http://127.0.0.1:${diagPort}/readyz`)).status;
      await eventually(async () => (await readyz()) === 200, { timeoutMs: 60_000 });
      expect((await c.nodeFence(node)).status?.key).toMatch(/^[0-9a-f]{16}$/);

      proxy.blackhole('both');
      const t0 = Date.now();
      // A freshness bound of a few seconds, with headroom for a loaded 2-core machine.
      const notReadyAfterMs = await eventually(
        async () => ((await readyz()) !== 200 ? Date.now() - t0 : false),
        {
          timeoutMs: 45_000,
          intervalMs: 250,
        },
      ).catch(() => undefined);
      // And it stays not ready while the partition lasts.
      const during: number[] = [];
      for (let i = 0; i < 10; i++) {
        during.push(await readyz());
        await observeFor(500);
      }
      await proxy.heal();
      const readyAgain = await eventually(async () => (await readyz()) === 200, { timeoutMs: 90_000 }).catch(
        () => false,
      );
      expect(
        {
          notReadyWithin45s: notReadyAfterMs !== undefined,
          readyWhilePartitioned: `${during.filter((x) => x === 200).length} of ${during.length} samples`,
          readyAgain,
          alive: child.exitCode === null,
        },
        `readyz went non-200 after ${notReadyAfterMs} ms; proxy ${JSON.stringify(proxy.stats)}`,
      ).toEqual({
        notReadyWithin45s: true,
        readyWhilePartitioned: '0 of 10 samples',
        readyAgain: true,
        alive: true,
      });
    },
  );
});
