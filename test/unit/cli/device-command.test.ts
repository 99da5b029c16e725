import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../../../src/cli/program.js';
import { InvalidArgumentError } from '../../../src/pr/index.js';
import { MemoryLogicalUnit } from '../../../src/pr/memory/index.js';

/** Runs the CLI against one memory LU where the "path" names the initiator. */
function harness(lu = new MemoryLogicalUnit()) {
  const out: string[] = [];
  const err: string[] = [];
  const run = (...argv: string[]) =>
    runCli(argv, {
      stdout: (l) => out.push(l),
      stderr: (l) => err.push(l),
      openDevice: async (p) => {
        if (p.startsWith('/nope')) throw new InvalidArgumentError(`${p}: not a block device`);
        return lu.initiator(p);
      },
    });
  return { lu, out, err, run };
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

  it('reservation conflict -> exit 3 and one line on stderr', async () => {
    const h = harness();
    await h.run('device', 'register', 'a', '--key', A);
    await h.run('device', 'register', 'b', '--key', B);
    await h.run('device', 'reserve', 'a', '--key', A, '--type', 'write-exclusive');
    expect(await h.run('device', 'reserve', 'b', '--key', B, '--type', 'write-exclusive')).toBe(3);
    expect(h.err).toHaveLength(1);
    expect(h.err[0]).toMatch(/^prfence: reserve: reservation conflict/);
  });

  it('preempt-abort -> victim gone, its writes refused, exit 0', async () => {
    const h = harness();
    await h.run('device', 'register', 'a', '--key', A);
    await h.run('device', 'register', 'b', '--key', B);
    await h.run('device', 'reserve', 'a', '--key', A, '--type', 'write-exclusive-reg-only');
    expect(
      await h.run(
        'device',
        'preempt-abort',
        'b',
        '--key',
        B,
        '--victim',
        A,
        '--type',
        'write-exclusive-reg-only',
      ),
    ).toBe(0);
    expect(h.lu.write('a')).toBe('refused');
    expect(h.lu.write('b')).toBe('ok');
  });

  it('clear and release -> exit 0 and state gone', async () => {
    const h = harness();
    await h.run('device', 'register', 'a', '--key', A);
    await h.run('device', 'reserve', 'a', '--key', A, '--type', 'exclusive-access');
    expect(await h.run('device', 'release', 'a', '--key', A, '--type', 'exclusive-access')).toBe(0);
    expect(await h.run('device', 'clear', 'a', '--key', A)).toBe(0);
    expect(h.lu.state()).toMatchObject({ registrations: [], reservation: null });
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
  ])('%s -> exit 2, one line, nothing changed', async (_name, argv) => {
    const h = harness();
    expect(await h.run(...argv)).toBe(2);
    expect(h.err.length).toBeGreaterThanOrEqual(1);
    expect(h.err[0]).toMatch(/^prfence: /);
    expect(h.lu.state().registrations).toEqual([]);
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
