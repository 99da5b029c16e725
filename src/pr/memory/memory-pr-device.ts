import { IndeterminateError, isPrError } from '../errors.js';
import type { PrKey } from '../key.js';
import type {
  CapabilityFlags,
  FullStatus,
  KeyList,
  PrCallOptions,
  PrCapabilities,
  PrDevice,
  Reservation,
} from '../pr-device.js';
import type { ReservationType } from '../reservation-type.js';
import type { Scsi2Device, Scsi2Status } from '../scsi2.js';
import { checkKey, checkType } from '../validate.js';
import type { MemoryLogicalUnit, PrOp } from './memory-logical-unit.js';

export interface MemoryPrDeviceOptions {
  /**
   * Time limit per call in ms, as KoffiPrDevice has: a call that does not answer in time
   * (an injected 'hang') rejects with IndeterminateError. Default: none.
   */
  timeoutMs?: number;
}

/**
 * The flags the model reports, as the targets it models do: LIO's REPORT CAPABILITIES
 * (core_scsi3_pri_report_capabilities: CRH, SIP_C, ATP_C, PTPL_C, ALLOW COMMANDS 001b;
 * PTPL_A depends on the last REGISTER's APTPL and is not modelled) and nvmet's RESCAP
 * (every type and IEKEY, no PTPL).
 */
const LIO_FLAGS: CapabilityFlags = Object.freeze({
  ptplCapable: true,
  allTargetPorts: true,
  specifyInitiatorPorts: true,
  compatibleReservationHandling: true,
  allowCommands: 1,
});
const NVMET_FLAGS: CapabilityFlags = Object.freeze({ ptplCapable: false, ignoreExistingKey: true });

/**
 * The PrDevice view of one initiator on a {@link MemoryLogicalUnit}. Same contract as
 * KoffiPrDevice (checked by test/contract): same argument checks, same error classes.
 */
export class MemoryPrDevice implements PrDevice, Scsi2Device {
  readonly id: string;
  readonly #lu: MemoryLogicalUnit;
  readonly #nexus: string;
  readonly #timeoutMs: number | undefined;
  #closed = false;
  /** capabilities() read the keys once: the device takes PR commands. */
  #answeredRead = false;

  /** @internal use MemoryLogicalUnit.initiator(). */
  constructor(lu: MemoryLogicalUnit, nexus: string, opts: MemoryPrDeviceOptions) {
    this.#lu = lu;
    this.#nexus = nexus;
    this.#timeoutMs = opts.timeoutMs;
    this.id = `${lu.id}/${nexus}`;
  }

  /** The initiator name on its logical unit. */
  get initiatorName(): string {
    return this.#nexus;
  }

  async #run<T>(op: PrOp, opts: PrCallOptions | undefined, apply: () => T): Promise<T> {
    const signals: AbortSignal[] = [];
    if (opts?.signal) signals.push(opts.signal);
    const limit = Math.min(this.#timeoutMs ?? Infinity, opts?.timeoutMs ?? Infinity);
    if (limit !== Infinity) signals.push(AbortSignal.timeout(limit));
    const signal =
      signals.length === 0 ? undefined : signals.length === 1 ? signals[0] : AbortSignal.any(signals);
    try {
      return await this.#lu.execute(this.#nexus, op, signal, apply);
    } catch (e) {
      if (isPrError(e)) throw e;
      // An abort before the call was made: the outcome is unknown to the caller's contract.
      throw new IndeterminateError(`${op}: aborted`, { op, device: this.id, cause: e });
    }
  }

  async register(oldKey: PrKey, newKey: PrKey, opts?: PrCallOptions): Promise<void> {
    checkKey(oldKey, 'old key', true);
    checkKey(newKey, 'new key', true);
    return this.#run('register', opts, () => this.#lu.doRegister(this.#nexus, oldKey, newKey, false));
  }

  async registerAndIgnore(newKey: PrKey, opts?: PrCallOptions): Promise<void> {
    checkKey(newKey, 'new key', true);
    return this.#run('register-ignore', opts, () => this.#lu.doRegister(this.#nexus, 0n, newKey, true));
  }

  async reserve(key: PrKey, type: ReservationType, opts?: PrCallOptions): Promise<void> {
    checkKey(key, 'key', false);
    checkType(type);
    return this.#run('reserve', opts, () => this.#lu.doReserve(this.#nexus, key, type));
  }

  async release(key: PrKey, type: ReservationType, opts?: PrCallOptions): Promise<void> {
    checkKey(key, 'key', false);
    checkType(type);
    return this.#run('release', opts, () => this.#lu.doRelease(this.#nexus, key, type));
  }

  async preempt(ownKey: PrKey, victimKey: PrKey, type: ReservationType, opts?: PrCallOptions): Promise<void> {
    checkKey(ownKey, 'own key', false);
    checkKey(victimKey, 'victim key', true);
    checkType(type);
    return this.#run('preempt', opts, () => this.#lu.doPreempt(this.#nexus, ownKey, victimKey, type, false));
  }

  async preemptAndAbort(
    ownKey: PrKey,
    victimKey: PrKey,
    type: ReservationType,
    opts?: PrCallOptions,
  ): Promise<void> {
    checkKey(ownKey, 'own key', false);
    checkKey(victimKey, 'victim key', true);
    checkType(type);
    return this.#run('preempt-abort', opts, () =>
      this.#lu.doPreempt(this.#nexus, ownKey, victimKey, type, true),
    );
  }

  async clear(key: PrKey, opts?: PrCallOptions): Promise<void> {
    checkKey(key, 'key', false);
    return this.#run('clear', opts, () => this.#lu.doClear(this.#nexus, key));
  }

  async readKeys(opts?: PrCallOptions): Promise<KeyList> {
    return this.#run('read-keys', opts, () => this.#lu.doReadKeys(this.#nexus));
  }

  async readReservation(opts?: PrCallOptions): Promise<Reservation> {
    return this.#run('read-reservation', opts, () => this.#lu.doReadReservation(this.#nexus));
  }

  /** Registrations with their initiator names (the LU's initiator() names) and the reservation. */
  async readFullStatus(opts?: PrCallOptions): Promise<FullStatus> {
    return this.#run('read-full-status', opts, () => this.#lu.doReadFullStatus(this.#nexus));
  }

  /** RESERVE(6) (scsi2.ts); UnsupportedError on an NVMe model. */
  async scsi2Reserve(opts?: PrCallOptions): Promise<void> {
    return this.#run('scsi2-reserve', opts, () => this.#lu.doScsi2Reserve(this.#nexus));
  }

  /** RELEASE(6): no effect from a non-holder. */
  async scsi2Release(opts?: PrCallOptions): Promise<void> {
    return this.#run('scsi2-release', opts, () => this.#lu.doScsi2Release(this.#nexus));
  }

  /** TEST UNIT READY: whether another initiator holds a SCSI-2 reservation. */
  async scsi2Status(opts?: PrCallOptions): Promise<Scsi2Status> {
    return this.#run('scsi2-status', opts, () => this.#lu.doScsi2Status(this.#nexus));
  }

  /** MHIOCTKOWN: a LU reset (drops any SCSI-2 reservation, keeps PR), then RESERVE(6). */
  async scsi2Takeover(opts?: PrCallOptions): Promise<void> {
    return this.#run('scsi2-takeover', opts, () => this.#lu.doScsi2Takeover(this.#nexus));
  }

  async capabilities(opts?: PrCallOptions): Promise<PrCapabilities> {
    // Like KoffiPrDevice: a device without PR support answers its first read with
    // UnsupportedError (read once per device).
    if (!this.#answeredRead) {
      await this.readKeys(opts);
      this.#answeredRead = true;
    }
    return {
      kind: this.#lu.kind,
      readMethod: 'model',
      types: this.#lu.types,
      source: 'device',
      flags: this.#lu.kind === 'scsi' ? LIO_FLAGS : NVMET_FLAGS,
      preemptAbort: this.#lu.preemptAbort,
    };
  }

  async close(): Promise<void> {
    // Never touches the reservation (S8).
    this.#closed = true;
  }

  /** Whether close() was called (tests of graceful shutdown). */
  get closed(): boolean {
    return this.#closed;
  }
}
