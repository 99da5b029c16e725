/**
 * Which volumes are fenced, and with which reservation type (DESIGN.md "Which volumes are
 * fenced" and "Reservation types"), as pure functions of the PV's annotations, its
 * StorageClass's annotations and the agent-wide defaults. No I/O.
 *
 * Precedence for both settings: PV annotation > StorageClass annotation > agent default.
 * A value that does not parse never falls back to another level: the volume is left
 * alone (no device command) and the VolumeReservation gets `Configured=False`.
 */
import { RESERVATION_TYPES, type ReservationType } from '../pr/reservation-type.js';

/** PV or StorageClass annotation: `enabled` or `disabled`. */
export const FENCING_ANNOTATION = 'prfence.io/fencing';
/** PV or StorageClass annotation: one of the six reservation types. */
export const RESERVATION_TYPE_ANNOTATION = 'prfence.io/reservation-type';
/** The annotations the agent reads for the volume policy (kept by the PV/StorageClass transforms). */
export const POLICY_ANNOTATIONS = [FENCING_ANNOTATION, RESERVATION_TYPE_ANNOTATION] as const;

export const FENCING_MODES = ['enabled', 'disabled'] as const;
export type FencingMode = (typeof FENCING_MODES)[number];

export function isFencingMode(v: string): v is FencingMode {
  return (FENCING_MODES as readonly string[]).includes(v);
}

export function isReservationType(v: string): v is ReservationType {
  return (RESERVATION_TYPES as readonly string[]).includes(v);
}

/** Where a setting came from (for logs and condition messages). */
export type PolicySource =
  { from: 'pv'; name: string } | { from: 'storageclass'; name: string } | { from: 'default' };

export type VolumePolicy =
  /** prfence fences this volume with this type. */
  | {
      kind: 'fenced';
      reservationType: ReservationType;
      fencingFrom: PolicySource;
      typeFrom: PolicySource;
    }
  /** Opted out: never registered or reserved here; a registration this node holds is left. */
  | { kind: 'opted-out'; fencingFrom: PolicySource }
  /** An annotation that does not parse: no device command, a condition on the VR. */
  | {
      kind: 'invalid';
      reason: 'InvalidFencing' | 'InvalidReservationType';
      message: string;
    };

export interface PolicyInputs {
  pv: { name: string; annotations?: Readonly<Record<string, string>> | undefined };
  /** The PV's StorageClass, if it names one and it exists (a missing class has no annotations). */
  storageClass?: { name: string; annotations?: Readonly<Record<string, string>> | undefined } | undefined;
  defaults: { fencing: FencingMode; reservationType: ReservationType };
}

/** The first level that sets `annotation`: the PV, then its StorageClass. */
function pick(annotation: string, i: PolicyInputs): { value: string; source: PolicySource } | undefined {
  const onPv = i.pv.annotations?.[annotation];
  if (onPv !== undefined) return { value: onPv, source: { from: 'pv', name: i.pv.name } };
  const sc = i.storageClass;
  const onSc = sc?.annotations?.[annotation];
  if (sc && onSc !== undefined) return { value: onSc, source: { from: 'storageclass', name: sc.name } };
  return undefined;
}

export function describeSource(s: PolicySource): string {
  return s.from === 'pv'
    ? `PersistentVolume ${s.name}`
    : s.from === 'storageclass'
      ? `StorageClass ${s.name}`
      : 'the agent default';
}

/**
 * The policy of one volume. Fencing is decided first: an opted-out volume ignores the
 * reservation type (even an invalid one), since nothing is reserved.
 */
export function resolveVolumePolicy(i: PolicyInputs): VolumePolicy {
  const f = pick(FENCING_ANNOTATION, i);
  if (f && !isFencingMode(f.value))
    return {
      kind: 'invalid',
      reason: 'InvalidFencing',
      message: `${FENCING_ANNOTATION}: "${f.value}" on ${describeSource(f.source)} is not one of ${FENCING_MODES.join(', ')}; no device command until it is fixed`,
    };
  const fencing = f ? (f.value as FencingMode) : i.defaults.fencing;
  const fencingFrom: PolicySource = f ? f.source : { from: 'default' };
  if (fencing === 'disabled') return { kind: 'opted-out', fencingFrom };
  const t = pick(RESERVATION_TYPE_ANNOTATION, i);
  if (t && !isReservationType(t.value))
    return {
      kind: 'invalid',
      reason: 'InvalidReservationType',
      message: `${RESERVATION_TYPE_ANNOTATION}: "${t.value}" on ${describeSource(t.source)} is not one of ${RESERVATION_TYPES.join(', ')}; no device command until it is fixed`,
    };
  return {
    kind: 'fenced',
    reservationType: t ? (t.value as ReservationType) : i.defaults.reservationType,
    fencingFrom,
    typeFrom: t ? t.source : { from: 'default' },
  };
}

/** Only the policy annotations of an object (what the informer transforms keep). */
export function policyAnnotations(
  annotations: Readonly<Record<string, string>> | undefined,
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const a of POLICY_ANNOTATIONS) {
    const v = annotations?.[a];
    if (v !== undefined) out[a] = v;
  }
  return out;
}
