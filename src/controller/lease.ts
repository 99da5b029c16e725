/**
 * The pure part of leader election on a coordination.k8s.io/v1 Lease, with client-go's
 * rules (k8s.io/client-go/tools/leaderelection): a candidate never trusts the times written
 * in the Lease (other clocks); it trusts only how long, on its own monotonic clock, the
 * record has stayed unchanged. A record unchanged for a whole lease duration belongs to a
 * dead holder and may be taken; a record with no holder (released) may be taken at once.
 * Every write carries the resourceVersion it was decided on (optimistic concurrency).
 */
import { microTime } from '../kube/events.js';

export interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
}

export interface Lease {
  apiVersion?: 'coordination.k8s.io/v1';
  kind?: 'Lease';
  metadata: { name: string; namespace?: string; resourceVersion?: string; uid?: string };
  spec?: LeaseSpec;
}

/** What a candidate last saw, and when it saw the record change (its own monotonic clock, ms). */
export interface Observed {
  record: string;
  at: number;
}

export type LeaseDecision =
  /** No Lease: create one naming this candidate. */
  | { kind: 'create'; spec: LeaseSpec }
  /** Write this spec with the Lease's resourceVersion (renew, or take over). */
  | { kind: 'update'; spec: LeaseSpec; takeover: boolean }
  /** Someone else holds a live lease. */
  | { kind: 'wait'; holder: string };

export interface DecideInput {
  identity: string;
  /** The Lease as just read; undefined if it does not exist. */
  lease: Lease | undefined;
  /** What this candidate observed before (undefined: never). */
  observed: Observed | undefined;
  /** This candidate's monotonic clock now (ms). */
  now: number;
  /** Wall clock now (for the record's times only; never used for a decision). */
  wallNow: Date;
  leaseDurationMs: number;
}

/** A comparable form of the record: any change of it shows the holder is alive. */
export function recordOf(spec: LeaseSpec | undefined): string {
  const s = spec ?? {};
  return JSON.stringify([
    s.holderIdentity ?? '',
    s.leaseDurationSeconds ?? 0,
    s.acquireTime ?? '',
    s.renewTime ?? '',
    s.leaseTransitions ?? 0,
  ]);
}

/** The observation after reading `lease`: the change time moves only when the record changed. */
export function observe(prev: Observed | undefined, lease: Lease | undefined, now: number): Observed {
  const record = recordOf(lease?.spec);
  return prev?.record === record ? prev : { record, at: now };
}

/** What to do with the Lease just read (call {@link observe} first and pass its result). */
export function decide(i: DecideInput): LeaseDecision {
  const now = microTime(i.wallNow);
  const seconds = Math.max(1, Math.ceil(i.leaseDurationMs / 1000));
  if (!i.lease)
    return {
      kind: 'create',
      spec: {
        holderIdentity: i.identity,
        leaseDurationSeconds: seconds,
        acquireTime: now,
        renewTime: now,
        leaseTransitions: 0,
      },
    };
  const cur = i.lease.spec ?? {};
  const holder = cur.holderIdentity ?? '';
  if (holder === i.identity)
    return {
      kind: 'update',
      takeover: false,
      spec: { ...cur, leaseDurationSeconds: seconds, renewTime: now, acquireTime: cur.acquireTime ?? now },
    };
  const unchangedFor = i.observed ? i.now - i.observed.at : 0;
  if (holder !== '' && unchangedFor < i.leaseDurationMs) return { kind: 'wait', holder };
  return {
    kind: 'update',
    takeover: true,
    spec: {
      holderIdentity: i.identity,
      leaseDurationSeconds: seconds,
      acquireTime: now,
      renewTime: now,
      leaseTransitions: (cur.leaseTransitions ?? 0) + (holder === '' ? 0 : 1),
    },
  };
}

/** The released record (client-go's ReleaseOnCancel): no holder, so a candidate takes it at once. */
export function released(cur: LeaseSpec | undefined, wallNow: Date): LeaseSpec {
  const now = microTime(wallNow);
  return {
    ...cur,
    holderIdentity: '',
    leaseDurationSeconds: 1,
    renewTime: now,
    acquireTime: now,
  };
}

export interface LeaderTimings {
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
}

/**
 * client-go's checks, stricter on the margin: the leader stops acting at most
 * `renewDeadline` after it sent its last successful renew, and a candidate takes over no
 * sooner than `leaseDuration` after it saw that renew; the difference is the safety margin.
 */
export function validateTimings(t: LeaderTimings): string | undefined {
  if (t.retryPeriodMs <= 0) return 'retry period must be positive';
  if (t.renewDeadlineMs <= t.retryPeriodMs) return 'renew deadline must be longer than the retry period';
  if (t.leaseDurationMs <= t.renewDeadlineMs) return 'lease duration must be longer than the renew deadline';
  return undefined;
}
