/**
 * What a reconciler of the controller may use. Every write (apply, delete, event) goes
 * through {@link Acting.write}, which runs it only while this replica may act (the leader,
 * before its renew deadline) and refuses it otherwise: a replica that stopped leading
 * sends nothing more, whatever a worker was in the middle of.
 */
import type { Logger } from 'pino';
import type { EventInput } from '../kube/events.js';
import type { RestClient } from '../kube/rest-client.js';
import type { ControllerMetrics } from '../obs/controller-metrics.js';

export const FIELD_MANAGER = 'prfence-controller';

export class NotLeaderError extends Error {
  override readonly name = 'NotLeaderError';
}

export interface ControllerAction {
  kind: 'fence-request' | 'delete' | 'release' | 'event' | 'status' | 'taint' | 'desired-state';
  /** Resource (plural), or `events` with the event's reason in `name`. */
  resource: string;
  name: string;
}

export interface Acting {
  rest: RestClient;
  log: Logger;
  metrics: ControllerMetrics | undefined;
  /** Runs `fn` only while this replica may act; throws NotLeaderError otherwise. */
  write<T>(a: ControllerAction, fn: () => Promise<T>): Promise<T>;
  /** Records an event (best effort, and only while this replica may act). */
  event(e: EventInput): Promise<void>;
}
