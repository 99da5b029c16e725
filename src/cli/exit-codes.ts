import { ConfigError } from '../config/config.js';
import { KubeApiError } from '../kube/rest-client.js';
import { isPrError, type PrErrorKind } from '../pr/errors.js';
import { DeviceResolutionError } from '../pr/resolve.js';

/** Exit codes of the prfence command (DESIGN.md "The prfence command"). */
export const EXIT = Object.freeze({
  ok: 0,
  usage: 2,
  conflict: 3,
  unsupported: 4,
  io: 5,
  /** The API server refused the request or could not be reached (cluster commands). */
  api: 6,
  /** `crds apply` refused: the cluster's CRDs have a version this prfence's CRDs would drop. */
  crdVersion: 7,
  /**
   * `prfence controller` lost its Lease (not renewed within the renew deadline): it stopped
   * acting and exits, so the pod restarts with fresh state and campaigns again.
   */
  leaderLost: 8,
});

/** An error talking to the API server that is not an answer of it (refused, reset, timed out, TLS). */
export class ApiUnreachableError extends Error {
  override readonly name = 'ApiUnreachableError';
}

/** `crds apply` refused before writing: applying would drop a stored or served CRD version. */
export class CrdVersionError extends Error {
  override readonly name = 'CrdVersionError';
}

/** The command line asks for something the command refuses to do as given (exit 2); nothing was sent. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** The controller's leader election was lost (exit 8). */
export class LeaderElectionLostError extends Error {
  override readonly name = 'LeaderElectionLostError';
}

/** Maps an error to its exit code: PrError by class, API errors to `api`, anything else as an I/O failure. */
export function exitCodeFor(e: unknown): number {
  if (e instanceof ConfigError || e instanceof UsageError || e instanceof DeviceResolutionError)
    return EXIT.usage;
  if (e instanceof CrdVersionError) return EXIT.crdVersion;
  if (e instanceof LeaderElectionLostError) return EXIT.leaderLost;
  if (e instanceof KubeApiError || e instanceof ApiUnreachableError) return EXIT.api;
  if (!isPrError(e)) return EXIT.io;
  switch (e.kind) {
    case 'invalid-argument':
      return EXIT.usage;
    case 'conflict':
      return EXIT.conflict;
    case 'unsupported':
      return EXIT.unsupported;
    case 'not-sent':
    case 'indeterminate':
      return EXIT.io;
  }
}

/**
 * The class of an error as `--json` prints it (`{"error": {"kind", "message"}, "exitCode"}`):
 * a PrError's kind (not-sent, indeterminate, conflict, unsupported, invalid-argument);
 * `usage` for the command line; `not-found` / `ambiguous` for a device identity that names
 * no local device or several; `api` for the API server; `error` for anything else.
 */
export type ErrorKind = PrErrorKind | 'usage' | 'not-found' | 'ambiguous' | 'api' | 'error';

export function errorKindFor(e: unknown): ErrorKind {
  if (isPrError(e)) return e.kind;
  if (e instanceof DeviceResolutionError) return e.reason === 'bad-identity' ? 'usage' : e.reason;
  if (e instanceof KubeApiError || e instanceof ApiUnreachableError) return 'api';
  return exitCodeFor(e) === EXIT.usage ? 'usage' : 'error';
}
