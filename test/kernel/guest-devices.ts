/**
 * Helpers of the kernel tests that work on the guest's block devices: dmsetup without udev,
 * a map's kernel name, a KoffiPrDevice opened for one piece of work, one more iSCSI session
 * to the guest's LU, and multipath-tools (systemd-udevd + multipathd) run as a node runs
 * them, for one test.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { KoffiPrDevice } from '../../src/pr/koffi/koffi-pr-device.js';

/** `cmd` from the host's root (the guest's chroot), throwing on a failure. */
function run(cmd: string, args: string[], env: Record<string, string> = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 60_000 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.status} ${r.stderr} ${r.error ?? ''}`);
  return r.stdout;
}

/** dmsetup as the guest runs it: no udev (DM_DISABLE_UDEV), throwing on a failure. */
export function dmsetup(...args: string[]): string {
  return run('/usr/sbin/dmsetup', args, { DM_DISABLE_UDEV: '1' });
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

/** The WWID of a SCSI disk as udev and multipath-tools name it (ID_SERIAL: scsi_id's answer). */
export function scsiWwid(dev: string): string {
  const w = run('/usr/lib/udev/scsi_id', ['--whitelisted', `--device=${dev}`]).trim();
  if (!w) throw new Error(`scsi_id: no WWID for ${dev}`);
  return w;
}

/** The guest's iSCSI target of the three-initiator LU (test/kernel/guest-init.sh). */
const LU_IQN = 'iqn.2026-11.io.prfence:lun1';
const PORTAL = '127.0.0.1:3260';
const iscsiadm = (...args: string[]) => run('/usr/sbin/iscsiadm', args);

/** The disk (/dev/sdX) of the session to the LU whose initiator name is `initiator`, if it has one yet. */
function sessionDisk(initiator: string): string | undefined {
  const base = '/sys/class/iscsi_session';
  for (const s of readdirSync(base)) {
    const attr = (f: string) => readFileSync(`${base}/${s}/${f}`, 'utf8').trim();
    if (attr('targetname') !== LU_IQN || attr('initiatorname') !== initiator) continue;
    const dev = `${base}/${s}/device`;
    for (const t of readdirSync(dev).filter((d) => d.startsWith('target'))) {
      for (const l of readdirSync(`${dev}/${t}`).filter((d) => /^\d+:\d+:\d+:\d+$/.test(d))) {
        const block = readdirSync(`${dev}/${t}/${l}/block`)[0];
        if (block) return `/dev/${block}`;
      }
    }
  }
  return undefined;
}

export interface IscsiSession {
  /** Its disk, /dev/sdX. */
  dev: string;
  /** Logs out and forgets the session's iface and node record. */
  logout(): void;
}

/**
 * One more session to the guest's three-initiator LU, as guest-init.sh logs in its three:
 * through a new iface if<n> with the initiator name host-<n> (one more I_T nexus); resolves
 * once its disk is there.
 */
export async function iscsiSession(n: number, timeoutMs = 120_000): Promise<IscsiSession> {
  const iface = `if${n}`;
  const initiator = `iqn.2026-11.io.prfence:host-${n}`;
  iscsiadm('-m', 'iface', '-I', iface, '-o', 'new');
  iscsiadm('-m', 'iface', '-I', iface, '-o', 'update', '-n', 'iface.initiatorname', '-v', initiator);
  iscsiadm('-m', 'node', '-o', 'new', '-T', LU_IQN, '-p', `${PORTAL},1`, '-I', iface);
  const node = ['-m', 'node', '-T', LU_IQN, '-p', PORTAL, '-I', iface];
  const logout = () => {
    // 21: no such session (the login failed)
    const r = spawnSync('/usr/sbin/iscsiadm', [...node, '--logout'], { encoding: 'utf8', timeout: 60_000 });
    iscsiadm(...node, '-o', 'delete');
    iscsiadm('-m', 'iface', '-I', iface, '-o', 'delete');
    if (r.status !== 0 && r.status !== 21)
      throw new Error(`iscsiadm --logout ${iface}: ${r.status} ${r.stderr}`);
  };
  try {
    iscsiadm(...node, '--login');
    const dev = await until(`the disk of the iSCSI session of ${initiator}`, timeoutMs, () =>
      sessionDisk(initiator),
    );
    return { dev, logout };
  } catch (e) {
    logout();
    throw e;
  }
}

/**
 * Polls `fn` every 100 ms until it returns a value (not undefined); throws with the last
 * error at the deadline (`what` read then, when it is a function: a log of that moment).
 */
export async function until<T>(
  what: string | (() => string),
  timeoutMs: number,
  fn: () => T | undefined | Promise<T | undefined>,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) {
      const w = typeof what === 'string' ? what : what();
      throw new Error(`${w}: not after ${timeoutMs} ms (${String(last ?? '')})`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** SIGTERM, then the exit (SIGKILL after 10 s). */
async function stop(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise((r) => p.once('exit', r));
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(t);
}

export interface MultipathTools {
  /** What multipathd and systemd-udevd wrote (stdout and stderr), for a failure's message. */
  log(): string;
  /** Stops multipathd (its maps stay: remove them with dmsetup). */
  stopMultipathd(): Promise<void>;
  /** Stops systemd-udevd and removes what it and multipathd left (/run/udev, the /etc/multipath tmpfs). */
  stopUdev(): Promise<void>;
}

const UDEVD = ['/usr/lib/systemd/systemd-udevd', '/lib/systemd/systemd-udevd'];
/** udevadm ignores its requests in a chroot ("Running in chroot, ignoring request") without it. */
const UDEVADM_ENV = { ...process.env, SYSTEMD_IGNORE_CHROOT: '1' };

/**
 * multipath-tools from the host's root (test/kernel/setup.sh) as a node runs it: systemd-udevd
 * (the guest runs no udev otherwise), the block devices `trigger` made known to it (an "add"
 * uevent each; the others stay unknown to udev, and so blacklisted by multipath-tools'
 * default property filter), then multipathd in the foreground. The root is read-only 9p:
 * /etc/multipath (conf.d, wwids, bindings; setup.sh makes the mount point) is a tmpfs with
 * `conf` as conf.d/prfence.conf, and there is no /etc/multipath.conf (built-in defaults).
 * /run is the guest's tmpfs.
 */
export async function startMultipathTools(conf: string, trigger: string[]): Promise<MultipathTools> {
  mkdirSync('/run/tmp', { recursive: true });
  run('/usr/bin/mount', ['-t', 'tmpfs', 'prfence-multipath', '/etc/multipath']);
  mkdirSync('/etc/multipath/conf.d');
  writeFileSync('/etc/multipath/conf.d/prfence.conf', conf);
  const logs = { udevd: '/run/tmp/udevd.log', multipathd: '/run/tmp/multipathd.log' };
  const out = (f: string) => openSync(f, 'w');
  const exe = UDEVD.find((p) => spawnSync('test', ['-x', p]).status === 0) ?? UDEVD[0]!;
  const udevd = spawn(exe, [], { stdio: ['ignore', out(logs.udevd), out(logs.udevd)] });
  let multipathd: ChildProcess | undefined;
  const tail = (f: string) => {
    try {
      return readFileSync(f, 'utf8').split('\n').slice(-120).join('\n');
    } catch (e) {
      return String(e);
    }
  };
  const sh = (cmd: string, args: string[]) => {
    const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 20_000 });
    return `${r.stdout}${r.stderr}${r.error ? String(r.error) : ''}`;
  };
  const stacks = (p: ChildProcess | undefined) => {
    if (!p?.pid) return '';
    try {
      return readdirSync(`/proc/${p.pid}/task`)
        .map(
          (t) => `task ${t}: ${tail(`/proc/${p.pid}/task/${t}/stack`).split('\n').slice(0, 6).join(' | ')}`,
        )
        .join('\n');
    } catch (e) {
      return String(e);
    }
  };
  const log = () =>
    [
      `--- udevd:\n${tail(logs.udevd)}`,
      `--- /run/udev/data: ${sh('/usr/bin/ls', ['/run/udev/data'])}`,
      `--- multipathd:\n${tail(logs.multipathd)}`,
      `--- multipathd threads:\n${stacks(multipathd)}`,
      `--- multipathd show paths:\n${sh('/sbin/multipathd', ['show', 'paths'])}`,
      ...trigger.map(
        (d) => `--- udevadm info ${d}:\n${sh('/usr/bin/udevadm', ['info', '-q', 'property', d])}`,
      ),
    ].join('\n');
  const stopUdev = async () => {
    await stop(udevd);
    rmSync('/run/udev', { recursive: true, force: true });
    run('/usr/bin/umount', ['/etc/multipath']);
  };
  try {
    await until('systemd-udevd control socket', 60_000, () =>
      spawnSync('/usr/bin/udevadm', ['control', '--ping'], { timeout: 10_000, env: UDEVADM_ENV }).status === 0
        ? true
        : undefined,
    );
    // An "add" uevent for each (what `udevadm trigger` writes), then until udev has the
    // device's properties in its database (ID_SERIAL: the WWID multipath-tools reads).
    for (const d of trigger) {
      const name = d.replace(/^\/dev\//, '');
      writeFileSync(`/sys/class/block/${name}/uevent`, 'add');
      const db = `/run/udev/data/b${readFileSync(`/sys/class/block/${name}/dev`, 'utf8').trim()}`;
      await until(
        () => `udev's database entry of ${name} (${db})\n${log()}`,
        60_000,
        () => (/^E:ID_SERIAL=/m.test(readFileSync(db, 'utf8')) ? true : undefined),
      );
    }
    multipathd = spawn('/sbin/multipathd', ['-d', '-s', '-v3'], {
      stdio: ['ignore', out(logs.multipathd), out(logs.multipathd)],
    });
  } catch (e) {
    await stopUdev();
    throw new Error(`${String(e)}\n${log()}`, { cause: e });
  }
  return {
    log,
    stopMultipathd: async () => {
      if (multipathd) await stop(multipathd);
    },
    stopUdev,
  };
}
