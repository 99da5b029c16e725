/**
 * prfence processes inside the QEMU guest for the end-to-end tests: agents in mount
 * namespaces of their own (where the PV's device path leads to that node's initiator of the
 * shared LU, as two machines would see one LUN), the controller, and a wait helper.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEVICE_ANNOTATION } from '../../src/agent/cluster-view.js';
import { startControlPlane, type ControlPlane } from '../envtest/control-plane.js';
import { until } from '../kernel/guest-devices.js';
import { installCrds, waitCrdStorage } from '../envtest/crds.js';

export { until };

/** The PV's device path in every agent's mount namespace. */
export const DEVICE_PATH = '/run/prfence-dev/vol';

/** The test's PV: a CSI volume whose device identity is DEVICE_PATH (each node's own path to the LU). */
export function guestPv(name: string) {
  return {
    metadata: { name, annotations: { [DEVICE_ANNOTATION]: DEVICE_PATH } },
    spec: {
      capacity: { storage: '32Mi' },
      accessModes: ['ReadWriteOnce'],
      csi: { driver: 'e2e.csi.prfence.io', volumeHandle: name },
    },
  };
}

/** The VolumeAttachment of `pv` to `node`, named va-<node>. */
export function guestAttachment(pv: string, node: string) {
  return {
    metadata: { name: `va-${node}` },
    spec: { attacher: 'e2e.csi.prfence.io', nodeName: node, source: { persistentVolumeName: pv } },
  };
}

export type GuestProcess = { node: string; proc: ChildProcess; log: string };

/** kube-apiserver + etcd in the guest with the chart's CRDs (slow in an emulated guest: minutes). */
export async function startGuestControlPlane(): Promise<ControlPlane> {
  mkdirSync('/run/prfence-dev', { recursive: true });
  const t0 = Date.now();
  const cp = await startControlPlane({ readyTimeoutMs: 420_000 });
  const kc = cp.adminKubeConfig();
  await waitCrdStorage(kc, await installCrds(kc, undefined, 240_000), 240_000);
  console.log(`control plane up in the guest after ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  return cp;
}

/** SIGTERM, then waits for the exit (SIGKILL after 10 s). */
export async function stopProcess(a: GuestProcess): Promise<void> {
  if (a.proc.exitCode !== null || a.proc.signalCode !== null) return;
  const exited = new Promise((r) => a.proc.once('exit', r));
  a.proc.kill('SIGTERM');
  const t = setTimeout(() => a.proc.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(t);
}

function spawnLogged(
  node: string,
  logName: string,
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): GuestProcess {
  const log = join(tmpdir(), logName);
  const out = createWriteStream(log);
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  proc.stdout?.pipe(out);
  proc.stderr?.pipe(out);
  return { node, proc, log };
}

const CLI = 'dist/src/cli/main.js';

/**
 * `prfence agent` as `node`, in its own mount namespace where DEVICE_PATH is a link to
 * `device`. `setup`: more shell commands run in that namespace first.
 */
export function startAgentProcess(
  node: string,
  device: string,
  kubeconfig: string,
  extraArgs: readonly string[] = [],
  setup: readonly string[] = [],
): GuestProcess {
  const script = [
    'mount -t tmpfs prfence-dev /run/prfence-dev',
    `ln -s ${device} ${DEVICE_PATH}`,
    ...setup,
    `exec ${process.execPath} ${CLI} agent --node-name ${node} --kubeconfig ${kubeconfig} --log-level debug --resync 2s --ioctl-timeout 20s --leave-grace 2s --state-dir ${join(tmpdir(), `prfence-state-${node}`)} ${extraArgs.join(' ')}`,
  ].join(' && ');
  return spawnLogged(node, `prfence-agent-${node}.log`, 'unshare', [
    '--mount',
    '--propagation',
    'private',
    'sh',
    '-c',
    script,
  ]);
}

/** `prfence controller` (no leader election: it is the only replica). */
export function startControllerProcess(kubeconfig: string, extraArgs: readonly string[]): GuestProcess {
  return spawnLogged(
    'controller',
    'prfence-controller.log',
    process.execPath,
    [
      CLI,
      'controller',
      '--kubeconfig',
      kubeconfig,
      '--leader-election',
      'false',
      '--log-level',
      'debug',
      ...extraArgs,
    ],
    // What the Deployment's downward API gives it.
    { ...process.env, POD_NAME: 'prfence-controller-e2e' },
  );
}

/** The last lines of each process's log (for a failure message). */
export function tails(of: readonly GuestProcess[], lines = 25): string {
  return of
    .filter((a) => existsSync(a.log))
    .map((a) => `--- ${a.node} ---\n${readFileSync(a.log, 'utf8').split('\n').slice(-lines).join('\n')}`)
    .join('\n');
}

/** The pino lines of a process's log (JSON), in order, `time` in epoch ms; other lines are skipped. */
export function logLines(a: GuestProcess): { time: number; msg: string; [k: string]: unknown }[] {
  if (!existsSync(a.log)) return [];
  return readFileSync(a.log, 'utf8')
    .split('\n')
    .flatMap((l) => {
      if (!l.startsWith('{')) return [];
      try {
        const o = JSON.parse(l) as { time: number | string; msg: string };
        // prfence's logger writes ISO times (pino's default is epoch ms).
        return [{ ...o, time: typeof o.time === 'number' ? o.time : Date.parse(o.time) }];
      } catch {
        return [];
      }
    });
}
