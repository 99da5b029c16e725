/**
 * The objects a writer's own last writes returned, kept for a short while as the base of
 * its next write of the same object instead of a GET: a fence writes one VolumeReservation
 * several times in a row, and the proofs of a burst of fences go to one NodeFence in a
 * row. Only a base: each write made on one carries its resourceVersion as precondition
 * (or a test op), so a newer object on the server refuses it, and the caller makes that
 * write again on a GET. Each base is taken once.
 */
export class WrittenBases<T> {
  readonly #bases = new Map<string, { obj: T; at: number }>();
  readonly #maxAgeMs: number;

  constructor(maxAgeMs: number) {
    this.#maxAgeMs = maxAgeMs;
  }

  remember(name: string, obj: T): void {
    const now = performance.now();
    for (const [n, b] of this.#bases) if (now - b.at >= this.#maxAgeMs) this.#bases.delete(n);
    this.#bases.set(name, { obj, at: now });
  }

  /** The object of the last write of `name`, once, if recent. */
  take(name: string): T | undefined {
    const b = this.#bases.get(name);
    this.#bases.delete(name);
    return b && performance.now() - b.at < this.#maxAgeMs ? b.obj : undefined;
  }

  forget(name: string): void {
    this.#bases.delete(name);
  }
}
