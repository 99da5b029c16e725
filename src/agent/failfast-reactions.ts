/**
 * What the node does when its own key is gone from a device, whoever found it (the
 * failfast probe, failfast.ts, or a reconcile: both record it in the host fence memory,
 * fence-memory.ts, whose listener this is): the loss is shown (metrics, the AccessLost
 * phase and condition of the own NodeFence, an event), and the configured action is
 * taken: report, taint the Node (the taint is removed once every lost device was
 * forgiven by an unfence and carries the key again), or reboot (once).
 *
 * The API writes are best effort and never awaited by the detection (a partitioned node
 * cannot make them): one pass at a time, retried every probe round and resync until they
 * land. After a restart the losses the host remembers are shown again and the taint is
 * kept; there is never a second reboot.
 */
import type { Logger } from 'pino';
import type { RestClient } from '../kube/rest-client.js';
import { describeError } from '../obs/logger.js';
import type { AgentMetrics } from '../obs/metrics.js';
import { formatKey, type PrKey } from '../pr/key.js';
import type { DeviceRegistry } from './device-registry.js';
import { setAccessLostTaint, sysrqReboot, type FailfastAction } from './failfast.js';
import type { FenceMemory, KeyLoss } from './fence-memory.js';
import type { StatusWriter } from './status-writer.js';

export interface FailfastReactionsOptions {
  node: string;
  key: PrKey;
  memory: FenceMemory;
  /** The open devices (a loss is reported with the PV of its device). */
  devices: Pick<DeviceRegistry, 'entries'>;
  writer: Pick<StatusWriter, 'accessLostEvent'>;
  /** For the taint of action `taint`. */
  rest: RestClient;
  log: Logger;
  metrics?: AgentMetrics | undefined;
  action: FailfastAction;
  /** What action 'reboot' calls (default: sysrq sync, remount read-only, reboot). */
  rebootTrigger?: ((reason: string) => void | Promise<void>) | undefined;
  /** Writes the own NodeFence status; resolves false if it was not written. */
  writeOwnStatus: () => Promise<boolean>;
  /** Aborted when the agent stops: no more API writes. */
  signal: AbortSignal;
}

export class FailfastReactions {
  readonly #o: FailfastReactionsOptions;
  /** Devices (identity) where the own key is gone, until an unfence forgives the loss. */
  readonly #lost = new Map<string, { pv: string | undefined; loss: KeyLoss }>();
  /** Forgiven devices where the key is not registered again yet (the taint stays meanwhile). */
  readonly #reRegistering = new Set<string>();
  /** Best-effort API writes of the failfast, retried every probe round and resync. */
  readonly #pendingEvents: string[] = [];
  #ownStatusDirty = false;
  #taintWanted: boolean | undefined;
  #taintApplied: boolean | undefined;
  #apiRetrying = false;
  #rebootTriggered = false;
  #unlisten: (() => void) | undefined;

  constructor(o: FailfastReactionsOptions) {
    this.#o = o;
  }

  /** Takes up the losses the host memory kept across a restart, and listens for new ones. */
  start(): void {
    const memory = this.#o.memory;
    for (const [identity, loss] of Object.entries(memory.losses))
      this.#lost.set(identity, { pv: this.#pvOfIdentity(identity), loss });
    this.#o.metrics?.accessLost(this.#lost.size);
    // After a restart (a reboot): shown again, and the taint kept; never a second reboot.
    if (this.#lost.size > 0) {
      this.#ownStatusDirty = true;
      if (this.#o.action === 'taint') this.#taintWanted = true;
      void this.#retryApiWrites();
    }
    this.#unlisten = memory.listen({
      lost: (identity, loss) => this.#onAccessLost(identity, loss),
      forgiven: (identity) => {
        this.#lost.delete(identity);
        this.#reRegistering.add(identity);
        this.#accessChanged();
      },
      registered: (identity) => {
        if (this.#reRegistering.delete(identity)) this.#accessChanged();
      },
    });
  }

  stop(): void {
    this.#unlisten?.();
  }

  /** The AccessLost message naming the devices and the key holding each now; undefined: none lost. */
  accessLostMessage(): string | undefined {
    if (this.#lost.size === 0) return undefined;
    const parts = [...this.#lost].map(
      ([identity, { pv, loss }]) =>
        `${pv ?? '?'} (${identity}, reservation held by ${loss.holder ?? 'unknown'})`,
    );
    return `own key ${formatKey(this.#o.key)} removed by another initiator from ${parts.sort().join(', ')}; registers there again only after prfence unfence`;
  }

  /** Retries the API writes that have not landed yet, if any (each probe round and resync). */
  retryPendingWrites(): void {
    if (this.#apiWritesPending()) void this.#retryApiWrites();
  }

  #pvOfIdentity(identity: string): string | undefined {
    for (const e of this.#o.devices.entries()) if (e.identity === identity) return e.pv;
    return undefined;
  }

  /**
   * The own key is gone from a device (recorded in the host memory already): metrics,
   * best-effort API writes (never awaited: a partitioned node cannot make them), then
   * the local action.
   */
  #onAccessLost(identity: string, loss: KeyLoss): void {
    const { action, log, metrics } = this.#o;
    const pv = this.#pvOfIdentity(identity);
    this.#lost.set(identity, { pv, loss });
    this.#reRegistering.delete(identity);
    metrics?.accessLost(this.#lost.size);
    metrics?.failfastDetection(action);
    const note = `own key ${loss.key} of ${this.#o.node} gone from ${pv ?? '?'} (${identity}); reservation held by ${loss.holder ?? 'unknown'}; failfast action ${action}`;
    log.error({ pv, device: identity, key: loss.key, holder: loss.holder, action }, 'access lost: ' + note);
    this.#pendingEvents.push(note);
    this.#ownStatusDirty = true;
    if (action === 'taint') this.#taintWanted = true;
    void this.#retryApiWrites();
    if (action === 'reboot' && !this.#rebootTriggered) {
      this.#rebootTriggered = true;
      const trigger = this.#o.rebootTrigger ?? (() => sysrqReboot());
      log.fatal({ pv, device: identity }, 'failfast: rebooting this node (sysrq)');
      try {
        void Promise.resolve(trigger(note)).catch((e: unknown) =>
          log.fatal({ err: describeError(e) }, 'failfast reboot failed'),
        );
      } catch (e) {
        log.fatal({ err: describeError(e) }, 'failfast reboot failed');
      }
    }
  }

  /** A loss was forgiven or the key registered again: the phase, and the taint once all are back. */
  #accessChanged(): void {
    this.#o.metrics?.accessLost(this.#lost.size);
    this.#ownStatusDirty = true;
    if (this.#lost.size === 0 && this.#reRegistering.size === 0 && this.#taintWanted)
      this.#taintWanted = false;
    void this.#retryApiWrites();
  }

  #apiWritesPending(): boolean {
    return (
      this.#ownStatusDirty ||
      this.#pendingEvents.length > 0 ||
      (this.#taintWanted !== undefined && this.#taintWanted !== this.#taintApplied)
    );
  }

  /** The failfast's API writes (status, event, taint), one pass at a time, retried until they land. */
  async #retryApiWrites(): Promise<void> {
    if (this.#apiRetrying || this.#o.signal.aborted) return;
    this.#apiRetrying = true;
    const log = this.#o.log;
    try {
      if (this.#ownStatusDirty) {
        this.#ownStatusDirty = false;
        if (!(await this.#o.writeOwnStatus())) this.#ownStatusDirty = true;
      }
      while (
        this.#pendingEvents.length > 0 &&
        (await this.#o.writer.accessLostEvent(this.#pendingEvents[0]!))
      )
        this.#pendingEvents.shift();
      const want = this.#taintWanted;
      if (want !== undefined && want !== this.#taintApplied) {
        try {
          await setAccessLostTaint(this.#o.rest, this.#o.node, want);
          this.#taintApplied = want;
          log.warn(
            { taint: 'prfence.io/access-lost:NoExecute' },
            want ? 'node tainted' : 'node taint removed',
          );
        } catch (e) {
          log.warn({ err: describeError(e) }, 'access-lost taint not changed yet; retried');
        }
      }
    } finally {
      this.#apiRetrying = false;
    }
  }
}
