/**
 * Failfast on the node (the mhd(7I) MHIOCENFAILFAST model): every `--probe-interval` the
 * agent reads the registered keys of every device where this node EXPECTS its key (the
 * host fence memory, fence-memory.ts). A key that is gone although the node did not
 * remove it (a leaver or a handover calls `unregistering()` first) is a loss: it is
 * recorded in the host memory (S2 across restarts), and the memory's listener
 * (failfast-reactions.ts) reports it and takes the configured action: report, taint, or
 * reboot.
 *
 * Bounded: one probe read in flight per device at most; a device whose read has not
 * returned by the next round is skipped and reported (hung), and never stalls the loop:
 * a round only starts reads and never waits for them. The reads run on the native
 * executor's threads (the device layer), never on the event loop, handed over together as
 * one batch per round (call-batch.ts), each with its own time limit. No API request is
 * needed to detect or to act locally.
 */
import { writeFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import { KubeApiError, type RestClient } from '../kube/rest-client.js';
import { describeError } from '../obs/logger.js';
import { CallBatch } from '../pr/call-batch.js';
import { formatKey, type PrKey } from '../pr/key.js';
import type { PrCallOptions, PrDevice } from '../pr/pr-device.js';
import type { FenceMemory } from './fence-memory.js';

export const FAILFAST_ACTIONS = ['report', 'taint', 'reboot'] as const;
export type FailfastAction = (typeof FAILFAST_ACTIONS)[number];
export const isFailfastAction = (v: string): v is FailfastAction =>
  (FAILFAST_ACTIONS as readonly string[]).includes(v);

/** The taint of action `taint` (NoExecute: pods without a toleration are evicted). */
export const ACCESS_LOST_TAINT = { key: 'prfence.io/access-lost', effect: 'NoExecute' } as const;

/** Where action `reboot` writes (the host's /proc mounted at /host/proc; see docs/operations.md). */
export const DEFAULT_SYSRQ_TRIGGER = '/host/proc/sysrq-trigger';

/** One device the probe may read: an open device of a PV, with its identity. */
export interface ProbeTarget {
  readonly pv: string;
  readonly identity: string;
  readonly device: PrDevice;
}

export interface FailfastProbeOptions {
  key: PrKey;
  /** Milliseconds between rounds; 0 turns the probe off. */
  intervalMs: number;
  /** The devices open now; only those the memory expects the key on are read. */
  targets: () => Iterable<ProbeTarget>;
  memory: FenceMemory;
  /** NodeFence spec.unfencedAt as the caches say (recorded with a loss). */
  unfencedAt: () => string | undefined;
  log: Logger;
  /**
   * Time limit of one probe read (ms); default the device's own (`--ioctl-timeout`), so a
   * slow path (a multipath failover, a busy array) is not taken for a hang. A read past it
   * marks the device hung; until it returns the device is skipped.
   */
  readTimeoutMs?: number;
  /** Called after each round (the agent retries its best-effort API writes here). */
  onRound?: (r: ProbeRound) => void;
  /** Devices skipped because their previous probe read has not returned. */
  onSkipped?: (n: number) => void;
}

export interface ProbeRound {
  /** Reads started in this round. */
  started: number;
  /** PVs skipped: their previous probe read is still in flight (hung device). */
  skipped: string[];
}

export class FailfastProbe {
  readonly #o: FailfastProbeOptions;
  /** identity -> when its probe read started (performance.now()). */
  readonly #inFlight = new Map<string, number>();
  /** Identities reported as hung (logged once until their read returns). */
  readonly #reportedHung = new Set<string>();
  /** Identities whose last probe read failed (logged once). */
  readonly #failing = new Set<string>();
  readonly #abort = new AbortController();
  #timer: NodeJS.Timeout | undefined;
  /** Reads started since the probe was created. */
  reads = 0;

  constructor(o: FailfastProbeOptions) {
    this.#o = o;
  }

  get enabled(): boolean {
    return this.#o.intervalMs > 0;
  }

  start(): void {
    if (!this.enabled || this.#timer) return;
    this.#timer = setInterval(() => this.round(), this.#o.intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#abort.abort();
  }

  /** PVs whose probe read is in flight now. */
  get inFlight(): number {
    return this.#inFlight.size;
  }

  /** One round: starts a read on every expected device that has none in flight; never waits. */
  round(): ProbeRound {
    const o = this.#o;
    const r: ProbeRound = { started: 0, skipped: [] };
    const seen = new Set<string>();
    // The round's reads go to the executor threads together (flushed below); a second call
    // of a read (the holder's key after a loss) goes on its own.
    const signal = this.#abort.signal;
    const batch = new CallBatch({ signal });
    const call: PrCallOptions =
      o.readTimeoutMs === undefined ? { signal, batch } : { signal, batch, timeoutMs: o.readTimeoutMs };
    for (const t of o.targets()) {
      if (seen.has(t.identity) || !o.memory.expects(t.identity, o.key)) continue;
      seen.add(t.identity);
      if (this.#inFlight.has(t.identity)) {
        r.skipped.push(t.pv);
        if (!this.#reportedHung.has(t.identity)) {
          this.#reportedHung.add(t.identity);
          o.log.warn(
            {
              pv: t.pv,
              device: t.identity,
              sinceMs: Math.round(performance.now() - this.#inFlight.get(t.identity)!),
            },
            'failfast probe: the previous read has not returned (hung device); skipped until it does',
          );
        }
        continue;
      }
      this.#inFlight.set(t.identity, performance.now());
      r.started++;
      this.reads++;
      void this.#probe(t, call);
    }
    batch.flush();
    if (r.skipped.length) o.onSkipped?.(r.skipped.length);
    o.onRound?.(r);
    return r;
  }

  /** One device's probe read; never throws. Its device counts as in flight until this returns. */
  async #probe(t: ProbeTarget, call: PrCallOptions): Promise<void> {
    const o = this.#o;
    try {
      const keys = await t.device.readKeys(call);
      this.#failing.delete(t.identity);
      if (keys.keys.includes(o.key) || !o.memory.expects(t.identity, o.key)) return;
      // Gone, and the node did not remove it itself (it would have called unregistering()).
      let holder: PrKey | null | undefined;
      try {
        holder = (await t.device.readReservation(call)).key;
      } catch {
        holder = undefined; // named when it can be read; the loss does not wait for it
      }
      if (!o.memory.expects(t.identity, o.key)) return;
      o.log.warn(
        {
          pv: t.pv,
          device: t.identity,
          key: formatKey(o.key),
          holder: holder == null ? holder : formatKey(holder),
        },
        'failfast probe: own key gone from the device: treating this node as fenced there (S2)',
      );
      await o.memory.lost(t.identity, o.key, o.unfencedAt(), new Date(), holder);
    } catch (e) {
      if (call.signal?.aborted) return;
      // Not probed this round (a hung device fails fast in the executor): counted, and
      // logged once until a read succeeds again.
      o.onSkipped?.(1);
      if (!this.#failing.has(t.identity)) {
        this.#failing.add(t.identity);
        o.log.warn(
          { pv: t.pv, device: t.identity, err: describeError(e) },
          'failfast probe read failed; the device is not probed until a read succeeds',
        );
      }
    } finally {
      this.#inFlight.delete(t.identity);
      this.#reportedHung.delete(t.identity);
    }
  }
}

/**
 * The mhd panic: emergency sync ('s'), remount read-only ('u'), then reboot ('b') through
 * the host's sysrq trigger. Writes to /proc/sysrq-trigger are always allowed to root,
 * whatever kernel.sysrq says. Tests inject a trigger, or (the guest end-to-end test) run
 * this with the trigger path leading to a plain file in the agent's mount namespace.
 */
export async function sysrqReboot(path = DEFAULT_SYSRQ_TRIGGER, settleMs = 1000): Promise<void> {
  await writeFile(path, 's');
  await writeFile(path, 'u');
  await new Promise((r) => setTimeout(r, settleMs));
  await writeFile(path, 'b');
}

interface NodeTaint {
  key: string;
  value?: string;
  effect: string;
  timeAdded?: string;
}

/**
 * Adds (`on`) or removes the access-lost taint on the Node: a JSON patch of spec.taints
 * that tests the resourceVersion it was computed from (a concurrent change by the kubelet
 * or another controller is never overwritten; retried on a conflict). Returns whether the
 * Node was changed.
 */
export async function setAccessLostTaint(rest: RestClient, node: string, on: boolean): Promise<boolean> {
  const path = `/api/v1/nodes/${encodeURIComponent(node)}`;
  for (let attempt = 0; ; attempt++) {
    const n = await rest.get<{ metadata: { resourceVersion?: string }; spec?: { taints?: NodeTaint[] } }>(
      path,
    );
    const taints = n.spec?.taints ?? [];
    const has = taints.some((t) => t.key === ACCESS_LOST_TAINT.key && t.effect === ACCESS_LOST_TAINT.effect);
    if (has === on) return false;
    const next = on
      ? [
          ...taints,
          {
            ...ACCESS_LOST_TAINT,
            value: 'true',
            timeAdded: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
          },
        ]
      : taints.filter((t) => !(t.key === ACCESS_LOST_TAINT.key && t.effect === ACCESS_LOST_TAINT.effect));
    try {
      await rest.send({
        method: 'PATCH',
        path,
        contentType: 'application/json-patch+json',
        body: [
          { op: 'test', path: '/metadata/resourceVersion', value: n.metadata.resourceVersion },
          { op: 'add', path: '/spec/taints', value: next },
        ],
      });
      return true;
    } catch (e) {
      if (attempt < 3 && e instanceof KubeApiError && (e.code === 409 || e.code === 422)) continue;
      throw e;
    }
  }
}
