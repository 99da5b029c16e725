/**
 * TypeScript types of the prfence.io/v1alpha1 custom resources. The CRDs in
 * charts/prfence/crds/ are the source of truth; test/integration/crd-schema.test.ts
 * checks these unions and fields against the schema the API server serves.
 */
import type { ReservationType } from '../pr/reservation-type.js';

export const GROUP = 'prfence.io';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;
export const NODE_FENCE = { kind: 'NodeFence', plural: 'nodefences' } as const;
export const VOLUME_RESERVATION = { kind: 'VolumeReservation', plural: 'volumereservations' } as const;
export const RESERVATION_KEY = { kind: 'ReservationKey', plural: 'reservationkeys' } as const;
/**
 * The controller's finalizer on every VolumeReservation it writes the desired state of: a
 * deleted one stays (Terminating, its record intact) until no key is left on the device as
 * far as it records (docs/design.md "Deleting a VolumeReservation").
 */
export const VR_FINALIZER = 'prfence.io/reservation-protection';

export const FENCE_STATES = ['Unfenced', 'Fenced'] as const;
export type FenceState = (typeof FENCE_STATES)[number];

export const NODE_PHASES = ['Pending', 'Registered', 'Fenced', 'AccessLost', 'Blocked', 'Error'] as const;
export type NodePhase = (typeof NODE_PHASES)[number];

/**
 * `Ready` is the one-line summary `kubectl get nf` shows (READY, REASON columns): True
 * (Registered, NoVolumes) or False (Fenced, FenceRequested, Blocked, NoFreshView).
 */
export const NODE_CONDITION_TYPES = ['Registered', 'AccessLost', 'Fenced', 'Degraded', 'Ready'] as const;
/**
 * `Ready` is the one-line summary `kubectl get vr` shows (READY, REASON columns): True
 * (Reserved) or False (NotReserved, DeviceNotFound, NoPersistentReservations,
 * RegistrationBlocked). `Reserved` stays what the device says. Configured=False: a
 * prfence.io/fencing or prfence.io/reservation-type annotation (PV or StorageClass) does
 * not parse; no device command is sent for the volume until it does.
 */
export const VOLUME_CONDITION_TYPES = [
  'Reserved',
  'Supported',
  'DeviceFound',
  'Degraded',
  'Ready',
  'Configured',
] as const;
export const DEVICE_KINDS = ['scsi', 'nvme'] as const;
export const FENCE_RESULTS = ['Fenced', 'Failed'] as const;
/** Named deviations from SPC-4 / the NVMe specification that a device showed (VolumeReservation status.quirks). */
export const DEVICE_QUIRKS = ['HolderPreemptKeepsVictim'] as const;
export type DeviceQuirk = (typeof DEVICE_QUIRKS)[number];

/** metav1.Condition. */
export interface Condition<T extends string = string> {
  type: T;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  lastTransitionTime: string;
  observedGeneration?: number;
}

export interface ObjectMeta {
  name: string;
  uid?: string;
  resourceVersion?: string;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  finalizers?: string[];
  generation?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  /** Server-side apply ownership (metav1.ManagedFieldsEntry; only what prfence reads). */
  managedFields?: { manager?: string; subresource?: string; fieldsV1?: Record<string, unknown> }[];
}

export interface NodeFenceSpec {
  fenceState?: FenceState;
  reason?: string;
  requestedBy?: string;
  /** When `prfence unfence` last ran: a node that lost its key registers again only after it. */
  unfencedAt?: string;
}

export interface NodeFenceStatus {
  key?: string;
  nodeUID?: string;
  phase?: NodePhase;
  volumes?: number;
  /**
   * PVs this node left by a normal detach but still holds the reservation of, because a
   * fenced node may still write there: the next legitimate node takes it over.
   */
  handingOver?: string[];
  fencedBy?: string;
  fencedAt?: string;
  lastProbeTime?: string;
  /** Proof of isolation, one entry per device, written by the agent that fenced. */
  proofs?: IsolationProof[];
  /** The controller's summary of the proof, and the out-of-service taint it applied. */
  isolation?: IsolationStatus;
  conditions?: Condition<(typeof NODE_CONDITION_TYPES)[number]>[];
}

export interface IsolationProof {
  volume: string;
  identity?: string;
  victimKey: string;
  result: 'Fenced';
  generation?: number;
  by: string;
  at: string;
}

export interface IsolationStatus {
  lost?: boolean;
  proven?: number;
  total?: number;
  summary?: string;
  complete?: boolean;
  pending?: { volume: string; reason: string }[];
  taintedAt?: string;
  taintedBootID?: string;
}

export interface NodeFence {
  apiVersion: typeof API_VERSION;
  kind: 'NodeFence';
  metadata: ObjectMeta;
  spec?: NodeFenceSpec;
  status?: NodeFenceStatus;
}

export interface Registrant {
  node: string;
  key: string;
  legitimate?: boolean;
  observedAt?: string;
  /**
   * The initiators (I_T nexuses, NVMe hosts) the device says carry this key, as `prfence
   * device status` names them; absent where the device was read without READ FULL STATUS /
   * the Reservation Report.
   */
  initiators?: string[];
}

export interface LastFence {
  victimNode?: string;
  victimKey?: string;
  by?: string;
  at?: string;
  durationMs?: number;
  result?: (typeof FENCE_RESULTS)[number];
  /**
   * false: the key was removed with PREEMPT because the device refused PREEMPT AND ABORT;
   * the victim's commands already queued in the device were not aborted. Absent: aborted.
   */
  aborted?: false;
}

/** The lastFence field names, for the schema drift test. */
export const LAST_FENCE_FIELDS: readonly (keyof LastFence)[] = [
  'victimNode',
  'victimKey',
  'by',
  'at',
  'durationMs',
  'result',
  'aborted',
];

/** A key a fence removed from a device, and its node (VolumeReservation status.fencedKeys). */
export interface FencedKey {
  node?: string;
  key: string;
  at: string;
}

/** A key a fence intent names, and its node. */
export interface IntentVictim {
  victimNode?: string;
  victimKey: string;
}

/** A fence about to happen, recorded before the PREEMPT and removed once the fence is recorded. */
export interface FenceIntent extends IntentVictim {
  by: string;
  at: string;
  /** resourceVersions of the fresh reads the decision rests on. */
  basis?: string;
  /**
   * Keys the same node removed from this device before, whose fence is not recorded yet
   * (the field holds one intent at a time: a second PREEMPT's intent carries the first's).
   */
  earlierVictims?: IntentVictim[];
}

export interface VolumeReservationStatus {
  device?: { identity?: string; kind?: (typeof DEVICE_KINDS)[number] };
  reservationType?: ReservationType;
  holder?: { node?: string; key: string };
  registrants?: Registrant[];
  foreignKeys?: number;
  generation?: number;
  lastFence?: LastFence;
  fenceIntent?: FenceIntent;
  fencedKeys?: FencedKey[];
  quirks?: DeviceQuirk[];
  conditions?: Condition<(typeof VOLUME_CONDITION_TYPES)[number]>[];
}

/** A VolumeAttachment of the volume, as the controller saw it. */
export interface AttachmentRef {
  node: string;
  /** The VolumeAttachment's name. */
  name: string;
  /** Its deletionTimestamp is set (being detached). */
  deleting?: boolean;
}

/**
 * The controller's desired state of the volume (docs/design.md "Desired state"): what a
 * node agent watching only its own volumes needs in place of the cluster-wide
 * VolumeAttachment, PersistentVolume and StorageClass caches. Written by the controller
 * alone (server-side apply), with a label per node involved (crd/node-label.ts). (The
 * former `spec.reservationType` is gone: a volume's type is the PV or StorageClass
 * annotation prfence.io/reservation-type, copied here.)
 */
export interface VolumeReservationSpec {
  /** The PV's device identity (fence/persistent-volume.ts deviceOf). */
  device?: string;
  /** The PV's prfence policy annotations, verbatim. */
  annotations?: Record<string, string>;
  /** The PV's StorageClass and its prfence policy annotations, verbatim. */
  storageClass?: { name: string; annotations?: Record<string, string> };
  /** Every VolumeAttachment of the PV. */
  attachments?: AttachmentRef[];
}

export interface VolumeReservation {
  apiVersion: typeof API_VERSION;
  kind: 'VolumeReservation';
  metadata: ObjectMeta;
  spec?: VolumeReservationSpec;
  status?: VolumeReservationStatus;
}

/** The status field names, for the schema drift test. */
export const NODE_FENCE_STATUS_FIELDS: readonly (keyof NodeFenceStatus)[] = [
  'key',
  'nodeUID',
  'phase',
  'volumes',
  'handingOver',
  'fencedBy',
  'fencedAt',
  'proofs',
  'isolation',
  'lastProbeTime',
  'conditions',
];
export const VOLUME_RESERVATION_STATUS_FIELDS: readonly (keyof VolumeReservationStatus)[] = [
  'device',
  'reservationType',
  'holder',
  'registrants',
  'foreignKeys',
  'generation',
  'lastFence',
  'fenceIntent',
  'fencedKeys',
  'quirks',
  'conditions',
];

export const VOLUME_RESERVATION_SPEC_FIELDS: readonly (keyof VolumeReservationSpec)[] = [
  'device',
  'annotations',
  'storageClass',
  'attachments',
];

/** A key claim (S6): the name is the key in 16 hex digits; create-only. */
export interface ReservationKey {
  apiVersion: typeof API_VERSION;
  kind: 'ReservationKey';
  metadata: ObjectMeta;
  spec: { node: string; nodeUID: string };
}
