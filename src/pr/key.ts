import { InvalidArgumentError } from './errors.js';

/** A 64-bit reservation key. Always a bigint: a JS number loses bits past 2^53. */
export type PrKey = bigint;

export const MAX_KEY: PrKey = (1n << 64n) - 1n;

/** Formats a key as exactly 16 lowercase hex digits (the only way keys are ever printed or logged). */
export function formatKey(key: PrKey): string {
  if (key < 0n || key > MAX_KEY) throw new InvalidArgumentError(`key out of 64-bit range: ${key}`);
  return key.toString(16).padStart(16, '0');
}

/**
 * Parses a key given as hex, with or without a 0x prefix, 1-16 digits.
 * Throws InvalidArgumentError on anything else. Zero is accepted here; callers
 * that forbid it use {@link parseNonZeroKey}.
 */
export function parseKey(text: string): PrKey {
  const m = /^(?:0x)?([0-9a-f]{1,16})$/i.exec(text.trim());
  if (!m || m[1] === undefined) throw new InvalidArgumentError(`not a 64-bit hex key: "${text}"`);
  return BigInt(`0x${m[1]}`);
}

/** As {@link parseKey}, and rejects 0 (never a valid registration key, S6). */
export function parseNonZeroKey(text: string): PrKey {
  const k = parseKey(text);
  if (k === 0n) throw new InvalidArgumentError('key 0 is not allowed here');
  return k;
}

/** Throws InvalidArgumentError unless key is a non-zero 64-bit value. */
export function assertValidKey(key: PrKey, what = 'key'): void {
  if (typeof key !== 'bigint' || key <= 0n || key > MAX_KEY) {
    throw new InvalidArgumentError(`${what} must be a non-zero 64-bit key, got ${String(key)}`);
  }
}
