import { describe, expect, it } from 'vitest';
import { scanBlockDevices } from '../../../src/cli/release-all.js';
import { runCli } from '../../../src/cli/program.js';
import { parseKey } from '../../../src/pr/key.js';
import { MemoryLogicalUnit } from '../../../src/pr/memory/index.js';
import type { ResolveOptions } from '../../../src/pr/resolve.js';
import { fakeRoot } from '../pr/fake-sysfs.js';

const A = 'aaaa000000000001';
const B = 'bbbb000000000002';
const [keyA, keyB] = [parseKey(A), parseKey(B)];

/**
 * The CLI with several memory LUs: a path `/dev/<lu>-<initiator>` is that initiator's path
 * to that LU (so two paths of one LU are two I_T nexuses). `ops` lists every PR call.
 */
function harness(lus: Record<string, MemoryLogicalUnit>, resolve?: ResolveOptions) {
  const out: string[] = [];
  const err: string[] = [];
  const ops: string[] = [];
  const run = (...argv: string[]) =>
    runCli(argv, {
      stdout: (l) => out.push(l),
      stderr: (l) => err.push(l),
      openDevice: async (p) => {
        const [lu, initiator] = p.replace(/^.*\//, '').split('-') as [string, string];
        const d = lus[lu]!.initiator(initiator ?? 'node');
        return new Proxy(d, {
          get(t, prop) {
            const v: unknown = Reflect.get(t, prop, t);
            if (typeof v !== 'function') return v;
            return (...args: unknown[]) => {
              ops.push(`${p} ${String(prop)}`);
              return (v as (...a: unknown[]) => unknown).apply(t, args);
            };
          },
        });
      },
      ...(resolve ? { resolve } : {}),
    });
  return { out, err, ops, run };
}

const keys = (lu: MemoryLogicalUnit) => lu.state().registrations.map((r) => r.key);

describe('prfence device release-all (uninstall)', () => {
  it("releases the reservation held with the key and unregisters it on each device; another node's key and reservation stay; a device without the key gets no PR OUT", async () => {
    const [held, shared, other, notMine] = [1, 2, 3, 4].map(() => new MemoryLogicalUnit());
    for (const lu of [held, shared]) await lu!.initiator('n').register(0n, keyA);
    await held!.initiator('n').reserve(keyA, 'write-exclusive-reg-only');
    for (const lu of [held, shared, other, notMine]) await lu!.initiator('m').register(0n, keyB);
    await shared!.initiator('m').reserve(keyB, 'write-exclusive-reg-only');
    const h = harness({ held: held!, shared: shared!, other: other!, notmine: notMine! });
    const code = await h.run(
      'device',
      'release-all',
      '--key',
      A,
      '/dev/held-n',
      '/dev/shared-n',
      '/dev/notmine-n',
      '--yes',
    );
    expect({
      code,
      out: h.out,
      held: held!.state(),
      shared: { keys: keys(shared!), holder: shared!.state().reservation?.holder },
      notMineSent: h.ops.filter((x) => x.startsWith('/dev/notmine-n') && !/read|close|capab/i.test(x)),
    }).toEqual({
      code: 0,
      out: [
        `/dev/held-n: released the write-exclusive-reg-only reservation, unregistered key ${A}`,
        `/dev/shared-n: unregistered key ${A}`,
        `/dev/notmine-n: key ${A} not registered; nothing sent`,
      ],
      held: expect.objectContaining({
        registrations: [expect.objectContaining({ key: keyB })],
        reservation: null,
      }) as unknown,
      shared: { keys: [keyB], holder: 'm' },
      notMineSent: [],
    });
  });

  it('without --yes -> exit 2, says what it would do, sends nothing', async () => {
    const lu = new MemoryLogicalUnit();
    await lu.initiator('n').register(0n, keyA);
    const h = harness({ lu });
    expect(await h.run('device', 'release-all', '--key', A, '/dev/lu-n')).toBe(2);
    expect({ err: h.err, ops: h.ops, keys: keys(lu) }).toEqual({
      err: [
        `prfence: release-all: refused without --yes: it would release and unregister key ${A} on /dev/lu-n; nothing sent`,
      ],
      ops: [],
      keys: [keyA],
    });
  });

  it('the key registered through another path than the one given -> that path reported, exit 3 naming the device that still shows the key; --json gives the error document', async () => {
    const lu = new MemoryLogicalUnit();
    await lu.initiator('p1').register(0n, keyA);
    const h = harness({ lu });
    expect(await h.run('device', 'release-all', '--key', A, '/dev/lu-p2', '--yes')).toBe(3);
    expect(h.out).toEqual([
      `/dev/lu-p2: key ${A} is registered through another path of this host, not this one`,
    ]);
    expect(h.err[0]).toMatch(
      new RegExp(`key ${A} is still registered on /dev/lu-p2: unregister it through the path`),
    );
    expect(keys(lu)).toEqual([keyA]);
    // Through both paths: gone.
    const j = harness({ lu });
    expect(
      await j.run('device', 'release-all', '--key', A, '/dev/lu-p2', '/dev/lu-p1', '--yes', '--json'),
    ).toBe(0);
    expect(JSON.parse(j.out.at(-1)!)).toEqual({
      op: 'release-all',
      key: A,
      devices: [
        { device: '/dev/lu-p2', result: 'other-path' },
        { device: '/dev/lu-p1', result: 'unregistered' },
      ],
      exitCode: 0,
    });
    expect(keys(lu)).toEqual([]);
  });

  it('scan: SCSI disks, NVMe namespaces and multipath maps, not the paths under a map, other dm targets, loop or virtio disks; a device without PR support skipped', async () => {
    const where = fakeRoot({
      'sys/block/sda/size': '1',
      'sys/block/sdb/holders/dm-0': '',
      'sys/block/sdc/holders/dm-0': '',
      'sys/block/dm-0/dm/uuid': 'mpath-3600140512345',
      'sys/block/dm-1/dm/uuid': 'LVM-abc',
      'sys/block/nvme0n1/size': '1',
      'sys/block/nvme0c0n1/size': '1',
      'sys/block/loop0/size': '1',
      'sys/block/vda/size': '1',
    });
    expect(await scanBlockDevices(where)).toEqual([
      `${where.dev}/dm-0`,
      `${where.dev}/nvme0n1`,
      `${where.dev}/sda`,
    ]);
    // dm-0 carries the key; nvme0n1 has no PR support; sda is another LU without the key.
    const lus = {
      dm: new MemoryLogicalUnit(),
      nvme0n1: new MemoryLogicalUnit({ kind: 'nvme', supported: false }),
      sda: new MemoryLogicalUnit(),
    };
    await lus.dm.initiator('0').register(0n, keyA);
    const h = harness(lus, where);
    expect(await h.run('device', 'release-all', '--key', A, '--yes')).toBe(0);
    expect({ out: h.out, dm: keys(lus.dm) }).toEqual({
      out: [
        `${where.dev}/dm-0: unregistered key ${A}`,
        expect.stringMatching(new RegExp(`^${where.dev}/nvme0n1: skipped \\(.*not support`)) as unknown,
        `${where.dev}/sda: key ${A} not registered; nothing sent`,
      ],
      dm: [],
    });
  });

  it('a device that fails midway (outcome unknown) -> exit 5; what was done before is printed, the failing device named, the devices after it untouched', async () => {
    const [one, two, three] = [1, 2, 3].map(() => new MemoryLogicalUnit());
    for (const lu of [one, two, three]) await lu!.initiator('n').register(0n, keyA);
    two!.inject({ kind: 'lost-after', op: 'register' });
    const h = harness({ one: one!, two: two!, three: three! });
    expect(
      await h.run('device', 'release-all', '--key', A, '/dev/one-n', '/dev/two-n', '/dev/three-n', '--yes'),
    ).toBe(5);
    expect({
      out: h.out,
      three: keys(three!),
      threeSent: h.ops.filter((x) => x.startsWith('/dev/three')),
    }).toEqual({
      out: [
        `/dev/one-n: unregistered key ${A}`,
        '/dev/two-n: failed (below); the devices after it were not touched',
      ],
      three: [keyA],
      threeSent: [],
    });
    expect(h.err).toHaveLength(1);
  });
});
