import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { droppedVersions } from '../../../src/cli/crds-command.js';
import { embeddedCrdDir, readCrds, type Crd } from '../../../src/cli/shipped-crds.js';

describe('prfence crds: the packaged CRDs', () => {
  it('from the sources -> charts/prfence/crds, the three CRDs sorted by name', () => {
    const dir = embeddedCrdDir(resolve('src/cli'));
    expect(dir).toBe(resolve('charts/prfence/crds'));
    expect(readCrds(dir).map((c) => c.metadata.name)).toEqual([
      'nodefences.prfence.io',
      'reservationkeys.prfence.io',
      'volumereservations.prfence.io',
    ]);
  });

  it('as the container image lays them out (dist/src/cli, crds/ beside package.json) -> crds/', () => {
    const root = mkdtempSync(join(tmpdir(), 'prfence-pkg-'));
    writeFileSync(join(root, 'package.json'), JSON.stringify({ name: 'prfence', version: '0.0.0' }));
    mkdirSync(join(root, 'crds'));
    mkdirSync(join(root, 'dist', 'src', 'cli'), { recursive: true });
    expect(embeddedCrdDir(join(root, 'dist', 'src', 'cli'))).toBe(join(root, 'crds'));
  });
});

describe('droppedVersions', () => {
  const crd = (versions: [string, boolean][], stored?: string[]): Crd => ({
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: 'nodefences.prfence.io' },
    spec: { versions: versions.map(([name, served]) => ({ name, served, storage: name === 'v1alpha1' })) },
    ...(stored ? { status: { storedVersions: stored } } : {}),
  });
  const ours = crd([['v1alpha1', true]]);

  it('same versions, or the cluster has fewer -> nothing dropped', () => {
    expect(droppedVersions(crd([['v1alpha1', true]], ['v1alpha1']), ours)).toBeUndefined();
    expect(
      droppedVersions(
        crd([['v1alpha1', true]]),
        crd([
          ['v1alpha1', true],
          ['v1beta1', true],
        ]),
      ),
    ).toBeUndefined();
  });

  it('a stored or a served version missing here -> named; an unserved, unstored one -> not', () => {
    expect(droppedVersions(crd([['v1alpha1', true]], ['v1alpha1', 'v1beta1']), ours)).toMatch(
      /version\(s\) v1beta1 \(stored: v1beta1\)/,
    );
    expect(
      droppedVersions(
        crd(
          [
            ['v1alpha1', true],
            ['v1beta1', true],
          ],
          ['v1alpha1'],
        ),
        ours,
      ),
    ).toMatch(/version\(s\) v1beta1 \(served: v1beta1\)/);
    expect(
      droppedVersions(
        crd(
          [
            ['v1alpha1', true],
            ['v1beta1', false],
          ],
          ['v1alpha1'],
        ),
        ours,
      ),
    ).toBeUndefined();
  });
});
