/**
 * What a preempted initiator is told, below prfence (issue 10 item 5 a): after PREEMPT AND
 * ABORT of its key, LIO establishes a unit attention (REGISTRATIONS PREEMPTED, 06/2A/05)
 * for it (SPC-4 5.13.11.2.4), reported once, on its next command, which is not executed.
 * sg_persist (sg3-utils, from the host root) sends PERSISTENT RESERVE IN through SG_IO
 * with no retry, so it shows the unit attention as the device reports it; the contract
 * suite (test/contract/suite.ts, "the victim's first command after it") shows what
 * KoffiPrDevice and a write make of it: a read without the victim's key, a refused write.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { formatKey } from '../../src/pr/key.js';
import { kernelTopologySpecs } from '../contract/kernel-topology.js';
import { withDevice } from './guest-devices.js';

const KA = 0xa0a0a0a000000001n;
const KB = 0xb0b0b0b000000002n;
const RESET = 0x7e5e700000000006n;
const SG_PERSIST = '/usr/bin/sg_persist';
/** sg3-utils' exit status for a unit attention (SG_LIB_CAT_UNIT_ATTENTION). */
const SG_UNIT_ATTENTION = 6;

function sgReadKeys(dev: string): { status: number | null; out: string } {
  const r = spawnSync(SG_PERSIST, ['--in', '--read-keys', '--no-inquiry', dev], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

const iscsi = kernelTopologySpecs().filter((s) => s.name === 'lio-iscsi' && s.devices.length >= 2);

describe.skipIf(!existsSync(SG_PERSIST))(
  'the unit attention after a preempt (LIO over iSCSI)',
  { timeout: 120_000 },
  () => {
    for (const spec of iscsi) {
      it("A preempts-and-aborts the holder B -> B's next PERSISTENT RESERVE IN (SG_IO, no retry) answers UNIT ATTENTION once (registrations preempted); the one after it succeeds and lists A's key only", async () => {
        const [pa, pb] = spec.devices as [string, string];
        const reset = () =>
          withDevice(pa, async (d) => {
            await d.registerAndIgnore(RESET);
            await d.clear(RESET);
          });
        await reset();
        try {
          await withDevice(pa, (d) => d.register(0n, KA));
          await withDevice(pb, async (d) => {
            await d.register(0n, KB);
            await d.reserve(KB, 'write-exclusive-reg-only');
          });
          // B's nexus has nothing pending: its read is plain GOOD.
          expect(sgReadKeys(pb).status).toBe(0);
          await withDevice(pa, (d) => d.preemptAndAbort(KA, KB, 'write-exclusive-reg-only'));
          const first = sgReadKeys(pb);
          const second = sgReadKeys(pb);
          expect({
            first: first.status,
            firstSaysUnitAttention: /unit attention/i.test(first.out),
            second: second.status,
            secondListsA: second.out.includes(formatKey(KA)),
            secondListsB: second.out.includes(formatKey(KB)),
          }).toEqual({
            first: SG_UNIT_ATTENTION,
            firstSaysUnitAttention: true,
            second: 0,
            secondListsA: true,
            secondListsB: false,
          });
        } finally {
          await reset();
        }
      });
    }
  },
);
