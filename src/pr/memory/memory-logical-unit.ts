/**
 * An in-memory model of one logical unit (SCSI LU or NVMe namespace) with Persistent
 * Reservations, seen through several initiators (I_T nexuses / NVMe hosts).
 *
 * It models what the Linux block layer's `<linux/pr.h>` ioctls observe on the two
 * kernel targets the contract suite runs against, and is proven equal to them by
 * test/contract (run on this model in every test run, and on the kernel in QEMU):
 *
 * - kind 'scsi' = SPC-4 5.13 as implemented by LIO (drivers/target/target_core_pr.c),
 *   read through sd.c (drivers/scsi/sd.c sd_pr_*);
 * - kind 'nvme' = NVMe 2.x reservations as implemented by nvmet
 *   (drivers/nvme/target/pr.c), issued through drivers/nvme/host/pr.c, whose
 *   REGISTER mapping (`old ? REPLACE : REGISTER`) cannot unregister or register-and-ignore
 *   an unknown key; KoffiPrDevice issues those as NVMe passthrough commands, so the
 *   port's semantics are the same on both kinds and this model implements the port.
 *
 * Observable differences by kind (each is asserted per kind by the contract suite). Where a
 * target deviates from SPC-4 or the NVMe base specification, the deviation is named (the
 * contract suite's LIO_QUIRKS / NVMET_QUIRKS, test/contract/topology.ts) and this model
 * follows the target:
 * - generation: both bump on register/replace, preempt, clear; never on reserve/release.
 *   NVMe also bumps on a REGISTER of an identical key. LIO quirk
 *   `unregister-keeps-generation`: a REGISTER / REGISTER AND IGNORE EXISTING KEY with new
 *   key 0 (unregister, or nothing from an unregistered nexus) leaves it alone, where SPC-4
 *   6.16.2 bumps it; nvmet bumps on unregister.
 * - readReservation with no reservation: sd.c returns generation 0, NVMe the real one.
 * - all-registrants types: SCSI reports holder key 0 (SPC-4 5.13.5.2); NVMe (host pr.c)
 *   reports the first registrant's key.
 * - REGISTER of a registered nexus with old key 0: SCSI conflict; NVMe success if the
 *   key is unchanged, else conflict.
 * - REGISTER AND IGNORE EXISTING KEY with new key 0 from an unregistered nexus: SCSI GOOD
 *   with nothing to do; NVMe (KoffiPrDevice sends Unregister with IEKEY) Reservation
 *   Conflict (nvmet_pr_unregister finds no registrant).
 * - RESERVE from an unregistered nexus while nothing is reserved: nvmet answers
 *   RESERVATION CONFLICT as the specs say; LIO quirk
 *   `reserve-unregistered-check-condition`: CHECK CONDITION (ret 2 through the ioctl:
 *   IndeterminateError here).
 * - RELEASE by the holder with another type: RESERVATION CONFLICT on both (quirk
 *   `release-wrong-type-conflict` of both; the specs say invalid field).
 * - PREEMPT with victim key 0 outside an all-registrants reservation: LIO refuses it as an
 *   invalid field, also with no reservation at all (SPC-4); nvmet refuses it from a
 *   non-holder (invalid field) and, with no reservation, conflicts (no registrant has key 0).
 * - PREEMPT sent by the holder of a single-holder reservation: nvmet only changes the
 *   type and removes nobody, whatever the victim key (quirk `holder-preempt-keeps-victim`,
 *   found by the kernel contract run on 7.2); LIO removes the victim as SPC-4 says. A
 *   fencer on nvmet must therefore not be the holder when it preempts a non-holder key
 *   (see src/fence).
 *
 * SCSI-2 reservations (kind 'scsi' only; scsi2.ts), as LIO implements SPC-2 and the
 * SPC-4 5.7.3 exceptions (target_core_pr.c target_scsi2_reservation_reserve/_release,
 * target_check_scsi2_reservation_conflict, target_scsi2_reservation_check):
 * - one nexus holds; another's RESERVE, TEST UNIT READY, reads, writes and every PR
 *   command get RESERVATION CONFLICT; RELEASE by a non-holder is GOOD and does nothing;
 * - while a SCSI-2 reservation is held, EVERY PERSISTENT RESERVE IN/OUT conflicts, the
 *   holder's included (SPC-2 5.5.1; target_scsi3_emulate_pr_in/_out);
 * - while any PR registration exists: RESERVE/RELEASE from the PR holder are GOOD and
 *   change nothing; from anyone else they conflict. LIO quirk
 *   (`scsi2-registrant-conflict`): SPC-4 5.7.3 b) says a registrant under a
 *   registrants-only or all-registrants reservation gets GOOD (no effect); LIO answers
 *   RESERVATION CONFLICT, as it checks the registrant's own reservation type, which only
 *   the reserving nexus has.
 * - a takeover (MHIOCTKOWN, scsi2Takeover) is a LOGICAL UNIT RESET, then RESERVE(6): the
 *   reset drops the SCSI-2 reservation (SPC-2 5.5.1; LIO core_tmr_lun_reset) and keeps every
 *   PR registration, the persistent reservation and the generation (SPC-4 5.13.1: only a
 *   power on, or a loss of them with APTPL off, removes them; LIO leaves them alone); the
 *   RESERVE then follows the rules above. The reset's unit attention and the commands it
 *   aborts on every nexus are not modelled (KoffiPrDevice sends RESERVE again on the
 *   former; the model has no commands in flight); {@link MemoryLogicalUnit.luResets} counts
 *   the resets.
 *
 * Capabilities (options `types` and `preemptAbort`), for targets short of SPC-4 / NVMe:
 * a RESERVE or PREEMPT with a type outside `types` is InvalidArgumentError (ILLEGAL
 * REQUEST / INVALID FIELD IN CDB, which sd.c turns into EINVAL); PREEMPT AND ABORT on a
 * unit without it is UnsupportedError and changes nothing. capabilities() reports both.
 *
 * The model has no timers of its own but one: fault injection (hangs, lost answers,
 * unsupported) is deterministic and driven by the test; an 'applied-late' fault applies
 * its command a chosen time after the caller gave up (or when the test says, with
 * {@link MemoryLogicalUnit.settleLate}).
 */
import {
  ConflictError,
  IndeterminateError,
  InvalidArgumentError,
  isPrError,
  NotSentError,
  UnsupportedError,
  type PrError,
} from '../errors.js';
import type { PrKey } from '../key.js';
import type { DeviceKind, FullStatus } from '../pr-device.js';
import { isAllRegistrantsType, RESERVATION_TYPES, type ReservationType } from '../reservation-type.js';
import { MemoryPrDevice, type MemoryPrDeviceOptions } from './memory-pr-device.js';

/** The PR operations, as named in faults and errors. */
export type PrOp =
  | 'register'
  | 'register-ignore'
  | 'reserve'
  | 'release'
  | 'preempt'
  | 'preempt-abort'
  | 'clear'
  | 'read-keys'
  | 'read-reservation'
  | 'read-full-status'
  | 'scsi2-reserve'
  | 'scsi2-release'
  | 'scsi2-status'
  | 'scsi2-takeover';

const SCSI2_OPS: ReadonlySet<PrOp> = new Set([
  'scsi2-reserve',
  'scsi2-release',
  'scsi2-status',
  'scsi2-takeover',
]);

/**
 * A fault armed on the LU. Matching calls (by op and initiator) consume one `times`.
 * - 'not-sent': the call fails with NotSentError; nothing is applied.
 * - 'lost-before': IndeterminateError; nothing applied (a time-out before the device saw it).
 * - 'lost-after': the call IS applied, then IndeterminateError (the answer was lost).
 * - 'hang': the call does not settle until {@link MemoryLogicalUnit.releaseHung} (then it is
 *   applied and answers) or the caller's signal/time limit fires (IndeterminateError, not applied).
 * - 'applied-late': a real device's hung command: the call does not settle until the
 *   caller's signal/time limit fires (IndeterminateError), and the command is THEN applied
 *   to the LU, `lateMs` after the caller gave up (Infinity: only by
 *   {@link MemoryLogicalUnit.settleLate}). What it did is logged in
 *   {@link MemoryLogicalUnit.lateApplied}. Released by releaseHung before the limit, it is
 *   applied and answers, as 'hang'.
 * - 'unsupported': UnsupportedError (e.g. a PR-incapable path).
 */
export interface Fault {
  kind: 'not-sent' | 'lost-before' | 'lost-after' | 'hang' | 'applied-late' | 'unsupported';
  op?: PrOp | 'any-out' | 'any';
  initiator?: string;
  /** How many calls it affects; default 1. Infinity for a permanent fault. */
  times?: number;
  /** 'applied-late': ms from the caller's time-out to the command's effect; default 0. */
  lateMs?: number;
}

/** A command of an 'applied-late' fault that reached the LU after its caller gave up. */
export interface LateApplied {
  initiator: string;
  op: PrOp;
  /** 'applied', or the error class kind the device would have answered with (not applied). */
  result: 'applied' | PrError['kind'] | 'error';
  at: number;
}

export interface MemoryLogicalUnitOptions {
  /** Identity shown in errors and device ids (e.g. a WWID). */
  id?: string;
  kind?: Exclude<DeviceKind, 'memory'>;
  /** false models a device without PR support: every PR call is UnsupportedError. */
  supported?: boolean;
  /** The reservation types the unit implements (its type mask / RESCAP). Default: all six. */
  types?: readonly ReservationType[];
  /** false models a target without PREEMPT AND ABORT: it answers UnsupportedError. Default true. */
  preemptAbort?: boolean;
}

interface Holder {
  type: ReservationType;
  /** The holding nexus; for all-registrants types the nexus that reserved (any registrant holds). */
  nexus: string;
}

/** A snapshot of the LU's PR state, for tests and the demo. */
export interface LogicalUnitState {
  generation: number;
  registrations: { initiator: string; key: PrKey }[];
  reservation: { type: ReservationType; holder: string | null } | null;
}

const OUT_OPS: ReadonlySet<PrOp> = new Set([
  'register',
  'register-ignore',
  'reserve',
  'release',
  'preempt',
  'preempt-abort',
  'clear',
]);

interface Pending {
  resolve: () => void;
  reject: (e: unknown) => void;
}

interface Late {
  nexus: string;
  op: PrOp;
  apply: () => unknown;
  timer: NodeJS.Timeout | undefined;
}

export class MemoryLogicalUnit {
  readonly id: string;
  readonly kind: 'scsi' | 'nvme';
  #supported: boolean;
  /** The types this unit implements, and whether it has PREEMPT AND ABORT (options). */
  readonly types: readonly ReservationType[];
  readonly preemptAbort: boolean;
  #generation = 0;
  /** Registration per nexus, in registration order (the order the targets report keys in). */
  readonly #regs = new Map<string, PrKey>();
  #holder: Holder | null = null;
  /** The nexus holding a SCSI-2 reservation (RESERVE(6)), if any. */
  #scsi2Holder: string | null = null;
  readonly #faults: (Fault & { left: number })[] = [];
  readonly #hung = new Set<Pending>();
  readonly #late = new Set<Late>();
  readonly #lateApplied: LateApplied[] = [];
  readonly #devices = new Map<string, MemoryPrDevice>();
  /** LOGICAL UNIT RESETs received (takeovers), for tests. */
  #luResets = 0;
  /** Nexuses whose outstanding commands were aborted by PREEMPT AND ABORT (count, for tests). */
  readonly #aborted = new Map<string, number>();

  constructor(opts: MemoryLogicalUnitOptions = {}) {
    this.kind = opts.kind ?? 'scsi';
    this.id = opts.id ?? `memory-${this.kind}`;
    this.#supported = opts.supported ?? true;
    this.types = RESERVATION_TYPES.filter((t) => (opts.types ?? RESERVATION_TYPES).includes(t));
    this.preemptAbort = opts.preemptAbort ?? true;
  }

  /** A type outside the unit's mask: ILLEGAL REQUEST / INVALID FIELD IN CDB (EINVAL via sd.c). */
  #checkTypeSupported(op: PrOp, nexus: string, type: ReservationType): void {
    if (!this.types.includes(type))
      throw this.#invalid(op, nexus, `reservation type ${type} not implemented`);
  }

  /**
   * The PrDevice view of one initiator; the same name always means the same nexus.
   * Without options the same view object is returned; with options (a time limit) a new
   * view of that nexus is made.
   */
  initiator(name: string, opts?: MemoryPrDeviceOptions): MemoryPrDevice {
    if (opts) return new MemoryPrDevice(this, name, opts);
    let d = this.#devices.get(name);
    if (!d) {
      d = new MemoryPrDevice(this, name, {});
      this.#devices.set(name, d);
    }
    return d;
  }

  /** Arms a fault (see {@link Fault}). */
  inject(fault: Fault): void {
    this.#faults.push({ ...fault, left: fault.times ?? 1 });
  }

  /** Removes all armed faults (hung calls stay hung until released). */
  clearFaults(): void {
    this.#faults.length = 0;
  }

  /** Lets every hung call proceed: each is applied now and answers. Returns how many. */
  releaseHung(): number {
    const n = this.#hung.size;
    for (const p of [...this.#hung]) {
      this.#hung.delete(p);
      p.resolve();
    }
    return n;
  }

  /** Number of calls currently hung. */
  get hungCalls(): number {
    return this.#hung.size;
  }

  /** Commands whose callers gave up ('applied-late') and that are not applied yet. */
  get lateCalls(): number {
    return this.#late.size;
  }

  /** Applies every pending late command now, in the order they were sent. Returns how many. */
  settleLate(): number {
    const all = [...this.#late];
    for (const l of all) this.#applyLate(l);
    return all.length;
  }

  /** What each late command did when it reached the LU, oldest first. */
  get lateApplied(): readonly LateApplied[] {
    return this.#lateApplied;
  }

  /**
   * A power cycle (or target restart) with APTPL off: every registration and the
   * reservation are gone and the PR generation starts again from 0 (SPC-4 "PRgeneration
   * ... set to zero as part of the processing of a power on"; NVMe: a controller-level
   * reset without persistence through power loss).
   */
  powerCycle(): void {
    this.#regs.clear();
    this.#holder = null;
    this.#scsi2Holder = null;
    this.#generation = 0;
  }

  /** The initiator holding a SCSI-2 reservation, or null. */
  get scsi2Holder(): string | null {
    return this.#scsi2Holder;
  }

  /** How many LOGICAL UNIT RESETs the unit received (each takeover sends one). */
  get luResets(): number {
    return this.#luResets;
  }

  setSupported(supported: boolean): void {
    this.#supported = supported;
  }

  /** How many times the initiator's outstanding I/O was aborted by PREEMPT AND ABORT. */
  abortCount(initiator: string): number {
    return this.#aborted.get(initiator) ?? 0;
  }

  state(): LogicalUnitState {
    return {
      generation: this.#generation,
      registrations: [...this.#regs].map(([initiator, key]) => ({ initiator, key })),
      reservation: this.#holder
        ? {
            type: this.#holder.type,
            holder: isAllRegistrantsType(this.#holder.type) ? null : this.#holder.nexus,
          }
        : null,
    };
  }

  // ---------------------------------------------------------------- data path

  /**
   * Whether a write from this initiator is allowed now (SPC-4 table 5.13.1 / NVMe
   * "Command Behavior in the Presence of a Reservation"; nvmet_pr_check_cmd_access).
   */
  canWrite(initiator: string): boolean {
    return this.#access(initiator, 'write');
  }

  /** Whether a read from this initiator is allowed now. */
  canRead(initiator: string): boolean {
    return this.#access(initiator, 'read');
  }

  /** One write: 'refused' is what a kernel reports as EBADE (reservation conflict). */
  write(initiator: string): 'ok' | 'refused' {
    return this.canWrite(initiator) ? 'ok' : 'refused';
  }

  read(initiator: string): 'ok' | 'refused' {
    return this.canRead(initiator) ? 'ok' : 'refused';
  }

  #access(nexus: string, what: 'read' | 'write'): boolean {
    // SPC-2 5.5.1: a SCSI-2 reservation refuses media access from every other initiator.
    if (this.#scsi2Holder !== null && this.#scsi2Holder !== nexus) return false;
    const h = this.#holder;
    if (!h) return true;
    const registered = this.#regs.has(nexus);
    if (this.#isHolder(nexus)) return true;
    switch (h.type) {
      case 'write-exclusive':
        return what === 'read';
      case 'exclusive-access':
        return false;
      case 'write-exclusive-reg-only':
      case 'write-exclusive-all-regs':
        return what === 'read' || registered;
      case 'exclusive-access-reg-only':
      case 'exclusive-access-all-regs':
        return registered;
    }
  }

  #isHolder(nexus: string): boolean {
    const h = this.#holder;
    if (!h) return false;
    if (isAllRegistrantsType(h.type)) return this.#regs.has(nexus);
    return h.nexus === nexus;
  }

  // ---------------------------------------------------------------- PR commands

  /**
   * Runs one PR command from `nexus` through the fault machinery. Used by MemoryPrDevice.
   * @internal
   */
  async execute<T>(nexus: string, op: PrOp, signal: AbortSignal | undefined, apply: () => T): Promise<T> {
    const ctx = { op, device: `${this.id}/${nexus}` };
    if (!this.#supported)
      throw new UnsupportedError(`${op}: device does not support Persistent Reservations`, ctx);
    signal?.throwIfAborted?.();
    if (SCSI2_OPS.has(op) && this.kind !== 'scsi')
      throw new UnsupportedError(`${op}: SCSI-2 reservations are SCSI only; this is an NVMe namespace`, ctx);
    const fault = this.#takeFault(nexus, op);
    if (fault) {
      switch (fault.kind) {
        case 'not-sent':
          throw new NotSentError(`${op}: injected fault: not sent`, ctx);
        case 'unsupported':
          throw new UnsupportedError(`${op}: injected fault: unsupported`, ctx);
        case 'lost-before':
          throw new IndeterminateError(`${op}: injected fault: lost before the device`, ctx);
        case 'lost-after':
          apply();
          throw new IndeterminateError(`${op}: injected fault: applied, answer lost`, ctx);
        case 'hang':
          await this.#hang(signal, ctx);
          break;
        case 'applied-late':
          await this.#hang(signal, ctx, () => this.#scheduleLate(nexus, op, apply, fault.lateMs ?? 0));
          break;
      }
    }
    return apply();
  }

  /** Hangs until released (resolves) or until the signal fires (IndeterminateError, then `onGiveUp`). */
  #hang(
    signal: AbortSignal | undefined,
    ctx: { op: string; device: string },
    onGiveUp?: () => void,
  ): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const p: Pending = { resolve, reject };
      this.#hung.add(p);
      signal?.addEventListener(
        'abort',
        () => {
          if (this.#hung.delete(p)) {
            onGiveUp?.();
            reject(
              new IndeterminateError(`${ctx.op}: no answer before the time limit`, {
                ...ctx,
                cause: signal.reason,
              }),
            );
          }
        },
        { once: true },
      );
    });
  }

  #scheduleLate(nexus: string, op: PrOp, apply: () => unknown, lateMs: number): void {
    const l: Late = { nexus, op, apply, timer: undefined };
    this.#late.add(l);
    if (Number.isFinite(lateMs)) {
      l.timer = setTimeout(() => this.#applyLate(l), Math.max(0, lateMs));
      l.timer.unref?.();
    }
  }

  #applyLate(l: Late): void {
    if (!this.#late.delete(l)) return;
    clearTimeout(l.timer);
    let result: LateApplied['result'] = 'applied';
    try {
      if (!this.#supported) throw new UnsupportedError(`${l.op}: device does not support PR`);
      l.apply();
    } catch (e) {
      result = isPrError(e) ? e.kind : 'error';
    }
    this.#lateApplied.push({ initiator: l.nexus, op: l.op, result, at: Date.now() });
  }

  #takeFault(nexus: string, op: PrOp): Fault | undefined {
    const i = this.#faults.findIndex(
      (f) =>
        (f.initiator === undefined || f.initiator === nexus) &&
        (f.op === undefined || f.op === 'any' || f.op === op || (f.op === 'any-out' && OUT_OPS.has(op))),
    );
    if (i < 0) return undefined;
    const f = this.#faults[i]!;
    f.left -= 1;
    if (f.left <= 0) this.#faults.splice(i, 1);
    return f;
  }

  #conflict(op: PrOp, nexus: string, why: string): PrError {
    return new ConflictError(`${op}: reservation conflict (${why})`, { op, device: `${this.id}/${nexus}` });
  }

  #invalid(op: PrOp, nexus: string, why: string): PrError {
    return new InvalidArgumentError(`${op}: rejected by the device (${why})`, {
      op,
      device: `${this.id}/${nexus}`,
    });
  }

  /**
   * LIO target_scsi3_emulate_pr_in/_out (SPC-2 5.5.1): while any SCSI-2 reservation is
   * held, every PERSISTENT RESERVE IN and OUT conflicts, whoever sends it.
   */
  #scsi2Blocks(op: PrOp, nexus: string): void {
    if (this.#scsi2Holder !== null) throw this.#conflict(op, nexus, 'a SCSI-2 reservation is held');
  }

  /**
   * LIO target_check_scsi2_reservation_conflict (SPC-4 5.7.3) for a RESERVE(6) or
   * RELEASE(6) while PR registrations exist: 'no-op' (GOOD, nothing changes) for the PR
   * holder, 'conflict' for anyone else; 'proceed' (SPC-2 rules) with no registration.
   */
  #scsi2UnderPr(nexus: string): 'no-op' | 'conflict' | 'proceed' {
    if (this.#regs.has(nexus)) {
      // The reserving nexus only: LIO looks at pr_res_holder / pr_res_type of the
      // sender's own registration (quirk scsi2-registrant-conflict, see the file doc).
      return this.#holder?.nexus === nexus ? 'no-op' : 'conflict';
    }
    return this.#regs.size === 0 ? 'proceed' : 'conflict';
  }

  /** RESERVE(6). @internal */
  doScsi2Reserve(nexus: string): void {
    if (this.#scsi2Holder !== null && this.#scsi2Holder !== nexus)
      throw this.#conflict('scsi2-reserve', nexus, 'reserved by another initiator');
    const pr = this.#scsi2UnderPr(nexus);
    if (pr === 'no-op') return;
    if (pr === 'conflict')
      throw this.#conflict('scsi2-reserve', nexus, 'persistent reservation registrations exist');
    this.#scsi2Holder = nexus;
  }

  /** RELEASE(6): GOOD and no effect from a non-holder. @internal */
  doScsi2Release(nexus: string): void {
    const pr = this.#scsi2UnderPr(nexus);
    if (pr === 'no-op') return;
    if (pr === 'conflict')
      throw this.#conflict('scsi2-release', nexus, 'persistent reservation registrations exist');
    if (this.#scsi2Holder === nexus) this.#scsi2Holder = null;
  }

  /**
   * MHIOCTKOWN: a LOGICAL UNIT RESET (drops the SCSI-2 reservation, keeps PR registrations,
   * the persistent reservation and the generation), then RESERVE(6). @internal
   */
  doScsi2Takeover(nexus: string): void {
    this.#luResets += 1;
    this.#scsi2Holder = null;
    try {
      this.doScsi2Reserve(nexus);
    } catch (e) {
      if (e instanceof ConflictError)
        throw this.#conflict(
          'scsi2-takeover',
          nexus,
          'RESERVE(6) after the LU reset: persistent reservation registrations exist',
        );
      throw e;
    }
  }

  /** TEST UNIT READY (allowed under every persistent reservation type: SPC-4 table 55). @internal */
  doScsi2Status(nexus: string): 'reserved-by-other' | 'not-reserved-by-other' {
    return this.#scsi2Holder !== null && this.#scsi2Holder !== nexus
      ? 'reserved-by-other'
      : 'not-reserved-by-other';
  }

  /** REGISTER / REGISTER AND IGNORE EXISTING KEY as issued by the kernel's pr_register. @internal */
  doRegister(nexus: string, oldKey: PrKey, newKey: PrKey, ignore: boolean): void {
    const op: PrOp = ignore ? 'register-ignore' : 'register';
    this.#scsi2Blocks(op, nexus);
    const current = this.#regs.get(nexus);
    if (this.kind === 'nvme' && !ignore && oldKey === 0n && current !== undefined) {
      // nvmet_pr_register: REGISTER of a registered host succeeds (and bumps the
      // generation) when the key is unchanged, else conflicts.
      if (current !== newKey) throw this.#conflict(op, nexus, 'already registered with another key');
      this.#generation += 1;
      return;
    }
    // SPC-4 5.13.7 / LIO core_scsi3_emulate_pro_register; NVMe Register / Replace /
    // Unregister actions as KoffiPrDevice issues them (see its NVMe notes).
    if (current === undefined) {
      if (!ignore && oldKey !== 0n) throw this.#conflict(op, nexus, 'not registered, old key not 0');
      if (newKey === 0n && ignore && this.kind === 'nvme') {
        // Unregister with IEKEY (KoffiPrDevice's NVMe register-and-ignore 0): nothing to
        // unregister is a Reservation Conflict to nvmet_pr_unregister.
        throw this.#conflict(op, nexus, 'not registered: nothing to unregister');
      }
      // SPC-4: GOOD with nothing to do. LIO leaves the generation alone (quirk
      // unregister-keeps-generation); KoffiPrDevice sends nothing for an NVMe register(0, 0).
      if (newKey === 0n) return;
      this.#regs.set(nexus, newKey);
      this.#generation += 1;
      return;
    }
    if (!ignore && current !== oldKey) throw this.#conflict(op, nexus, 'old key does not match');
    if (newKey === 0n) {
      this.#unregister(nexus);
      // LIO does not bump PRgeneration for an unregister (quirk unregister-keeps-generation;
      // SPC-4 6.16.2 does); nvmet does.
      if (this.kind === 'nvme') this.#generation += 1;
      return;
    }
    this.#regs.set(nexus, newKey);
    this.#generation += 1;
  }

  #unregister(nexus: string): void {
    this.#regs.delete(nexus);
    const h = this.#holder;
    if (!h) return;
    if (isAllRegistrantsType(h.type)) {
      // The reservation lasts while any registrant is left (SPC-4 5.13.11.2.4).
      if (this.#regs.size === 0) this.#holder = null;
      else if (h.nexus === nexus) h.nexus = this.#regs.keys().next().value as string;
    } else if (h.nexus === nexus) {
      this.#holder = null;
    }
  }

  /** RESERVE / Reservation Acquire (acquire). @internal */
  doReserve(nexus: string, key: PrKey, type: ReservationType): void {
    this.#scsi2Blocks('reserve', nexus);
    this.#checkTypeSupported('reserve', nexus, type);
    const current = this.#regs.get(nexus);
    if (current === undefined || current !== key) {
      if (this.kind === 'scsi' && current === undefined && !this.#holder) {
        // LIO answers CHECK CONDITION here (see kernel-lab README), not a conflict; the
        // ioctl shows only ret 2 (PR_STS_IOERR on 6.12+), which is indeterminate
        // (classify.ts). Nothing is applied.
        throw new IndeterminateError('reserve: device error (CHECK CONDITION: not registered)', {
          op: 'reserve',
          device: `${this.id}/${nexus}`,
        });
      }
      throw this.#conflict('reserve', nexus, current === undefined ? 'not registered' : 'key does not match');
    }
    const h = this.#holder;
    if (!h) {
      this.#holder = { type, nexus };
      return;
    }
    if (this.#isHolder(nexus)) {
      if (h.type === type) return;
      throw this.#conflict('reserve', nexus, `already reserved as ${h.type}`);
    }
    throw this.#conflict('reserve', nexus, 'reserved by another initiator');
  }

  /** RELEASE. @internal */
  doRelease(nexus: string, key: PrKey, type: ReservationType): void {
    this.#scsi2Blocks('release', nexus);
    const current = this.#regs.get(nexus);
    if (current === undefined || current !== key) {
      throw this.#conflict('release', nexus, current === undefined ? 'not registered' : 'key does not match');
    }
    const h = this.#holder;
    if (!h || !this.#isHolder(nexus)) return; // not the holder: nothing to release, success
    if (h.type !== type) throw this.#conflict('release', nexus, 'type does not match');
    this.#holder = null;
  }

  /** CLEAR. @internal */
  doClear(nexus: string, key: PrKey): void {
    this.#scsi2Blocks('clear', nexus);
    const current = this.#regs.get(nexus);
    if (current === undefined || current !== key) {
      throw this.#conflict('clear', nexus, current === undefined ? 'not registered' : 'key does not match');
    }
    this.#regs.clear();
    this.#holder = null;
    this.#generation += 1;
  }

  /** PREEMPT / PREEMPT AND ABORT (SPC-4 5.13.11.2.6; nvmet_pr_preempt). @internal */
  doPreempt(nexus: string, ownKey: PrKey, victimKey: PrKey, type: ReservationType, abort: boolean): void {
    const op: PrOp = abort ? 'preempt-abort' : 'preempt';
    this.#scsi2Blocks(op, nexus);
    if (abort && !this.preemptAbort)
      throw new UnsupportedError(`${op}: device does not implement PREEMPT AND ABORT`, {
        op,
        device: `${this.id}/${nexus}`,
      });
    this.#checkTypeSupported(op, nexus, type);
    const current = this.#regs.get(nexus);
    if (current === undefined || current !== ownKey) {
      throw this.#conflict(op, nexus, current === undefined ? 'not registered' : 'own key does not match');
    }
    const h = this.#holder;
    if (this.kind === 'scsi' && victimKey === 0n && !(h && isAllRegistrantsType(h.type))) {
      // SPC-4 Preempting: a SERVICE ACTION RESERVATION KEY of 0 only under an all-registrants
      // reservation, else ILLEGAL REQUEST / INVALID FIELD IN PARAMETER LIST; LIO checks it
      // before anything else, also with no reservation (core_scsi3_pro_preempt).
      throw this.#invalid(op, nexus, 'victim key 0 while not all-registrants');
    }
    const removeByKey = (exceptSelf: boolean): number => {
      let n = 0;
      for (const [other, k] of [...this.#regs]) {
        if (k !== victimKey || (exceptSelf && other === nexus)) continue;
        this.#unregister(other);
        if (abort) this.#aborted.set(other, (this.#aborted.get(other) ?? 0) + 1);
        n += 1;
      }
      return n;
    };
    if (!h) {
      if (removeByKey(this.kind === 'scsi') === 0)
        throw this.#conflict(op, nexus, 'victim key not registered');
    } else if (isAllRegistrantsType(h.type)) {
      if (victimKey === 0n) {
        for (const other of [...this.#regs.keys()]) {
          if (other === nexus) continue;
          this.#regs.delete(other);
          if (abort) this.#aborted.set(other, (this.#aborted.get(other) ?? 0) + 1);
        }
        this.#holder = { type, nexus };
      } else if (removeByKey(this.kind === 'scsi') === 0) {
        throw this.#conflict(op, nexus, 'victim key not registered');
      }
    } else {
      const holderKey = this.#regs.get(h.nexus);
      if (h.nexus === nexus && (victimKey === ownKey || this.kind === 'nvme')) {
        // The holder preempting itself changes the type. nvmet (nvmet_pr_preempt) takes
        // this branch for ANY key when the sender holds the reservation: the victim keeps
        // its registration, a key that is not registered is no conflict, and key 0 is no
        // error (quirk holder-preempt-keeps-victim).
        h.type = type;
      } else if (holderKey !== undefined && victimKey === holderKey) {
        this.#holder = { type, nexus };
        removeByKey(true);
      } else if (victimKey === 0n) {
        throw this.#invalid(op, nexus, 'victim key 0 while not all-registrants');
      } else if (removeByKey(this.kind === 'scsi') === 0) {
        throw this.#conflict(op, nexus, 'victim key not registered');
      }
    }
    this.#generation += 1;
  }

  /** Registered keys as READ KEYS / Reservation Report return them. @internal */
  doReadKeys(nexus: string): { generation: number; keys: PrKey[] } {
    this.#scsi2Blocks('read-keys', nexus);
    return { generation: this.#generation, keys: [...this.#regs.values()] };
  }

  /**
   * READ FULL STATUS / Reservation Report: every registration with its initiator's name,
   * in registration order; the holder flagged (every registrant under an all-registrants
   * type, SPC-4 6.16.5 R_HOLDER); the reservation as doReadReservation reports it.
   * @internal
   */
  doReadFullStatus(nexus: string): FullStatus {
    this.#scsi2Blocks('read-full-status', nexus);
    const r = this.doReadReservation(nexus);
    return {
      generation: this.#generation,
      reservation: r.type === null || r.key === null ? null : { key: r.key, type: r.type },
      registrants: [...this.#regs].map(([initiator, key]) => ({
        key,
        holder: this.#isHolder(initiator),
        initiator: { transport: 'memory', id: initiator },
      })),
    };
  }

  /** The reservation as sd.c / nvme host pr.c return it. @internal */
  doReadReservation(nexus: string): { generation: number; key: PrKey | null; type: ReservationType | null } {
    this.#scsi2Blocks('read-reservation', nexus);
    const h = this.#holder;
    if (!h) return { generation: this.kind === 'scsi' ? 0 : this.#generation, key: null, type: null };
    if (isAllRegistrantsType(h.type)) {
      const first = this.#regs.values().next().value as PrKey;
      return { generation: this.#generation, key: this.kind === 'scsi' ? 0n : first, type: h.type };
    }
    return { generation: this.#generation, key: this.#regs.get(h.nexus) ?? null, type: h.type };
  }
}
