/**
 * A dm-multipath map over memory initiators, as the kernel's dm.c forwards PR commands:
 * REGISTER (and REGISTER AND IGNORE) goes to every path the map has now (dm_pr_register
 * walks them in table order and stops at the first failure; a failure with a new key other
 * than 0 then unregisters them all, one with key 0 is returned as it is), every other
 * command and the
 * reads to one path. Paths can be added later, like `multipath -r` / `dmsetup reload`:
 * they carry no registration until the key is registered again through the map.
 */
import type { MemoryLogicalUnit } from '../../../src/pr/memory/index.js';
import type { PrCallOptions, PrDevice } from '../../../src/pr/pr-device.js';
import type { PrKey } from '../../../src/pr/key.js';

export interface MemoryMultipath {
  device: PrDevice;
  /** The path names (memory initiators) under the map now. */
  paths(): string[];
  /**
   * Adds a path at the end of the map's path list, or first (`first`): dm.c walks the
   * paths in table order and stops at the first failure, so where the new path sits
   * decides what a failing REGISTER changed before it stopped.
   */
  addPath(name: string, first?: boolean): void;
  /** Commands sent through the map, in order. */
  sent: string[];
}

export function memoryMultipath(lu: MemoryLogicalUnit, first: string[]): MemoryMultipath {
  const paths = [...first];
  const sent: string[] = [];
  const one = () => lu.initiator(paths[0]!);
  const every = async (f: (d: PrDevice) => Promise<void>, undo?: (d: PrDevice) => Promise<void>) => {
    const done: PrDevice[] = [];
    try {
      for (const p of paths) {
        const d = lu.initiator(p);
        await f(d);
        done.push(d);
      }
    } catch (e) {
      if (undo) for (const d of paths.map((p) => lu.initiator(p))) await undo(d).catch(() => undefined);
      throw e;
    }
  };
  const device: PrDevice = {
    id: 'mpath-memory',
    register: (oldKey: PrKey, newKey: PrKey, opts?: PrCallOptions) => (
      sent.push(`register ${oldKey}->${newKey}`),
      every(
        (d) => d.register(oldKey, newKey, opts),
        newKey === 0n ? undefined : (d) => d.register(newKey, 0n),
      )
    ),
    registerAndIgnore: (newKey, opts) => (
      sent.push(`register-ignore ${newKey}`),
      every((d) => d.registerAndIgnore(newKey, opts))
    ),
    reserve: (k, t, o) => (sent.push(`reserve ${t}`), one().reserve(k, t, o)),
    release: (k, t, o) => (sent.push(`release ${t}`), one().release(k, t, o)),
    preempt: (k, v, t, o) => (sent.push(`preempt ${v}`), one().preempt(k, v, t, o)),
    preemptAndAbort: (k, v, t, o) => (sent.push(`preempt-abort ${v}`), one().preemptAndAbort(k, v, t, o)),
    clear: (k, o) => (sent.push('clear'), one().clear(k, o)),
    readKeys: (o) => one().readKeys(o),
    readReservation: (o) => one().readReservation(o),
    readFullStatus: (o) => one().readFullStatus(o),
    capabilities: (o) => one().capabilities(o),
    close: () => Promise.resolve(),
  };
  return {
    device,
    paths: () => [...paths].sort(),
    addPath: (n, first) => void (first ? paths.unshift(n) : paths.push(n)),
    sent,
  };
}
