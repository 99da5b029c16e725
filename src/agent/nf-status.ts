/**
 * What a node writes into its own NodeFence status besides its key (pure): the phase and
 * the conditions, `Ready` being the READY / REASON of `kubectl get nf`. The agent and
 * `prfence demo` both build them here.
 */
import type { Condition, NodePhase } from '../crd/types.js';
import { cond } from './status-writer.js';

export interface OwnNodeStatus {
  phase: NodePhase;
  volumes: number;
  conditions: Condition<'Degraded' | 'Ready' | 'AccessLost'>[];
}

export function ownNodeStatus(a: {
  /** The phase recorded now (a peer's Fenced mark is never overwritten). */
  recordedPhase?: NodePhase | undefined;
  fencedBy?: string | undefined;
  /** Why the own key is gone from devices (failfast), if it is. */
  lost?: string | undefined;
  fenceRequested: boolean;
  blockedVolumes: number;
  registeredVolumes: number;
  /** Why the API view is not fresh, if it is not. */
  problem?: string | undefined;
}): OwnNodeStatus {
  const { lost, problem } = a;
  // A peer's Fenced mark is never overwritten (writeOwn); AccessLost wins over the rest.
  const phase: NodePhase =
    a.recordedPhase === 'Fenced'
      ? 'Fenced'
      : lost
        ? 'AccessLost'
        : a.blockedVolumes > 0
          ? 'Blocked'
          : 'Registered';
  const volumes = a.registeredVolumes;
  // READY / REASON of `kubectl get nf`: the most pressing of what keeps this node off.
  const ready =
    phase === 'Fenced'
      ? cond(
          'Ready',
          'False',
          'Fenced',
          `key removed by ${a.fencedBy ?? 'a peer'}; prfence unfence lets it back`,
        )
      : lost
        ? cond('Ready', 'False', 'AccessLost', lost)
        : a.fenceRequested
          ? cond(
              'Ready',
              'False',
              'FenceRequested',
              'fence requested (spec.fenceState or out-of-service taint)',
            )
          : phase === 'Blocked'
            ? cond('Ready', 'False', 'Blocked', `registration refused (S2) on ${a.blockedVolumes} volume(s)`)
            : problem
              ? cond('Ready', 'False', 'NoFreshView', problem)
              : volumes > 0
                ? cond('Ready', 'True', 'Registered', `key registered on ${volumes} volume(s)`)
                : cond('Ready', 'True', 'NoVolumes', 'key claimed; no shared volume attached');
  return {
    phase,
    volumes,
    conditions: [
      problem
        ? cond('Degraded', 'True', 'NoFreshView', problem)
        : cond('Degraded', 'False', 'FreshView', 'the API view is fresh'),
      ready,
      ...(lost ? [cond('AccessLost', 'True', 'KeyRemoved', lost)] : []),
    ],
  };
}
