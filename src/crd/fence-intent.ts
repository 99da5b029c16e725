/**
 * The keys a VolumeReservation's fence intent (`status.fenceIntent`) names. The field holds
 * one intent at a time; a node that removed several keys of one device before recording
 * them names the earlier ones in `earlierVictims` (docs/design.md "Intent before the
 * PREEMPT").
 */
import type { FenceIntent, IntentVictim } from './types.js';

/** Every key an intent names: its victim, then the earlier ones not recorded yet. */
export function intentVictims(i: FenceIntent): IntentVictim[] {
  return [
    { victimKey: i.victimKey, ...(i.victimNode ? { victimNode: i.victimNode } : {}) },
    ...(i.earlierVictims ?? []),
  ];
}
