/**
 * events.k8s.io/v1 events, as client-go's event recorder writes them: MicroTime event
 * times (the API server parses exactly six fractional digits), a reporting controller and
 * instance, and identical events within a window folded into one (a fence retried in a
 * loop must not flood the namespace). Recording never fails the caller: an event is
 * best-effort, the custom resources are the record.
 */
import type { Logger } from 'pino';
import type { RestClient } from './rest-client.js';

export interface ObjectRef {
  apiVersion: string;
  kind: string;
  name: string;
  namespace?: string;
}

export interface EventInput {
  regarding: ObjectRef;
  related?: ObjectRef;
  reason: string;
  action: string;
  type: 'Normal' | 'Warning';
  note: string;
}

/** RFC 3339 with microseconds (metav1.MicroTime), e.g. 2026-11-22T14:36:53.238000Z. */
export function microTime(d: Date): string {
  return d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

let seq = 0;
function eventSuffix(nowMs: number): string {
  seq = (seq + 1) % 4096;
  return (BigInt(Math.floor(nowMs)) * 1_000_000n + BigInt(seq)).toString(16);
}

export interface EventRecorderOptions {
  rest: RestClient;
  log: Logger;
  controller: string;
  instance: string;
  namespace?: string;
  /** Identical events (regarding, reason, note) within this window are written once. Default 10 min. */
  dedupWindowMs?: number;
  now?: () => number;
}

export class EventRecorder {
  readonly #o: EventRecorderOptions;
  readonly #recent = new Map<string, number>();

  constructor(o: EventRecorderOptions) {
    this.#o = o;
  }

  /** Resolves true if the event was written, false if folded into a recent identical one or failed. */
  async emit(e: EventInput): Promise<boolean> {
    const now = (this.#o.now ?? Date.now)();
    const window = this.#o.dedupWindowMs ?? 600_000;
    for (const [k, t] of this.#recent) if (now - t >= window) this.#recent.delete(k);
    const id = JSON.stringify([e.regarding.kind, e.regarding.name, e.reason, e.note]);
    if (this.#recent.has(id)) return false;
    this.#recent.set(id, now);
    const ns = this.#o.namespace ?? 'default';
    try {
      await this.#o.rest.send({
        method: 'POST',
        path: `/apis/events.k8s.io/v1/namespaces/${ns}/events`,
        body: {
          apiVersion: 'events.k8s.io/v1',
          kind: 'Event',
          // Named like client-go's recorder: <regarding>.<time in hex>.
          metadata: { name: `${e.regarding.name}.${eventSuffix(now)}`, namespace: ns },
          eventTime: microTime(new Date(now)),
          reportingController: this.#o.controller,
          reportingInstance: this.#o.instance,
          action: e.action,
          reason: e.reason,
          type: e.type,
          note: e.note.slice(0, 1024),
          regarding: e.regarding,
          ...(e.related ? { related: e.related } : {}),
        },
      });
      return true;
    } catch (err) {
      this.#recent.delete(id);
      this.#o.log.warn({ err: String(err), reason: e.reason }, 'event not recorded');
      return false;
    }
  }
}
