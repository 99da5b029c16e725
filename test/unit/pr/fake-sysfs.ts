import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

/**
 * A fake /sys and /dev for device resolution tests: `files` are paths relative to the root
 * with their contents, `links` symlinks to paths relative to the root.
 */
export function fakeRoot(files: Record<string, string>, links: Record<string, string> = {}) {
  const root = mkdtempSync(join(tmpdir(), 'prfence-sysfs-'));
  for (const [p, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, p)), { recursive: true });
    writeFileSync(join(root, p), `${text}\n`);
  }
  for (const [p, target] of Object.entries(links)) {
    mkdirSync(dirname(join(root, p)), { recursive: true });
    symlinkSync(join(root, target), join(root, p));
  }
  return { sysfs: join(root, 'sys'), dev: join(root, 'dev') };
}
