/**
 * A device-mapper map over a real device (inside the QEMU guest): the agent and the CLI see
 * the command set of the devices under the map (src/pr/device-kind.ts), and PR commands and
 * key reads through the map reach the logical unit. A map over an NVMe namespace was taken
 * for SCSI before: its key reads went out as SG_IO, which NVMe does not answer.
 * The map is dm-linear over the whole device (a one-path map, set up with dmsetup without
 * udev); dm-multipath forwards the same way.
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { describe, expect, it } from 'vitest';
import { KoffiPrDevice } from '../../src/pr/koffi/koffi-pr-device.js';
import { kernelTopologySpecs } from '../contract/kernel-topology.js';
import { dmsetup, dmName } from './guest-devices.js';

const KEY = 0xd3a0000000000001n;
const RESET = 0x7e5e700000000003n;

for (const spec of kernelTopologySpecs()) {
  describe(`a dm map over ${spec.name}`, { timeout: 300_000 }, () => {
    it(`kind ${spec.kind} through the map; a key registered through it is read back through the map and through another path, and cleared`, async () => {
      const under = spec.devices[0]!;
      const sectors = readFileSync(`/sys/class/block/${basename(under)}/size`, 'utf8').trim();
      const map = `prfence-${spec.name.replace(/[^a-z0-9]/gi, '')}`;
      dmsetup('create', map, '--noudevsync', '--table', `0 ${sectors} linear ${under} 0`);
      let dev: KoffiPrDevice | undefined;
      let other: KoffiPrDevice | undefined;
      try {
        dev = await KoffiPrDevice.open(`/dev/${dmName(map)}`, { timeoutMs: 8000 });
        other = await KoffiPrDevice.open(spec.devices[1]!, { timeoutMs: 8000 });
        expect(dev.kind).toBe(spec.kind);
        await dev.registerAndIgnore(RESET);
        await dev.clear(RESET);
        await dev.register(0n, KEY);
        expect((await dev.readKeys()).keys).toEqual([KEY]);
        expect((await other.readKeys()).keys).toEqual([KEY]);
        await dev.clear(KEY);
        expect((await other.readKeys()).keys).toEqual([]);
      } finally {
        await dev?.close();
        await other?.close();
        dmsetup('remove', '--noudevsync', map);
      }
    });
  });
}
