/**
 * A target restart with APTPL off, on a real kernel (issue 10 item 5 b): the registrations
 * and the reservation are gone, and the agent does not register again by itself (S2: a key
 * found gone that the node did not remove is a loss; the node treats itself as fenced
 * there), only after an unfence. The memory model does the same with lu.powerCycle()
 * (test/integration/safety.test.ts A8).
 *
 * The restart: Linux sets APTPL on every REGISTER (docs/arrays.md), so LIO writes its
 * registrations to /var/target/pr/aptpl_*; but LIO reads that file back only when userspace
 * writes it into the device's pr/res_aptpl_metadata (targetcli's restore), never by itself.
 * A backstore deleted and created again through configfs, with nothing written there, is
 * the LU after a power cycle with APTPL off: a new se_device, no PR state, generation 0.
 * The iSCSI LUN is unlinked from the target portal group first and linked again after, so
 * the initiator's sessions (and the agent's open /dev/sdX) stay. The new backstore is a
 * file of the same size under the chroot's /run/tmp (the guest's own /tmp, where the first
 * one lives, is not the chroot's; fileio opens its file in the writer's root).
 *
 * The reconcile is the agent's own (VolumeReconciler, the world of
 * test/unit/agent/multipath-world.ts: caches and fresh view as plain data).
 */
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmdirSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { directWrite } from '../../src/pr/koffi/direct-io.js';
import { KoffiPrDevice } from '../../src/pr/koffi/koffi-pr-device.js';
import { formatKey } from '../../src/pr/key.js';
import { kernelTopologySpecs } from '../contract/kernel-topology.js';
import { K, reconcilerOf, type World } from '../unit/agent/multipath-world.js';
import { withDevice } from './guest-devices.js';

const log = pino({ level: process.env.PRFENCE_TEST_LOG ?? 'silent' });
const RESET = 0x7e5e700000000005n;
const T = '/sys/kernel/config/target';

/** LIO's configfs inside the chroot the tests run in (mounted by the guest's init outside it). */
function configfs(): void {
  if (existsSync(join(T, 'core'))) return;
  const r = spawnSync('/bin/mount', ['-t', 'configfs', 'none', '/sys/kernel/config'], { encoding: 'utf8' });
  if (r.status !== 0 || !existsSync(join(T, 'core'))) throw new Error(`no LIO configfs: ${r.stderr}`);
}

/**
 * The iSCSI target portal group of the lio-iscsi topology (not the wide set's target,
 * iqn...:wide), its LUN 0 link and the backstore that link points to.
 */
function iscsiLun(): { tpg: string; link: string; backstore: string } {
  const iqn = readdirSync(join(T, 'iscsi')).find((n) => n.startsWith('iqn.') && !n.endsWith(':wide'));
  if (!iqn) throw new Error('no iSCSI target in configfs');
  const tpg = join(T, 'iscsi', iqn, 'tpgt_1');
  const lunDir = join(tpg, 'lun', 'lun_0');
  const name = readdirSync(lunDir).find((n) => lstatSync(join(lunDir, n)).isSymbolicLink());
  if (!name) throw new Error(`no backstore linked under ${lunDir}`);
  const link = join(lunDir, name);
  return { tpg, link, backstore: resolve(dirname(link), readlinkSync(link)) };
}

let restarts = 0;
/**
 * The LU's power cycle with APTPL off: its backstore deleted and created again (the same
 * size, its attributes as they were). The initiators' ACLs are dynamic (generate_node_acls);
 * so that each session reaches the new backstore, and not the TPG's virtual LUN 0 (a
 * read-only ramdisk with a PR state of its own, where LIO sends LUN 0 of an ACL that lacks
 * it), each ACL is made explicit (a mkdir of its name keeps the session) and LUN 0 mapped to
 * it. The test checks it with a write and with the backstore's own list of registrations.
 */
function restartLu(size: number): string {
  configfs();
  const { tpg, link, backstore } = iscsiLun();
  const acls = join(tpg, 'acls');
  const names = new Set([
    ...readFileSync(join(tpg, 'dynamic_sessions'), 'utf8')
      .split(/\s+/)
      .filter((n) => n.startsWith('iqn.')),
    ...readdirSync(acls),
  ]);
  for (const n of readdirSync(acls)) {
    const mapped = join(acls, n, 'lun_0');
    if (!existsSync(mapped)) continue;
    for (const e of readdirSync(mapped))
      if (lstatSync(join(mapped, e)).isSymbolicLink()) unlinkSync(join(mapped, e));
  }
  // The backstore's attributes as they were (write cache, FUA, ...: what the initiators
  // learnt at login), written back to the new one before it is linked.
  const attrib = join(backstore, 'attrib');
  const before = new Map(
    readdirSync(attrib).flatMap((a) => {
      try {
        return [[a, readFileSync(join(attrib, a), 'utf8').trim()] as const];
      } catch {
        return [];
      }
    }),
  );
  unlinkSync(link);
  rmdirSync(backstore);
  mkdirSync(backstore);
  restarts += 1;
  writeFileSync(
    join(backstore, 'control'),
    `fd_dev_name=/run/tmp/prfence-restart-${restarts}.img,fd_dev_size=${size}`,
  );
  writeFileSync(join(backstore, 'enable'), '1');
  for (const [a, v] of before) {
    try {
      if (readFileSync(join(attrib, a), 'utf8').trim() !== v) writeFileSync(join(attrib, a), v);
    } catch {
      // read-only or not settable now: as the new backstore has it
    }
  }
  symlinkSync(backstore, link);
  for (const n of names) {
    const mapped = join(acls, n, 'lun_0');
    if (!existsSync(join(acls, n))) mkdirSync(join(acls, n));
    if (!existsSync(mapped)) mkdirSync(mapped);
    symlinkSync(dirname(link), join(mapped, 'lun'));
  }
  return backstore;
}

/** The registrations LIO lists for the backstore itself (configfs pr/), beside the reads. */
const registeredOnBackstore = (backstore: string) =>
  readFileSync(join(backstore, 'pr', 'res_pr_registered_i_pts'), 'utf8');

const resetLu = (dev: string) =>
  withDevice(dev, async (d) => {
    await d.registerAndIgnore(RESET);
    await d.clear(RESET);
  });

const iscsi = kernelTopologySpecs().filter((s) => s.name === 'lio-iscsi' && s.devices.length >= 2);

describe('a target restart with APTPL off (LIO over iSCSI)', { timeout: 300_000 }, () => {
  for (const spec of iscsi) {
    it('registered and reserved by the agent, the LU restarts with APTPL off -> no registration and no reservation left; the reconcile registers nothing (S2: a loss, blocked) and writes nothing, again on the next reconcile; after an unfence it registers and reserves', async () => {
      const [p1, p2] = spec.devices as [string, string];
      await resetLu(p1);
      let api: World = { vas: ['a'] };
      const w = await reconcilerOf(
        () => KoffiPrDevice.open(p1, { timeoutMs: 8000 }),
        () => Promise.resolve(undefined),
        () => api,
      );
      try {
        // 1. The agent registers and reserves (read from another initiator).
        expect((await w.reconcile(log)).outcome).toBe('done');
        const state = () =>
          withDevice(p2, async (d) => ({
            keys: (await d.readKeys()).keys,
            type: (await d.readReservation()).type,
          }));
        expect(await state()).toEqual({ keys: [K.a], type: 'write-exclusive-all-regs' });

        // 2. The LU restarts with APTPL off: its PR state is gone. The sessions reach the
        // new backstore (a write goes through: not the read-only virtual LUN 0).
        // The same size as before: the initiators' disks know it (sysfs: 512-byte sectors).
        const backstore = restartLu(
          Number(readFileSync(`/sys/class/block/${basename(p1)}/size`, 'utf8')) * 512,
        );
        expect(await state()).toEqual({ keys: [], type: null });
        const w1 = await directWrite(p1).catch((e: unknown) => {
          const d = spawnSync('/bin/dmesg', [], { encoding: 'utf8' })
            .stdout.split('\n')
            .slice(-30)
            .join('\n');
          console.log(`write after the restart: ${String(e)}\n${d}`);
          return 'error';
        });
        expect(w1).toBe('ok');
        expect(registeredOnBackstore(backstore)).not.toContain(formatKey(K.a));

        // 3. The agent finds its key gone without having removed it: a loss; it stays out.
        const res = await w.reconcile(log);
        expect({
          outcome: res.outcome,
          lost: w.memory.lossOf('lu') !== undefined,
          ...(await state()),
        }).toEqual({
          outcome: 'blocked',
          lost: true,
          keys: [],
          type: null,
        });
        expect((await w.reconcile(log)).outcome).toBe('blocked');
        expect(await state()).toEqual({ keys: [], type: null });

        // 4. The unfence (a new unfencedAt) forgives the loss: it registers and reserves.
        api = { vas: ['a'], unfencedAt: { a: new Date().toISOString() } };
        expect((await w.reconcile(log)).outcome).toBe('done');
        expect({ lost: w.memory.lossOf('lu') !== undefined, ...(await state()) }).toEqual({
          lost: false,
          keys: [K.a],
          type: 'write-exclusive-all-regs',
        });
        expect(registeredOnBackstore(backstore)).toContain(formatKey(K.a));
        expect(await directWrite(p1)).toBe('ok');
      } finally {
        for (const e of [...w.devices.entries()]) await e.device.close().catch(() => undefined);
        await resetLu(p1);
      }
    });
  }
});
