/**
 * Readiness (/readyz, and the NoFreshView condition of the own status): the agent can act
 * safely unless the last fresh read of the API server failed or a watch is dead. It
 * follows the API server without waiting for a device command: a consistent GET of the
 * own NodeFence every freshness period (a fresh read again after a failed one).
 */
import type { RestClient } from '../kube/rest-client.js';
import { describeError } from '../obs/logger.js';
import type { FreshViewSource } from './fresh-view.js';
import { nfPath } from './key-claim.js';

export interface ReadinessOptions {
  rest: RestClient;
  node: string;
  fresh: FreshViewSource;
  /** The probe's period and time limit: the freshness bound. */
  periodMs: number;
  /** Why a watch is dead, if one is. */
  watchProblem: () => string | undefined;
}

export class Readiness {
  readonly #o: ReadinessOptions;
  #apiProblem: string | undefined;
  #probe: NodeJS.Timeout | undefined;

  constructor(o: ReadinessOptions) {
    this.#o = o;
  }

  /** Starts the API probe. */
  start(): void {
    const { rest, node, fresh, periodMs: period } = this.#o;
    let running = false;
    this.#probe = setInterval(() => {
      if (running) return;
      running = true;
      const check = fresh.problem()
        ? fresh.get()
        : rest.send({ method: 'GET', path: nfPath(node), timeoutMs: period });
      check
        .then(
          () => (this.#apiProblem = undefined),
          (e: unknown) => (this.#apiProblem = `API server not answering: ${describeError(e)}`),
        )
        .finally(() => (running = false));
    }, period);
    this.#probe.unref();
  }

  stop(): void {
    if (this.#probe) clearInterval(this.#probe);
  }

  /**
   * Undefined while the agent can act safely, else why not: the last fresh read of the
   * API failed, or a watch is dead.
   */
  notReady(): string | undefined {
    return this.#apiProblem ?? this.#o.fresh.problem() ?? this.#o.watchProblem();
  }
}
