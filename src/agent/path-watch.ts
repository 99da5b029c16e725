/**
 * dm-multipath path changes between reconciles: every interval the agent reads the paths
 * under each open device whose own-key paths it knows (sysfs `slaves`, dm-paths.ts; a
 * readdir, no device I/O) and reconciles a volume where a path was added. The reconcile
 * decides (the rule's register of the own key again, behind the freshness gate and S2);
 * this only makes it happen sooner than the resync. Rounds never overlap.
 */
import type { Logger } from 'pino';
import { describeError } from '../obs/logger.js';
import { addedPaths } from '../pr/dm-paths.js';
import type { PrDevice } from '../pr/pr-device.js';
import type { DeviceEntry } from './device-registry.js';

export interface PathWatchOptions {
  /** Milliseconds between rounds; 0 turns the watch off (the resync still looks). */
  intervalMs: number;
  entries: () => Iterable<DeviceEntry>;
  pathsOf: (device: PrDevice) => Promise<readonly string[] | undefined>;
  /** Reconcile this PV. */
  trigger: (pv: string) => void;
  log: Logger;
}

export class PathWatch {
  readonly #o: PathWatchOptions;
  #timer: NodeJS.Timeout | undefined;
  #stopped = true;

  constructor(o: PathWatchOptions) {
    this.#o = o;
  }

  start(): void {
    if (this.#o.intervalMs <= 0 || !this.#stopped) return;
    this.#stopped = false;
    this.#schedule();
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #schedule(): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      void this.round().finally(() => this.#schedule());
    }, this.#o.intervalMs);
    this.#timer.unref();
  }

  /** One round: the PVs whose devices show a path their own key was not registered through. */
  async round(): Promise<string[]> {
    const triggered: string[] = [];
    const entries = [...this.#o.entries()].filter((e) => e.keyPaths !== undefined);
    await Promise.all(
      entries.map(async (e) => {
        let paths: readonly string[] | undefined;
        try {
          paths = await this.#o.pathsOf(e.device);
        } catch (err) {
          this.#o.log.debug({ pv: e.pv, err: describeError(err) }, 'paths not read');
          return;
        }
        const known = e.keyPaths;
        if (!paths || !known) return;
        const added = addedPaths(known, paths);
        if (added.length === 0) return;
        this.#o.log.info({ pv: e.pv, added }, 'new paths under the device: reconciling');
        triggered.push(e.pv);
        this.#o.trigger(e.pv);
      }),
    );
    return triggered;
  }
}
