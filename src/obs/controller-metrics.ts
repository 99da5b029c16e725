/**
 * The controller's Prometheus metrics (prom-client), one registry per controller. Same
 * conventions as the agent's (metrics.ts): `prfence_*`, client-go's `workqueue_*` with
 * `name="controller"`, and the API requests by method and code.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { QueueMetrics } from '../kube/work-queue.js';
import { createQueueMetrics } from './queue-metrics.js';

export interface ControllerMetrics {
  readonly registry: Registry;
  readonly queue: QueueMetrics;
  isLeader(leading: boolean): void;
  /** One object deleted by garbage collection; kind: VolumeReservation, NodeFence, ReservationKey. */
  gcDeleted(kind: string): void;
  /** A NodeFence set to Fenced by the controller; reason: OutOfService or NodeLost. */
  fenceRequested(reason: string): void;
  /** Nodes whose Lease this controller has seen unchanged for --node-lost-after. */
  nodesLost(n: number): void;
  reconciled(kind: string, outcome: string): void;
  /** Devices of a node asked to be fenced that have no proof of isolation yet (0 removes the series). */
  unprovenDevices(node: string, n: number): void;
  /** The out-of-service taint applied after a complete proof, or removed after an unfence and a reboot. */
  taint(action: 'applied' | 'removed'): void;
  apiRequest(method: string, code: number): void;
}

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
    help: 'NodeFences set to Fenced by the controller, by reason (OutOfService: the out-of-service taint; NodeLost: its node Lease not renewed).',
    labelNames: ['reason'],
    registers,
  });
  const lost = new Gauge({
    name: 'prfence_controller_nodes_lost',
    help: 'Nodes whose kube-node-lease Lease this controller saw unchanged for --node-lost-after (0 unless --auto-fence).',
    registers,
  });
  const reconciles = new Counter({
    name: 'prfence_controller_reconciles_total',
    help: 'Controller reconciles by kind (taint, nodefence, volumereservation) and outcome.',
    labelNames: ['kind', 'outcome'],
    registers,
  });
  const unproven = new Gauge({
    name: 'prfence_controller_unproven_devices',
    help: 'Devices of a node asked to be fenced where a VolumeReservation still records its registration and no peer proved it gone, by node.',
    labelNames: ['node'],
    registers,
  });
  const taints = new Counter({
    name: 'prfence_controller_taints_total',
    help: 'node.kubernetes.io/out-of-service taints applied by the controller after a complete proof of isolation, and removed after an unfence and a new boot, by action.',
    labelNames: ['action'],
    registers,
  });
  const api = new Counter({
    name: 'prfence_kube_api_requests_total',
    help: 'Requests this controller sent to the Kubernetes API, by method and code.',
    labelNames: ['method', 'code'],
    registers,
  });
  const queue = createQueueMetrics(registry, 'controller');
  // Series exist from the start (a scrape before the first event shows 0, not nothing).
  leader.set(0);
  for (const kind of ['VolumeReservation', 'NodeFence', 'ReservationKey']) gc.inc({ kind }, 0);
  for (const reason of ['OutOfService', 'NodeLost']) fences.inc({ reason }, 0);
  lost.set(0);
  for (const action of ['applied', 'removed']) taints.inc({ action }, 0);
  return {
    registry,
    queue,
    isLeader: (l) => leader.set(l ? 1 : 0),
    gcDeleted: (kind) => gc.inc({ kind }),
    fenceRequested: (reason) => fences.inc({ reason }),
    nodesLost: (n) => lost.set(n),
    reconciled: (kind, outcome) => reconciles.inc({ kind, outcome }),
    unprovenDevices: (node, n) => (n > 0 ? unproven.set({ node }, n) : unproven.remove({ node })),
    taint: (action) => taints.inc({ action }),
    apiRequest: (method, code) => api.inc({ method, code: String(code) }),
  };
}
