/**
 * Coalesced writes per object: while one write to an object is in flight, the items added
 * for that object wait and go together in the next write. Each caller's promise settles
 * with the write that carried its item, so "resolved" still means "written". Many
 * volumes fenced at once on one node then cost a few writes to its NodeFence instead of
 * one conflicting read-modify-write each.
 */
interface Batch<T> {
  items: T[];
  done: Promise<void>;
  resolve: () => void;
  reject: (e: unknown) => void;
}

export class Coalescer<T> {
  readonly #write: (key: string, items: readonly T[]) => Promise<void>;
  readonly #waiting = new Map<string, Batch<T>>();
  readonly #writing = new Set<string>();

  /** `write` writes every item of a batch to the object `key` (one read-modify-write). */
  constructor(write: (key: string, items: readonly T[]) => Promise<void>) {
    this.#write = write;
  }

  /** Adds `item` for `key`; resolves once a write that carried it succeeded, rejects if it failed. */
  add(key: string, item: T): Promise<void> {
    let b = this.#waiting.get(key);
    if (!b) {
      let resolve!: () => void;
      let reject!: (e: unknown) => void;
      const done = new Promise<void>((res, rej) => ((resolve = res), (reject = rej)));
      b = { items: [], done, resolve, reject };
      this.#waiting.set(key, b);
    }
    b.items.push(item);
    this.#next(key);
    return b.done;
  }

  #next(key: string): void {
    if (this.#writing.has(key)) return;
    const b = this.#waiting.get(key);
    if (!b) return;
    this.#waiting.delete(key);
    this.#writing.add(key);
    this.#write(key, b.items)
      .then(b.resolve, b.reject)
      .finally(() => {
        this.#writing.delete(key);
        this.#next(key);
      });
  }
}
