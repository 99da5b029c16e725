import { mkdirSync, mkdtempSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FenceMemory } from '../../../src/agent/fence-memory.js';
import { eventually } from '../../envtest/kube.js';

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

  it('a write that fails (the disk refuses it) -> the change holds in the process, the listeners wait, and the write is tried again by itself: once it lands, the loss is on the host and heard of once; later writes are not refused', async () => {
    const d = dir();
    const m = await FenceMemory.open(d);
    await m.registered('wwid:x', KEY);
    const heard: string[] = [];
    m.listen({ lost: (id) => heard.push(`lost ${id}`), registered: (id) => heard.push(`registered ${id}`) });
    // The temporary file's name taken by a directory: the write fails (EISDIR), even as root.
    mkdirSync(join(d, 'fence-memory.json.tmp'));
    await expect(m.lost('wwid:x', KEY, undefined)).rejects.toThrow();
    expect({ inProcess: m.lossOf('wwid:x')?.key, heard }).toEqual({
      inProcess: '248b294810df1dad',
      heard: [],
    });
    expect((await FenceMemory.open(d)).lossOf('wwid:x')).toBeUndefined();
    rmdirSync(join(d, 'fence-memory.json.tmp')); // the disk is back
    await eventually(async () => (await FenceMemory.open(d)).lossOf('wwid:x') !== undefined, {
      timeoutMs: 10_000,
    });
    await eventually(() => heard.length > 0, { timeoutMs: 10_000 });
    await m.registered('wwid:y', KEY);
    expect({ heard, y: (await FenceMemory.open(d)).expects('wwid:y', KEY) }).toEqual({
      heard: ['lost wwid:x', 'registered wwid:y'],
      y: true,
    });
  }, 30_000);

  it('a corrupt file -> a clear error naming it (never silently forgotten)', async () => {
    const d = dir();
    writeFileSync(join(d, 'fence-memory.json'), '{"version": 9}');
    await expect(FenceMemory.open(d)).rejects.toThrow(/fence-memory.json: not a prfence fence memory/);
  });
});
