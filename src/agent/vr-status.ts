/**
 * What one node writes into a VolumeReservation's status, decided from what it observed
 * on the device and what is recorded now (pure; the agent does the I/O).
 *
 * Its own `registrants` entry is always written. The shared fields (holder, type,
 * generation, conditions, lastFence, ...) never go backwards: the device's PR generation
 * only grows, so an observation whose generation is below the recorded one is stale (a
 * slow node recording after a peer fenced it) and only its registrants entry is kept.
 * Conditions keep their lastTransitionTime while their status is unchanged (as
 * meta.SetStatusCondition does), so two writers agree on it.
 */
import type { VolumeReservationStatus } from '../crd/types.js';

export interface VrWrite {
  status: VolumeReservationStatus;
  /** The observation was older than the record: shared fields were dropped. */
  stale: boolean;
}

export function hasSharedFields(s: VolumeReservationStatus): boolean {
  return Object.keys(s).some((k) => k !== 'registrants');
}

export function vrStatusToWrite(
  observed: VolumeReservationStatus,
  recorded: VolumeReservationStatus | undefined,
): VrWrite {
  const g = observed.generation;
  const rg = recorded?.generation;
  if (g !== undefined && rg !== undefined && g < rg) {
    return { status: { registrants: observed.registrants ?? [] }, stale: true };
  }
  if (!observed.conditions) return { status: observed, stale: false };
  const before = recorded?.conditions ?? [];
  return {
    status: {
      ...observed,
      conditions: observed.conditions.map((c) => {
        const old = before.find((b) => b.type === c.type);
        return old && old.status === c.status ? { ...c, lastTransitionTime: old.lastTransitionTime } : c;
      }),
    },
    stale: false,
  };
}
