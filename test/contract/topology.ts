import type { PrDevice, DeviceKind } from '../../src/pr/index.js';

/** The result of a data-path probe from one initiator. */
export type AccessResult = 'ok' | 'refused';

/**
 * One logical unit seen through several initiators: what the contract suite runs on.
 * Implemented by the memory model (every run) and by real kernel devices (QEMU guest).
 */
export interface Topology {
  /** e.g. "memory", "lio-tcm_loop", "lio-iscsi", "nvmet-loop". */
  readonly name: string;
  readonly kind: DeviceKind;
  /** At least three initiators on the same LU, index 0..n-1. */
  readonly initiators: readonly PrDevice[];
  /** Known limitations of this target, e.g. "preempt-abort-hangs" for LIO tcm_loop. */
  readonly limitations: ReadonlySet<string>;
  /** One O_DIRECT write (or the model's equivalent) from initiator i. */
  write(i: number): Promise<AccessResult>;
  /** One O_DIRECT read from initiator i. */
  read(i: number): Promise<AccessResult>;
  /** Bring the LU back to no registrations and no reservation. */
  reset(): Promise<void>;
  close(): Promise<void>;
}

export type TopologyFactory = () => Promise<Topology>;
