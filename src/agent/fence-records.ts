/**
 * The fences of this node whose record is not written yet, per PV, and their recording.
 *
 * A fence is held here from the moment its commands return (its victims' keys are gone)
 * until its record is written: the Fenced mark, the proof and the event on each victim,
 * then the volume's fence record (`lastFence`, `fencedKeys`) and the intent's removal. A
 * record that fails (the API server unreachable right after the PREEMPT) is written again
 * by the volume's next reconcile: that reconcile sends no PREEMPT (the key is gone), so
 * nothing else would record the fence. An intent whose PREEMPT's outcome is not known (the
 * reconcile failed after it, or the agent restarted) is held as `open`: the device tells
 * the outcome when it is recorded.
 *
 * The volume's intent is one field: each new intent names every key held here for the PV
 * (`notRecorded`), and a record removes the intent only when no other fence of the PV is
 * left to record.
 */
import type { Logger } from 'pino';
import type { FencedKey, IntentVictim, LastFence } from '../crd/types.js';
import type { FenceVictim, VolumeObservation } from '../fence/volume-fencer.js';
import { doublingDelay } from '../kube/backoff.js';
import { describeError } from '../obs/logger.js';
import { formatKey, parseKey, type PrKey } from '../pr/key.js';
import { fenceStands, legitimacy } from './cluster-view.js';
import type { VolumeReconcilerOptions } from './volume-reconciler.js';
import { fenceRecord } from './vr-record.js';

/** A fence intent this node recorded (before its PREEMPT), whose outcome the device tells. */
export interface OpenIntent {
  key: PrKey;
  node?: string;
}

/** An intent's victim as the VolumeReservation names it (`status.fenceIntent`). */
export const toIntentVictim = (v: OpenIntent): IntentVictim => ({
  victimKey: formatKey(v.key),
  ...(v.node ? { victimNode: v.node } : {}),
});

/** A victim named in `status.fenceIntent`, as this node's open intent. */
export const fromIntentVictim = (v: IntentVictim): OpenIntent => ({
  key: parseKey(v.victimKey),
  ...(v.victimNode ? { node: v.victimNode } : {}),
});

/**
 * A fence to record: the victims with their results, or (`open`) only the intents
 * recorded before a PREEMPT whose outcome is not known: the device tells it then.
 */
export interface FenceToRecord {
  victims: VolumeObservation['victims'];
  open?: readonly OpenIntent[];
  durationMs: number;
  generation?: number;
  /** Victims whose Fenced mark, proof and event are written (by an earlier try of the record). */
  marked: Set<PrKey>;
}

export function fenceToRecord(
  victims: VolumeObservation['victims'],
  durationMs: number,
  generation: number | undefined,
): FenceToRecord {
  return { victims, durationMs, ...(generation !== undefined ? { generation } : {}), marked: new Set() };
}

/** A fence of open intents only (their PREEMPTs' outcome unknown). */
export const openFence = (open: readonly OpenIntent[]): FenceToRecord => ({
  ...fenceToRecord([], 0, undefined),
  open,
});

/** Retries of a failed fence record: doubling from 1 s, at most a minute apart. */
const RETRY_BASE_MS = 1000;
const RETRY_MAX_MS = 60_000;

export type FenceRecordsOptions = Pick<
  VolumeReconcilerOptions,
  'node' | 'identityOf' | 'fresh' | 'devices' | 'writer' | 'signal'
>;

export class FenceRecords {
  readonly #o: FenceRecordsOptions;
  readonly #pending = new Map<string, FenceToRecord[]>();
  /** Failed tries of the pending records of a PV, for their backoff. */
  readonly #tries = new Map<string, number>();

  constructor(o: FenceRecordsOptions) {
    this.#o = o;
  }

  /** Volumes with a fence whose record is not written yet. */
  get volumes(): number {
    return this.#pending.size;
  }

  add(pv: string, f: FenceToRecord): void {
    this.#pending.set(pv, [...(this.#pending.get(pv) ?? []), f]);
  }

  /** The pending fence of the PV whose victims are `victims` (the object a fencer returned). */
  find(pv: string, victims: FenceToRecord['victims']): FenceToRecord | undefined {
    return this.#pending.get(pv)?.find((f) => f.victims === victims);
  }

  /**
   * The keys this node removed (or may have) from the PV's device whose fence is not
   * recorded yet: the pending records' and a running reconcile's intents (`intended`).
   */
  notRecorded(pv: string, intended: readonly OpenIntent[]): OpenIntent[] {
    const all: OpenIntent[] = [];
    for (const f of this.#pending.get(pv) ?? []) {
      for (const v of f.victims)
        if (v.result !== 'left' && !v.takeover) all.push({ key: v.key, ...(v.node ? { node: v.node } : {}) });
      all.push(...(f.open ?? []));
    }
    all.push(...intended);
    return all.filter((v, i) => all.findIndex((w) => w.key === v.key) === i);
  }

  /**
   * Writes the PV's pending records, oldest first. Undefined: none left; else they failed
   * (logged) and should be tried again in this many ms (doubling per failed try).
   */
  async retryPending(pv: string, log: Logger): Promise<number | undefined> {
    if (!this.#pending.has(pv) || this.#o.signal.aborted) return undefined;
    try {
      await this.writePending(pv, log);
      this.#tries.delete(pv);
      return undefined;
    } catch (e) {
      const tries = (this.#tries.get(pv) ?? 0) + 1;
      this.#tries.set(pv, tries);
      const retryInMs = doublingDelay(RETRY_BASE_MS, RETRY_MAX_MS, tries);
      log.warn(
        { err: describeError(e), retryInMs },
        'the record of an earlier fence failed again; the volume is reconciled meanwhile',
      );
      return retryInMs;
    }
  }

  /** The PV's pending records, oldest first (throws if one fails: it stays pending). */
  async writePending(pv: string, log: Logger): Promise<void> {
    for (const f of [...(this.#pending.get(pv) ?? [])]) {
      log.info(
        { victims: [...f.victims, ...(f.open ?? [])].map((v) => formatKey(v.key)) },
        'writing the record of a fence not recorded yet',
      );
      const fence = f.open ? await this.#outcomeOf(pv, f) : f;
      if (fence) await this.#complete(pv, fence, log, this.#o.fresh.now(), this.#lastToRecord(pv, f));
      this.#recorded(pv, f);
    }
  }

  /**
   * Writes the record of `f`, a pending fence of the PV just made; `newerThan`: the view
   * that decides whether a victim is marked Fenced must be newer than this (a preempt
   * backed by a view of one volume took no full view, and a shared one from before the
   * fence request would show the victim legitimate, and leave it unmarked).
   */
  async write(pv: string, f: FenceToRecord, log: Logger, newerThan: number): Promise<void> {
    await this.#complete(pv, f, log, newerThan, this.#lastToRecord(pv, f));
    this.#recorded(pv, f);
  }

  /**
   * A fence is recorded (Fenced mark, lastFence, event) only when this node's own command
   * removed the key, and the mark only on a node a fresh view still shows not legitimate.
   */
  async #complete(
    pv: string,
    { victims, durationMs, generation, marked }: FenceToRecord,
    log: Logger,
    newerThan: number,
    /** Removes the intent (no other fence of the PV is left to record). */
    closeIntent: boolean,
  ): Promise<void> {
    const o = this.#o;
    const identity = o.identityOf(pv);
    const now = new Date().toISOString();
    let lastFence: LastFence | undefined;
    const fencedKeys: FencedKey[] = [];
    const view = await o.fresh.get(newerThan);
    const fresh = await view.cachesFor(pv);
    const legit = legitimacy(pv, fresh, view.keyClaims);
    for (const v of victims) {
      if (v.takeover) {
        log.info(
          { victim: formatKey(v.key), victimNode: v.node, result: v.result },
          'reservation taken over from a node handing it over: no fence recorded',
        );
        continue;
      }
      if (v.result === 'left') {
        log.info(
          { victim: formatKey(v.key), victimNode: v.node },
          'stale key left by itself: no fence recorded',
        );
        continue;
      }
      lastFence = fenceRecord(v, o.node, now, durationMs);
      if (v.result !== 'fenced' || v.node === undefined) continue;
      if (legit.nodes.some((n) => n.node === v.node) || legit.keyless.includes(v.node)) {
        log.warn({ victimNode: v.node }, 'fenced node is legitimate in a fresh read: not marked Fenced');
        continue;
      }
      // Marked by an earlier try of this record (which failed after it): not again (one event).
      if (!marked.has(v.key)) {
        await o.writer.markFenced(v.node, now);
        await o.writer.recordProof(v.node, {
          volume: pv,
          ...(identity ? { identity } : {}),
          victimKey: formatKey(v.key),
          result: 'Fenced',
          ...(generation !== undefined ? { generation } : {}),
          by: o.node,
          at: now,
        });
        await o.writer.fencedEvent(pv, v.node, v.key);
        marked.add(v.key);
      }
      fencedKeys.push({ node: v.node, key: formatKey(v.key), at: now });
    }
    await o.writer.completeFence(pv, lastFence, fencedKeys, (e) => fenceStands(e, fresh), {
      closeIntent,
    });
  }

  /**
   * Whether recording `f` closes the PV's intent: only when no other fence of the PV is
   * still to record (the intent names that one too; a restart completes it from there).
   */
  #lastToRecord(pv: string, f: FenceToRecord): boolean {
    return (this.#pending.get(pv) ?? []).every((x) => x === f);
  }

  #recorded(pv: string, f: FenceToRecord): void {
    const left = (this.#pending.get(pv) ?? []).filter((x) => x !== f);
    if (left.length) this.#pending.set(pv, left);
    else {
      this.#pending.delete(pv);
      this.#tries.delete(pv);
    }
  }

  /**
   * The fence of open intents, from what the device says now: a victim key that is gone
   * counts as fenced (the victim was stale when the intent was written: safety before
   * availability), one still there as left. Undefined: the PV names no device any more.
   */
  async #outcomeOf(pv: string, f: FenceToRecord): Promise<FenceToRecord | undefined> {
    const o = this.#o;
    const identity = o.identityOf(pv);
    if (!identity) return undefined;
    const { device } = await o.devices.get(pv, identity);
    const keys = await device.readKeys({ signal: o.signal });
    const victims: FenceVictim[] = (f.open ?? []).map((i) => ({
      key: i.key,
      ...(i.node ? { node: i.node } : {}),
      result: keys.keys.includes(i.key) ? 'left' : 'fenced',
    }));
    return { ...fenceToRecord(victims, 0, keys.generation), marked: f.marked };
  }
}
