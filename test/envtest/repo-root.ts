import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (the directory with charts/ and test/), from source or from dist/. */
export function repoRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  while (!(existsSync(join(d, 'package.json')) && existsSync(join(d, 'charts')))) {
    const up = dirname(d);
    if (up === d) throw new Error('repository root not found');
    d = up;
  }
  return d;
}
