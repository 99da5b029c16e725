/**
 * Device resolution against the guest's real sysfs (inside the QEMU guest): the identity
 * a PV would carry (SCSI VPD 0x83 WWID from LIO, NVMe wwid / NGUID from nvmet) finds the
 * logical unit's devices and nothing else. The guest has three paths to each topology's
 * logical unit (and 34 to the wide set's LU of each target, not resolved here) and no
 * dm-multipath, so a unique answer is impossible and must be refused as ambiguous, naming
 * exactly those paths. (Seen here: 6.1 and 7.2 give LIO devices, over tcm_loop and over
 * iSCSI alike, no sysfs WWID, ENXIO: there the WWID case is skipped, noted on the console.)
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DeviceResolutionError, resolveDevice } from '../../src/pr/resolve.js';
import { kernelTopologySpecs } from '../contract/kernel-topology.js';

async function ambiguousPaths(identity: string): Promise<string[]> {
  try {
    return [await resolveDevice(identity)];
  } catch (e) {
    if (!(e instanceof DeviceResolutionError)) throw e;
    expect(e.reason, e.message).toBe('ambiguous');
    return [...e.message.matchAll(/\/dev\/\S+?(?=,|\s|$)/g)].map((m) => m[0]);
  }
}

for (const spec of kernelTopologySpecs()) {
  describe(`device resolution on ${spec.name}`, () => {
    const sys = (dev: string, attr: string) => {
      try {
        return readFileSync(`/sys/block/${basename(dev)}/${attr}`, 'utf8').trim();
      } catch {
        return undefined; // e.g. ENXIO: the kernel has no VPD 0x83 designator for it
      }
    };
    const wwid = sys(spec.devices[0]!, spec.kind === 'scsi' ? 'device/wwid' : 'wwid');
    if (wwid === undefined) {
      let pg83: string;
      try {
        pg83 = `${readFileSync(`/sys/block/${basename(spec.devices[0]!)}/device/vpd_pg83`).length} bytes`;
      } catch (e) {
        pg83 = `unreadable (${(e as NodeJS.ErrnoException).code})`;
      }
      console.log(
        `${spec.name}: the kernel exposes no WWID in sysfs for ${spec.devices[0]} (vpd_pg83: ${pg83})`,
      );
    }

    it.runIf(wwid !== undefined)(
      'the WWID of one path -> every path of that logical unit, refused as ambiguous without multipath',
      async () => {
        expect(wwid).toMatch(spec.kind === 'scsi' ? /^(naa|eui|t10)\./ : /^(eui|uuid|nvme)\./);
        expect((await ambiguousPaths(`wwid:${wwid}`)).sort()).toEqual([...spec.devices].sort());
      },
    );

    it.runIf(spec.kind === 'nvme')('the NGUID of the namespace -> the same paths', async () => {
      const nguid = sys(spec.devices[0]!, 'nguid');
      expect((await ambiguousPaths(`nguid:${nguid}`)).sort()).toEqual([...spec.devices].sort());
    });

    it('an identity no device has -> not-found (retried by the agent, not a crash)', async () => {
      await expect(resolveDevice('wwid:naa.60014050000000000000000000000000')).rejects.toThrow(
        expect.objectContaining({ reason: 'not-found' }),
      );
    });
  });
}
