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
 *
 * A write that fails (a full or read-only disk) is tried again, with a doubling delay, until
 * one succeeds; a later change is written with it. The change already holds in the process.
 * The listeners hear of a change only once the file has it: a reboot (failfast) must never
 * come before the loss it reacts to is on the host.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { doublingDelay } from '../kube/backoff.js';
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

/** Tries of a write that failed: doubling from 1 s, at most a minute apart. */
const RETRY_BASE_MS = 1000;
const RETRY_MAX_MS = 60_000;

export class FenceMemory {
  readonly #file: string | undefined;
  #state: State = { version: 1, registered: {}, lost: {} };
  #writing: Promise<void> = Promise.resolve();
  readonly #listeners = new Set<FenceMemoryListener>();
  /** What the listeners hear once the file has the change (in order). */
  #toAnnounce: ((l: FenceMemoryListener) => void)[] = [];
  /** Changes whose write failed: heard of after the next write that succeeds (it holds them). */
  #unannounced: ((l: FenceMemoryListener) => void)[] = [];
  /** The next try of a write that failed, and how many failed in a row. */
  #retry: NodeJS.Timeout | undefined;
  #failures = 0;

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
    this.#toAnnounce.push((l) => l.registered?.(identity));
    await this.#save();
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
    const loss = this.#state.lost[identity];
    if (fresh) this.#toAnnounce.push((l) => l.lost?.(identity, loss));
    // On the host before anyone acts on it (a reboot follows): S2 holds across the restart.
    await this.#save();
  }

  /** An unfence newer than the loss was seen in a fresh read: the node may register there again. */
  async forgive(identity: string): Promise<void> {
    if (!(identity in this.#state.lost)) return;
    delete this.#state.lost[identity];
    this.#toAnnounce.push((l) => l.forgiven?.(identity));
    await this.#save();
  }

  /**
   * Writes the current state (serialized: the file always holds the latest state), then
   * tells the listeners what it now holds. A failure rejects, and the write is tried again
   * later (see the module comment).
   */
  #save(): Promise<void> {
    const file = this.#file;
    const text = JSON.stringify(this.#state, null, 1);
    const announce = this.#toAnnounce;
    this.#toAnnounce = [];
    const write = this.#writing
      .catch(() => undefined)
      .then(async () => {
        if (file) {
          const tmp = `${file}.tmp`;
          await writeFile(tmp, text, { mode: 0o600 });
          await rename(tmp, file);
        }
      });
    this.#writing = write.then(
      () => {
        this.#failures = 0;
        clearTimeout(this.#retry);
        this.#retry = undefined;
        const all = [...this.#unannounced, ...announce];
        this.#unannounced = [];
        for (const a of all) for (const l of this.#listeners) a(l);
      },
      (e: unknown) => {
        this.#unannounced.push(...announce);
        this.#failures++;
        if (!this.#retry) {
          const ms = doublingDelay(RETRY_BASE_MS, RETRY_MAX_MS, this.#failures);
          this.#retry = setTimeout(() => {
            this.#retry = undefined;
            this.#save().catch(() => undefined);
          }, ms);
          this.#retry.unref();
        }
        throw e;
      },
    );
    return this.#writing;
  }
}
