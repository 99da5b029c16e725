/**
 * Helpers shared by the benchmarks that run against a real API server (agent-bench.ts,
 * scale-bench.ts): percentiles, bounded parallelism, `prfence` child processes with their
 * /proc figures and /metrics, and the fence-latency measurement with in-process agents on
 * shared memory LUs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import pino from 'pino';
import { Agent } from '../src/agent/agent.js';
import type { AgentScope } from '../src/agent/cluster-informers.js';
import { Controller } from '../src/controller/controller.js';
import { DEVICE_ANNOTATION } from '../src/agent/cluster-view.js';
import { RestClient } from '../src/kube/rest-client.js';
import { MemoryLogicalUnit } from '../src/pr/memory/index.js';
import { freePort } from '../test/envtest/net.js';

/** The node flags of the Dockerfile's ENTRYPOINT (keep the two equal). */
export const IMAGE_NODE_FLAGS = '--max-semi-space-size=1 --optimize-for-size';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

/** Runs `f` on every item with at most `n` calls in flight. */
export async function pool<T>(items: readonly T[], n: number, f: (x: T) => Promise<unknown>): Promise<void> {
  let i = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (i < items.length) await f(items[i++]!);
    }),
  );
}

/** A /proc file of a process, or undefined once it has exited. */
const proc = (pid: number, file: string) => {
  try {
    return readFileSync(`/proc/${pid}/${file}`, 'utf8');
  } catch {
    return undefined;
  }
};

/** Resident set size of a process (VmRSS from /proc/PID/status), in KiB; NaN once it has exited. */
export function rssKib(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(proc(pid, 'status') ?? '')?.[1] ?? NaN);
}

/**
 * The anonymous part of a process's RSS (RssAnon: heaps, stacks, buffers), in KiB. The rest
 * is mostly file pages: the node binary's own code (about 34 MiB of a bare Node 24), shared
 * by every Node process on the host and reclaimable under memory pressure.
 */
export function rssAnonKib(pid: number): number {
  return Number(/RssAnon:\s+(\d+)/.exec(proc(pid, 'status') ?? '')?.[1] ?? NaN);
}

/** CPU time of a process (utime + stime from /proc/PID/stat), in seconds; NaN once it has exited. */
export function cpuSeconds(pid: number): number {
  const stat = proc(pid, 'stat');
  if (stat === undefined) return NaN;
  // Fields after the command name (which may hold spaces) start at field 3 (state).
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime; USER_HZ is 100 on Linux
}

/** Sum of every sample of a Prometheus metric in a /metrics text (all label sets). */
export function metricSum(text: string, name: string): number {
  let sum = 0;
  for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))) sum += Number(m[1]);
  return sum;
}

export interface PrfenceProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** GET on its --http-endpoint. */
  diag(path: string): Promise<Response>;
  /** Resolves once /readyz answers 200; throws after `timeoutMs` (or if the process exits). */
  ready(timeoutMs?: number): Promise<void>;
  metrics(): Promise<string>;
  /** SIGTERM, then waits for the exit. */
  stop(): Promise<void>;
}

/**
 * Starts `node [nodeFlags] dist/src/cli/main.js <args> --http-endpoint 127.0.0.1:PORT`
 * (the built CLI, as the image runs it). Its output goes to ours, or to `logFile`.
 */
export async function spawnPrfence(
  args: readonly string[],
  o: { nodeFlags?: readonly string[]; env?: NodeJS.ProcessEnv; logFile?: string } = {},
): Promise<PrfenceProcess> {
  const port = await freePort();
  const fd = o.logFile ? openSync(o.logFile, 'a') : undefined;
  const child = spawn(
    process.execPath,
    [...(o.nodeFlags ?? []), 'dist/src/cli/main.js', ...args, '--http-endpoint', `127.0.0.1:${port}`],
    { stdio: fd === undefined ? 'inherit' : ['ignore', fd, fd], ...(o.env ? { env: o.env } : {}) },
  );
  if (fd !== undefined) closeSync(fd);
  const tail = () => (o.logFile ? `; its log ends:\n${readFileSync(o.logFile, 'utf8').slice(-2000)}` : '');
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const diag = (path: string) => fetch(`http://127.0.0.1:${port}${path}`);
  return {
    child,
    pid: child.pid!,
    diag,
    async ready(timeoutMs = 120_000) {
      const t0 = performance.now();
      while (performance.now() - t0 < timeoutMs) {
        if (child.exitCode !== null)
          throw new Error(`prfence ${args[0]} exited with ${child.exitCode}${tail()}`);
        if (
          await diag('/readyz').then(
            (r) => r.status === 200,
            () => false,
          )
        )
          return;
        await sleep(200);
      }
      throw new Error(`prfence ${args.join(' ')} not ready after ${timeoutMs} ms${tail()}`);
    },
    metrics: async () => (await diag('/metrics')).text(),
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

export interface FenceLatency {
  n: number;
  /** Per fenced PV: from the new VolumeAttachment visible to the fencing agent (its informer) until the stale key was gone on read-back, ms. */
  fromVisible: number[];
  /** Per fenced PV: from the create request of the new VolumeAttachment until the key was seen gone on the LU, ms. */
  fromCreate: number[];
  /** API requests of the fencing agent per fence. */
  requestsPerFence: number;
  fenced: number;
}

/**
 * Two in-process agents (nodes `<prefix>-a`, `<prefix>-b`) share `n` memory LUs: a holds
 * them all, is stopped (partitioned), and the attachment of every PV moves to b at once
 * (the attach-detach controller deletes a's VolumeAttachments and creates b's). Measures
 * until a's key is gone from each LU (read back). Leaves the objects it made in place.
 */
export async function measureFenceLatency(
  kc: KubeConfig,
  n: number,
  o: {
    prefix: string;
    nodeBody?: (name: string) => object;
    /**
     * The old node is lost, not detached: its NodeFence asks for its fence (as the
     * controller's NodeLost request does) before the attachments move. The fence then rests
     * on a view of each volume; after a plain detach, on the full view (docs/design.md).
     */
    lostNode?: boolean;
    /**
     * `node` (as the chart ships): the agents learn of the attachment from the desired
     * state an in-process controller writes; its requests count in the requests per fence.
     * Default `cluster`: each agent watches the VolumeAttachments itself.
     */
    scope?: AgentScope;
  },
): Promise<FenceLatency> {
  const core = kc.makeApiClient(CoreV1Api);
  const log = pino({ level: 'silent' });
  const lus = new Map<string, MemoryLogicalUnit>();
  // The load generator talks over kept-alive connections, like a real client elsewhere.
  const api = new RestClient(kc);
  const createVa = (name: string, node: string, pv: string) =>
    api.send({
      method: 'POST',
      path: '/apis/storage.k8s.io/v1/volumeattachments',
      body: {
        apiVersion: 'storage.k8s.io/v1',
        kind: 'VolumeAttachment',
        metadata: { name },
        spec: { attacher: 'b', nodeName: node, source: { persistentVolumeName: pv } },
      },
    });
  const [na, nb] = [`${o.prefix}-a`, `${o.prefix}-b`];
  for (const name of [na, nb]) await core.createNode({ body: o.nodeBody?.(name) ?? { metadata: { name } } });
  // The agent's own measurement: from its informer delivering the new VolumeAttachment
  // (the trigger) until the victim's key was gone on read-back.
  const agentSeen = new Map<string, number>();
  const scope = o.scope ?? 'cluster';
  const controller =
    scope === 'node'
      ? new Controller({ kubeConfig: kc, log, identity: `${o.prefix}-controller`, leaderElection: false })
      : undefined;
  void controller?.run();
  const start = (node: string) =>
    Agent.start({
      kubeConfig: kc,
      nodeName: node,
      scope,
      log,
      workers: Number(process.env.PRFENCE_BENCH_WORKERS ?? 8),
      // The mechanics of a fence, without the grace a node that detached normally
      // gets to unregister by itself (a lost node is fenced by request, at once).
      leaveGraceMs: 0,
      openDevice: async (id) => lus.get(id)!.initiator(node),
      onFence: (e) => {
        if (e.result === 'fenced' && e.sinceTriggerMs !== undefined) agentSeen.set(e.pv, e.sinceTriggerMs);
      },
    });
  const a = await start(na);
  const b = await start(nb);
  const pvs = Array.from({ length: n }, (_, i) => `${o.prefix}-pv-${i}`);
  await pool(pvs, 16, async (pv) => {
    const lu = new MemoryLogicalUnit({ id: pv });
    lus.set(pv, lu);
    await core.createPersistentVolume({
      body: {
        metadata: { name: pv, annotations: { [DEVICE_ANNOTATION]: pv } },
        spec: {
          capacity: { storage: '1Gi' },
          accessModes: ['ReadWriteOnce'],
          csi: { driver: 'b', volumeHandle: pv },
        },
      },
    });
    await createVa(`va-a-${pv}`, na, pv);
  });
  while (![...pvs].every((pv) => lus.get(pv)!.state().reservation?.holder === na)) await sleep(20);
  await a.stop(); // partitioned
  if (o.lostNode)
    await api.send({
      method: 'PATCH',
      path: `/apis/prfence.io/v1alpha1/nodefences/${na}`,
      contentType: 'application/merge-patch+json',
      body: { spec: { fenceState: 'Fenced', reason: 'NodeLost', requestedBy: 'prfence-bench' } },
    });
  const requests = () => b.apiRequests + (controller?.apiRequests ?? 0);
  const reqBefore = requests();
  const t0 = new Map<string, number>();
  const done = new Map<string, number>();
  const watcher = setInterval(() => {
    for (const pv of pvs) {
      if (done.has(pv) || !t0.has(pv)) continue;
      if (
        !lus
          .get(pv)!
          .state()
          .registrations.some((r) => r.key === a.key)
      )
        done.set(pv, performance.now());
    }
  }, 1);
  // The attach-detach controller deletes the partitioned node's attachment and creates
  // the new node's: for all volumes at once.
  await Promise.all(
    pvs.map(async (pv) => {
      await api.send({ method: 'DELETE', path: `/apis/storage.k8s.io/v1/volumeattachments/va-a-${pv}` });
      t0.set(pv, performance.now());
      await createVa(`va-b-${pv}`, nb, pv);
    }),
  );
  const deadline = performance.now() + 120_000;
  while (done.size < n && performance.now() < deadline) await sleep(10);
  clearInterval(watcher);
  // Let b finish recording (status, marks, events) before counting its requests.
  await sleep(3000);
  const requestsPerFence = (requests() - reqBefore) / n;
  const fenced = pvs.filter((pv) => done.has(pv));
  await b.stop();
  await controller?.stop();
  api.close();
  return {
    n,
    fromVisible: [...agentSeen.values()],
    fromCreate: fenced.map((pv) => done.get(pv)! - t0.get(pv)!),
    requestsPerFence,
    fenced: fenced.length,
  };
}
