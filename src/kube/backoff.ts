/** The delay after `failures` failures in a row (1 or more): `baseMs`, doubled each time, at most `maxMs`. */
export function doublingDelay(baseMs: number, maxMs: number, failures: number): number {
  return Math.min(maxMs, baseMs * 2 ** Math.max(0, failures - 1));
}
