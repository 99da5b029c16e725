/**
 * The agent's Prometheus metrics (prom-client), one registry per agent. Names follow the
 * kubernetes-csi sidecars and client-go: `prfence_*` for fencing, `workqueue_*` (label
 * `name`) for the work queue. Fencing code sees only the narrow hooks below.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { QueueMetrics } from '../kube/work-queue.js';
import { createQueueMetrics, SECONDS } from './queue-metrics.js';
import type { NativeExecutorStats } from '../pr/koffi/executor.js';

export interface AgentMetrics {
  readonly registry: Registry;
  readonly queue: QueueMetrics;
  /** One stale key removed (or not) from a volume; seconds since the trigger was seen. */
  fence(result: 'fenced' | 'failed', seconds: number | undefined): void;
  /** This node took a reservation over from a node handing it over (no fence). */
  takeover(): void;
  /** Volumes whose reservation this node holds only to hand it over (detached while a node is fenced). */
  handingOver(n: number): void;
  /** Volumes where this node removed a stale key and the fence's record is not written yet. */
  unrecordedFences(n: number): void;
  reconciled(outcome: string): void;
  /** 1 while this node may register keys (S2), 0 while it is fenced or out of service. */
  registrationAllowed(allowed: boolean): void;
  apiRequest(method: string, code: number): void;
  /** Devices where this node's own key is gone and not yet forgiven by an unfence (failfast). */
  accessLost(devices: number): void;
  /** One loss of the own key found (by the failfast probe or a reconcile), and the action taken. */
  failfastDetection(action: string): void;
  /** Probe reads skipped because the previous read of the device has not returned (hung). */
  failfastSkipped(n: number): void;
  /** Exports the native executor's state, read at each scrape (src/pr/koffi/executor.ts). */
  observeNativeExecutor(read: () => NativeExecutorStats): void;
}

/** Metrics for one agent; `processMetrics` adds Node's process_* and nodejs_* collectors. */
export function createAgentMetrics(opts: { processMetrics?: boolean } = {}): AgentMetrics {
  const registry = new Registry();
  if (opts.processMetrics) collectDefaultMetrics({ register: registry });
  const registers = [registry];
  const fences = new Counter({
    name: 'prfence_fences_total',
    help: 'Stale keys this agent removed from a device, by result (fenced: gone on read-back).',
    labelNames: ['result'],
    registers,
  });
  const fenceSeconds = new Histogram({
    name: 'prfence_fence_duration_seconds',
    help: 'From the trigger (VolumeAttachment, NodeFence or taint change) seen by this agent until the stale key was gone from the device (read back).',
    buckets: SECONDS,
    registers,
  });
  const takeovers = new Counter({
    name: 'prfence_takeovers_total',
    help: 'Reservations this agent took over from a node that held them only to hand them over (no fence).',
    registers,
  });
  const handing = new Gauge({
    name: 'prfence_handing_over_volumes',
    help: 'Volumes this node left but whose reservation it holds, because a fenced node may still write, until the next node takes it over.',
    registers,
  });
  const unrecorded = new Gauge({
    name: 'prfence_unrecorded_fences',
    help: "Volumes where this node removed a stale key and has not yet written the fence's record (Fenced mark, proof, lastFence, the intent's removal); retried with the volume's reconcile.",
    registers,
  });
  const reconciles = new Counter({
    name: 'prfence_reconciles_total',
    help: 'Volume reconciles by outcome (done, waiting, blocked, unsupported, error).',
    labelNames: ['outcome'],
    registers,
  });
  const allowed = new Gauge({
    name: 'prfence_registration_allowed',
    help: '1 while this node may register its key (S2); 0 while it is fenced or out of service.',
    registers,
  });
  const api = new Counter({
    name: 'prfence_kube_api_requests_total',
    help: 'Requests this agent sent to the Kubernetes API (status, marks, events), by method and code.',
    labelNames: ['method', 'code'],
    registers,
  });
  const lostDevices = new Gauge({
    name: 'prfence_access_lost_devices',
    help: "Devices where this node's own key was removed by someone else (the node treats itself as fenced there until an unfence).",
    registers,
  });
  const detections = new Counter({
    name: 'prfence_failfast_detections_total',
    help: "Losses of this node's own key found on a device, by the failfast action taken (report, taint, reboot).",
    labelNames: ['action'],
    registers,
  });
  const skipped = new Counter({
    name: 'prfence_failfast_probe_skipped_total',
    help: 'Failfast probe reads skipped because the previous read of the device had not returned (hung device).',
    registers,
  });
  const queue = createQueueMetrics(registry, 'volumes');
  let native: (() => NativeExecutorStats) | undefined;
  new Gauge({
    name: 'prfence_native_threads',
    help: 'Native executor threads by state (starting, idle, busy, stuck: running a call past its time limit).',
    labelNames: ['state'],
    registers,
    collect() {
      if (!native) return;
      const s = native();
      this.set({ state: 'idle' }, s.threads - s.busy - s.stuck - s.starting);
      this.set({ state: 'starting' }, s.starting);
      this.set({ state: 'busy' }, s.busy);
      this.set({ state: 'stuck' }, s.stuck);
    },
  });
  new Gauge({
    name: 'prfence_native_queued_calls',
    help: 'Native calls waiting for their device or for a thread.',
    registers,
    collect() {
      if (native) this.set(native().queued);
    },
  });
  new Gauge({
    name: 'prfence_native_hung_devices',
    help: 'Devices with a native call past its time limit (calls to them fail fast until it returns).',
    registers,
    collect() {
      if (native) this.set(native().hungDevices);
    },
  });
  // Series exist from the start (a scrape before the first add shows 0, not nothing).
  return {
    registry,
    queue,
    fence: (result, seconds) => {
      fences.inc({ result });
      if (result === 'fenced' && seconds !== undefined) fenceSeconds.observe(seconds);
    },
    takeover: () => takeovers.inc(),
    handingOver: (n) => handing.set(n),
    unrecordedFences: (n) => unrecorded.set(n),
    reconciled: (outcome) => reconciles.inc({ outcome }),
    registrationAllowed: (a) => allowed.set(a ? 1 : 0),
    apiRequest: (method, code) => api.inc({ method, code: String(code) }),
    accessLost: (n) => lostDevices.set(n),
    failfastDetection: (action) => detections.inc({ action }),
    failfastSkipped: (n) => skipped.inc(n),
    observeNativeExecutor: (read) => {
      native = read;
    },
  };
}
