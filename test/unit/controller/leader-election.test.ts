/**
 * The LeaderElector's loop against an in-memory Lease endpoint that enforces
 * resourceVersion preconditions like the API server (the real API server is used in
 * test/integration/controller.test.ts). A "partitioned" client's requests hang until
 * their time limit, as through a blackhole.
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { LeaderElector } from '../../../src/controller/leader-election.js';
import type { Lease } from '../../../src/controller/lease.js';
import { KubeApiError, type RestClient, type RestRequest } from '../../../src/kube/rest-client.js';
import { eventually } from '../../envtest/kube.js';

const T = { leaseDurationMs: 1500, renewDeadlineMs: 1000, retryPeriodMs: 200 };

class LeaseStore {
  lease: Lease | undefined;
  rv = 0;
  handle(req: RestRequest): unknown {
    const body = req.body as Lease | undefined;
    if (req.method === 'GET') {
      if (!this.lease) throw new KubeApiError(404, { reason: 'NotFound' });
      return structuredClone(this.lease);
    }
    if (req.method === 'POST') {
      if (this.lease) throw new KubeApiError(409, { reason: 'AlreadyExists' });
    } else if (body?.metadata.resourceVersion !== this.lease?.metadata.resourceVersion)
      throw new KubeApiError(409, { reason: 'Conflict' });
    this.lease = {
      ...structuredClone(body!),
      metadata: { ...body!.metadata, resourceVersion: String(++this.rv) },
    };
    return structuredClone(this.lease);
  }
}

/** A client of the store; `partitioned`: requests hang until their time limit. */
function client(store: LeaseStore) {
  const c = {
    partitioned: false,
    send: (req: RestRequest) =>
      new Promise((resolve, reject) => {
        setTimeout(() => {
          if (c.partitioned)
            return void setTimeout(
              () => reject(new Error('timeout')),
              Math.max(0, (req.timeoutMs ?? 30_000) - 5),
            );
          try {
            resolve(store.handle(req));
          } catch (e) {
            reject(e);
          }
        }, 5);
      }),
  };
  return c;
}

function elector(rest: { send: unknown }, identity: string) {
  const periods: { from: number; to?: number }[] = [];
  const e = new LeaderElector({
    rest: rest as unknown as RestClient,
    namespace: 'ns',
    name: 'prfence-controller',
    identity,
    log: pino({ level: process.env.LE_LOG ?? 'silent' }),
    ...T,
    onStartedLeading: () => periods.push({ from: performance.now() }),
    onStoppedLeading: () => (periods.at(-1)!.to = performance.now()),
  });
  return { e, periods, ended: e.run() };
}

describe('leader elector', () => {
  it('two candidates at once on no Lease -> exactly one leads (the other got 409 or saw a live holder)', async () => {
    const store = new LeaseStore();
    const a = elector(client(store), 'a');
    const b = elector(client(store), 'b');
    await eventually(() => a.e.isLeader() || b.e.isLeader(), { timeoutMs: 5000 });
    // Several renew rounds: still exactly one.
    const seen = new Set<string>();
    const end = performance.now() + 3 * T.retryPeriodMs;
    while (performance.now() < end) {
      seen.add(`${a.e.isLeader()}/${b.e.isLeader()}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    await Promise.all([a.e.stop(), b.e.stop()]);
    expect([...seen].filter((s) => s !== 'true/false' && s !== 'false/true')).toEqual([]);
    expect(seen.size).toBe(1);
  });

  it('leader partitioned -> stops within the renew deadline (lost), the other leads only afterwards, a lease duration after the last renew it saw', async () => {
    const store = new LeaseStore();
    const ca = client(store);
    const a = elector(ca, 'a');
    await eventually(() => a.e.isLeader(), { timeoutMs: 5000 });
    const b = elector(client(store), 'b');
    await eventually(() => b.e.observedHolder() === 'a', { timeoutMs: 5000 });
    const cut = performance.now();
    ca.partitioned = true;
    await expect(a.ended).resolves.toBe('lost');
    await eventually(() => b.e.isLeader(), { timeoutMs: 10_000 });
    await b.e.stop({ release: true });
    const aStop = a.periods[0]!.to!;
    const bStart = b.periods[0]!.from;
    expect({
      aStoppedWithinDeadline: aStop - cut <= T.renewDeadlineMs + 150,
      aDidNotStopEarly: aStop - cut >= T.renewDeadlineMs - T.retryPeriodMs - 100,
      bAfterA: bStart > aStop,
      margin: bStart - aStop >= T.leaseDurationMs - T.renewDeadlineMs - T.retryPeriodMs - 100,
      holder: store.lease?.spec?.holderIdentity,
      transitions: store.lease?.spec?.leaseTransitions,
      aLeads: a.e.isLeader(),
    }).toEqual({
      aStoppedWithinDeadline: true,
      aDidNotStopEarly: true,
      bAfterA: true,
      margin: true,
      holder: '', // b released it on stop()
      transitions: 1,
      aLeads: false,
    });
  });

  it('the Lease taken by another (this leader presumed dead) -> the leader stops at its next renew', async () => {
    const store = new LeaseStore();
    const a = elector(client(store), 'a');
    await eventually(() => a.e.isLeader(), { timeoutMs: 5000 });
    store.lease!.spec!.holderIdentity = 'intruder';
    store.lease!.metadata.resourceVersion = String(++store.rv);
    await expect(a.ended).resolves.toBe('lost');
    expect(a.e.isLeader()).toBe(false);
  });
});

describe('leader elector: its deadline on its own clock', () => {
  it('a deadline timer that fires before the deadline on the elector clock (a clock slower than the timers) -> waits for the rest: the partitioned leader stops at its deadline, not at its next renew round', async () => {
    const store = new LeaseStore();
    const ca = client(store);
    // The elector's clock runs at half the timers' rate, so every timer it sets fires early on it.
    const t0 = performance.now();
    const now = () => t0 + (performance.now() - t0) / 2;
    const o = { leaseDurationMs: 3000, renewDeadlineMs: 1000, retryPeriodMs: 900 };
    let stoppedAt: number | undefined;
    let lastOk = 0;
    const rest = {
      send: async (req: RestRequest) => {
        const started = now();
        const r = await ca.send(req);
        if (req.method === 'PUT') lastOk = Math.max(lastOk, started);
        return r;
      },
    };
    const e = new LeaderElector({
      rest: rest as unknown as RestClient,
      namespace: 'ns',
      name: 'prfence-controller',
      identity: 'a',
      log: pino({ level: 'silent' }),
      ...o,
      now,
      onStartedLeading: () => undefined,
      onStoppedLeading: () => (stoppedAt = now()),
    });
    const ended = e.run();
    await eventually(() => e.isLeader() && lastOk > 0, { timeoutMs: 5000 });
    ca.partitioned = true;
    await expect(ended).resolves.toBe('lost');
    // The deadline is the renew deadline after the start of a successful renew round (its
    // GET; lastOk is its PUT, a little later): stopped no later than a few ms after it (without
    // the wait for the rest: at the next round, 150-200 ms late here).
    expect(stoppedAt! - lastOk).toBeLessThanOrEqual(o.renewDeadlineMs + 60);
  });
});
