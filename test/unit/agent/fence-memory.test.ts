import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FenceMemory } from '../../../src/agent/fence-memory.js';

const KEY = 0x248b294810df1dadn;
const dir = () => mkdtempSync(join(tmpdir(), 'prfence-mem-'));

describe('FenceMemory (S2 on the host)', () => {
  it('a key loss survives a restart (a new FenceMemory on the same directory still has it)', async () => {
    const d = dir();
    const m = await FenceMemory.open(d);
    await m.registered('wwid:x', KEY);
    expect(m.expects('wwid:x', KEY)).toBe(true);
    await m.lost('wwid:x', KEY, '2026-11-01T00:00:00Z');
    const again = await FenceMemory.open(d);
    expect(again.expects('wwid:x', KEY)).toBe(false);
    expect(again.lossOf('wwid:x')).toMatchObject({
      key: '248b294810df1dad',
      unfencedAtBefore: '2026-11-01T00:00:00Z',
    });
  });

  it('an own unregister (normal detach) is not a loss: nothing is expected there any more', async () => {
    const d = dir();
    const m = await FenceMemory.open(d);
    await m.registered('wwid:x', KEY);
    await m.unregistering('wwid:x');
    const again = await FenceMemory.open(d);
    expect(again.expects('wwid:x', KEY)).toBe(false);
    expect(again.lossOf('wwid:x')).toBeUndefined();
  });

  it('forgive -> the loss is gone from the file too', async () => {
    const d = dir();
    const m = await FenceMemory.open(d);
    await m.lost('wwid:x', KEY, undefined);
    await m.forgive('wwid:x');
    expect((await FenceMemory.open(d)).lossOf('wwid:x')).toBeUndefined();
    expect(JSON.parse(readFileSync(join(d, 'fence-memory.json'), 'utf8'))).toMatchObject({ lost: {} });
  });

  it('a corrupt file -> a clear error naming it (never silently forgotten)', async () => {
    const d = dir();
    writeFileSync(join(d, 'fence-memory.json'), '{"version": 9}');
    await expect(FenceMemory.open(d)).rejects.toThrow(/fence-memory.json: not a prfence fence memory/);
  });
});
