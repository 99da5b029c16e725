/**
 * The devices this agent has open, one per PV: opened on first use, closed when the
 * volume no longer concerns this node (detached and unregistered) or when it failed in a
 * way that may mean a changed path (re-resolved on the next use), and what was learnt
 * about each device (quirks). Closing never touches a reservation (S8).
 */
import type { PrDevice } from '../pr/pr-device.js';

export interface DeviceEntry {
  readonly pv: string;
  readonly identity: string;
  readonly device: PrDevice;
  /** Seen on this device: a holder's PREEMPT kept the victim (nvmet). */
  holderPreemptKeepsVictim: boolean;
  /** This device refused PREEMPT AND ABORT as unsupported: its fences use PREEMPT (logged once). */
  preemptAbortRefused: boolean;
  /**
   * dm-multipath: the paths under the device (dm-paths.ts) that this node's key is known
   * to be registered through: those the map had when this node last registered through
   * it. Undefined until known (not a map, not registered, or a device opened with the key
   * already on it, e.g. after a restart: then it is registered again once).
   */
  keyPaths: readonly string[] | undefined;
}

export type OpenDevice = (identity: string, pv: string) => Promise<PrDevice>;

export class DeviceRegistry {
  readonly #open: OpenDevice;
  readonly #entries = new Map<string, DeviceEntry>();
  readonly #opening = new Map<string, Promise<DeviceEntry>>();

  constructor(open: OpenDevice) {
    this.#open = open;
  }

  /** The open device of `pv` for `identity` (re-opened if the identity changed). Throws if it cannot be opened. */
  async get(pv: string, identity: string): Promise<DeviceEntry> {
    const e = this.#entries.get(pv);
    if (e && e.identity === identity) return e;
    if (e) await this.drop(pv);
    let p = this.#opening.get(pv);
    if (!p) {
      p = this.#open(identity, pv)
        .then((device) => {
          const entry: DeviceEntry = {
            pv,
            identity,
            device,
            holderPreemptKeepsVictim: false,
            preemptAbortRefused: false,
            keyPaths: undefined,
          };
          this.#entries.set(pv, entry);
          return entry;
        })
        .finally(() => this.#opening.delete(pv));
      this.#opening.set(pv, p);
    }
    return p;
  }

  /** The devices open now (the failfast probe reads those this node expects to be registered on). */
  entries(): IterableIterator<DeviceEntry> {
    return this.#entries.values();
  }

  has(pv: string): boolean {
    return this.#entries.has(pv);
  }

  /** Closes the device of `pv` (its calls finish first; the reservation stays, S8). */
  async drop(pv: string): Promise<void> {
    const e = this.#entries.get(pv);
    if (!e) return;
    this.#entries.delete(pv);
    await e.device.close();
  }

  get size(): number {
    return this.#entries.size;
  }

  async closeAll(): Promise<void> {
    await Promise.allSettled([...this.#entries.keys()].map((pv) => this.drop(pv)));
  }
}
