/**
 * The npm package as a user installs it: `npm pack` (which builds first) gives a tarball
 * with the CLI under both bin names (`prfence`, and `kubectl-prfence` for `kubectl
 * prfence`), the CRDs `prfence crds apply` installs, and nothing of the tests or
 * benchmarks. The unpacked package runs (its dependencies resolved from this checkout's
 * node_modules, as `npm install` would provide them).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const root = process.cwd();
const work = join(root, '.cache', `pack-test-${process.pid}`);

describe('npm package', () => {
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('npm pack -> bins prfence and kubectl-prfence run --version from the unpacked package; CRDs and docs inside; no tests, benchmarks or sources', () => {
    mkdirSync(work, { recursive: true });
    const out = execFileSync('npm', ['pack', '--json', '--pack-destination', work], {
      cwd: root,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const [packed] = JSON.parse(out) as { filename: string; files: { path: string }[] }[];
    const files = packed!.files.map((f) => f.path);
    execFileSync('tar', ['-xzf', join(work, packed!.filename), '-C', work]);
    const pkgDir = join(work, 'package');
    const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8')) as {
      version: string;
      bin: Record<string, string>;
    };
    const run = (bin: string) =>
      execFileSync(process.execPath, [join(pkgDir, pkg.bin[bin]!), '--version'], { encoding: 'utf8' }).trim();
    expect({
      bins: Object.keys(pkg.bin).sort(),
      prfence: run('prfence'),
      kubectl: run('kubectl-prfence'),
      shebang: readFileSync(join(pkgDir, pkg.bin.prfence!), 'utf8').startsWith('#!/usr/bin/env node'),
      crds: readdirSync(join(pkgDir, 'charts', 'prfence', 'crds')).sort(),
      nativeWorker: files.includes('dist/src/pr/koffi/native-worker.js'),
      docs: files.includes('docs/design.md'),
      stray: files.filter((f) => /^(test|bench|src|dist\/test|dist\/bench|scripts)\//.test(f)),
    }).toEqual({
      bins: ['kubectl-prfence', 'prfence'],
      prfence: pkg.version,
      kubectl: pkg.version,
      shebang: true,
      crds: [
        'prfence.io_nodefences.yaml',
        'prfence.io_reservationkeys.yaml',
        'prfence.io_volumereservations.yaml',
      ],
      nativeWorker: true,
      docs: true,
      stray: [],
    });
  }, 240_000);
});
