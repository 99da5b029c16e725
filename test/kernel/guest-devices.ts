/**
 * Helpers of the kernel tests that work on the guest's block devices: dmsetup without udev,
 * a map's kernel name, and a KoffiPrDevice opened for one piece of work.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { KoffiPrDevice } from '../../src/pr/koffi/koffi-pr-device.js';

/** dmsetup as the guest runs it: no udev (DM_DISABLE_UDEV), throwing on a failure. */
export function dmsetup(...args: string[]): string {
  const r = spawnSync('/usr/sbin/dmsetup', args, {
    encoding: 'utf8',
    env: { ...process.env, DM_DISABLE_UDEV: '1' },
    timeout: 60_000,
  });
  if (r.status !== 0) throw new Error(`dmsetup ${args.join(' ')}: ${r.status} ${r.stderr} ${r.error ?? ''}`);
  return r.stdout;
}

/** The kernel name (dm-N) of the map called `name`. */
export function dmName(name: string): string {
  const n = readdirSync('/sys/block').find(
    (d) => d.startsWith('dm-') && readFileSync(`/sys/block/${d}/dm/name`, 'utf8').trim() === name,
  );
  if (!n) throw new Error(`no dm device named ${name}`);
  return n;
}

/** `f` on the device at `dev`, opened for it and closed after. */
export async function withDevice<T>(dev: string, f: (d: KoffiPrDevice) => Promise<T>): Promise<T> {
  const d = await KoffiPrDevice.open(dev, { timeoutMs: 8000 });
  try {
    return await f(d);
  } finally {
    await d.close();
  }
}
