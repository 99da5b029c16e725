import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { registerDemoCommand } from '../../../src/cli/demo-command.js';
import { formatCapabilities } from '../../../src/cli/device-command.js';
import { runCli } from '../../../src/cli/program.js';
import { InvalidArgumentError, RESERVATION_TYPES, UnsupportedError } from '../../../src/pr/index.js';
import { ERRNO } from '../../../src/pr/koffi/classify.js';
import { MemoryLogicalUnit } from '../../../src/pr/memory/index.js';
import type { ResolveOptions } from '../../../src/pr/resolve.js';
import { fakeRoot } from '../pr/fake-sysfs.js';

/**
 * Runs the CLI against one memory LU where the "path" names the initiator. `opened` lists
 * every open with its time limit; `eperm` paths fail like a PR ioctl Linux refuses.
 */
function harness(lu = new MemoryLogicalUnit(), resolve?: ResolveOptions, eperm: string[] = []) {
  const out: string[] = [];
  const err: string[] = [];
  const opened: { path: string; timeoutMs: number }[] = [];
  const run = (...argv: string[]) =>
    runCli(
      argv,
      {
        stdout: (l) => out.push(l),
        stderr: (l) => err.push(l),
        openDevice: async (p, o) => {
          opened.push({ path: p, timeoutMs: o.timeoutMs });
          if (p.startsWith('/nope')) throw new InvalidArgumentError(`${p}: not a block device`);
          const d = lu.initiator(p);
          if (!eperm.includes(p)) return d;
          const refuse = () =>
            Promise.reject(
              new UnsupportedError('read-keys: permission denied (PR ioctls need CAP_SYS_ADMIN)', {
                op: 'read-keys',
                device: p,
                errno: ERRNO.EPERM,
              }),
            );
          return { id: p, readKeys: refuse, register: refuse, close: () => d.close() } as unknown as typeof d;
        },
        ...(resolve ? { resolve } : {}),
      },
      [registerDemoCommand],
    );
  return { lu, out, err, opened, run };
}

const A = 'aaaa000000000001';
const B = 'bbbb000000000002';

describe('prfence device', () => {
  it('register + keys --json -> 16-hex keys and the generation', async () => {
    const h = harness();
    expect(await h.run('device', 'register', 'a', '--key', `0x${A}`)).toBe(0);
    expect(await h.run('device', 'register', 'b', '--key', B)).toBe(0);
    expect(await h.run('device', 'keys', 'a', '--json')).toBe(0);
    expect(JSON.parse(h.out.at(-1)!)).toEqual({ generation: 2, keys: [A, B] });
  });

  it('reservation --json with none and with a holder -> null / key and type', async () => {
    const h = harness();
    await h.run('device', 'reservation', 'a', '--json');
    expect(JSON.parse(h.out.at(-1)!)).toEqual({ generation: 0, key: null, type: null });
    await h.run('device', 'register', 'a', '--key', A);
    await h.run('device', 'reserve', 'a', '--key', A, '--type', 'write-exclusive-reg-only');
    await h.run('device', 'reservation', 'b', '--json');
    expect(JSON.parse(h.out.at(-1)!)).toMatchObject({ key: A, type: 'write-exclusive-reg-only' });
  });

  it('status -> one row per registration: 16-hex key, holder yes/no, initiator; the reservation type', async () => {
    const h = harness();
    expect(await h.run('device', 'status', 'a')).toBe(0);
    expect(h.out.at(-1)).toBe('generation 0, no reservation, 0 registration(s)');
    await h.run('device', 'register', 'a', '--key', A);
    await h.run('device', 'register', 'b', '--key', '0xbbbb000000000002');
    await h.run('device', 'reserve', 'b', '--key', B, '--type', 'write-exclusive');
    h.out.length = 0;
    expect(await h.run('device', 'status', 'a')).toBe(0);
    expect(h.out).toEqual([
      `generation 2, reservation write-exclusive, holder ${B}, 2 registration(s)`,
      'KEY               HOLDER  INITIATOR',
      `${A}  no      memory a`,
      `${B}  yes     memory b`,
    ]);
  });

  it('status --json -> keys as 16 hex digits, holder, initiator ids, the reservation; all-registrants: every registrant holds', async () => {
    const h = harness(new MemoryLogicalUnit({ kind: 'nvme' }));
    await h.run('device', 'register', 'a', '--key', '1');
    await h.run('device', 'register', 'b', '--key', B);
    await h.run('device', 'reserve', 'a', '--key', '1', '--type', 'write-exclusive-all-regs');
    expect(await h.run('device', 'status', 'b', '--json')).toBe(0);
    expect(JSON.parse(h.out.at(-1)!)).toEqual({
      generation: 2,
      reservation: { key: '0000000000000001', type: 'write-exclusive-all-regs' },
      registrants: [
        { key: '0000000000000001', holder: true, initiator: { transport: 'memory', id: 'a' } },
        { key: B, holder: true, initiator: { transport: 'memory', id: 'b' } },
      ],
    });
    await h.run('device', 'status', 'b');
    expect(h.out.at(-4)).toBe(
      'generation 2, reservation write-exclusive-all-regs, every registrant holds, 2 registration(s)',
    );
  });

  it('status on a device without PR -> exit 4', async () => {
    const h = harness(new MemoryLogicalUnit({ supported: false }));
    expect(await h.run('device', 'status', 'a')).toBe(4);
  });

  it('reservation conflict -> exit 3 and one line on stderr', async () => {
    const h = harness();
    await h.run('device', 'register', 'a', '--key', A);
    await h.run('device', 'register', 'b', '--key', B);
    await h.run('device', 'reserve', 'a', '--key', A, '--type', 'write-exclusive');
    expect(await h.run('device', 'reserve', 'b', '--key', B, '--type', 'write-exclusive')).toBe(3);
    expect(h.err).toHaveLength(1);
    expect(h.err[0]).toMatch(/^prfence: reserve: reservation conflict/);
  });

  it('clear and release -> exit 0 and state gone', async () => {
    const h = harness();
    await h.run('device', 'register', 'a', '--key', A);
    await h.run('device', 'reserve', 'a', '--key', A, '--type', 'exclusive-access');
    expect(await h.run('device', 'release', 'a', '--key', A, '--type', 'exclusive-access')).toBe(0);
    expect(await h.run('device', 'clear', 'a', '--key', A, '--yes')).toBe(0);
    expect(h.lu.state()).toMatchObject({ registrations: [], reservation: null });
  });

  it('capabilities of a reduced target -> its types from the device, its flags, PREEMPT AND ABORT refused; --json the same', async () => {
    const h = harness(
      new MemoryLogicalUnit({ types: ['write-exclusive', 'write-exclusive-reg-only'], preemptAbort: false }),
    );
    expect(await h.run('device', 'capabilities', 'a')).toBe(0);
    expect(h.out).toEqual([
      'kind scsi, reads via model, types write-exclusive write-exclusive-reg-only (from the device)',
      'flags PTPL_C yes, ATP_C yes, SIP_C yes, CRH yes, ALLOW_COMMANDS 1',
      'preempt-and-abort no (refused by the device: PREEMPT is used)',
    ]);
    expect(await h.run('device', 'capabilities', 'a', '--json')).toBe(0);
    expect(JSON.parse(h.out.at(-1)!)).toEqual({
      kind: 'scsi',
      readMethod: 'model',
      types: ['write-exclusive', 'write-exclusive-reg-only'],
      source: 'device',
      flags: {
        ptplCapable: true,
        allTargetPorts: true,
        specifyInitiatorPorts: true,
        compatibleReservationHandling: true,
        allowCommands: 1,
      },
      preemptAbort: false,
    });
  });

  it('capabilities assumed -> all six types and the reason on the first line, no flags', () => {
    expect(
      formatCapabilities({
        kind: 'scsi',
        readMethod: 'ioctl',
        types: RESERVATION_TYPES,
        source: 'assumed',
        assumedBecause: 'REPORT CAPABILITIES not implemented',
        flags: {},
        preemptAbort: true,
      }),
    ).toEqual([
      `kind scsi, reads via ioctl, types ${RESERVATION_TYPES.join(' ')} (assumed: REPORT CAPABILITIES not implemented)`,
      'flags none reported',
      'preempt-and-abort yes',
    ]);
  });

  it('unsupported device -> exit 4', async () => {
    const h = harness(new MemoryLogicalUnit({ supported: false }));
    expect(await h.run('device', 'capabilities', 'a')).toBe(4);
    expect(h.err[0]).toMatch(/^prfence: .*not support/);
  });

  it('outcome unknown -> exit 5', async () => {
    const h = harness();
    h.lu.inject({ kind: 'lost-after', op: 'register' });
    expect(await h.run('device', 'register', 'a', '--key', A)).toBe(5);
  });

  it.each([
    ['bad hex', ['device', 'register', 'a', '--key', 'xyz']],
    ['more than 16 hex digits', ['device', 'register', 'a', '--key', '1'.repeat(17)]],
    ['zero key where not allowed', ['device', 'reserve', 'a', '--key', '0', '--type', 'write-exclusive']],
    ['unknown type', ['device', 'reserve', 'a', '--key', A, '--type', 'shared']],
    ['unknown flag', ['device', 'keys', 'a', '--jsonn']],
    ['unknown subcommand', ['device', 'frobnicate', 'a']],
    ['missing --type', ['device', 'reserve', 'a', '--key', A]],
    ['missing device', ['device', 'keys']],
    ['excess argument', ['device', 'keys', 'a', 'b']],
    ['not a block device', ['device', 'keys', '/nope/file']],
    // Options are per subcommand: one that the subcommand does not use is refused, not ignored.
    ['--key on a read', ['device', 'keys', 'a', '--key', A]],
    ['--type on register', ['device', 'register', 'a', '--key', A, '--type', 'write-exclusive']],
    [
      '--victim on reserve',
      ['device', 'reserve', 'a', '--key', A, '--type', 'write-exclusive', '--victim', B],
    ],
    [
      '--old-key on reserve',
      ['device', 'reserve', 'a', '--key', A, '--type', 'write-exclusive', '--old-key', B],
    ],
    ['--ignore-key on clear', ['device', 'clear', 'a', '--key', A, '--yes', '--ignore-key']],
    ['--type on clear', ['device', 'clear', 'a', '--key', A, '--yes', '--type', 'write-exclusive']],
    ['--yes on release', ['device', 'release', 'a', '--key', A, '--type', 'write-exclusive', '--yes']],
    [
      '--yes on preempt',
      ['device', 'preempt', 'a', '--key', A, '--victim', B, '--type', 'write-exclusive', '--yes'],
    ],
    ['--old-key with --ignore-key', ['device', 'register', 'a', '--key', A, '--old-key', B, '--ignore-key']],
    ['--json before device', ['--json', 'device', 'keys', 'a']],
    ['--timeout on demo', ['demo', '--timeout', '1s']],
    ['--yes on the model demo', ['demo', '--yes']],
    ['--no-identity-check on the model demo', ['demo', '--no-identity-check']],
    ['--device-a without --device-b', ['demo', '--device-a', '/dev/sdx']],
    ['zero --timeout', ['device', 'keys', 'a', '--timeout', '0']],
    ['bad --timeout', ['device', 'keys', 'a', '--timeout', 'soon']],
  ])('%s -> exit 2, one line, nothing changed', async (_name, argv) => {
    const h = harness();
    expect(await h.run(...argv)).toBe(2);
    expect(h.err.length).toBeGreaterThanOrEqual(1);
    expect(h.err[0]).toMatch(/^prfence: /);
    expect(h.lu.state().registrations).toEqual([]);
  });

  it('--timeout -> the time limit the device is opened with (default 10 s)', async () => {
    const h = harness();
    await h.run('device', 'keys', 'a');
    await h.run('device', 'keys', 'a', '--timeout', '750ms');
    expect(h.opened.map((o) => o.timeoutMs)).toEqual([10_000, 750]);
  });
});

describe('prfence device: --yes before destructive commands', () => {
  const registered = async () => {
    const h = harness();
    await h.run('device', 'register', 'a', '--key', A);
    await h.run('device', 'register', 'b', '--key', B);
    await h.run('device', 'reserve', 'a', '--key', A, '--type', 'write-exclusive-reg-only');
    h.opened.length = 0;
    return h;
  };

  it('clear without --yes -> exit 2, says it would remove every registration on that device, nothing opened or sent', async () => {
    const h = await registered();
    expect(await h.run('device', 'clear', 'b', '--key', B)).toBe(2);
    expect(h.err).toEqual([
      "prfence: clear: refused without --yes: it would remove every host's registration and the reservation on b; nothing sent",
    ]);
    expect(h.opened).toEqual([]);
    expect(h.lu.state().registrations).toHaveLength(2);
  });

  it('preempt-abort without --yes -> exit 2, names the victim key, the type and the device, victim still registered; with --yes -> victim gone, its writes refused', async () => {
    const h = await registered();
    const argv = [
      'device',
      'preempt-abort',
      'b',
      '--key',
      B,
      '--victim',
      A,
      '--type',
      'write-exclusive-reg-only',
    ];
    expect(await h.run(...argv)).toBe(2);
    expect(h.err[0]).toBe(
      `prfence: preempt-abort: refused without --yes: it would remove the registrations of key ${A}, ` +
        'take its reservation as write-exclusive-reg-only and abort its outstanding commands on b; nothing sent',
    );
    expect(h.opened).toEqual([]);
    expect(h.lu.write('a')).toBe('ok');
    expect(await h.run(...argv, '--yes')).toBe(0);
    expect(h.lu.write('a')).toBe('refused');
    expect(h.lu.write('b')).toBe('ok');
  });

  it('demo on devices without --yes -> exit 2, names both paths, opens nothing', async () => {
    const h = harness();
    expect(await h.run('demo', '--device-a', '/dev/sdx', '--device-b', '/dev/sdy')).toBe(2);
    expect(h.err).toEqual([
      'prfence: demo: refused without --yes: it would clear every registration and the reservation of the ' +
        'logical unit behind /dev/sdx and /dev/sdy, then register, reserve and preempt-abort on it; nothing sent',
    ]);
  });

  describe('demo: both paths must show one logical unit in sysfs', () => {
    const LU = 'naa.6001405f7b1a2c3d4e5f60718293a4b5';
    const t = fakeRoot({
      'sys/block/sdx/device/wwid': LU,
      'sys/block/sdy/device/wwid': LU,
      'sys/block/sdz/device/wwid': 'naa.600140500000000000000000000000cc',
    });
    const demo = (a: string, b: string, ...more: string[]) => {
      const h = harness(undefined, t);
      return h
        .run('demo', '--device-a', `/nope/${a}`, '--device-b', `/nope/${b}`, '--yes', ...more)
        .then((code) => ({ code, err: h.err }));
    };

    it('different WWIDs -> exit 2, both identities named', async () => {
      const r = await demo('sdx', 'sdz');
      expect(r.code).toBe(2);
      expect(r.err[0]).toMatch(
        /^prfence: demo: \/nope\/sdx and \/nope\/sdz are not one logical unit \(.*wwid naa\.6001405f7b.*wwid naa\.600140500000000000000000000000cc\); nothing sent$/,
      );
    });

    it('no identity in sysfs -> exit 2, points to --no-identity-check; with it the demo goes on to open the devices', async () => {
      const r = await demo('sdx', 'sdw');
      expect(r.code).toBe(2);
      expect(r.err[0]).toMatch(
        /cannot tell .* no WWID or NGUID in sysfs.*add --no-identity-check; nothing sent$/,
      );
      const skipped = await demo('sdx', 'sdw', '--no-identity-check');
      expect(skipped.err[0]).toBe('prfence: /nope/sdx: no such device'); // past the check: the open
    });

    it('one WWID behind both -> past the check (the open fails here: no such device)', async () => {
      const r = await demo('sdx', 'sdy');
      expect(r.err[0]).toBe('prfence: /nope/sdx: no such device');
    });
  });
});

describe('prfence device: a device named by identity', () => {
  const LU = 'naa.6001405f7b1a2c3d4e5f60718293a4b5';
  const NGUID = '6f1a2b3c-4d5e-6f70-8192-a3b4c5d6e7f8';
  const t = fakeRoot({
    'sys/block/sdc/device/wwid': LU,
    'sys/block/nvme0n1/nguid': NGUID,
    'sys/block/sdd/device/wwid': 'naa.600140500000000000000000000000dd',
    'sys/block/sde/device/wwid': 'naa.600140500000000000000000000000dd',
    'dev/sdc': '',
    'dev/nvme0n1': '',
  });

  it('wwid: and nguid: -> the local device is opened; --json success names it', async () => {
    const h = harness(undefined, t);
    expect(await h.run('device', 'register', `wwid:${LU}`, '--key', A, '--json')).toBe(0);
    expect(JSON.parse(h.out.at(-1)!)).toEqual({ op: 'register', device: join(t.dev, 'sdc'), exitCode: 0 });
    expect(await h.run('device', 'keys', `nguid:${NGUID}`, '--json')).toBe(0);
    expect(h.opened.map((o) => o.path)).toEqual([join(t.dev, 'sdc'), join(t.dev, 'nvme0n1')]);
  });

  it('an identity in the refusal message: the device and the name given', async () => {
    const h = harness(undefined, t);
    expect(await h.run('device', 'clear', `wwid:${LU}`, '--key', A)).toBe(2);
    expect(h.err[0]).toContain(`on ${join(t.dev, 'sdc')} (wwid:${LU}); nothing sent`);
  });

  it.each([
    ['no local device', 'wwid:naa.60014050000000000000000000000099', 'not-found', /no local block device/],
    [
      'two paths, no multipath',
      'wwid:naa.600140500000000000000000000000dd',
      'ambiguous',
      /sdd, .*sde without a multipath/,
    ],
    ['malformed', 'wwid:1234', 'usage', /too short/],
  ])('%s -> exit 2, nothing opened, the reason (and its JSON kind)', async (_n, id, kind, message) => {
    const h = harness(undefined, t);
    expect(await h.run('device', 'keys', id)).toBe(2);
    expect(h.err[0]).toMatch(message);
    expect(await h.run('device', 'keys', id, '--json')).toBe(2);
    expect(JSON.parse(h.out.at(-1)!)).toMatchObject({ error: { kind }, exitCode: 2 });
    expect(h.opened).toEqual([]);
  });
});

describe('prfence device --json: one JSON object on stdout, errors included', () => {
  it('every subcommand takes --json; a PR OUT success -> {op, device, exitCode: 0}', async () => {
    const h = harness();
    const run = async (...argv: string[]) => {
      expect(await h.run('device', ...argv, '--json')).toBe(0);
      return JSON.parse(h.out.at(-1)!) as unknown;
    };
    expect(await run('register', 'a', '--key', A)).toEqual({ op: 'register', device: 'a', exitCode: 0 });
    await run('register', 'b', '--key', B);
    await run('reserve', 'a', '--key', A, '--type', 'write-exclusive');
    expect(await run('keys', 'a')).toEqual({ generation: 2, keys: [A, B] });
    expect(await run('reservation', 'a')).toMatchObject({ key: A, type: 'write-exclusive' });
    expect(await run('capabilities', 'a')).toMatchObject({ kind: 'scsi' });
    await run('release', 'a', '--key', A, '--type', 'write-exclusive');
    await run('preempt', 'b', '--key', B, '--victim', A, '--type', 'write-exclusive');
    await run('register', 'a', '--key', A);
    await run('preempt-abort', 'b', '--key', B, '--victim', A, '--type', 'write-exclusive', '--yes');
    expect(await run('clear', 'b', '--key', B, '--yes')).toEqual({ op: 'clear', device: 'b', exitCode: 0 });
    expect(h.err).toEqual([]);
  });

  it.each([
    ['conflict', 3, ['reserve', 'b', '--key', B, '--type', 'write-exclusive']],
    ['usage', 2, ['reserve', 'b', '--key', 'xyz', '--type', 'write-exclusive']],
    ['usage', 2, ['keys', 'b', '--bogus']],
    ['usage', 2, ['--json', 'keys', 'b']], // --json of `device` itself: there is none
    ['usage', 2, ['clear', 'b', '--key', B]],
    ['usage', 2, ['reserve', 'b', '--key', B]],
    ['invalid-argument', 2, ['keys', '/nope/x']],
  ] as const)(
    '%s (exit %i) -> {"error": {kind, message}, exitCode} on stdout, nothing on stderr',
    async (kind, code, argv) => {
      const h = harness();
      await h.run('device', 'register', 'a', '--key', A);
      await h.run('device', 'register', 'b', '--key', B);
      await h.run('device', 'reserve', 'a', '--key', A, '--type', 'write-exclusive');
      expect(await h.run('device', ...argv, '--json')).toBe(code);
      expect(h.err).toEqual([]);
      const j = JSON.parse(h.out.at(-1)!) as { error: { kind: string; message: string }; exitCode: number };
      expect(j).toEqual({ error: { kind, message: expect.any(String) }, exitCode: code });
      expect(j.error.message).not.toMatch(/^(prfence|error):/);
    },
  );

  it('outcome unknown -> kind indeterminate, exit 5; unsupported -> kind unsupported, exit 4', async () => {
    const h = harness();
    h.lu.inject({ kind: 'lost-after', op: 'register' });
    expect(await h.run('device', 'register', 'a', '--key', A, '--json')).toBe(5);
    expect(JSON.parse(h.out.at(-1)!)).toMatchObject({ error: { kind: 'indeterminate' }, exitCode: 5 });
    const u = harness(new MemoryLogicalUnit({ supported: false }));
    expect(await u.run('device', 'capabilities', 'a', '--json')).toBe(4);
    expect(JSON.parse(u.out.at(-1)!)).toMatchObject({ error: { kind: 'unsupported' }, exitCode: 4 });
  });
});

describe('prfence device on a partition', () => {
  const t = fakeRoot(
    {
      'sys/devices/virtual/block/sda/sda1/partition': '1',
      'sys/devices/virtual/block/sda/dev': '8:0',
    },
    {
      'sys/class/block/sda1': 'sys/devices/virtual/block/sda/sda1',
      'sys/class/block/sda': 'sys/devices/virtual/block/sda',
    },
  );

  it.each([
    ['sysfs says partition', '/dev/sda1', `: use ${join(t.dev, 'sda')}`],
    ['by the name', '/dev/nvme0n1p1', `: use ${join(t.dev, 'nvme0n1')}`],
  ])('EPERM, %s -> exit 4, says to use the whole device', async (_n, path, whole) => {
    const h = harness(undefined, t, [path]);
    expect(await h.run('device', 'keys', path)).toBe(4);
    expect(h.err).toEqual([
      `prfence: read-keys: permission denied: ${path} is a partition; Persistent Reservations belong to the whole device${whole}`,
    ]);
  });

  it('EPERM on a whole device -> the permission message as it was', async () => {
    const h = harness(undefined, t, ['/dev/sda']);
    expect(await h.run('device', 'register', '/dev/sda', '--key', A)).toBe(4);
    expect(h.err[0]).toBe('prfence: read-keys: permission denied (PR ioctls need CAP_SYS_ADMIN)');
  });
});

describe('prfence device on a real file', () => {
  it('a regular file -> exit 2 "not a block device"', async () => {
    const f = join(mkdtempSync(join(tmpdir(), 'prfence-')), 'disk.img');
    writeFileSync(f, Buffer.alloc(4096));
    const err: string[] = [];
    const code = await runCli(['device', 'keys', f], { stdout: () => {}, stderr: (l) => err.push(l) });
    expect(code).toBe(2);
    expect(err).toEqual([`prfence: ${f}: not a block device`]);
  });
});

describe('prfence device scsi2-reserve / scsi2-release / scsi2-status / scsi2-takeover', () => {
  it('scsi2-reserve without --yes -> exit 2, says it would reserve the device, nothing opened; with --yes -> b is reserved out and its writes refused', async () => {
    const h = harness();
    expect(await h.run('device', 'scsi2-reserve', 'a')).toBe(2);
    expect(h.err[0]).toMatch(
      /^prfence: scsi2-reserve: refused without --yes: it would reserve .* on a; nothing sent$/,
    );
    expect(h.opened).toEqual([]);
    expect(h.lu.scsi2Holder).toBeNull();
    expect(await h.run('device', 'scsi2-reserve', 'a', '--yes', '--json')).toBe(0);
    expect(JSON.parse(h.out.at(-1)!)).toEqual({ op: 'scsi2-reserve', device: 'a', exitCode: 0 });
    expect(h.lu.scsi2Holder).toBe('a');
    expect(h.lu.write('b')).toBe('refused');
  });

  it('scsi2-status -> 1 / reserved by another initiator from b, 0 from the holder a (text and --json)', async () => {
    const h = harness();
    await h.run('device', 'scsi2-reserve', 'a', '--yes');
    expect(await h.run('device', 'scsi2-status', 'b', '--json')).toBe(0);
    expect(JSON.parse(h.out.at(-1)!)).toEqual({
      device: 'b',
      status: 'reserved-by-other',
      reservedByOther: true,
      mhioStatus: 1,
    });
    expect(await h.run('device', 'scsi2-status', 'a', '--json')).toBe(0);
    expect(JSON.parse(h.out.at(-1)!)).toMatchObject({ reservedByOther: false, mhioStatus: 0 });
    expect(await h.run('device', 'scsi2-status', 'b')).toBe(0);
    expect(h.out.at(-1)).toBe('b: reserved by another initiator (1)');
    expect(h.err).toEqual([]);
  });

  it('scsi2-reserve while another host holds -> exit 3, "reserved by another initiator"; after the holder releases, it reserves', async () => {
    const h = harness();
    await h.run('device', 'scsi2-reserve', 'a', '--yes');
    expect(await h.run('device', 'scsi2-reserve', 'b', '--yes')).toBe(3);
    expect(h.err[0]).toMatch(
      /^prfence: scsi2-reserve: reservation conflict \(reserved by another initiator\)/,
    );
    expect(await h.run('device', 'scsi2-release', 'a', '--json')).toBe(0);
    expect(JSON.parse(h.out.at(-1)!)).toEqual({ op: 'scsi2-release', device: 'a', exitCode: 0 });
    expect(await h.run('device', 'scsi2-reserve', 'b', '--yes')).toBe(0);
    expect(h.lu.scsi2Holder).toBe('b');
  });

  it('scsi2-release by a host that holds nothing -> exit 0, the holder keeps the device', async () => {
    const h = harness();
    await h.run('device', 'scsi2-reserve', 'a', '--yes');
    expect(await h.run('device', 'scsi2-release', 'b')).toBe(0);
    expect(h.lu.scsi2Holder).toBe('a');
  });

  it('scsi2-takeover without --yes -> exit 2, says it would reset the LU, nothing opened, no reset; with --yes --json while a holds -> exit 0, b holds and a is refused', async () => {
    const h = harness();
    await h.run('device', 'scsi2-reserve', 'a', '--yes');
    expect(await h.run('device', 'scsi2-takeover', 'b')).toBe(2);
    expect(h.err.at(-1)).toMatch(
      /^prfence: scsi2-takeover: refused without --yes: it would reset the LU .* on b; nothing sent$/,
    );
    expect(h.opened.map((x) => x.path)).toEqual(['a']);
    expect(h.lu.luResets).toBe(0);
    expect(h.lu.scsi2Holder).toBe('a');
    expect(await h.run('device', 'scsi2-reserve', 'b', '--yes')).toBe(3);
    expect(await h.run('device', 'scsi2-takeover', 'b', '--yes', '--json')).toBe(0);
    expect(JSON.parse(h.out.at(-1)!)).toEqual({ op: 'scsi2-takeover', device: 'b', exitCode: 0 });
    expect(h.lu.luResets).toBe(1);
    expect(h.lu.scsi2Holder).toBe('b');
    expect(h.lu.write('a')).toBe('refused');
    expect(h.lu.write('b')).toBe('ok');
  });

  it('scsi2-takeover on a LU with PR registrations -> exit 3 after the reset, the registrations kept', async () => {
    const h = harness();
    await h.lu.initiator('a').register(0n, 0xa1n);
    expect(await h.run('device', 'scsi2-takeover', 'b', '--yes', '--json')).toBe(3);
    const j = JSON.parse(h.out.at(-1)!) as { error: { kind: string; message: string } };
    expect(j.error.kind).toBe('conflict');
    expect(j.error.message).toMatch(/^scsi2-takeover: reservation conflict/);
    expect(h.lu.luResets).toBe(1);
    expect(h.lu.scsi2Holder).toBeNull();
    expect((await h.lu.initiator('c').readKeys()).keys).toEqual([0xa1n]);
  });

  it.each([['scsi2-reserve', '--yes'], ['scsi2-takeover', '--yes'], ['scsi2-release'], ['scsi2-status']])(
    '%s on an NVMe device -> exit 4, kind unsupported, "SCSI only"',
    async (...argv: string[]) => {
      const h = harness(new MemoryLogicalUnit({ kind: 'nvme' }));
      expect(await h.run('device', argv[0]!, 'a', ...argv.slice(1), '--json')).toBe(4);
      const j = JSON.parse(h.out.at(-1)!) as { error: { kind: string; message: string } };
      expect(j.error.kind).toBe('unsupported');
      expect(j.error.message).toMatch(/SCSI only/);
      expect(h.lu.write('b')).toBe('ok');
    },
  );

  it.each([
    ['scsi2-release', 'a', '--yes'],
    ['scsi2-status', 'a', '--key', A],
    ['scsi2-reserve', 'a', '--yes', '--type', 'write-exclusive'],
    ['scsi2-takeover', 'a', '--yes', '--key', A],
  ])('%s with an option it does not use -> exit 2, nothing opened', async (...argv: string[]) => {
    const h = harness();
    expect(await h.run('device', ...argv)).toBe(2);
    expect(h.opened).toEqual([]);
    expect(h.lu.scsi2Holder).toBeNull();
  });
});
