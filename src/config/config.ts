/**
 * The agent's configuration, parsed once from flags and environment into a deeply frozen
 * object. No other module reads the environment.
 */
import { parseHostPort } from '../obs/http-server.js';
import { parseReservationType, type ReservationType } from '../pr/reservation-type.js';
import { FENCING_MODES, isFencingMode, type FencingMode } from '../fence/volume-policy.js';
import {
  DEFAULT_SYSRQ_TRIGGER,
  FAILFAST_ACTIONS,
  isFailfastAction,
  type FailfastAction,
} from '../agent/failfast.js';
import { AGENT_SCOPES, type AgentScope } from '../agent/cluster-informers.js';

/**
 * Volumes reconciled at once. A reconcile mostly waits on the API server and the device
 * threads; with 2, a node taking over 200 volumes fenced them 2 at a time. 10 is the
 * kubernetes-csi sidecars' --worker-threads default.
 */
export const DEFAULT_AGENT_WORKERS = 10;

export interface AgentConfig {
  readonly nodeName: string;
  readonly kubeconfig: string | undefined;
  readonly clusterId: string | undefined;
  /** The type of volumes without a prfence.io/reservation-type annotation (PV, StorageClass). */
  readonly reservationType: ReservationType;
  /** Whether volumes without a prfence.io/fencing annotation (PV, StorageClass) are fenced. */
  readonly fencingDefault: FencingMode;
  readonly foreignKeys: 'leave' | 'preempt';
  readonly ioctlTimeoutMs: number;
  /** Parsed for compatibility; ignored: one native call is in flight per device (executor.ts). */
  readonly maxInFlight: number;
  readonly workers: number;
  readonly resyncMs: number;
  readonly freshnessMs: number;
  readonly leaveGraceMs: number;
  /** Observer: fence nodes asked to be fenced on volumes with no legitimate node, where the LU is visible. */
  readonly observe: boolean;
  /** Where the agent learns of its volumes: cluster-wide watches, or the controller's desired state. */
  readonly scope: AgentScope;
  readonly stateDir: string;
  /** Failfast probe period; 0: no probe. */
  readonly probeIntervalMs: number;
  /** How often the paths under open dm-multipath devices are read between reconciles; 0: only at reconciles. */
  readonly pathCheckIntervalMs: number;
  readonly failfastAction: FailfastAction;
  /** The host's sysrq trigger that failfast `reboot` writes (the chart mounts the host's /proc at /host/proc). */
  readonly sysrqTrigger: string;
  readonly logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';
  /** host:port of /metrics, /healthz, /readyz; undefined: no diagnostics server. */
  readonly httpEndpoint: string | undefined;
}

export interface RawAgentFlags {
  nodeName?: string;
  kubeconfig?: string;
  clusterId?: string;
  reservationType?: string;
  fencingDefault?: string;
  foreignKeys?: string;
  ioctlTimeout?: string;
  maxInFlight?: string;
  workers?: string;
  resync?: string;
  freshness?: string;
  leaveGrace?: string;
  stateDir?: string;
  probeInterval?: string;
  pathCheckInterval?: string;
  observe?: boolean;
  scope?: string;
  failfastAction?: string;
  failfastAllowReboot?: boolean;
  sysrqTrigger?: string;
  logLevel?: string;
  httpEndpoint?: string;
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

function positiveInt(v: string | undefined, what: string, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new ConfigError(`${what} must be a positive integer, got "${v}"`);
  return n;
}

/** Duration like "10s", "500ms", "2m" or plain milliseconds. */
export function parseDurationMs(v: string, what: string): number {
  const m = /^(\d+)(ms|s|m)?$/.exec(v.trim());
  if (!m) throw new ConfigError(`${what} must be a duration like 10s, 500ms or 2m, got "${v}"`);
  const n = Number(m[1]);
  return m[2] === 's' ? n * 1000 : m[2] === 'm' ? n * 60_000 : n;
}

export function hostPort(v: string | undefined): string | undefined {
  if (v === undefined || v === '') return undefined;
  try {
    parseHostPort(v);
  } catch {
    throw new ConfigError(`--http-endpoint must be host:port or :port (e.g. :9808), got "${v}"`);
  }
  return v;
}

export const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;

/** Builds the frozen config; flags win over the environment (NODE_NAME, KUBECONFIG). */
export function loadAgentConfig(
  flags: RawAgentFlags,
  env: Readonly<Record<string, string | undefined>>,
): AgentConfig {
  const nodeName = flags.nodeName ?? env.NODE_NAME;
  if (!nodeName) throw new ConfigError('node name missing: pass --node-name or set NODE_NAME (downward API)');
  let reservationType: ReservationType;
  try {
    reservationType = parseReservationType(flags.reservationType ?? 'write-exclusive-reg-only');
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
  const fencingDefault = flags.fencingDefault ?? 'enabled';
  if (!isFencingMode(fencingDefault))
    throw new ConfigError(`--fencing-default must be ${FENCING_MODES.join(' or ')}, got "${fencingDefault}"`);
  const foreign = flags.foreignKeys ?? 'leave';
  if (foreign !== 'leave' && foreign !== 'preempt')
    throw new ConfigError(`--foreign-keys must be leave or preempt, got "${foreign}"`);
  const failfastAction = flags.failfastAction ?? 'report';
  if (!isFailfastAction(failfastAction))
    throw new ConfigError(
      `--failfast-action must be ${FAILFAST_ACTIONS.join(', ')}, got "${failfastAction}"`,
    );
  if (failfastAction === 'reboot' && flags.failfastAllowReboot !== true)
    throw new ConfigError(
      '--failfast-action reboot reboots this node (sysrq) when its key is removed from a device; ' +
        'pass --failfast-allow-reboot as well to allow it',
    );
  const probeIntervalMs = flags.probeInterval
    ? parseDurationMs(flags.probeInterval, '--probe-interval')
    : 2000;
  if (failfastAction !== 'report' && probeIntervalMs === 0)
    throw new ConfigError(
      `--failfast-action ${failfastAction} needs the probe: --probe-interval must not be 0`,
    );
  const scope = flags.scope ?? 'cluster';
  if (!(AGENT_SCOPES as readonly string[]).includes(scope))
    throw new ConfigError(`--scope must be ${AGENT_SCOPES.join(' or ')}, got "${scope}"`);
  const level = flags.logLevel ?? 'info';
  if (!(LEVELS as readonly string[]).includes(level))
    throw new ConfigError(`--log-level must be one of ${LEVELS.join(', ')}`);
  return Object.freeze({
    nodeName,
    kubeconfig: flags.kubeconfig ?? env.KUBECONFIG,
    clusterId: flags.clusterId,
    reservationType,
    fencingDefault,
    foreignKeys: foreign,
    ioctlTimeoutMs: flags.ioctlTimeout ? parseDurationMs(flags.ioctlTimeout, '--ioctl-timeout') : 10_000,
    maxInFlight: positiveInt(flags.maxInFlight, '--max-in-flight', 2),
    workers: positiveInt(flags.workers, '--workers', DEFAULT_AGENT_WORKERS),
    resyncMs: flags.resync ? parseDurationMs(flags.resync, '--resync') : 30_000,
    freshnessMs: flags.freshness ? parseDurationMs(flags.freshness, '--freshness') : 5000,
    leaveGraceMs: flags.leaveGrace ? parseDurationMs(flags.leaveGrace, '--leave-grace') : 10_000,
    stateDir: flags.stateDir ?? '/var/lib/prfence',
    observe: flags.observe === true,
    scope: scope as AgentScope,
    probeIntervalMs,
    pathCheckIntervalMs: flags.pathCheckInterval
      ? parseDurationMs(flags.pathCheckInterval, '--path-check-interval')
      : 10_000,
    failfastAction,
    sysrqTrigger: flags.sysrqTrigger ?? DEFAULT_SYSRQ_TRIGGER,
    logLevel: level as AgentConfig['logLevel'],
    httpEndpoint: hostPort(flags.httpEndpoint),
  });
}
