/**
 * The controller's configuration (`prfence controller`), parsed once from flags and
 * environment into a frozen object. Leader election flags are named as in the
 * kubernetes-csi sidecars.
 */
import { validateTimings } from '../controller/lease.js';
import { ConfigError, hostPort, LEVELS, parseDurationMs } from './config.js';

/**
 * Objects the controller reconciles at once by default (as the kubernetes-csi sidecars'
 * --worker-threads): a reconcile is mostly one API write, and a failover writes the desired
 * state of every volume that moved (200 volumes: p99 2.8 s with 2 workers; `npm run bench`).
 */
export const DEFAULT_CONTROLLER_WORKERS = 10;

export interface ControllerConfig {
  readonly kubeconfig: string | undefined;
  /** This pod (POD_NAME, else the host name): the Lease holder identity before its random suffix. */
  readonly podName: string;
  readonly leaderElection: boolean;
  readonly leaderElectionNamespace: string;
  readonly leaseDurationMs: number;
  readonly renewDeadlineMs: number;
  readonly retryPeriodMs: number;
  readonly resyncMs: number;
  readonly workers: number;
  readonly logLevel: (typeof LEVELS)[number];
  readonly httpEndpoint: string | undefined;
  /** Node loss: fence request for a node whose kube-node-lease Lease is not renewed (opt-in). */
  readonly autoFence: boolean;
  readonly nodeLostAfterMs: number;
}

export interface RawControllerFlags {
  kubeconfig?: string;
  leaderElection?: string | boolean;
  leaderElectionNamespace?: string;
  leaderElectionLeaseDuration?: string;
  leaderElectionRenewDeadline?: string;
  leaderElectionRetryPeriod?: string;
  resync?: string;
  workers?: string;
  logLevel?: string;
  httpEndpoint?: string;
  autoFence?: string | boolean;
  nodeLostAfter?: string;
}

function bool(v: string | boolean | undefined, what: string, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (v === true || v === 'true') return true;
  if (v === false || v === 'false') return false;
  throw new ConfigError(`${what} must be true or false, got "${String(v)}"`);
}

/**
 * Flags win over the environment (POD_NAME, POD_NAMESPACE, KUBECONFIG, HOSTNAME);
 * `inClusterNamespace` is the service account's namespace file, if any.
 */
export function loadControllerConfig(
  flags: RawControllerFlags,
  env: Readonly<Record<string, string | undefined>>,
  inClusterNamespace?: string,
): ControllerConfig {
  const leaderElection = bool(flags.leaderElection, '--leader-election', true);
  const ns = flags.leaderElectionNamespace ?? env.POD_NAMESPACE ?? inClusterNamespace?.trim();
  if (leaderElection && !ns)
    throw new ConfigError(
      'leader election namespace unknown: pass --leader-election-namespace or set POD_NAMESPACE (downward API)',
    );
  const podName = env.POD_NAME ?? env.HOSTNAME;
  if (!podName) throw new ConfigError('pod name unknown: set POD_NAME (downward API) or HOSTNAME');
  const dur = (v: string | undefined, what: string, dflt: number) => (v ? parseDurationMs(v, what) : dflt);
  const timings = {
    leaseDurationMs: dur(flags.leaderElectionLeaseDuration, '--leader-election-lease-duration', 15_000),
    renewDeadlineMs: dur(flags.leaderElectionRenewDeadline, '--leader-election-renew-deadline', 10_000),
    retryPeriodMs: dur(flags.leaderElectionRetryPeriod, '--leader-election-retry-period', 2000),
  };
  const bad = validateTimings(timings);
  if (bad) throw new ConfigError(`leader election: ${bad}`);
  const workers = Number(flags.workers ?? String(DEFAULT_CONTROLLER_WORKERS));
  if (!Number.isInteger(workers) || workers <= 0)
    throw new ConfigError(`--workers must be a positive integer, got "${flags.workers}"`);
  const nodeLostAfterMs = dur(flags.nodeLostAfter, '--node-lost-after', 40_000);
  if (nodeLostAfterMs <= 0)
    throw new ConfigError(`--node-lost-after must be more than 0, got "${flags.nodeLostAfter}"`);
  const level = flags.logLevel ?? 'info';
  if (!(LEVELS as readonly string[]).includes(level))
    throw new ConfigError(`--log-level must be one of ${LEVELS.join(', ')}`);
  return Object.freeze({
    kubeconfig: flags.kubeconfig ?? env.KUBECONFIG,
    podName,
    leaderElection,
    leaderElectionNamespace: ns ?? '',
    ...timings,
    resyncMs: dur(flags.resync, '--resync', 60_000),
    workers,
    logLevel: level as ControllerConfig['logLevel'],
    httpEndpoint: hostPort(flags.httpEndpoint),
    autoFence: bool(flags.autoFence, '--auto-fence', false),
    nodeLostAfterMs,
  });
}
