/**
 * The client-go work queue metrics (`workqueue_*`, label `name`), shared by the agent and
 * the controller: the same names and help as client-go's, so existing dashboards work.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { QueueMetrics } from '../kube/work-queue.js';

export const SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** Registers the queue metrics on `registry`; the series of `name` exist from the start. */
export function createQueueMetrics(registry: Registry, name: string): QueueMetrics {
  const registers = [registry];
  const q = { name };
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
  depth.set(q, 0);
  adds.inc(q, 0);
  retries.inc(q, 0);
  return {
    added: () => adds.inc(q),
    depth: (n) => depth.set(q, n),
    retried: () => retries.inc(q),
    waited: (s) => waited.observe(q, s),
    worked: (s) => worked.observe(q, s),
  };
}
