import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { runCli } from '../../../src/cli/program.js';

describe('prfence --version', () => {
  it('--version -> the package.json version on stdout, exit 0', async () => {
    const out: string[] = [];
    const code = await runCli(['--version'], { stdout: (l) => out.push(l), stderr: () => undefined });
    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
    expect(code).toBe(0);
    expect(out).toEqual([pkg.version]);
  });
});
