/**
 * The kubelets' node status heartbeat of the scale benchmark: every node's status is
 * patched once per period, the nodes spread evenly over the period (not all at once).
 */
import type { RestClient } from '../../src/kube/rest-client.js';
import { heartbeatPatch, patchNodeStatus } from './objects.js';

export class Heartbeat {
  /** Used in turn: one client keeps at most 16 connections, too few for 100 patches/s on a busy API server. */
  readonly #clients: readonly RestClient[];
  #turn = 0;
  readonly #periodMs: number;
  readonly #next = new Map<string, number>();
  #timer: NodeJS.Timeout | undefined;
  /** Patches answered 2xx, and failed (API server down during a restart, for example). */
  ok = 0;
  failed = 0;
  inFlight = 0;

  constructor(clients: readonly RestClient[], periodMs = 10_000) {
    this.#clients = clients;
    this.#periodMs = periodMs;
  }

  /** Adds nodes to the rotation, their first beats spread over the next period. */
  add(names: readonly string[]): void {
    const now = performance.now();
    names.forEach((n, k) => this.#next.set(n, now + (k / names.length) * this.#periodMs));
  }

  get nodes(): number {
    return this.#next.size;
  }

  start(): void {
    this.#timer ??= setInterval(() => this.#tick(), 20);
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #tick(): void {
    const now = performance.now();
    for (const [name, at] of this.#next) {
      if (at > now) continue;
      // The next beat a period after this one was due (a period from now if it is late by
      // more than that): the rate stays N per period, without catch-up bursts.
      this.#next.set(name, at + this.#periodMs > now ? at + this.#periodMs : now + this.#periodMs);
      this.inFlight += 1;
      const api = this.#clients[this.#turn++ % this.#clients.length]!;
      patchNodeStatus(api, name, heartbeatPatch()).then(
        () => {
          this.ok += 1;
          this.inFlight -= 1;
        },
        () => {
          this.failed += 1;
          this.inFlight -= 1;
        },
      );
    }
  }
}
