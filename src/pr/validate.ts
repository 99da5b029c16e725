import { InvalidArgumentError } from './errors.js';
import { MAX_KEY, type PrKey } from './key.js';
import { RESERVATION_TYPES, type ReservationType } from './reservation-type.js';

/**
 * Argument checks shared by every PrDevice implementation, so that both reject the
 * same requests the same way before anything reaches a device.
 */
export function checkKey(key: PrKey, what: string, allowZero: boolean): void {
  if (typeof key !== 'bigint' || key < 0n || key > MAX_KEY) {
    throw new InvalidArgumentError(`${what} must be a 64-bit key (bigint), got ${String(key)}`);
  }
  if (!allowZero && key === 0n) throw new InvalidArgumentError(`${what} must not be 0`);
}

export function checkType(type: ReservationType): void {
  if (!RESERVATION_TYPES.includes(type)) {
    throw new InvalidArgumentError(`unknown reservation type "${String(type)}"`);
  }
}
