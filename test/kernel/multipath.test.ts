/**
 * dm-multipath on a real kernel (inside the QEMU guest): a path added to a map after the
 * key was registered through it carries no registration, and the agent's reconcile
 * registers its key again through the map (docs/design.md "Multipath"); a node that leaves
 * such a map unregisters without tripping over the path that never had its key.
 *
 * The logical unit is LIO over iSCSI on the guest's loopback (test/kernel/guest-init.sh):
 * three open-iscsi sessions with their own initiator names, three I_T nexuses, three
 * /dev/sdX. Most maps are the kernel's dm-multipath target built with dmsetup without udev
 * (round-robin, one path group); a path "added later" is the third session's disk put into
 * the map with `dmsetup reload` + `dmsetup resume`, as `multipath -r` does. One test builds
 * the map as a node does, with Debian's multipath-tools (test/kernel/setup.sh installs it
 * on the host, whose root the guest runs from): it starts systemd-udevd and multipathd for
 * itself (guest-devices.ts, startMultipathTools), multipathd makes the map of two sessions
 * (the third session's disk blacklisted), and the path added later is a fourth session
 * (initiator host-4) logged in during the test, which multipathd puts into the map on its
 * udev event. The kernel target, and so its PR forwarding (dm_pr_register walks every path
 * of the map), is the same either way.
 *
 * The reconcile is the agent's own (VolumeReconciler, with the sysfs path reader the agent
 * uses, src/pr/dm-paths.ts); the caches and the fresh view are plain data.
 */
import { readdirSync, readFileSync, realpathSync } from 'node:fs';
import { basename } from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { PathWatch } from '../../src/agent/path-watch.js';
import { devicePaths } from '../../src/pr/dm-paths.js';
import { directWrite } from '../../src/pr/koffi/direct-io.js';
import { KoffiPrDevice } from '../../src/pr/koffi/koffi-pr-device.js';
import { formatKey } from '../../src/pr/key.js';
import { kernelTopologySpecs } from '../contract/kernel-topology.js';
import { K, reconcilerOf, type World } from '../unit/agent/multipath-world.js';
import {
  dmsetup,
  dmName,
  iscsiSession,
  scsiWwid,
  startMultipathTools,
  until,
  type IscsiSession,
} from './guest-devices.js';

const log = pino({ level: process.env.PRFENCE_TEST_LOG ?? 'silent' });
const RESET = 0x7e5e700000000004n;
const MAP = 'prfence-mpath';

const sysfs = (dev: string, file: string) =>
  readFileSync(`/sys/class/block/${basename(dev)}/${file}`, 'utf8').trim();

/** A dm-multipath table: one round-robin group over `paths` (major:minor). */
function table(paths: string[]): string {
  const sectors = sysfs(paths[0]!, 'size');
  const each = paths.map((p) => `${sysfs(p, 'dev')} 1`).join(' ');
  return `0 ${sectors} multipath 0 0 1 1 round-robin 0 ${paths.length} 1 ${each}`;
}

/** How often `key` is registered on the LU (one entry per I_T nexus), read through `dev`. */
async function registrations(dev: string, key: bigint): Promise<number> {
  const d = await KoffiPrDevice.open(dev, { timeoutMs: 8000 });
  try {
    return (await d.readKeys()).keys.filter((k) => k === key).length;
  } finally {
    await d.close();
  }
}

/** Every registration and the reservation go: the LU as the next test expects it. */
async function resetLu(dev: string): Promise<void> {
  const d = await KoffiPrDevice.open(dev, { timeoutMs: 8000 });
  try {
    await d.registerAndIgnore(RESET);
    await d.clear(RESET);
  } finally {
    await d.close();
  }
}

/** Runs every step in order, even after one threw; then throws the first error. */
async function allOf(...steps: (() => unknown)[]): Promise<void> {
  let first: unknown;
  for (const step of steps) {
    try {
      await step();
    } catch (e) {
      first ??= e;
    }
  }
  if (first !== undefined) throw first;
}

/** The dm-multipath map (dm-N) multipath-tools made for the LU `wwid`, if there is one. */
function mpathMap(wwid: string): string | undefined {
  return readdirSync('/sys/block').find(
    (d) => d.startsWith('dm-') && readFileSync(`/sys/block/${d}/dm/uuid`, 'utf8').trim() === `mpath-${wwid}`,
  );
}

/**
 * multipath-tools' configuration of the test (conf.d, over the built-in defaults): a map for
 * every path of the LU `wwid` (find_multipaths off), named by its WWID; every
 * other device blacklisted, and `outside` too (a session of the LU that stays out of the
 * map). One round-robin group as the dmsetup tests build it; no hardware handler (the
 * built-in LIO-ORG entry asks for ALUA's, a module the guest does not load) and no queueing.
 */
function multipathConf(wwid: string, outside: string): string {
  return `defaults {
  find_multipaths off
  user_friendly_names no
}
blacklist {
  wwid ".*"
  devnode "^${basename(outside)}$"
}
blacklist_exceptions {
  wwid "^${wwid}$"
}
devices {
  device {
    vendor "LIO-ORG"
    product ".*"
    path_grouping_policy multibus
    path_selector "round-robin 0"
    hardware_handler "0"
    prio const
    detect_prio no
    no_path_retry fail
  }
}
`;
}

/**
 * A path added to a map after the key was registered through it: the agent's reconcile
 * registers and reserves (write-exclusive-all-regs) through the map `dev` over `before`
 * (`outside`, a session of the LU that is not a path of the map, sees the registrations
 * and is refused writes); `addPath` adds a path to the map and returns it: the kernel
 * registers nothing through it and its writes are refused; the path watch sees it, the
 * reconcile registers the key again through the map (REGISTER AND IGNORE) and its writes
 * are accepted; then there is nothing more to do.
 */
async function pathAddedLater(
  dev: string,
  before: [string, string],
  outside: string,
  addPath: () => Promise<string>,
): Promise<void> {
  let map: KoffiPrDevice | undefined;
  try {
    const w = await reconcilerOf(
      async () => (map = await KoffiPrDevice.open(dev, { timeoutMs: 8000 })),
      (d) => devicePaths(d.id),
      () => ({ vas: ['a'] }),
    );

    // 1. The agent registers and reserves through the map: both paths carry the key.
    const first = await w.reconcile(log);
    expect(first.outcome).toBe('done');
    expect(await registrations(outside, K.a)).toBe(2);
    const r = await map!.readReservation();
    expect(r.type).toBe('write-exclusive-all-regs');
    expect(await directWrite(before[0])).toBe('ok');
    expect(await directWrite(outside)).toBe('refused'); // not a path of the map

    // 2. A third path is added to the map: the kernel registers nothing through it.
    const added = await addPath();
    const paths = [...before, added];
    expect(await devicePaths(dev)).toEqual(paths.map((p) => basename(p)).sort());
    expect(await registrations(added, K.a)).toBe(2);
    expect(await directWrite(added)).toBe('refused');

    // The agent's path watch sees it between reconciles.
    const triggered: string[] = [];
    const watch = new PathWatch({
      intervalMs: 0,
      entries: () => w.devices.entries(),
      pathsOf: (d) => devicePaths(d.id),
      trigger: (pv) => triggered.push(pv),
      log,
    });
    expect(await watch.round()).toEqual(['pv-1']);

    // 3. The reconcile registers the own key again through the map (after a fresh view).
    const reads = w.fresh.reads();
    const second = await w.reconcile(log);
    expect({
      outcome: second.outcome,
      freshReads: w.fresh.reads() - reads,
      events: w.writer.events,
    }).toEqual({ outcome: 'done', freshReads: 1, events: [[basename(added)]] });
    expect(await directWrite(added)).toBe('ok');
    for (const p of paths) expect(await registrations(p, K.a)).toBe(3);
    const full = await map!.readFullStatus();
    expect(
      full.registrants
        .filter((x) => x.key === K.a)
        .map((x) => x.initiator.id)
        .sort(),
    ).toEqual(paths.map((p) => initiatorOf(p)).sort());
    expect(formatKey(K.a)).toMatch(/^[0-9a-f]{16}$/);

    // 4. Nothing more to do: the next reconcile sends nothing and reads no view.
    const reads2 = w.fresh.reads();
    const gen = (await map!.readKeys()).generation;
    await w.reconcile(log);
    expect({
      freshReads: w.fresh.reads() - reads2,
      generation: (await map!.readKeys()).generation,
    }).toEqual({
      freshReads: 0,
      generation: gen,
    });
    expect(await watch.round()).toEqual([]);
  } finally {
    await map?.close();
  }
}

/** The initiator name of the iSCSI session whose disk is `dev`. */
function initiatorOf(dev: string): string {
  const session = realpathSync(`/sys/class/block/${basename(dev)}/device`).match(/\/(session\d+)\//)?.[1];
  if (!session) throw new Error(`${dev}: not the disk of an iSCSI session`);
  return readFileSync(`/sys/class/iscsi_session/${session}/initiatorname`, 'utf8').trim();
}

const iscsi = kernelTopologySpecs().filter((s) => s.name === 'lio-iscsi' && s.devices.length >= 3);

describe('dm-multipath over LIO iSCSI sessions', { timeout: 300_000 }, () => {
  it('the guest has three iSCSI sessions to one LU (the paths of these tests)', () => {
    expect(iscsi.map((s) => s.devices.length)).toEqual([3]);
  });

  for (const spec of iscsi) {
    it('key registered through a two-path map (write-exclusive-all-regs), a third path added -> writes through it refused (EBADE); the agent reconcile registers the key again through the map -> accepted, and the key is on all three nexuses', async () => {
      const [p1, p2, p3] = spec.devices as [string, string, string];
      await resetLu(p1);
      dmsetup(
        'create',
        MAP,
        '--noudevsync',
        '--uuid',
        'mpath-prfence-kernel-test',
        '--table',
        table([p1, p2]),
      );
      try {
        const dev = `/dev/${dmName(MAP)}`;
        expect(await devicePaths(dev)).toEqual([basename(p1), basename(p2)].sort());
        await pathAddedLater(dev, [p1, p2], p3, async () => {
          dmsetup('reload', MAP, '--noudevsync', '--table', table([p1, p2, p3]));
          dmsetup('resume', MAP, '--noudevsync');
          return p3;
        });
      } finally {
        dmsetup('remove', '--noudevsync', MAP);
        await resetLu(p1);
      }
    });

    it('multipath-tools (systemd-udevd + multipathd): multipathd makes the map of two sessions; a session logged in later is added to the map by multipathd -> writes through its disk refused (EBADE); the agent reconcile registers the key again through the map -> accepted, and the key is on all three nexuses', async () => {
      const [p1, p2, p3] = spec.devices as [string, string, string];
      await resetLu(p1);
      // The LU's WWID as multipath-tools reads it (udev's ID_SERIAL, from scsi_id); p3's
      // session stays out of the map.
      const wwid = scsiWwid(p1);
      const mp = await startMultipathTools(multipathConf(wwid, p3), [p1, p2]);
      let session: IscsiSession | undefined;
      let map: string | undefined;
      try {
        const dev = await until(
          () => `multipathd's map of ${basename(p1)} and ${basename(p2)}\n${mp.log()}`,
          120_000,
          async () => {
            const dm = mpathMap(wwid);
            return dm && (await devicePaths(`/dev/${dm}`))?.length === 2 ? `/dev/${dm}` : undefined;
          },
        );
        map = readFileSync(`/sys/block/${basename(dev)}/dm/name`, 'utf8').trim();
        expect(await devicePaths(dev)).toEqual([basename(p1), basename(p2)].sort());
        await pathAddedLater(dev, [p1, p2], p3, async () => {
          // A third session (initiator host-4): multipathd adds its disk to the map by itself.
          session = await iscsiSession(4);
          const added = session.dev;
          await until(
            () => `multipathd adding ${added} to the map\n${mp.log()}`,
            120_000,
            async () => ((await devicePaths(dev))?.includes(basename(added)) ? true : undefined),
          );
          return added;
        });
      } finally {
        // Every step, even after one failed: later tests need the guest as it was.
        await allOf(
          () => mp.stopMultipathd(),
          () => map && dmsetup('remove', '--noudevsync', map),
          () => session?.logout(),
          () => mp.stopUdev(),
          () => resetLu(p1),
        );
      }
    });

    it('key registered through a two-path map, a third path put first in the map (not registered), the node detaches -> a plain REGISTER to key 0 through the map conflicts and removes nothing (dm_pr_register stops at the first path); the agent reconcile leaves with REGISTER AND IGNORE of key 0: the key is gone from every nexus, no reservation left', async () => {
      const [p1, p2, p3] = spec.devices as [string, string, string];
      await resetLu(p1);
      dmsetup(
        'create',
        MAP,
        '--noudevsync',
        '--uuid',
        'mpath-prfence-kernel-leave',
        '--table',
        table([p1, p2]),
      );
      let map: KoffiPrDevice | undefined;
      try {
        const dev = `/dev/${dmName(MAP)}`;
        let api: World = { vas: ['a'] };
        const w = await reconcilerOf(
          async () => (map = await KoffiPrDevice.open(dev, { timeoutMs: 8000 })),
          (d) => devicePaths(d.id),
          () => api,
        );
        expect((await w.reconcile(log)).outcome).toBe('done');
        expect(await registrations(p3, K.a)).toBe(2);
        expect((await map!.readReservation()).type).toBe('write-exclusive-all-regs');

        // The new path first in the table: dm.c walks the paths in table order.
        dmsetup('reload', MAP, '--noudevsync', '--table', table([p3, p1, p2]));
        dmsetup('resume', MAP, '--noudevsync');
        expect(await devicePaths(dev)).toEqual([basename(p1), basename(p2), basename(p3)].sort());

        // What the kernel does with a plain REGISTER to key 0 through this map: a conflict
        // on the path that never had the key, and nothing removed anywhere (no rollback, and
        // the paths after it are not tried). This is the leave that used to repeat forever.
        await expect(map!.register(K.a, 0n)).rejects.toMatchObject({ kind: 'conflict' });
        expect(await registrations(p3, K.a)).toBe(2);

        // The node detaches: the agent's reconcile leaves (read back from another initiator,
        // the third session's own disk, with READ FULL STATUS too).
        api = { vas: [] };
        const peer = await KoffiPrDevice.open(p3, { timeoutMs: 8000 });
        try {
          const res = await w.reconcile(log);
          const keys = await peer.readKeys();
          const full = await peer.readFullStatus();
          expect({
            outcome: res.outcome,
            own: keys.keys.filter((k) => k === K.a).length,
            registrants: full.registrants.map((x) => x.initiator.id),
            reservation: (await peer.readReservation()).type,
            // Detached and unregistered: the agent closed the device.
            open: [...w.devices.entries()].length,
          }).toEqual({ outcome: 'done', own: 0, registrants: [], reservation: null, open: 0 });
          // Nothing more: the next reconcile registers nothing.
          await w.reconcile(log);
          expect(await peer.readKeys()).toEqual({ generation: keys.generation, keys: [] });
        } finally {
          await peer.close();
        }
        expect(w.writer.events).toEqual([]);
      } finally {
        await map?.close();
        dmsetup('remove', '--noudevsync', MAP);
        await resetLu(p1);
      }
    });

    it('S2: key registered through a one-path map, then removed by a peer (PREEMPT AND ABORT through another session) and a path added -> the reconcile registers nothing: the key stays off all paths and writes through the new path stay refused', async () => {
      const [p1, p2, p3] = spec.devices as [string, string, string];
      await resetLu(p1);
      dmsetup('create', MAP, '--noudevsync', '--uuid', 'mpath-prfence-kernel-s2', '--table', table([p1]));
      let map: KoffiPrDevice | undefined;
      const peer = await KoffiPrDevice.open(p3, { timeoutMs: 8000 });
      try {
        const dev = `/dev/${dmName(MAP)}`;
        let api: World = { vas: ['a', 'b'] };
        const w = await reconcilerOf(
          async () => (map = await KoffiPrDevice.open(dev, { timeoutMs: 8000 })),
          (d) => devicePaths(d.id),
          () => api,
        );
        expect((await w.reconcile(log)).outcome).toBe('done');
        expect(await registrations(p3, K.a)).toBe(1);
        // Node b fences node a: its key leaves every nexus; the API asks for a's fence.
        await peer.register(0n, K.b);
        await peer.preemptAndAbort(K.b, K.a, 'write-exclusive-all-regs');
        api = { vas: ['a', 'b'], fenceRequested: ['a'] };
        dmsetup('reload', MAP, '--noudevsync', '--table', table([p1, p2]));
        dmsetup('resume', MAP, '--noudevsync');
        expect(await devicePaths(dev)).toEqual([basename(p1), basename(p2)].sort());
        const gen = (await peer.readKeys()).generation;
        const res = await w.reconcile(log);
        expect({
          outcome: res.outcome,
          own: await registrations(p3, K.a),
          generation: (await peer.readKeys()).generation,
          events: w.writer.events,
          lost: w.memory.lossOf('lu') !== undefined,
        }).toEqual({ outcome: 'blocked', own: 0, generation: gen, events: [], lost: true });
        expect(await directWrite(p2)).toBe('refused');
        expect(await directWrite(p1)).toBe('refused');
      } finally {
        await map?.close();
        await peer.close();
        dmsetup('remove', '--noudevsync', MAP);
        await resetLu(p1);
      }
    });
  }
});
