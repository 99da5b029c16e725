import type { CallBatch } from './call-batch.js';
import type { PrKey } from './key.js';
import type { ReservationType } from './reservation-type.js';

/** The keys registered on a logical unit, as the device reports them. */
export interface KeyList {
  /** PRgeneration (SCSI) / generation (NVMe): bumped by every successful PR OUT that changes state. */
  readonly generation: number;
  /** Registered keys, one entry per registration (the same key may appear once per I_T nexus). */
  readonly keys: readonly PrKey[];
}

/** The current reservation, as the device reports it. */
export interface Reservation {
  readonly generation: number;
  /** The holder's key; null when there is no reservation. All-registrants types report 0n (SPC-4 5.13.5). */
  readonly key: PrKey | null;
  readonly type: ReservationType | null;
}

export type DeviceKind = 'scsi' | 'nvme' | 'memory';

/**
 * How a registrant's initiator is named: a SCSI TransportID's protocol (SPC-4 7.6.4;
 * 'other' = a protocol not parsed by name, shown in hex), an NVMe host identifier, or an
 * initiator of the in-memory model.
 */
export type InitiatorTransport = 'fc' | 'iscsi' | 'sas' | 'other' | 'nvme' | 'memory';

/** The initiator (I_T nexus / NVMe host) of one registration, as READ FULL STATUS / Reservation Report name it. */
export interface InitiatorId {
  readonly transport: InitiatorTransport;
  /**
   * fc: N_Port name, sas: SAS address (16 hex digits each); iscsi: the iSCSI name; nvme:
   * the host identifier in hex (32 digits, or 16 from a controller without the extended
   * report); memory: the model's initiator name; other: the whole TransportID in hex.
   */
  readonly id: string;
  /** iscsi: the initiator session id (ISID) in hex, when the TransportID carries one (format 01b). */
  readonly isid?: string;
  /** other: the SCSI PROTOCOL IDENTIFIER of the TransportID. */
  readonly protocolId?: number;
  /** SCSI: RELATIVE TARGET PORT IDENTIFIER of the registration. */
  readonly relativeTargetPort?: number;
  /** SCSI: ALL_TG_PT (registered through every target port). */
  readonly allTargetPorts?: boolean;
  /** NVMe: the controller id (CNTLID) of the registration. */
  readonly controllerId?: number;
}

/** One registration of a full status read. */
export interface Registrant {
  readonly key: PrKey;
  /** Holds the reservation (R_HOLDER / RCSTS); every registrant under an all-registrants type. */
  readonly holder: boolean;
  readonly initiator: InitiatorId;
}

/** The whole reservation state from one read: registrations with their initiators, and the reservation. */
export interface FullStatus {
  /** PRgeneration / generation, as readKeys reports it. */
  readonly generation: number;
  /** As readReservation reports it (all-registrants types: key 0 on SCSI, the first holder's on NVMe). */
  readonly reservation: { readonly key: PrKey; readonly type: ReservationType } | null;
  /** One entry per registration, in the order the device reports them (readKeys' order). */
  readonly registrants: readonly Registrant[];
}

/** How reads are done on this device; detected once per device at first use. */
export type ReadMethod = 'ioctl' | 'sg-io' | 'nvme-passthru' | 'model';

/**
 * Where the reservation types of a PrCapabilities come from: the device's own report
 * (SCSI PERSISTENT RESERVE IN REPORT CAPABILITIES with TMV set, the NVMe RESCAP byte of
 * Identify Namespace; the model's options), or assumed (all six: the device does not
 * report them, see `assumedBecause`).
 */
export type CapabilitySource = 'device' | 'assumed';

/**
 * The flags a device reports with its reservation types; each one is absent when the
 * device does not report it (an NVMe namespace has no ATP_C, SIP_C, CRH or PTPL_A).
 */
export interface CapabilityFlags {
  /** Persist Through Power Loss capable: SCSI PTPL_C, NVMe RESCAP bit 0. */
  readonly ptplCapable?: boolean;
  /** Persist Through Power Loss activated: SCSI PTPL_A. */
  readonly ptplActive?: boolean;
  /** All Target Ports capable (REGISTER with ALL_TG_PT): SCSI ATP_C. */
  readonly allTargetPorts?: boolean;
  /** Specify Initiator Ports capable (REGISTER with SPEC_I_PT): SCSI SIP_C. */
  readonly specifyInitiatorPorts?: boolean;
  /** Compatible Reservation Handling (SPC-4 5.13.3): SCSI CRH. */
  readonly compatibleReservationHandling?: boolean;
  /** SCSI ALLOW COMMANDS (0-7, SPC-4 table "ALLOW COMMANDS field"). */
  readonly allowCommands?: number;
  /** NVMe RESCAP bit 7 IEKEY: Ignore Existing Key as defined by NVMe 1.3 and later. */
  readonly ignoreExistingKey?: boolean;
}

export interface PrCapabilities {
  readonly kind: DeviceKind;
  /** Method used for readKeys / readReservation. */
  readonly readMethod: ReadMethod;
  /** Reservation types the device reports it supports (`source` 'device'); otherwise all six. */
  readonly types: readonly ReservationType[];
  /** Where `types` come from. */
  readonly source: CapabilitySource;
  /** When `source` is 'assumed': why (the device does not implement the report, ...). */
  readonly assumedBecause?: string;
  /** What the device reports beside the types (empty when it reports nothing). */
  readonly flags: CapabilityFlags;
  /**
   * Whether PREEMPT AND ABORT is expected to work: SPC-4 and NVMe have no capability bit
   * for it, so true unless this device refused it (UnsupportedError) once.
   */
  readonly preemptAbort: boolean;
}

/** Per-call options: an AbortSignal stops waiting (the outcome is then indeterminate for PR OUT). */
export interface PrCallOptions {
  readonly signal?: AbortSignal;
  /**
   * A time limit for this call (ms), below the device's own (never above it). Used by the
   * failfast probe's reads: a read still running at it makes the device count as hung (its
   * further calls fail fast) and frees the executor to start another thread, so a few hung
   * devices do not hold every thread for the whole --ioctl-timeout.
   */
  readonly timeoutMs?: number;
  /**
   * Hand this call to the native threads together with the other calls of the batch (the
   * failfast probe's round, call-batch.ts). Ignored by devices without native calls.
   */
  readonly batch?: CallBatch;
}

/**
 * The narrow port to one Persistent Reservation capable block device, as seen
 * from one initiator (I_T nexus / NVMe host).
 *
 * Contract for every method:
 * - resolves on success; rejects with exactly one of the PrError classes in
 *   `errors.ts` (NotSent / Indeterminate / Conflict / Unsupported / InvalidArgument);
 * - never blocks the event loop, and never waits longer than the implementation's
 *   time limit (a PR OUT that timed out is IndeterminateError);
 * - keys are bigint and are validated (non-zero where the spec needs a key).
 *
 * Argument order mirrors <linux/pr.h>: for preempt, `ownKey` is the caller's
 * registered key (RESERVATION KEY / CRKEY) and `victimKey` is the key being removed
 * (SERVICE ACTION RESERVATION KEY / PRKEY).
 */
export interface PrDevice {
  /** Device path or model id; used in logs and errors. */
  readonly id: string;

  /** REGISTER: change this initiator's registration from oldKey (0n = none) to newKey (0n = unregister). */
  register(oldKey: PrKey, newKey: PrKey, opts?: PrCallOptions): Promise<void>;
  /** REGISTER AND IGNORE EXISTING KEY: register newKey whatever is registered now (0n = unregister). */
  registerAndIgnore(newKey: PrKey, opts?: PrCallOptions): Promise<void>;
  /** RESERVE with this initiator's registered key. */
  reserve(key: PrKey, type: ReservationType, opts?: PrCallOptions): Promise<void>;
  /** RELEASE; a release by a non-holder is a no-op success (SPC-4 5.13.11.2.2). */
  release(key: PrKey, type: ReservationType, opts?: PrCallOptions): Promise<void>;
  /** PREEMPT: remove victimKey's registrations (and take its reservation if it held one). */
  preempt(ownKey: PrKey, victimKey: PrKey, type: ReservationType, opts?: PrCallOptions): Promise<void>;
  /** PREEMPT AND ABORT: as preempt, and abort the victim's outstanding commands. */
  preemptAndAbort(
    ownKey: PrKey,
    victimKey: PrKey,
    type: ReservationType,
    opts?: PrCallOptions,
  ): Promise<void>;
  /** CLEAR: remove every registration and the reservation. Needs this initiator's registered key. */
  clear(key: PrKey, opts?: PrCallOptions): Promise<void>;

  /** Reads all registered keys and the generation. No side effects. */
  readKeys(opts?: PrCallOptions): Promise<KeyList>;
  /** Reads the reservation holder key and type. No side effects. */
  readReservation(opts?: PrCallOptions): Promise<Reservation>;
  /**
   * Reads every registration with its initiator, and the reservation, in one command
   * (SCSI PERSISTENT RESERVE IN READ FULL STATUS through SG_IO; the NVMe Reservation
   * Report). No side effects. UnsupportedError where the device cannot answer it (no
   * SCSI or NVMe passthrough, or the service action is not implemented).
   */
  readFullStatus(opts?: PrCallOptions): Promise<FullStatus>;
  /** What the device supports and how it is read. Detected once, then cached. */
  capabilities(opts?: PrCallOptions): Promise<PrCapabilities>;

  /** Releases host resources (file descriptors). Never touches the reservation (S8). */
  close(): Promise<void>;
}
