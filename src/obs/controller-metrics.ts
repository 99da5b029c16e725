/**
 * The controller's Prometheus metrics (prom-client), one registry per controller. Same
 * conventions as the agent's (metrics.ts): `prfence_*`, client-go's `workqueue_*` with
 * `name="controller"`, and the API requests by method and code.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { QueueMetrics } from '../kube/work-queue.js';

export interface ControllerMetrics {
  readonly registry: Registry;
  readonly queue: QueueMetrics;
  isLeader(leading: boolean): void;
  /** One object deleted by garbage collection; kind: VolumeReservation, NodeFence, ReservationKey. */
  gcDeleted(kind: string): void;
  /** A NodeFence set to Fenced because of the out-of-service taint. */
  fenceRequested(): void;
  reconciled(kind: string, outcome: string): void;
  apiRequest(method: string, code: number): void;
}

const SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export function createControllerMetrics(opts: { processMetrics?: boolean } = {}): ControllerMetrics {
  const registry = new Registry();
  if (opts.processMetrics) collectDefaultMetrics({ register: registry });
  const registers = [registry];
  const leader = new Gauge({
    name: 'prfence_controller_is_leader',
    help: '1 while this controller replica is the leader and may act, else 0.',
    registers,
  });
  const gc = new Counter({
    name: 'prfence_gc_deletions_total',
    help: 'Objects deleted by garbage collection, by kind (VolumeReservation, NodeFence, ReservationKey).',
    labelNames: ['kind'],
    registers,
  });
  const fences = new Counter({
    name: 'prfence_controller_fence_requests_total',
    help: 'NodeFences set to Fenced because their Node has the out-of-service taint.',
    registers,
  });
  const reconciles = new Counter({
    name: 'prfence_controller_reconciles_total',
    help: 'Controller reconciles by kind (taint, nodefence, volumereservation) and outcome.',
    labelNames: ['kind', 'outcome'],
    registers,
  });
  const api = new Counter({
    name: 'prfence_kube_api_requests_total',
    help: 'Requests this controller sent to the Kubernetes API, by method and code.',
    labelNames: ['method', 'code'],
    registers,
  });
  const q = { name: 'controller' };
  const depth = new Gauge({
    name: 'workqueue_depth',
    help: 'Current depth of the work queue.',
    labelNames: ['name'],
    registers,
  });
  const adds = new Counter({
    name: 'workqueue_adds_total',
    help: 'Adds handled by the work queue.',
    labelNames: ['name'],
    registers,
  });
  const retries = new Counter({
    name: 'workqueue_retries_total',
    help: 'Retries (rate-limited adds) handled by the work queue.',
    labelNames: ['name'],
    registers,
  });
  const waited = new Histogram({
    name: 'workqueue_queue_duration_seconds',
    help: 'How long an item stays in the work queue before being requested.',
    labelNames: ['name'],
    buckets: SECONDS,
    registers,
  });
  const worked = new Histogram({
    name: 'workqueue_work_duration_seconds',
    help: 'How long processing an item from the work queue takes.',
    labelNames: ['name'],
    buckets: SECONDS,
    registers,
  });
  // Series exist from the start (a scrape before the first event shows 0, not nothing).
  leader.set(0);
  for (const kind of ['VolumeReservation', 'NodeFence', 'ReservationKey']) gc.inc({ kind }, 0);
  depth.set(q, 0);
  adds.inc(q, 0);
  retries.inc(q, 0);
  return {
    registry,
    queue: {
      added: () => adds.inc(q),
      depth: (n) => depth.set(q, n),
      retried: () => retries.inc(q),
      waited: (s) => waited.observe(q, s),
      worked: (s) => worked.observe(q, s),
    },
    isLeader: (l) => leader.set(l ? 1 : 0),
    gcDeleted: (kind) => gc.inc({ kind }),
    fenceRequested: () => fences.inc(),
    reconciled: (kind, outcome) => reconciles.inc({ kind, outcome }),
    apiRequest: (method, code) => api.inc({ method, code: String(code) }),
  };
}
