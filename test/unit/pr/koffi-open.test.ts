import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../../../src/pr/index.js';
import { KoffiPrDevice } from '../../../src/pr/koffi/koffi-pr-device.js';

describe('KoffiPrDevice.open', () => {
  it('a regular file -> InvalidArgumentError "not a block device"', async () => {
    const f = join(mkdtempSync(join(tmpdir(), 'prfence-')), 'disk.img');
    writeFileSync(f, Buffer.alloc(4096));
    const e = await KoffiPrDevice.open(f).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(InvalidArgumentError);
    expect(String(e)).toContain('not a block device');
  });

  it('a missing path -> InvalidArgumentError "no such device"', async () => {
    await expect(KoffiPrDevice.open('/dev/does-not-exist')).rejects.toBeInstanceOf(InvalidArgumentError);
  });
});
