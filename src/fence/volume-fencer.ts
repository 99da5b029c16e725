/**
 * One level-based fencing step for one volume on one node, free of Kubernetes: read the
 * device, decide (rule.ts), execute with read-back (executor.ts), and decide again when
 * a racing node changed the device under us (S4), a bounded number of times. Returns
 * an observation the agent writes to VolumeReservation status and the demo prints.
 */
import type { Logger } from 'pino';
import { formatKey, type PrKey } from '../pr/key.js';
import type { PrDevice } from '../pr/pr-device.js';
import { executePlan, readDeviceState, type ActionResult, type DeviceState } from './executor.js';
import { decideVolume, type ClassifiedKey, type FenceInput, type FencePlan } from './rule.js';

export interface FenceVictim {
  key: PrKey;
  node?: string;
  result: 'fenced' | 'failed';
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
    | 'invalid-argument';
  rounds: number;
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
  now?: () => number;
}

/** Runs read -> decide -> execute -> read back until the device is in order or the rounds end. */
export async function fenceVolume(ctx: FenceVolumeContext): Promise<VolumeObservation> {
  const now = ctx.now ?? (() => performance.now());
  const t0 = now();
  const kind = (await ctx.device.capabilities(ctx.signal ? { signal: ctx.signal } : {})).kind;
  let state = await readDeviceState(ctx.device, ctx.signal);
  const allResults: ActionResult[] = [];
  const maxRounds = ctx.maxRounds ?? 3;
  const protectedKeys = new Set<PrKey>([ctx.input.self.key, ...ctx.input.legitimate.map((n) => n.key)]);
  let plan: FencePlan | undefined;
  let outcome: VolumeObservation['outcome'] = 'done';
  let rounds = 0;
  while (rounds < maxRounds) {
    rounds += 1;
    plan = decideVolume({
      ...ctx.input,
      device: { kind, keys: state.keys.keys, holder: state.reservation.key, type: state.reservation.type },
    });
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
      ownKey: ctx.input.self.key,
      protectedKeys: new Set([...protectedKeys].filter((k) => k !== ctx.input.self.key)),
      log: ctx.log,
      ...(ctx.signal ? { signal: ctx.signal } : {}),
    });
    allResults.push(...r.results);
    state = r.final;
    if (r.stopped === 'done') {
      if (plan.role === 'waiter') outcome = 'waiting';
      continue; // decide again from the read-back: level-based until nothing is left to do
    }
    outcome = r.stopped;
    // A conflict (S4) or an unknown outcome (S5): the read-back is in `state`; decide again.
    if (r.stopped !== 'conflict' && r.stopped !== 'indeterminate') break;
  }
  const finalPlan = plan!;
  const finalKeys = decideVolume({
    ...ctx.input,
    device: { kind, keys: state.keys.keys, holder: state.reservation.key, type: state.reservation.type },
  });
  if (outcome === 'conflict' || outcome === 'indeterminate') {
    // Rounds ran out while racing; report what the device says now.
    ctx.log.warn({ outcome, rounds }, 'volume not settled; will retry with backoff');
  } else if (outcome === 'done' && finalKeys.actions.length > 0) {
    outcome = 'pending'; // rounds ran out with work left: the caller requeues
  }
  const victims: FenceVictim[] = allResults
    .filter((r) => r.action.kind === 'preempt-abort')
    .map((r) => {
      const a = r.action as Extract<typeof r.action, { kind: 'preempt-abort' }>;
      const gone = !state.keys.keys.includes(a.victim);
      return a.victimNode === undefined
        ? { key: a.victim, result: gone ? 'fenced' : 'failed' }
        : { key: a.victim, node: a.victimNode, result: gone ? 'fenced' : 'failed' };
    });
  for (const v of victims) {
    ctx.log.info({ victim: formatKey(v.key), victimNode: v.node, result: v.result }, 'fence');
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
    durationMs: now() - t0,
  };
}
