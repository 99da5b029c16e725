/**
 * Test helpers for the controller's node-loss and isolation tests: node Leases in
 * kube-node-lease renewed by the test as kubelets would, and an in-process controller that
 * records every write it sends.
 */
import type { Logger } from 'pino';
import { Controller, type ControllerOptions } from '../../src/controller/controller.js';
import type { ElectionEnd } from '../../src/controller/leader-election.js';
import { nodeLeasePath } from '../../src/controller/node-loss.js';
import { KubeApiError, type RestClient } from '../../src/kube/rest-client.js';
import { FaultProxy, kubeConfigVia } from '../envtest/fault-proxy.js';
import { eventually, uniqueName } from '../envtest/kube.js';
import type { Cluster } from './agent-harness.js';

export const LEADER_TIMINGS = { leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2000 };

/** A MicroTime (RFC 3339 with microseconds), as the kubelet writes it. */
export const microTime = (d: Date) => d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');

export async function ensureNamespace(rest: RestClient, name: string): Promise<void> {
  await rest
    .send({ method: 'POST', path: '/api/v1/namespaces', body: { metadata: { name } } })
    .catch((e: unknown) => {
      if (!(e instanceof KubeApiError && e.code === 409)) throw e;
    });
}

export interface Kubelet {
  /** When the last successful renew was sent (the controller cannot have seen it change earlier). */
  lastRenewAt: number;
  stop(): void;
}

/** Node Leases the test creates and renews; `cleanup()` stops the renewals and deletes them. */
export class Kubelets {
  readonly #rest: RestClient;
  readonly #timers: NodeJS.Timeout[] = [];
  readonly #leases: string[] = [];

  constructor(rest: RestClient) {
    this.#rest = rest;
  }

  async lease(name: string, renewTime = new Date()): Promise<void> {
    await ensureNamespace(this.#rest, 'kube-node-lease');
    await this.#rest.send({
      method: 'POST',
      path: nodeLeasePath(),
      body: {
        apiVersion: 'coordination.k8s.io/v1',
        kind: 'Lease',
        metadata: { name },
        spec: { holderIdentity: name, leaseDurationSeconds: 40, renewTime: microTime(renewTime) },
      },
    });
    this.#leases.push(name);
  }

  /** Renews the Lease every second, as a kubelet. */
  renew(name: string): Kubelet {
    const k = { lastRenewAt: performance.now(), stop: () => clearInterval(t) };
    const t = setInterval(() => {
      const sentAt = performance.now();
      void this.#rest
        .send({
          method: 'PATCH',
          path: nodeLeasePath(name),
          contentType: 'application/merge-patch+json',
          body: { spec: { renewTime: microTime(new Date()) } },
        })
        .then(() => (k.lastRenewAt = Math.max(k.lastRenewAt, sentAt)))
        .catch(() => undefined);
    }, 1000);
    this.#timers.push(t);
    return k;
  }

  async cleanup(): Promise<void> {
    for (const t of this.#timers.splice(0)) clearInterval(t);
    await Promise.all(
      this.#leases
        .splice(0)
        .map((n) => this.#rest.send({ method: 'DELETE', path: nodeLeasePath(n) }).catch(() => undefined)),
    );
  }
}

/** What the kubelet reports: a new bootID is a new incarnation of the node. */
export async function bootNode(rest: RestClient, node: string, bootID: string): Promise<void> {
  await rest.send({
    method: 'PATCH',
    path: `/api/v1/nodes/${node}/status`,
    contentType: 'application/merge-patch+json',
    body: { status: { nodeInfo: { bootID } } },
  });
}

/** A new Node, booted (`<name>-boot-1`), whose Lease the returned kubelet renews every second. */
export async function liveNode(
  c: Cluster,
  kubelets: Kubelets,
  prefix: string,
): Promise<{ name: string; kubelet: Kubelet }> {
  const name = await c.node(prefix);
  await bootNode(c.rest, name, `${name}-boot-1`);
  await kubelets.lease(name);
  return { name, kubelet: kubelets.renew(name) };
}

export interface ControllerRun {
  controller: Controller;
  /** Every write the controller sent, with performance.now() when it was sent. */
  actions: { kind: string; resource: string; name: string; at: number }[];
  actingFrom: number | undefined;
}

/** A controller with leader election in a namespace of its own, resync 1 s; resolves once it acts. */
export async function startController(
  c: Cluster,
  log: Logger,
  controllers: Controller[],
  o: Partial<ControllerOptions>,
): Promise<ControllerRun> {
  const ns = uniqueName('nl');
  await ensureNamespace(c.rest, ns);
  await c.ownController();
  const run: ControllerRun = {
    actions: [],
    actingFrom: undefined,
    controller: undefined as unknown as Controller,
  };
  run.controller = new Controller({
    kubeConfig: c.kc,
    log,
    identity: uniqueName('nl-ctl'),
    leaderElection: { namespace: ns, ...LEADER_TIMINGS },
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

/** One controller replica whose API traffic goes through its own FaultProxy. */
export interface Replica {
  controller: Controller;
  proxy: FaultProxy;
  ended: Promise<ElectionEnd>;
  /** [from, to) of each period this replica acted (performance.now()). */
  acting: { from: number; to: number | undefined }[];
  /** Every write the replica sent, with performance.now() when it was sent. */
  actions: { kind: string; resource: string; name: string; at: number }[];
  /** Every reconcile the replica finished: key, outcome, performance.now(). */
  reconciled: { key: string; outcome: string; at: number }[];
}

/**
 * A controller replica campaigning for the Lease in `namespace` (same process clock as the
 * test), through a FaultProxy: `proxy.blackhole()` kills it as far as the cluster can
 * tell (no more requests, the Lease not released) while the process keeps running.
 * Stopped and closed by `stopReplicas`.
 */
export async function startReplica(
  c: Cluster,
  log: Logger,
  replicas: Replica[],
  namespace: string,
  name: string,
  o: Partial<ControllerOptions> = {},
): Promise<Replica> {
  await c.ownController();
  const proxy = await FaultProxy.start({ target: c.kc.getCurrentCluster()!.server });
  const r: Replica = {
    controller: undefined!,
    proxy,
    ended: undefined!,
    acting: [],
    actions: [],
    reconciled: [],
  };
  r.controller = new Controller({
    kubeConfig: kubeConfigVia(c.kc, proxy),
    log: log.child({ replica: name }),
    identity: `${name}_${uniqueName('id')}`,
    leaderElection: { namespace, ...LEADER_TIMINGS },
    resyncMs: 1000,
    onActing: (on, at) => {
      if (on) r.acting.push({ from: at, to: undefined });
      else r.acting.at(-1)!.to = at;
    },
    onAction: (a) => r.actions.push(a),
    onReconciled: (key, outcome) => r.reconciled.push({ key, outcome, at: performance.now() }),
    ...o,
  });
  r.ended = r.controller.run();
  replicas.push(r);
  return r;
}

/** Stops every replica (their connections reset first, so a blackholed one returns at once). */
export async function stopReplicas(replicas: Replica[]): Promise<void> {
  for (const r of replicas) r.proxy.reset('both');
  await Promise.all(replicas.map((r) => r.controller.stop()));
  await Promise.all(replicas.splice(0).map((r) => r.proxy.close()));
}
