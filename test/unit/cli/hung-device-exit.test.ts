/**
 * The prfence process on a hung device: a call past --timeout is reported (exit 5), and
 * the process ends right after, although the executor thread is still blocked in the
 * kernel (Node's own exit would wait for that thread). A child process runs the CLI from
 * source (fixtures/hung-device-cli.ts) on a FIFO nobody writes.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const fixture = (f: string) => fileURLToPath(new URL(`./fixtures/${f}`, import.meta.url));

describe('prfence process on a hung device', () => {
  it(
    'a call past --timeout -> the error printed, then exit 5 within 1 s, the thread still blocked',
    { timeout: 60_000 },
    async () => {
      const fifo = join(mkdtempSync(join(tmpdir(), 'prfence-hung-')), 'device');
      execFileSync('mkfifo', [fifo]);
      const child = spawn(
        process.execPath,
        [
          '--experimental-transform-types',
          '--no-warnings',
          '--import',
          fixture('ts-source-hooks.mjs'),
          fixture('hung-device-cli.ts'),
          'device',
          'keys',
          fifo,
          '--timeout',
          '300ms',
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let stderr = '';
      let printedAt: number | undefined;
      child.stderr.on('data', (b: Buffer) => {
        stderr += b.toString();
        printedAt ??= performance.now();
      });
      // Without the fix the process never ends (a FIFO never answers): give up after 30 s.
      const guard = setTimeout(() => child.kill('SIGKILL'), 30_000);
      try {
        const exit = await new Promise<{ code: number | null; at: number }>((resolve) =>
          child.on('exit', (code) => resolve({ code, at: performance.now() })),
        );
        expect(stderr).toBe('prfence: read-keys: no answer within 300 ms; outcome unknown\n');
        expect(exit.code).toBe(5);
        expect(exit.at - printedAt!).toBeLessThan(1000);
      } finally {
        clearTimeout(guard);
        child.kill('SIGKILL');
      }
    },
  );
});
