/**
 * Applies a FencePlan to a device, one PR OUT at a time, each followed by a read-back
 * (S3): what is recorded is what the device says, never what we hoped. Errors are
 * handled by class (S4, S5): a conflict or an unknown outcome stops the plan and the
 * caller decides again from the read-back state; nothing is retried blindly.
 *
 * A fence is PREEMPT AND ABORT. A device that refuses it as unsupported (SPC-4 and NVMe
 * have no capability bit for it) gets PREEMPT instead, which removes the key just the
 * same but leaves the victim's commands already in the device's queue to run: the
 * result says so (`aborted: false`), and so does the outcome, for the caller to remember
 * per device and send PREEMPT from then on (`preemptAbort: false`).
 */
import type { Logger } from 'pino';
import { InvalidArgumentError, NotSentError, isPrError, type PrErrorKind } from '../pr/errors.js';
import { formatKey, type PrKey } from '../pr/key.js';
import type { DeviceKind, FullStatus, KeyList, PrDevice, Registrant, Reservation } from '../pr/pr-device.js';
import type { FenceAction, FencePlan } from './rule.js';

export interface DeviceState {
  keys: KeyList;
  reservation: Reservation;
  /**
   * The initiator of each registration (in `keys.keys` order), when the state was read with
   * one command (READ FULL STATUS / the NVMe Reservation Report); absent when read with two.
   */
  registrants?: readonly Registrant[];
}

export interface ActionResult {
  action: FenceAction;
  /** 'ok', or the error class that stopped the plan. */
  result: 'ok' | PrErrorKind;
  message?: string;
  /** The device's state read back right after this action (S3). */
  after?: DeviceState;
  /**
   * preempt-abort actions only: false when the key was removed with PREEMPT (the device
   * refused PREEMPT AND ABORT, now or before): the victim's in-flight I/O was not aborted.
   */
  aborted?: boolean;
}

export interface ExecuteOutcome {
  results: ActionResult[];
  /** What the device says at the end. */
  final: DeviceState;
  /** 'done', or why the plan stopped early; the caller re-decides from `final`. */
  stopped: 'done' | 'unconfirmed' | PrErrorKind;
  /** The device answered PREEMPT AND ABORT with UnsupportedError during this plan. */
  preemptAbortRefused: boolean;
}

export interface ExecuteContext {
  device: PrDevice;
  /** The device's kind (capabilities().kind): how its state is read (readDeviceState). */
  kind: DeviceKind;
  ownKey: PrKey;
  /** Keys that must never be preempted (own and legitimate nodes' keys): S1 defence in depth. */
  protectedKeys: ReadonlySet<PrKey>;
  log: Logger;
  signal?: AbortSignal;
  /**
   * Asked before every PR OUT command: may it go ahead? The agent checks there that the
   * API view behind the decision is still fresh and still says so, and records a fence
   * intent before a preempt. False (or a throw) stops the plan before the command.
   */
  confirm?: (action: FenceAction) => Promise<boolean>;
  /** false: the device refused PREEMPT AND ABORT before; fence with PREEMPT. Default true. */
  preemptAbort?: boolean;
}

/**
 * The state as readKeys and readReservation report it, from one readFullStatus of a
 * device of this kind: keys one per registration in the device's order, the full
 * status's generation for both, the reservation key as readReservation reports it (0 for
 * an all-registrants type on SCSI, the first holder's on NVMe: readFullStatus reports it
 * so already), and, with nothing reserved, the reservation generation readReservation
 * reports: 0 on SCSI (sd.c, and the SG_IO read matching it), the generation on NVMe.
 * Null for a kind whose readReservation is not one of those two (read with two commands).
 */
export function stateFromFullStatus(kind: DeviceKind, f: FullStatus): DeviceState | null {
  if (kind !== 'scsi' && kind !== 'nvme') return null;
  const keys: KeyList = { generation: f.generation, keys: f.registrants.map((r) => r.key) };
  const reservation: Reservation = f.reservation
    ? { generation: f.generation, key: f.reservation.key, type: f.reservation.type }
    : { generation: kind === 'scsi' ? 0 : f.generation, key: null, type: null };
  return { keys, reservation, registrants: f.registrants };
}

/** Devices (objects) that answered readFullStatus with UnsupportedError: read with two commands. */
const noFullStatus = new WeakSet<PrDevice>();

/**
 * Reads keys and reservation (no side effects): with one command, readFullStatus, where
 * the device answers it (SCSI READ FULL STATUS, the NVMe Reservation Report: one atomic
 * read of the whole state), else with two, readKeys then readReservation. A device that
 * answers readFullStatus with UnsupportedError keeps that answer (KoffiPrDevice sends it
 * once per device); the two reads follow in the same call.
 */
export async function readDeviceState(
  device: PrDevice,
  kind: DeviceKind,
  signal?: AbortSignal,
): Promise<DeviceState> {
  const opts = signal ? { signal } : {};
  if ((kind === 'scsi' || kind === 'nvme') && !noFullStatus.has(device)) {
    try {
      const state = stateFromFullStatus(kind, await device.readFullStatus(opts));
      if (state) return state;
    } catch (e) {
      if (!(isPrError(e) && e.kind === 'unsupported')) throw e;
      noFullStatus.add(device);
    }
  }
  const keys = await device.readKeys(opts);
  const reservation = await device.readReservation(opts);
  return { keys, reservation };
}

/** What applying one action learnt: for a fence, whether it aborted the victim's commands. */
interface Applied {
  aborted?: boolean;
}

/** Applies one action; `refused` is set when the device refused PREEMPT AND ABORT as unsupported. */
async function apply(
  a: FenceAction,
  ctx: ExecuteContext,
  refused: { value: boolean },
): Promise<Applied | void> {
  const d = ctx.device;
  const opts = ctx.signal ? { signal: ctx.signal } : {};
  switch (a.kind) {
    case 'register':
      if (a.reregister) {
        // S2 on the device itself: only a key that is still there is registered again
        // (a peer may have removed it since the plan's read). REGISTER AND IGNORE EXISTING
        // KEY: a plain REGISTER through a map whose paths are partly registered conflicts
        // on the registered ones, and the kernel then unregisters every path.
        const now = await d.readKeys(opts);
        if (!now.keys.includes(ctx.ownKey))
          throw new NotSentError(
            `own key ${formatKey(ctx.ownKey)} is gone from ${d.id}: not registered again (S2)`,
          );
        return d.registerAndIgnore(ctx.ownKey, opts);
      }
      return d.register(0n, ctx.ownKey, opts);
    case 'unregister':
      // A SCSI map with paths that never had the key (rule.ts `uncovered`): REGISTER AND
      // IGNORE EXISTING KEY with key 0 unregisters the paths that have it and leaves the
      // others as they are; a plain REGISTER to 0 would conflict on those, and the kernel
      // stops there (dm_pr_register: no rollback for key 0). Registers nothing (S2).
      if (a.uncovered?.length) return d.registerAndIgnore(0n, opts);
      return d.register(ctx.ownKey, 0n, opts);
    case 'reserve':
      return d.reserve(ctx.ownKey, a.type, opts);
    case 'release':
      return d.release(ctx.ownKey, a.type, opts);
    case 'preempt-abort':
      // S1: never preempt the own key or a legitimate node's key, whatever the plan says.
      if (a.victim === ctx.ownKey || ctx.protectedKeys.has(a.victim)) {
        throw new InvalidArgumentError(`refusing to preempt protected key ${formatKey(a.victim)} (S1)`);
      }
      if (ctx.preemptAbort === false) {
        await d.preempt(ctx.ownKey, a.victim, a.type, opts);
        return { aborted: false };
      }
      try {
        await d.preemptAndAbort(ctx.ownKey, a.victim, a.type, opts);
        return { aborted: true };
      } catch (e) {
        // Refused as unsupported: nothing was applied, so PREEMPT may follow (S5 holds).
        if (!(isPrError(e) && e.kind === 'unsupported')) throw e;
        try {
          await d.preempt(ctx.ownKey, a.victim, a.type, opts);
        } catch (p) {
          // PREEMPT refused as well (no PR here, or the type or keys are wrong): not a
          // missing PREEMPT AND ABORT. Any other answer means PREEMPT is implemented.
          if (!(isPrError(p) && (p.kind === 'unsupported' || p.kind === 'invalid-argument')))
            refused.value = true;
          throw p;
        }
        refused.value = true;
        return { aborted: false };
      }
  }
}

function describe(a: FenceAction): Record<string, unknown> {
  return a.kind === 'preempt-abort'
    ? { action: a.kind, victim: formatKey(a.victim), victimNode: a.victimNode, type: a.type }
    : a.kind === 'register' && a.reregister
      ? { action: a.kind, reregister: true, newPaths: a.reregister }
      : a.kind === 'unregister' && a.uncovered
        ? { action: a.kind, ignoreExistingKey: true, uncoveredPaths: a.uncovered }
        : { action: a.kind, ...('type' in a ? { type: a.type } : {}) };
}

/** Executes the plan; never throws PrErrors (they end the plan and are reported). */
export async function executePlan(plan: FencePlan, ctx: ExecuteContext): Promise<ExecuteOutcome> {
  const results: ActionResult[] = [];
  const refused = { value: false };
  const local = { ...ctx };
  for (const action of plan.actions) {
    if (ctx.confirm && !(await ctx.confirm(action))) {
      ctx.log.info(describe(action), 'not confirmed by a fresh view; deciding again later');
      const final = results.at(-1)?.after ?? (await readDeviceState(ctx.device, ctx.kind, ctx.signal));
      return { results, final, stopped: 'unconfirmed', preemptAbortRefused: refused.value };
    }
    let applied: Applied | void;
    try {
      applied = await apply(action, local, refused);
    } catch (e) {
      if (!isPrError(e)) throw e;
      ctx.log.warn({ ...describe(action), err: e.message, kind: e.kind }, 'PR command failed');
      // S5: whatever happened, the device is read before anything else is decided.
      const final = await readDeviceState(ctx.device, ctx.kind, ctx.signal);
      results.push({ action, result: e.kind, message: e.message, after: final });
      return { results, final, stopped: e.kind, preemptAbortRefused: refused.value };
    }
    if (refused.value) local.preemptAbort = false; // the rest of this plan too
    const after = await readDeviceState(ctx.device, ctx.kind, ctx.signal); // S3
    ctx.log.info(
      {
        ...describe(action),
        ...(applied?.aborted === false ? { sentAs: 'preempt' } : {}),
        generation: after.keys.generation,
        keys: after.keys.keys.map(formatKey),
      },
      'PR command applied',
    );
    results.push({
      action,
      result: 'ok',
      after,
      ...(applied?.aborted === undefined ? {} : { aborted: applied.aborted }),
    });
  }
  const final = results.at(-1)?.after ?? (await readDeviceState(ctx.device, ctx.kind, ctx.signal));
  return { results, final, stopped: 'done', preemptAbortRefused: refused.value };
}
