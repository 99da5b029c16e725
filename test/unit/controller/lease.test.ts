import { describe, expect, it } from 'vitest';
import {
  decide,
  observe,
  recordOf,
  released,
  validateTimings,
  type Lease,
} from '../../../src/controller/lease.js';

const wallNow = new Date('2026-01-02T03:04:05.678Z');
const lease = (holder: string, renew = '2026-01-02T03:04:00.000000Z', transitions = 3): Lease => ({
  metadata: { name: 'prfence-controller', resourceVersion: '42' },
  spec: {
    holderIdentity: holder,
    leaseDurationSeconds: 15,
    acquireTime: '2026-01-02T03:00:00.000000Z',
    renewTime: renew,
    leaseTransitions: transitions,
  },
});
const base = { identity: 'me', wallNow, leaseDurationMs: 15_000 };

describe('lease decision', () => {
  it('no Lease -> create naming me, 0 transitions, MicroTime times', () => {
    const d = decide({ ...base, lease: undefined, observed: undefined, now: 0 });
    expect(d).toEqual({
      kind: 'create',
      spec: {
        holderIdentity: 'me',
        leaseDurationSeconds: 15,
        acquireTime: '2026-01-02T03:04:05.678000Z',
        renewTime: '2026-01-02T03:04:05.678000Z',
        leaseTransitions: 0,
      },
    });
  });

  it('another holder seen changing less than a lease duration ago -> wait', () => {
    const l = lease('other');
    const observed = observe(undefined, l, 1000);
    expect(decide({ ...base, lease: l, observed, now: 1000 + 14_999 })).toEqual({
      kind: 'wait',
      holder: 'other',
    });
  });

  it('another holder whose record did not change for a lease duration (my clock) -> take over, transitions + 1', () => {
    const l = lease('other');
    const observed = observe(undefined, l, 1000);
    const d = decide({ ...base, lease: l, observed, now: 1000 + 15_000 });
    expect(d).toMatchObject({
      kind: 'update',
      takeover: true,
      spec: { holderIdentity: 'me', leaseTransitions: 4 },
    });
  });

  it('the times written in the Lease are never trusted: an old renewTime alone is no reason to take over', () => {
    const l = lease('other', '2020-01-01T00:00:00.000000Z');
    const observed = observe(undefined, l, 5000);
    expect(decide({ ...base, lease: l, observed, now: 5001 }).kind).toBe('wait');
  });

  it('a renew seen resets the observation: the wait starts again', () => {
    const first = observe(undefined, lease('other', 'a'), 0);
    const same = observe(first, lease('other', 'a'), 10_000);
    expect(same.at).toBe(0);
    const renewed = observe(same, lease('other', 'b'), 14_000);
    expect(renewed.at).toBe(14_000);
    expect(decide({ ...base, lease: lease('other', 'b'), observed: renewed, now: 20_000 }).kind).toBe('wait');
  });

  it('I hold it -> renew: renewTime now, acquireTime and transitions kept', () => {
    const l = lease('me');
    const d = decide({ ...base, lease: l, observed: observe(undefined, l, 0), now: 0 });
    expect(d).toEqual({
      kind: 'update',
      takeover: false,
      spec: { ...l.spec, renewTime: '2026-01-02T03:04:05.678000Z' },
    });
  });

  it('a released Lease (no holder) -> taken at once, transitions unchanged', () => {
    const l: Lease = { ...lease(''), spec: released(lease('old').spec, wallNow) };
    const d = decide({ ...base, lease: l, observed: observe(undefined, l, 0), now: 0 });
    expect(d).toMatchObject({
      kind: 'update',
      takeover: true,
      spec: { holderIdentity: 'me', leaseTransitions: 3 },
    });
  });

  it('released record: no holder, 1 s duration', () => {
    expect(released(lease('me').spec, wallNow)).toMatchObject({
      holderIdentity: '',
      leaseDurationSeconds: 1,
    });
  });

  it('recordOf differs for any field change', () => {
    expect(recordOf(lease('a').spec)).not.toBe(recordOf(lease('a', 'later').spec));
    expect(recordOf(lease('a').spec)).not.toBe(recordOf(lease('b').spec));
  });

  it.each([
    [{ leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2000 }, undefined],
    [{ leaseDurationMs: 10_000, renewDeadlineMs: 10_000, retryPeriodMs: 2000 }, /lease duration/],
    [{ leaseDurationMs: 15_000, renewDeadlineMs: 2000, retryPeriodMs: 2000 }, /renew deadline/],
    [{ leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 0 }, /retry period/],
  ])('timings %o -> %s', (t, msg) => {
    const r = validateTimings(t);
    if (msg === undefined) expect(r).toBeUndefined();
    else expect(r).toMatch(msg);
  });
});
