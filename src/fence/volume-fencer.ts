/**
 * One level-based fencing step for one volume on one node, free of Kubernetes: read the
 * device, decide (rule.ts), execute with read-back (executor.ts), and decide again when
 * a racing node changed the device under us (S4), a bounded number of times. Returns
 * an observation the agent writes to VolumeReservation status and the demo prints.
 */
import type { Logger } from 'pino';
import { formatKey, type PrKey } from '../pr/key.js';
import type { PrDevice } from '../pr/pr-device.js';
import {
  executePlan,
  readDeviceState,
  type ActionResult,
  type DeviceState,
  type ExecuteContext,
} from './executor.js';
import { decideVolume, type ClassifiedKey, type FenceInput, type FencePlan } from './rule.js';

export interface FenceVictim {
  key: PrKey;
  node?: string;
  /**
   * fenced: this node's own command removed the key (read back); failed: the key is still
   * there; left: the command did not apply (e.g. a conflict) and the key is gone anyway:
   * the node unregistered by itself (a normal detach), which is no fence.
   */
  result: 'fenced' | 'failed' | 'left';
  /** The victim was a leaver handing the reservation over (rule.ts `handover`): no fence. */
  takeover?: true;
  /**
   * false: the key was removed with PREEMPT, the device having refused PREEMPT AND ABORT:
   * the victim's commands already queued in the device were not aborted.
   */
  aborted?: false;
}

export interface VolumeObservation {
  /** The device's kind (scsi / nvme; memory for a model without one). */
  kind: 'scsi' | 'nvme' | 'memory';
  plan: FencePlan;
  results: ActionResult[];
  /** The device's own answer after everything (S3). */
  state: DeviceState;
  keys: ClassifiedKey[];
  victims: FenceVictim[];
  /** 'done', 'pending' (work left), 'waiting' (another node acts), 'blocked' (S2), or the error class that ended it. */
  outcome:
    | 'done'
    | 'pending'
    | 'waiting'
    | 'blocked'
    | 'conflict'
    | 'indeterminate'
    | 'not-sent'
    | 'unsupported'
    | 'invalid-argument'
    /** A PR OUT was held back: the fresh API view no longer supported it (confirm hook). */
    | 'unconfirmed';
  rounds: number;
  /** This device kept the victim when its holder preempted (nvmet): set when seen. */
  holderPreemptKeepsVictim: boolean;
  /** This device refused PREEMPT AND ABORT as unsupported (now, or as the caller said): fences use PREEMPT. */
  preemptAbortRefused: boolean;
  durationMs: number;
}

export interface FenceVolumeContext {
  device: PrDevice;
  /** Everything but the device view, which is read here. */
  input: Omit<FenceInput, 'device'>;
  log: Logger;
  signal?: AbortSignal;
  /** Re-decisions after a lost race before giving up to the caller's backoff. Default 3. */
  maxRounds?: number;
  /** The device's kind and state, already read by the caller (saves a read). */
  initial?: { kind: VolumeObservation['kind']; state: DeviceState };
  /** See ExecuteContext.confirm: asked before every PR OUT. */
  confirm?: ExecuteContext['confirm'];
  /** The device refused PREEMPT AND ABORT before (remembered per device): fence with PREEMPT. */
  preemptAbortRefused?: boolean;
  now?: () => number;
}

/** Runs read -> decide -> execute -> read back until the device is in order or the rounds end. */
export async function fenceVolume(ctx: FenceVolumeContext): Promise<VolumeObservation> {
  const now = ctx.now ?? (() => performance.now());
  const t0 = now();
  const kind =
    ctx.initial?.kind ?? (await ctx.device.capabilities(ctx.signal ? { signal: ctx.signal } : {})).kind;
  let state = ctx.initial?.state ?? (await readDeviceState(ctx.device, kind, ctx.signal));
  const allResults: ActionResult[] = [];
  const maxRounds = ctx.maxRounds ?? 3;
  const protectedKeys = new Set<PrKey>([ctx.input.self.key, ...ctx.input.legitimate.map((n) => n.key)]);
  let plan: FencePlan | undefined;
  let outcome: VolumeObservation['outcome'] = 'done';
  let rounds = 0;
  let keepsVictim = ctx.input.holderPreemptKeepsVictim ?? false;
  let refused = ctx.preemptAbortRefused ?? false;
  /** The own key was registered again through the new paths (once is enough). */
  let reregistered = false;
  const decide = () =>
    decideVolume({
      ...ctx.input,
      newPaths: reregistered ? [] : (ctx.input.newPaths ?? []),
      holderPreemptKeepsVictim: keepsVictim,
      device: { kind, keys: state.keys.keys, holder: state.reservation.key, type: state.reservation.type },
    });
  while (rounds < maxRounds) {
    rounds += 1;
    plan = decide();
    if (plan.role === 'blocked') {
      outcome = 'blocked';
      break;
    }
    if (plan.actions.length === 0) {
      outcome = plan.role === 'waiter' ? 'waiting' : 'done';
      break;
    }
    const r = await executePlan(plan, {
      device: ctx.device,
      kind,
      ownKey: ctx.input.self.key,
      protectedKeys: new Set([...protectedKeys].filter((k) => k !== ctx.input.self.key)),
      log: ctx.log,
      ...(ctx.signal ? { signal: ctx.signal } : {}),
      ...(ctx.confirm ? { confirm: ctx.confirm } : {}),
      ...(refused ? { preemptAbort: false } : {}),
    });
    allResults.push(...r.results);
    if (r.results.some((x) => x.action.kind === 'register' && x.result === 'ok')) reregistered = true;
    if (r.preemptAbortRefused && !refused) {
      refused = true;
      // Logged here once per device: the caller remembers it and passes it back.
      ctx.log.warn(
        { device: ctx.device.id },
        "device refused PREEMPT AND ABORT: fencing with PREEMPT, which leaves the victim's queued commands to run",
      );
    }
    // The quirk, seen rather than assumed: the holder's own preempt applied, yet the
    // victim is still registered (NVMe 2.0 says it is unregistered; nvmet keeps it).
    const holderBefore = state.reservation.key === ctx.input.self.key;
    for (const x of r.results) {
      if (x.action.kind !== 'preempt-abort' || x.result !== 'ok' || !holderBefore || keepsVictim) continue;
      const v = x.action.victim;
      if (x.after?.keys.keys.includes(v)) {
        keepsVictim = true;
        ctx.log.warn({ victim: formatKey(v) }, 'device kept the victim after the holder preempted (quirk)');
      }
    }
    state = r.final;
    if (r.stopped === 'done') {
      if (plan.role === 'waiter') outcome = 'waiting';
      continue; // decide again from the read-back: level-based until nothing is left to do
    }
    outcome = r.stopped;
    if (r.stopped === 'unconfirmed') break;
    // A conflict (S4) or an unknown outcome (S5): the read-back is in `state`; decide again.
    if (r.stopped !== 'conflict' && r.stopped !== 'indeterminate') break;
  }
  const finalPlan = plan!;
  const finalKeys = decide();
  if (outcome === 'conflict' || outcome === 'indeterminate') {
    // Rounds ran out while racing; report what the device says now.
    ctx.log.warn({ outcome, rounds }, 'volume not settled; will retry with backoff');
  } else if (outcome === 'done' && finalKeys.actions.length > 0) {
    outcome = 'pending'; // rounds ran out with work left: the caller requeues
  }
  // One entry per victim key, from its last preempt: a fence is this node's own command
  // removing the key (applied, or of unknown outcome, and gone on read-back).
  const last = new Map<PrKey, ActionResult>();
  for (const r of allResults) if (r.action.kind === 'preempt-abort') last.set(r.action.victim, r);
  const applied = new Set(
    allResults
      .filter((r) => r.action.kind === 'preempt-abort' && (r.result === 'ok' || r.result === 'indeterminate'))
      .map((r) => (r.action as Extract<typeof r.action, { kind: 'preempt-abort' }>).victim),
  );
  const victims: FenceVictim[] = [...last.values()].map((r) => {
    const a = r.action as Extract<typeof r.action, { kind: 'preempt-abort' }>;
    const gone = !state.keys.keys.includes(a.victim);
    const result = !gone ? 'failed' : applied.has(a.victim) ? 'fenced' : 'left';
    return {
      key: a.victim,
      result,
      ...(a.victimNode === undefined ? {} : { node: a.victimNode }),
      ...(a.takeover ? { takeover: true as const } : {}),
      ...(r.aborted === false ? { aborted: false as const } : {}),
    };
  });
  for (const v of victims) {
    ctx.log.info(
      { victim: formatKey(v.key), victimNode: v.node, result: v.result },
      v.takeover ? 'reservation taken over from a leaver' : 'fence',
    );
  }
  return {
    kind,
    plan: finalPlan,
    results: allResults,
    state,
    keys: finalKeys.keys,
    victims,
    outcome,
    rounds,
    holderPreemptKeepsVictim: keepsVictim,
    preemptAbortRefused: refused,
    durationMs: now() - t0,
  };
}
