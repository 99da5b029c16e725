/**
 * kube-controller-manager and kube-scheduler for a test's own control plane (built by
 * test/envtest/setup.sh from the same k8s.io/kubernetes version as kube-apiserver). With
 * them the API server behaves as a cluster does: the node lifecycle controller marks a
 * node that stops renewing NotReady and taints it, the attach/detach controller creates
 * and deletes VolumeAttachments, the StatefulSet controller and pod GC replace pods, and
 * the scheduler binds them. Started only by tests that need them, never on the shared API
 * server of the integration run (they would act on every other test's objects).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ControlPlane } from './control-plane.js';
import { binDir, readVersions } from './control-plane.js';

export interface KubeComponent {
  readonly name: string;
  /** Its combined stdout and stderr. */
  readonly logPath: string;
  /** The last lines of its log (for a failure message). */
  tail(lines?: number): string;
  stop(): Promise<void>;
}

export interface ControllerManagerOptions {
  /** --node-monitor-grace-period: a node that renews nothing for this long is NotReady. */
  nodeMonitorGracePeriod?: string;
}

function binary(name: string): string {
  const p = join(binDir(), `${name}-v${readVersions().KUBE_VERSION}`);
  if (!existsSync(p)) throw new Error(`missing ${p}: run test/envtest/setup.sh first`);
  return p;
}

function start(cp: ControlPlane, name: string, args: string[]): KubeComponent {
  const logPath = join(cp.dir, `${name}.log`);
  const proc: ChildProcess = spawn(binary(name), args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const out = createWriteStream(logPath, { flags: 'a' });
  proc.stdout?.pipe(out);
  proc.stderr?.pipe(out);
  const killNow = () => proc.kill('SIGKILL');
  process.once('exit', killNow);
  return {
    name,
    logPath,
    tail: (lines = 40) =>
      existsSync(logPath) ? readFileSync(logPath, 'utf8').split('\n').slice(-lines).join('\n') : '',
    stop: () => {
      process.removeListener('exit', killNow);
      if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
      return new Promise<void>((resolve) => {
        const t = setTimeout(killNow, 10_000);
        proc.once('exit', () => {
          clearTimeout(t);
          resolve();
        });
        proc.kill('SIGTERM');
      });
    },
  };
}

/** Admin credentials for everything, no leader election, no serving port. */
function common(cp: ControlPlane): string[] {
  return [
    `--kubeconfig=${cp.kubeconfigPath}`,
    `--authentication-kubeconfig=${cp.kubeconfigPath}`,
    `--authorization-kubeconfig=${cp.kubeconfigPath}`,
    '--leader-elect=false',
    '--bind-address=127.0.0.1',
    '--secure-port=0',
  ];
}

/** kube-controller-manager with every default controller on. */
export function startControllerManager(cp: ControlPlane, o: ControllerManagerOptions = {}): KubeComponent {
  return start(cp, 'kube-controller-manager', [
    ...common(cp),
    '--use-service-account-credentials=false',
    `--service-account-private-key-file=${join(cp.dir, 'sa.key')}`,
    `--root-ca-file=${join(cp.dir, 'ca.crt')}`,
    `--cluster-signing-cert-file=${join(cp.dir, 'ca.crt')}`,
    `--cluster-signing-key-file=${join(cp.dir, 'ca.key')}`,
    '--controllers=*',
    ...(o.nodeMonitorGracePeriod ? [`--node-monitor-grace-period=${o.nodeMonitorGracePeriod}`] : []),
  ]);
}

export function startScheduler(cp: ControlPlane): KubeComponent {
  return start(cp, 'kube-scheduler', common(cp));
}
