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
  /**
   * The initiator id readFullStatus reports for each initiator (iSCSI name, NVMe host id in
   * hex, the model's initiator name), where the topology knows them.
   */
  readonly initiatorIds?: readonly string[];
  /** Known limitations of this target, e.g. "preempt-abort-hangs" for LIO tcm_loop. */
  readonly limitations: ReadonlySet<string>;
  /**
   * Named deviations of this target from the spec that the suite asserts instead of the
   * spec's answer (see {@link LIO_QUIRKS}); the spec stays the rule for other targets.
   */
  readonly quirks: ReadonlySet<string>;
  /** One O_DIRECT write (or the model's equivalent) from initiator i. */
  write(i: number): Promise<AccessResult>;
  /** One O_DIRECT read from initiator i. */
  read(i: number): Promise<AccessResult>;
  /** Bring the LU back to no registrations and no reservation. */
  reset(): Promise<void>;
  close(): Promise<void>;
}

export type TopologyFactory = () => Promise<Topology>;

/**
 * LIO's deviations (drivers/target/target_core_pr.c), shared by the LIO kernel topologies
 * and the memory model of LIO (memory-logical-unit.ts):
 * - `scsi2-registrant-conflict`: a SCSI-2 RESERVE(6)/RELEASE(6) from a registered
 *   non-holder under a registrants-only or all-registrants persistent reservation answers
 *   RESERVATION CONFLICT; SPC-4 5.7.3 b) says GOOD, with no effect
 *   (target_check_scsi2_reservation_conflict reads the sender's own pr_res_type, which
 *   only the reserving registration carries).
 */
export const LIO_QUIRKS: ReadonlySet<string> = new Set(['scsi2-registrant-conflict']);
