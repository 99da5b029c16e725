import { InvalidArgumentError } from './errors.js';

/**
 * The six Persistent Reservation types, as named by DESIGN.md and the CLI.
 * Values of `enum pr_type` in <linux/pr.h> are given by {@link PR_TYPE_CODE}.
 */
export const RESERVATION_TYPES = [
  'write-exclusive',
  'exclusive-access',
  'write-exclusive-reg-only',
  'exclusive-access-reg-only',
  'write-exclusive-all-regs',
  'exclusive-access-all-regs',
] as const;

export type ReservationType = (typeof RESERVATION_TYPES)[number];

/** `enum pr_type` from include/uapi/linux/pr.h. */
export const PR_TYPE_CODE: Readonly<Record<ReservationType, number>> = Object.freeze({
  'write-exclusive': 1,
  'exclusive-access': 2,
  'write-exclusive-reg-only': 3,
  'exclusive-access-reg-only': 4,
  'write-exclusive-all-regs': 5,
  'exclusive-access-all-regs': 6,
});

export function reservationTypeFromCode(code: number): ReservationType | undefined {
  return RESERVATION_TYPES.find((t) => PR_TYPE_CODE[t] === code);
}

export function parseReservationType(text: string): ReservationType {
  const t = RESERVATION_TYPES.find((x) => x === text);
  if (!t) {
    throw new InvalidArgumentError(
      `unknown reservation type "${text}" (one of: ${RESERVATION_TYPES.join(', ')})`,
    );
  }
  return t;
}

/** Registrants-only and all-registrants types: every registered key may access the LU. */
export function isRegistrantsType(t: ReservationType): boolean {
  return t.endsWith('-reg-only') || t.endsWith('-all-regs');
}

/** All-registrants types: every registrant is a holder; the reservation key reads as 0. */
export function isAllRegistrantsType(t: ReservationType): boolean {
  return t.endsWith('-all-regs');
}
