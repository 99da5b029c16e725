/**
 * What this node remembers on the host about its own key (S2), across agent restarts:
 * the devices it registered on, and the devices where it found its key gone although it
 * had not removed it itself (a peer fenced it, or an administrator or another cluster
 * removed it). On such a device the node treats itself as fenced: it registers there
 * again only after a fresh API read shows it legitimate and Unfenced AND an unfence
 * newer than the loss (NodeFence spec.unfencedAt changed).
 *
 * Kept in one small JSON file under the state directory (a hostPath in the chart),
 * written atomically (write + rename) with fs.promises, never on a hot path: only when a
 * registration appears or disappears. Without a directory it lives in memory only.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { formatKey, type PrKey } from '../pr/key.js';

export interface KeyLoss {
  /** The key that was found gone. */
  key: string;
  at: string;
  /** NodeFence spec.unfencedAt when the loss was seen: an unfence must change it. */
  unfencedAtBefore: string | null;
  /** The key that held the reservation when the loss was seen (16 hex; 0000000000000000 under an all-registrants type), if read. */
  holder?: string;
}

/** Told of every change of what the node expects or lost (the failfast probe and its actions). */
export interface FenceMemoryListener {
  /** A new loss was recorded (not called again for a device already lost). */
  lost?(identity: string, loss: KeyLoss): void;
  /** A loss was forgiven (an unfence newer than the loss). */
  forgiven?(identity: string): void;
  /** The own key was seen registered on the device. */
  registered?(identity: string): void;
}

interface State {
  version: 1;
  /** device identity -> own key (16 hex) registered there. */
  registered: Record<string, string>;
  lost: Record<string, KeyLoss>;
}

export class FenceMemory {
  readonly #file: string | undefined;
  #state: State = { version: 1, registered: {}, lost: {} };
  #writing: Promise<void> = Promise.resolve();
  readonly #listeners = new Set<FenceMemoryListener>();

  private constructor(file: string | undefined) {
    this.#file = file;
  }

  /** Loads the memory of `dir` (created if missing); undefined dir: memory only. Throws on a corrupt file. */
  static async open(dir: string | undefined): Promise<FenceMemory> {
    const m = new FenceMemory(dir ? join(dir, 'fence-memory.json') : undefined);
    if (!dir) return m;
    await mkdir(dir, { recursive: true });
    let text: string | undefined;
    try {
      text = await readFile(m.#file!, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    if (text !== undefined) {
      const s = JSON.parse(text) as Partial<State>;
      if (s.version !== 1 || typeof s.registered !== 'object' || typeof s.lost !== 'object')
        throw new Error(`${m.#file}: not a prfence fence memory (version 1)`);
      m.#state = { version: 1, registered: s.registered ?? {}, lost: s.lost ?? {} };
    }
    return m;
  }

  /** Whether this node expects `key` to be registered on the device. */
  expects(identity: string, key: PrKey): boolean {
    return this.#state.registered[identity] === formatKey(key);
  }

  /** Adds a listener; returns its removal. */
  listen(l: FenceMemoryListener): () => void {
    this.#listeners.add(l);
    return () => this.#listeners.delete(l);
  }

  /** The devices where this node expects its key (identity -> key, 16 hex). */
  get expected(): Readonly<Record<string, string>> {
    return this.#state.registered;
  }

  lossOf(identity: string): KeyLoss | undefined {
    return this.#state.lost[identity];
  }

  get losses(): Readonly<Record<string, KeyLoss>> {
    return this.#state.lost;
  }

  /** The own key is registered on the device (seen on a read-back). */
  async registered(identity: string, key: PrKey): Promise<void> {
    if (this.expects(identity, key)) return;
    this.#state.registered[identity] = formatKey(key);
    await this.#save();
    for (const l of this.#listeners) l.registered?.(identity);
  }

  /** This node is about to remove its own registration (a normal detach): not a loss. */
  async unregistering(identity: string): Promise<void> {
    if (!(identity in this.#state.registered)) return;
    delete this.#state.registered[identity];
    await this.#save();
  }

  /** The own key was found gone without this node removing it. */
  async lost(
    identity: string,
    key: PrKey,
    unfencedAt: string | undefined,
    at = new Date(),
    holder?: PrKey | null,
  ): Promise<void> {
    delete this.#state.registered[identity];
    const fresh = !(identity in this.#state.lost);
    this.#state.lost[identity] ??= {
      key: formatKey(key),
      at: at.toISOString(),
      unfencedAtBefore: unfencedAt ?? null,
      ...(holder !== undefined && holder !== null ? { holder: formatKey(holder) } : {}),
    };
    // On the host before anyone acts on it (a reboot follows): S2 holds across the restart.
    await this.#save();
    if (fresh) for (const l of this.#listeners) l.lost?.(identity, this.#state.lost[identity]);
  }

  /** An unfence newer than the loss was seen in a fresh read: the node may register there again. */
  async forgive(identity: string): Promise<void> {
    if (!(identity in this.#state.lost)) return;
    delete this.#state.lost[identity];
    await this.#save();
    for (const l of this.#listeners) l.forgiven?.(identity);
  }

  /** Writes are serialized: the file always holds the latest state. */
  #save(): Promise<void> {
    const file = this.#file;
    if (!file) return Promise.resolve();
    const text = JSON.stringify(this.#state, null, 1);
    this.#writing = this.#writing.then(async () => {
      const tmp = `${file}.tmp`;
      await writeFile(tmp, text, { mode: 0o600 });
      await rename(tmp, file);
    });
    return this.#writing;
  }
}
