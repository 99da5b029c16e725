/**
 * Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection and
 * the kubernetes-csi sidecars do it (decisions in lease.ts):
 * - a candidate tries every retry period (jittered) to create the Lease or take one whose
 *   record has not changed for a lease duration (its own clock), or that was released;
 * - the leader renews every retry period; every write carries the resourceVersion it was
 *   decided on, so two candidates never both win;
 * - the leader is valid until `renewDeadline` after the START of its last successful
 *   renew attempt. At that moment it stops leading (a timer; {@link isLeader} also checks
 *   the clock, so a late timer changes nothing). It never leads again: the caller stops
 *   acting and exits (the pod restarts and campaigns anew, as the csi sidecars do).
 * A candidate takes over no sooner than `leaseDuration` after it saw the last renew,
 * which was sent before the leader's deadline started: `leaseDuration - renewDeadline`
 * (5 s by default) separates the old leader's last act from the new leader's first.
 */
import type { Logger } from 'pino';
import { describeError } from '../obs/logger.js';
import { KubeApiError, type RestClient } from '../kube/rest-client.js';
import {
  decide,
  observe,
  recordOf,
  released,
  type Lease,
  type LeaderTimings,
  type Observed,
} from './lease.js';

export interface LeaderElectorOptions extends LeaderTimings {
  rest: RestClient;
  namespace: string;
  name: string;
  identity: string;
  log: Logger;
  /** Called once, when this candidate becomes leader. */
  onStartedLeading: () => void;
  /** Called once, when it stops leading (deadline passed, or stop()). */
  onStoppedLeading: () => void;
  /** Monotonic clock in ms; default performance.now. */
  now?: () => number;
}

export type ElectionEnd = 'lost' | 'stopped';

export class LeaderElector {
  readonly #o: LeaderElectorOptions;
  readonly #now: () => number;
  #leading = false;
  #validUntil = 0;
  #observed: Observed | undefined;
  #lease: Lease | undefined;
  #stopped = false;
  #ended = false;
  #deadlineTimer: NodeJS.Timeout | undefined;
  #wake: (() => void) | undefined;
  #inflight: Promise<boolean> | undefined;
  #problem: string | undefined = 'not tried yet';
  #endResolve!: (e: ElectionEnd) => void;
  readonly #end = new Promise<ElectionEnd>((r) => (this.#endResolve = r));

  constructor(o: LeaderElectorOptions) {
    this.#o = o;
    this.#now = o.now ?? (() => performance.now());
  }

  get identity(): string {
    return this.#o.identity;
  }

  /** True only while leading AND before the renew deadline (checked on the clock, not a flag alone). */
  isLeader(): boolean {
    return this.#leading && this.#now() < this.#validUntil;
  }

  /** The holder named by the Lease this candidate last read or wrote. */
  observedHolder(): string | undefined {
    return this.#lease?.spec?.holderIdentity || undefined;
  }

  /** Undefined if the last Lease read or write succeeded, else why not. */
  problem(): string | undefined {
    return this.#problem;
  }

  #path(name?: string): string {
    const ns = encodeURIComponent(this.#o.namespace);
    return `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases${name ? `/${encodeURIComponent(name)}` : ''}`;
  }

  /** Campaigns, then leads until the deadline passes or stop(); resolves with how it ended. */
  run(): Promise<ElectionEnd> {
    void this.#loop();
    return this.#end;
  }

  async #loop(): Promise<void> {
    const { retryPeriodMs } = this.#o;
    while (!this.#stopped && !this.#leading) {
      if (await this.#attempt()) break;
      await this.#sleep(retryPeriodMs * (1 + Math.random() * 0.2));
    }
    if (this.#stopped) return this.#finish('stopped');
    this.#leading = true;
    this.#o.log.info({ identity: this.#o.identity, lease: this.#o.name }, 'became leader');
    this.#o.onStartedLeading();
    while (!this.#stopped && this.isLeader()) {
      await this.#sleep(retryPeriodMs);
      if (this.#stopped || !this.isLeader()) break;
      await this.#attempt();
    }
    if (!this.#stopped) this.#lose();
  }

  #armDeadline(): void {
    clearTimeout(this.#deadlineTimer);
    this.#deadlineTimer = setTimeout(
      () => {
        if (!this.#leading) return;
        if (this.#now() >= this.#validUntil) this.#lose();
        // A timer can fire before its time on this clock (Node's timers run on the loop's
        // cached time): wait for the rest, never for the next renew round.
        else this.#armDeadline();
      },
      Math.max(1, Math.ceil(this.#validUntil - this.#now())),
    );
  }

  #lose(): void {
    if (this.#ended) return;
    this.#o.log.error(
      { identity: this.#o.identity, renewDeadlineMs: this.#o.renewDeadlineMs, err: this.#problem },
      'leader election lost: the lease was not renewed within the renew deadline; stopped acting',
    );
    this.#leading = false;
    this.#o.onStoppedLeading();
    this.#finish('lost');
  }

  #finish(e: ElectionEnd): void {
    if (this.#ended) return;
    this.#ended = true;
    clearTimeout(this.#deadlineTimer);
    this.#endResolve(e);
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.#wake = undefined;
        resolve();
      }, ms);
      this.#wake = () => {
        clearTimeout(t);
        this.#wake = undefined;
        resolve();
      };
    });
  }

  /** One read-decide-write round. True if this candidate holds the Lease now. */
  #attempt(): Promise<boolean> {
    const p = this.#attemptOnce();
    this.#inflight = p;
    return p;
  }

  async #attemptOnce(): Promise<boolean> {
    const started = this.#now();
    // A leader's requests may not outlive its deadline; a candidate's get the renew deadline.
    const budget = () =>
      Math.max(1, Math.round(this.#leading ? this.#validUntil - this.#now() : this.#o.renewDeadlineMs));
    try {
      let lease: Lease | undefined;
      try {
        lease = await this.#o.rest.send<Lease>({
          method: 'GET',
          path: this.#path(this.#o.name),
          timeoutMs: budget(),
        });
      } catch (e) {
        if (!(e instanceof KubeApiError && e.code === 404)) throw e;
      }
      if (this.#ended) return false;
      this.#lease = lease;
      this.#observed = observe(this.#observed, lease, this.#now());
      const d = decide({
        identity: this.#o.identity,
        lease,
        observed: this.#observed,
        now: this.#now(),
        wallNow: new Date(),
        leaseDurationMs: this.#o.leaseDurationMs,
      });
      if (d.kind === 'wait') {
        this.#problem = undefined;
        if (this.#leading) {
          // Someone else holds it now (this leader was presumed dead): stop at once.
          this.#problem = `lease taken by ${d.holder}`;
          this.#lose();
        }
        return false;
      }
      const body: Lease = {
        apiVersion: 'coordination.k8s.io/v1',
        kind: 'Lease',
        metadata: {
          name: this.#o.name,
          namespace: this.#o.namespace,
          ...(lease?.metadata.resourceVersion ? { resourceVersion: lease.metadata.resourceVersion } : {}),
        },
        spec: d.spec,
      };
      const written =
        d.kind === 'create'
          ? await this.#o.rest.send<Lease>({ method: 'POST', path: this.#path(), body, timeoutMs: budget() })
          : await this.#o.rest.send<Lease>({
              method: 'PUT',
              path: this.#path(this.#o.name),
              body,
              timeoutMs: budget(),
            });
      // Recorded even after stop(): the release must carry the newest resourceVersion.
      this.#lease = written;
      if (this.#ended) return false;
      this.#observed = { record: recordOf(written.spec), at: this.#now() };
      this.#validUntil = started + this.#o.renewDeadlineMs;
      this.#armDeadline();
      this.#problem = undefined;
      if (d.kind === 'update' && d.takeover)
        this.#o.log.info({ previous: lease?.spec?.holderIdentity || undefined }, 'took over the lease');
      return true;
    } catch (e) {
      // 409: another candidate wrote first (optimistic concurrency); anything else: retried.
      this.#problem = `lease ${this.#o.namespace}/${this.#o.name}: ${describeError(e)}`;
      this.#o.log.debug({ err: this.#problem }, 'lease not acquired or renewed');
      return false;
    }
  }

  /**
   * Stops campaigning or leading. The caller stops acting first; with `release` a leader
   * then writes a record without holder, so another candidate takes over at once.
   */
  async stop(opts: { release?: boolean } = {}): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#wake?.();
    const wasLeader = this.isLeader();
    if (this.#leading) {
      this.#leading = false;
      this.#o.onStoppedLeading();
    }
    this.#finish('stopped');
    if (!opts.release || !wasLeader) return;
    // A renew still in flight moves the resourceVersion: release after it.
    await this.#inflight?.catch(() => false);
    const lease = this.#lease;
    if (lease?.spec?.holderIdentity !== this.#o.identity) return;
    try {
      await this.#o.rest.send({
        method: 'PUT',
        path: this.#path(this.#o.name),
        body: { ...lease, spec: released(lease.spec, new Date()) },
        timeoutMs: Math.max(1, Math.min(this.#o.retryPeriodMs, this.#validUntil - this.#now())),
      });
      this.#o.log.info('lease released');
    } catch (e) {
      this.#o.log.warn({ err: describeError(e) }, 'lease not released; it expires by itself');
    }
  }
}
