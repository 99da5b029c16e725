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
 *
 * The `Ready` condition (kubectl's READY / REASON columns) is written by the node that
 * writes the shared fields (Reserved / NotReserved, what the device says) and, as a
 * fallback, by a node that cannot say what the device says (its device is missing or has
 * no PR support, or it may not register): a fallback never replaces what such a node
 * recorded, so a node whose device is missing does not hide a peer's reservation.
 */
import type { VolumeReservation, VolumeReservationStatus } from '../crd/types.js';

type Condition = NonNullable<VolumeReservationStatus['conditions']>[number];

/** Reasons of a fallback `Ready` condition (written by a node that cannot read the device). */
export const FALLBACK_READY_REASONS: readonly string[] = [
  'DeviceNotFound',
  'NoPersistentReservations',
  'RegistrationBlocked',
];

export interface VrWrite {
  status: VolumeReservationStatus;
  /** The observation was older than the record: shared fields were dropped. */
  stale: boolean;
  /** A fallback `Ready` was dropped because a node that read the device recorded one. */
  yielded?: boolean;
}

export function hasSharedFields(s: VolumeReservationStatus): boolean {
  return Object.keys(s).some((k) => k !== 'registrants');
}

/**
 * The status of a node that did not read the device (it is missing on this node, refuses
 * PR, or the volume's policy does not parse), with what that node recorded from its last
 * read kept: its own registrant entry (unless `status` names one) and, if it recorded
 * itself as the holder, the holder and the device's fields. Its key may still be on the
 * LU; a record without it would tell the controller's proof of isolation that the node is
 * not registered there, and the node could be declared isolated with its key on the device.
 */
export function keepingOwnRecord(
  status: VolumeReservationStatus,
  recorded: VolumeReservationStatus | undefined,
  node: string,
): VolumeReservationStatus {
  const registrants = status.registrants ?? (recorded?.registrants ?? []).filter((r) => r.node === node);
  if (recorded?.holder?.node !== node) return { ...status, registrants };
  const { holder, generation, reservationType, device, foreignKeys } = recorded;
  return {
    ...status,
    registrants,
    holder,
    ...(generation !== undefined ? { generation } : {}),
    ...(reservationType ? { reservationType } : {}),
    ...(device ? { device } : {}),
    ...(foreignKeys !== undefined ? { foreignKeys } : {}),
  };
}

export function vrStatusToWrite(
  observed: VolumeReservationStatus,
  recorded: VolumeReservationStatus | undefined,
  opts: { fallback?: boolean } = {},
): VrWrite {
  if (opts.fallback && observed.conditions?.some((c) => c.type === 'Ready')) {
    const rec = recorded?.conditions?.find((c) => c.type === 'Ready');
    if (rec && !FALLBACK_READY_REASONS.includes(rec.reason)) {
      const conditions = observed.conditions.filter((c) => c.type !== 'Ready');
      const { conditions: _c, ...rest } = observed;
      const w = vrStatusToWrite(conditions.length ? { ...rest, conditions } : rest, recorded);
      return { ...w, yielded: true };
    }
  }
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

/** The fields every condition entry needs (the CRD schema's `required`, but `type`, its key). */
const CONDITION_REQUIRED = ['f:status', 'f:reason', 'f:message', 'f:lastTransitionTime'];

/**
 * Conditions that this write would leave incomplete: this field manager omits them now,
 * another manager still owns a part of the entry, and some required field (status,
 * reason, message, lastTransitionTime) is owned by this manager alone. Server-side apply
 * would keep the entry without that field (another manager wrote the same type, and a
 * forced apply took some of its fields), which the schema rejects. The caller removes
 * these entries whole first. Returns their types.
 */
export function orphanedConditions(
  vr: VolumeReservation,
  fieldManager: string,
  writing: VolumeReservationStatus,
): string[] {
  const { mine, others } = conditionOwners(vr, fieldManager);
  const keep = new Set((writing.conditions ?? []).map((c) => c.type));
  const ownedBy = (managers: Map<string, Set<string>>[], t: string, f: string) =>
    managers.some((m) => m.get(t)?.has(f));
  return (vr.status?.conditions ?? [])
    .map((c) => c.type)
    .filter(
      (t) =>
        !keep.has(t) &&
        others.some((o) => o.has(t)) &&
        CONDITION_REQUIRED.some((f) => ownedBy(mine, t, f) && !ownedBy(others, t, f)),
    );
}

/**
 * Whether the recorded `Ready` condition is this field manager's alone (its values): the
 * node wrote it from an earlier read of the device, and no other node recorded it. A
 * fallback of that node replaces it rather than yielding to it.
 */
export function readyIsOwn(vr: VolumeReservation, fieldManager: string): boolean {
  const { mine, others } = conditionOwners(vr, fieldManager);
  const values = (m: Map<string, Set<string>>) => hasValues(m.get('Ready'));
  return mine.some(values) && !others.some(values);
}

/**
 * The recorded conditions this field manager owns a part of: a write that names no
 * conditions sends them again as recorded, so that it does not drop its part of one that
 * another manager owns in part (an entry without its values, which the schema rejects).
 */
export function ownConditions(vr: VolumeReservation, fieldManager: string): Condition[] {
  const { mine } = conditionOwners(vr, fieldManager);
  return (vr.status?.conditions ?? []).filter((c) => mine.some((m) => m.has(c.type)));
}

const hasValues = (fields: Set<string> | undefined) =>
  !!fields && (fields.has('f:status') || fields.has('f:reason') || fields.has('f:message'));

/** Per status field manager (this one, the others): the condition types it owns, and which of their fields. */
function conditionOwners(vr: VolumeReservation, fieldManager: string) {
  const owned = (fields: Record<string, unknown> | undefined) => {
    const conds = ((fields?.['f:status'] as Record<string, unknown> | undefined)?.['f:conditions'] ??
      {}) as Record<string, Record<string, unknown>>;
    const out = new Map<string, Set<string>>();
    for (const [k, v] of Object.entries(conds)) {
      if (!k.startsWith('k:')) continue;
      try {
        const key = JSON.parse(k.slice(2)) as { type?: string };
        if (key.type) out.set(key.type, new Set(Object.keys(v)));
      } catch {
        // not a condition key
      }
    }
    return out;
  };
  const entries = (vr.metadata.managedFields ?? []).filter((m) => m.subresource === 'status');
  return {
    mine: entries.filter((m) => m.manager === fieldManager).map((m) => owned(m.fieldsV1)),
    others: entries.filter((m) => m.manager !== fieldManager).map((m) => owned(m.fieldsV1)),
  };
}
