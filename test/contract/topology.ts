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
  /**
   * At least three initiators on the same LU, index 0..n-1 (the memory model offers
   * {@link MEMORY_INITIATORS}, the kernel guests three, and more in {@link Topology.wide}).
   */
  readonly initiators: readonly PrDevice[];
  /**
   * The initiator id readFullStatus reports for each initiator (iSCSI name, NVMe host id in
   * hex, the model's initiator name), where the topology knows them.
   */
  readonly initiatorIds?: readonly string[];
  /**
   * More than 32 initiators on another LU of the same target, for the scenarios that need
   * them (the kernel guests' wide sets: test/kernel/guest-init.sh); opened on demand, closed
   * by the caller. Absent where `initiators` has them all (the memory model).
   */
  readonly wide?: () => Promise<Topology>;
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

/** How many initiators the memory topology offers: enough for more than 32 registrations. */
export const MEMORY_INITIATORS = 40;

/**
 * LIO's deviations from SPC-4 (drivers/target/target_core_pr.c), shared by the LIO kernel
 * topologies and the memory model of LIO (memory-logical-unit.ts):
 * - `scsi2-registrant-conflict`: a SCSI-2 RESERVE(6)/RELEASE(6) from a registered
 *   non-holder under a registrants-only or all-registrants persistent reservation answers
 *   RESERVATION CONFLICT; SPC-4 5.7.3 b) says GOOD, with no effect
 *   (target_check_scsi2_reservation_conflict reads the sender's own pr_res_type, which
 *   only the reserving registration carries).
 * - `unregister-keeps-generation`: a REGISTER or REGISTER AND IGNORE EXISTING KEY with a
 *   SERVICE ACTION RESERVATION KEY of 0 (an unregister; from an unregistered I_T nexus, a
 *   GOOD with nothing to do) leaves PRgeneration unchanged. SPC-4 6.16.2 (READ KEYS,
 *   PRGENERATION) increments it for every REGISTER and REGISTER AND IGNORE EXISTING KEY
 *   that is not terminated with an error or a conflict; only RESERVE, RELEASE and the
 *   PERSISTENT RESERVE IN commands leave it alone (core_scsi3_emulate_pro_register calls
 *   core_scsi3_pr_generation only for a non-zero key).
 * - `release-wrong-type-conflict`: a RELEASE from the holder whose TYPE differs from the
 *   reservation's answers RESERVATION CONFLICT; SPC-4 5.13.11.2.2 (Releasing) says ILLEGAL
 *   REQUEST, INVALID RELEASE OF PERSISTENT RESERVATION (core_scsi3_emulate_pro_release).
 * - `reserve-unregistered-check-condition`: a RESERVE from an I_T nexus that is not
 *   registered, while no persistent reservation is held, answers CHECK CONDITION (LOGICAL
 *   UNIT COMMUNICATION FAILURE: ret 2 through the ioctl, IndeterminateError); SPC-4 allows
 *   only REGISTER and REGISTER AND IGNORE EXISTING KEY from an unregistered I_T nexus
 *   (Reserving: "through a registered I_T nexus") and answers the others
 *   RESERVATION CONFLICT (core_scsi3_pro_reserve returns
 *   TCM_LOGICAL_UNIT_COMMUNICATION_FAILURE when it finds no registration; with a
 *   reservation held, core_scsi3_pr_seq_non_holder answers the conflict first).
 * - `full-status-length-cut`: PERSISTENT RESERVE IN, READ FULL STATUS with an ALLOCATION
 *   LENGTH too short for every descriptor answers an ADDITIONAL LENGTH of the descriptors
 *   that fit alone; SPC-4 6.16.5 keeps ADDITIONAL LENGTH the length of the whole list
 *   whatever the allocation length (core_scsi3_pri_read_full_status stops counting at "ran
 *   out of buffer", and compares the allocation with the descriptors counted so far and the
 *   next one's TransportID, without the 8-byte header and the descriptor's own 24 bytes).
 *   With 34 registrants over iSCSI, 6.1 and 7.2 alike: ADDITIONAL LENGTH 2584 with 65535
 *   bytes, 2052 with 2048; a read again with 2060 bytes got 27 descriptors as if they were
 *   all (test/kernel/full-status-cut.test.ts). Not
 *   visible through PrDevice: KoffiPrDevice reads again with the largest allocation unless
 *   an answer leaves room for one more descriptor (#sgReadFullStatus), and the scenario of
 *   more than 32 registrations asserts the whole list on the wide set.
 */
export const LIO_QUIRKS: ReadonlySet<string> = new Set([
  'scsi2-registrant-conflict',
  'unregister-keeps-generation',
  'release-wrong-type-conflict',
  'reserve-unregistered-check-condition',
  'full-status-length-cut',
]);

/**
 * nvmet's deviations from the NVMe base specification (drivers/nvme/target/pr.c), shared by
 * the nvmet kernel topologies and the memory model of kind 'nvme':
 * - `holder-preempt-keeps-victim`: a Reservation Acquire, Preempt (or Preempt and Abort)
 *   from the holder of a single-holder reservation only changes the reservation's type,
 *   whatever PRKEY says: a registrant with that key keeps its registration, a key nobody
 *   holds is no conflict, and a PRKEY of 0 is no error. The specification (Reservation
 *   Acquire, Preempting a Reservation) unregisters the registrants of a PRKEY that is not
 *   the holder's and not 0, and answers Invalid Field in Command to a PRKEY of 0 outside
 *   the all-registrants types (nvmet_pr_preempt tests `holder == reg` before PRKEY). The
 *   agent works around it (src/fence/rule.ts, status.quirks HolderPreemptKeepsVictim).
 * - `release-wrong-type-conflict`: a Reservation Release from the holder whose RTYPE
 *   differs from the reservation's answers Reservation Conflict; the specification
 *   (Reservation Release, Releasing a Reservation) says Invalid Field in Command
 *   (nvmet_pr_release).
 */
export const NVMET_QUIRKS: ReadonlySet<string> = new Set([
  'holder-preempt-keeps-victim',
  'release-wrong-type-conflict',
]);
