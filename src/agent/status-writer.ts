/**
 * Every API write of the agent about volumes and nodes, under four field managers so that
 * no write ever drops a field another write owns:
 * - `prfence-agent/<node>`: this node's registrants entry and, while it is the actor, the
 *   shared fields (holder, type, generation, conditions, ...); its own NodeFence status;
 *   the Fenced mark on a peer it fenced;
 * - `prfence-agent/<node>/intent`: the fence intent (fenceIntent), written before the
 *   PREEMPT in one request, not forced, so that another node's open intent refuses it
 *   (intent first: dm-log-userspace logs, then acts);
 * - `prfence-agent/<node>/fence`: the fence record after the read-back (lastFence,
 *   fencedKeys, the fenced node's registrant entry gone, the intent removed), one JSON
 *   patch on a read (not an apply: it removes fields other managers own);
 * - `prfence-agent/<node>/proof`: its proofs of isolation on a fenced peer's NodeFence.
 * Nothing here decides; failures throw (KubeApiError or transport errors) and the caller
 * retries with backoff.
 */
import type { Logger } from 'pino';
import {
  API_VERSION,
  GROUP,
  NODE_FENCE,
  VERSION,
  VOLUME_RESERVATION,
  type Condition,
  type FenceIntent,
  type FencedKey,
  type IsolationProof,
  type LastFence,
  type NodeFence,
  type NodeFenceStatus,
  type NodePhase,
  type VolumeReservation,
  type VolumeReservationStatus,
} from '../crd/types.js';
import { intentVictims } from '../crd/fence-intent.js';
import { EventRecorder } from '../kube/events.js';
import { clusterObjectPath, KubeApiError, type RestClient } from '../kube/rest-client.js';
import { formatKey, type PrKey } from '../pr/key.js';
import { Coalescer } from './coalescer.js';
import { fenceRecordPatch } from './fence-record-patch.js';
import { WrittenBases } from './written-bases.js';
import { nfPath } from './key-claim.js';
import {
  keepingOwnRecord,
  orphanedConditions,
  ownConditions,
  readyIsOwn,
  vrStatusToWrite,
} from './vr-status.js';

export const vrPath = (name?: string, sub?: 'status') =>
  clusterObjectPath(GROUP, VERSION, VOLUME_RESERVATION.plural, name, sub);

/**
 * How long the object a VolumeReservation write returned may stand in for a GET before the
 * next write of the same fence (intent, record, fence record follow within milliseconds).
 */
const WRITTEN_BASE_MS = 2000;

/** A write made on a base that is no longer the server's (precondition or patch test). */
const staleBase = (e: unknown) => e instanceof KubeApiError && (e.code === 409 || e.code === 422);

/** An intent older than this, by another node, is taken as abandoned. */
export const INTENT_EXPIRY_MS = 120_000;

export function cond<T extends string>(
  type: T,
  status: 'True' | 'False' | 'Unknown',
  reason: string,
  message: string,
): Condition<T> {
  return { type, status, reason, message, lastTransitionTime: new Date().toISOString() };
}

export interface StatusWriterOptions {
  rest: RestClient;
  node: string;
  key: PrKey;
  nodeUid: string;
  log: Logger;
}

export interface WriteVolumeOptions {
  /** Its `Ready` condition is a fallback (vr-status.ts): it yields to one a node that read the device recorded. */
  fallback?: boolean;
  /**
   * The device was not read (missing on this node): the node's recorded registrant entry
   * (and holder) is kept, not cleared (vr-status.ts `keepingOwnRecord`).
   */
  unread?: boolean;
}

export class StatusWriter {
  readonly #o: StatusWriterOptions;
  readonly fm: string;
  readonly #fenceFm: string;
  readonly #intentFm: string;
  readonly #proofFm: string;
  /** Fenced marks and proofs per victim node, coalesced while a write to it is in flight. */
  readonly #marks: Coalescer<string>;
  readonly #proofs: Coalescer<IsolationProof>;
  /** Fenced events per victim node, coalesced the same way. */
  readonly #fencedEvents: Coalescer<{ pv: string; key: PrKey }>;
  readonly #events: EventRecorder;
  /** The last status body written per PV (no write when nothing changed). */
  readonly #last = new Map<string, string>();
  /**
   * The VolumeReservation this writer's last write of a PV returned, for WRITTEN_BASE_MS:
   * the base of the next write instead of a GET (a fence writes its intent, the volume's
   * record and the fence record in a row).
   */
  readonly #written = new WrittenBases<VolumeReservation>(WRITTEN_BASE_MS);
  /**
   * The same for the NodeFences of fenced nodes: the marks and proofs of a burst of fences
   * of one node go to its NodeFence one write after the other.
   */
  readonly #peerWritten = new WrittenBases<NodeFence>(WRITTEN_BASE_MS);
  #lastOwn: string | undefined;

  constructor(o: StatusWriterOptions) {
    this.#o = o;
    this.fm = `prfence-agent/${o.node}`;
    this.#fenceFm = `prfence-agent/${o.node}/fence`;
    this.#intentFm = `prfence-agent/${o.node}/intent`;
    this.#proofFm = `prfence-agent/${o.node}/proof`;
    this.#marks = new Coalescer((n, times) => this.#writeMark(n, times));
    this.#proofs = new Coalescer((n, proofs) => this.#writeProofs(n, proofs));
    this.#fencedEvents = new Coalescer((n, fences) => this.#writeFencedEvent(n, fences));
    this.#events = new EventRecorder({
      rest: o.rest,
      log: o.log,
      controller: 'prfence.io/agent',
      instance: o.node,
    });
  }

  /** The VolumeReservation, created empty if missing. */
  async readVr(pv: string): Promise<VolumeReservation> {
    const rest = this.#o.rest;
    try {
      return await rest.get<VolumeReservation>(vrPath(pv));
    } catch (e) {
      if (!(e instanceof KubeApiError && e.code === 404)) throw e;
    }
    try {
      return await rest.send<VolumeReservation>({
        method: 'POST',
        path: vrPath(),
        body: { apiVersion: API_VERSION, kind: VOLUME_RESERVATION.kind, metadata: { name: pv } },
      });
    } catch (e) {
      if (!(e instanceof KubeApiError && e.code === 409)) throw e;
      return rest.get<VolumeReservation>(vrPath(pv));
    }
  }

  /**
   * This node's registrant entry, written before its first REGISTER on the volume: a key
   * on the device that no record names would be missed by the controller's proof of
   * isolation if the node lost the API server right after the command. What it recorded
   * of the device stays; the write after the read-back replaces the entry.
   */
  async recordRegistering(pv: string, legitimate: boolean): Promise<void> {
    await this.writeVolume(
      pv,
      { registrants: [{ node: this.#o.node, key: formatKey(this.#o.key), legitimate }] },
      undefined,
      { unread: true },
    );
  }

  /**
   * The one status write of a reconcile: this node's entry and, when `status` carries
   * them, the shared fields, with the resourceVersion read here as precondition (a peer
   * writing in between makes it 409 and the volume is reconciled again). An observation
   * whose PR generation is below the record's is re-read through `reread`: if the device
   * still says less, its counter was reset (a power-on with APTPL off) and the device
   * wins; otherwise only the own entry is written. With `fallback`, its `Ready` condition
   * yields to one a node that read the device recorded (see vr-status.ts); such a write is
   * not remembered, so a retry writes again. With `unread`, what the node recorded from
   * its last read of the device stays.
   */
  async writeVolume(
    pv: string,
    status: VolumeReservationStatus,
    reread?: () => Promise<number>,
    opts: WriteVolumeOptions = {},
  ): Promise<VolumeReservation | undefined> {
    const body = JSON.stringify(status, (k, v: unknown) => (k === 'lastTransitionTime' ? undefined : v));
    if (this.#last.get(pv) === body) return undefined;
    const base = this.#written.take(pv);
    try {
      return await this.#writeVolumeOn(pv, base ?? (await this.readVr(pv)), status, body, reread, opts);
    } catch (e) {
      if (!base || !staleBase(e)) throw e;
      return this.#writeVolumeOn(pv, await this.readVr(pv), status, body, reread, opts);
    }
  }

  async #writeVolumeOn(
    pv: string,
    read: VolumeReservation,
    status: VolumeReservationStatus,
    body: string,
    reread: (() => Promise<number>) | undefined,
    opts: WriteVolumeOptions,
  ): Promise<VolumeReservation> {
    let current = read;
    if (opts.unread) {
      status = keepingOwnRecord(status, current.status, this.#o.node);
      if (!status.conditions) {
        const conditions = ownConditions(current, this.fm);
        if (conditions.length) status = { ...status, conditions };
      }
    }
    // A fallback yields to a Ready another node recorded, not to this node's own earlier one.
    opts = { ...opts, fallback: opts.fallback && !readyIsOwn(current, this.fm) };
    let w = vrStatusToWrite(status, current.status, opts);
    if (w.stale && reread) {
      const now = await reread();
      const recorded = current.status?.generation ?? 0;
      if (now < recorded) {
        this.#o.log.warn(
          { pv, device: now, recorded },
          'PR generation went back: counter reset; the device wins',
        );
        w = vrStatusToWrite({ ...status, generation: now }, { ...current.status, generation: now }, opts);
      }
    }
    current = await this.#dropOrphaned(pv, current, w.status);
    const applied = await this.#o.rest.apply<VolumeReservation>(
      vrPath(pv, 'status'),
      {
        apiVersion: API_VERSION,
        kind: VOLUME_RESERVATION.kind,
        metadata: { name: pv, resourceVersion: current.metadata.resourceVersion },
        status: w.status,
      },
      this.fm,
    );
    // A fallback Ready is looked at again on every retry: the node that records the device
    // may have recorded one meanwhile, or removed it.
    if (opts.fallback && status.conditions?.some((c) => c.type === 'Ready')) this.#last.delete(pv);
    else this.#last.set(pv, body);
    this.#written.remember(pv, applied);
    return applied;
  }

  /**
   * Removes, whole, the conditions this write would leave without their values (another
   * manager owns only their key; see `orphanedConditions`): a JSON patch that tests each
   * entry's type. Returns the object to apply on.
   */
  async #dropOrphaned(
    pv: string,
    current: VolumeReservation,
    writing: VolumeReservationStatus,
  ): Promise<VolumeReservation> {
    const types = orphanedConditions(current, this.fm, writing);
    if (!types.length) return current;
    const conds = current.status?.conditions ?? [];
    const ops = conds
      .map((c, i) => ({ c, i }))
      .filter(({ c }) => types.includes(c.type))
      .sort((a, b) => b.i - a.i)
      .flatMap(({ c, i }) => [
        { op: 'test', path: `/status/conditions/${i}/type`, value: c.type },
        { op: 'remove', path: `/status/conditions/${i}` },
      ]);
    return this.#o.rest.send<VolumeReservation>({
      method: 'PATCH',
      path: vrPath(pv, 'status'),
      contentType: 'application/json-patch+json',
      body: [
        { op: 'test', path: '/metadata/resourceVersion', value: current.metadata.resourceVersion },
        ...ops,
      ],
    });
  }

  /**
   * Records the intent to fence before the PREEMPT. Returns false (nothing written) when
   * another node's recent intent is open on the volume: that node is fencing.
   *
   * One request when no other node's intent is open: `fenceIntent` alone, applied under
   * this node's intent manager and not forced, with no resourceVersion to match. The field
   * is one atomic value, so while another node's manager owns it (its intent is open) the
   * API server refuses the apply (409, a field-manager conflict), and two nodes that apply
   * at once cannot both succeed. Refused, or on a VolumeReservation that does not exist
   * yet: a GET (which creates it) decides. Another node's intent younger than
   * INTENT_EXPIRY_MS: false. An older one (abandoned), or one this node wrote under another
   * manager: taken over, forced, with the GET's resourceVersion as precondition.
   */
  async recordIntent(pv: string, intent: FenceIntent): Promise<boolean> {
    try {
      await this.#applyIntent(pv, intent, false);
      return true;
    } catch (e) {
      if (!(e instanceof KubeApiError && (e.code === 409 || e.code === 404))) throw e;
    }
    for (let attempt = 0; ; attempt++) {
      const current = await this.readVr(pv);
      const open = current.status?.fenceIntent;
      if (open && open.by !== this.#o.node && Date.now() - Date.parse(open.at) < INTENT_EXPIRY_MS)
        return false;
      try {
        await this.#applyIntent(pv, intent, true, current.metadata.resourceVersion);
        return true;
      } catch (e) {
        if (!staleBase(e) || attempt >= 7) throw e; // written meanwhile: decide on a new read
      }
    }
  }

  /**
   * `fenceIntent` under the intent manager (undefined: removed, if this manager still owns
   * it; an intent another node took over stays). `force` with a resourceVersion only.
   */
  async #applyIntent(
    pv: string,
    intent: FenceIntent | undefined,
    force: boolean,
    resourceVersion?: string,
  ): Promise<void> {
    const applied = await this.#o.rest.apply<VolumeReservation>(
      vrPath(pv, 'status'),
      {
        apiVersion: API_VERSION,
        kind: VOLUME_RESERVATION.kind,
        metadata: { name: pv, ...(resourceVersion ? { resourceVersion } : {}) },
        status: intent ? { fenceIntent: intent } : {},
      },
      this.#intentFm,
      force,
    );
    this.#last.delete(pv);
    this.#written.remember(pv, applied);
  }

  /**
   * Records a fence and closes its intent, in one JSON patch on a read of the
   * VolumeReservation (fence-record-patch.ts): `lastFence` if a fence happened; the keys
   * this fence removed added to `fencedKeys`, and the entries whose node `stillFenced` says
   * was unfenced since dropped; the registrant entries that name a removed key (their
   * node's agent owns them and may be cut off); and this node's intent, unless
   * `closeIntent` is false (it names another fence not recorded yet). An intent another
   * node took over since stays. All in one write, so the record never lands without the
   * rest: an agent that stops before it finds its intent at start and records the fence
   * again, rather than not at all.
   */
  async completeFence(
    pv: string,
    lastFence: LastFence | undefined,
    fenced: readonly FencedKey[] = [],
    stillFenced: (e: FencedKey) => boolean = () => true,
    { closeIntent = true }: { closeIntent?: boolean } = {},
  ): Promise<void> {
    // The key is gone from the device already: a later reconcile sends no PREEMPT and would
    // not come back here. So a write that lost a race (a peer's status, the controller's
    // desired state) is read and made again, not left to the work queue.
    const base = this.#written.take(pv);
    for (let attempt = base ? -1 : 0; ; attempt++) {
      const current = (attempt < 0 && base) || (await this.readVr(pv));
      const kept = (current.status?.fencedKeys ?? []).filter(
        (e) => stillFenced(e) && !fenced.some((f) => f.key === e.key),
      );
      const ops = fenceRecordPatch(current.metadata.resourceVersion, current.status, this.#o.node, {
        lastFence,
        fencedKeys: [...kept, ...fenced].slice(-256),
        removed: fenced,
        closeIntent,
      });
      if (!ops.length) {
        if (attempt < 0) continue; // the base may be stale: "nothing to record" is decided on a GET
        return;
      }
      try {
        const patched = await this.#o.rest.send<VolumeReservation>({
          method: 'PATCH',
          path: vrPath(pv, 'status'),
          contentType: 'application/json-patch+json',
          query: { fieldManager: this.#fenceFm },
          body: ops,
        });
        this.#last.delete(pv);
        this.#written.remember(pv, patched);
        return;
      } catch (e) {
        if (!staleBase(e) || attempt >= 7) throw e;
      }
    }
  }

  /**
   * The fences this volume's device carries (status.fencedKeys, and the keys an open
   * intent names), read from the API server, not a cache. A missing VolumeReservation has none.
   */
  async fencedOn(pv: string): Promise<FencedKey[]> {
    let vr: VolumeReservation;
    try {
      vr = await this.#o.rest.get<VolumeReservation>(vrPath(pv));
    } catch (e) {
      if (e instanceof KubeApiError && e.code === 404) return [];
      throw e;
    }
    const s = vr.status ?? {};
    const open = s.fenceIntent;
    const intent = open
      ? intentVictims(open).map((v) => ({
          key: v.victimKey,
          at: open.at,
          ...(v.victimNode ? { node: v.victimNode } : {}),
        }))
      : [];
    return [...(s.fencedKeys ?? []), ...intent];
  }

  /**
   * The Fenced mark on a peer's NodeFence: what keeps it from registering again (S2). The
   * first fencer since the last unfence keeps `fencedBy` / `fencedAt`: a mark is written
   * once and only `prfence unfence` clears it (the chart's admission policy refuses an
   * agent that changes it). Read, then applied with the read's resourceVersion; every
   * field is sent, even an unchanged one, so this manager never drops one it owns (409:
   * read again). A NodeFence that is gone (404: deleted by hand, or its Node's collected) is
   * not marked: there is nothing to mark, and a fence record must not wait for it forever.
   * Its node's agent creates it again at start, and its host memory keeps it from
   * registering where its key was removed.
   */
  markFenced(victimNode: string, at: string): Promise<void> {
    return this.#marks.add(victimNode, at);
  }

  /** One write of the Fenced mark (coalesced: the earliest time of the batch). */
  async #writeMark(victimNode: string, times: readonly string[]): Promise<void> {
    const at = [...times].sort()[0]!;
    await this.#applyPeerStatus(victimNode, this.fm, ({ status: s = {} }) =>
      s.phase === 'Fenced' && s.fencedBy !== undefined && s.fencedAt !== undefined
        ? undefined
        : { phase: 'Fenced', fencedBy: s.fencedBy ?? this.#o.node, fencedAt: s.fencedAt ?? at },
    );
  }

  /**
   * The proof of isolation on the fenced node's NodeFence (status.proofs, one entry per
   * volume): read, merged, and applied with the read's resourceVersion, so that two peers
   * proving different devices at once do not drop each other's entry (409: read again).
   * This node replaces only its own entry for the volume, or one older than the last
   * unfence (an earlier fence's, which does not count); a current proof by another node
   * stands (the volume is proven) and is left as it is. A NodeFence that is gone has
   * nothing to prove to. Proofs for one node made while a write to it is in flight go
   * together in the next write (Coalescer).
   */
  recordProof(victimNode: string, proof: IsolationProof): Promise<void> {
    return this.#proofs.add(victimNode, proof);
  }

  async #writeProofs(victimNode: string, proofs: readonly IsolationProof[]): Promise<void> {
    await this.#applyPeerStatus(victimNode, this.#proofFm, (nf) => {
      const unfencedAt = nf.spec?.unfencedAt ? Date.parse(nf.spec.unfencedAt) : Number.NEGATIVE_INFINITY;
      const replaceable = (p: IsolationProof) => p.by === this.#o.node || Date.parse(p.at) <= unfencedAt;
      const before = nf.status?.proofs ?? [];
      let current = before;
      for (const proof of proofs) {
        if (current.some((p) => p.volume === proof.volume && !replaceable(p))) continue;
        current = [...current.filter((p) => p.volume !== proof.volume), proof];
      }
      return current === before ? undefined : { proofs: current.slice(-4096) };
    });
  }

  /**
   * Read, decide, apply on a peer's NodeFence status: `decide` gives the status to apply from
   * the read (undefined: nothing to write), applied under `fm` with the read's
   * resourceVersion; a 409 (a write in between) reads again, up to 5 times. The object this
   * writer's last write of that NodeFence returned stands in for the first read (see
   * #peerWritten); only a write rests on it (its resourceVersion refuses a stale one):
   * "nothing to write" is decided on a GET. A NodeFence that is gone (404) is left alone.
   */
  async #applyPeerStatus(
    victimNode: string,
    fm: string,
    decide: (nf: NodeFence) => NodeFenceStatus | undefined,
  ): Promise<void> {
    const base = this.#peerWritten.take(victimNode);
    for (let attempt = base ? -1 : 0; ; attempt++) {
      let nf: NodeFence;
      if (attempt < 0 && base) nf = base;
      else
        try {
          nf = await this.#o.rest.get<NodeFence>(nfPath(victimNode));
        } catch (e) {
          if (e instanceof KubeApiError && e.code === 404) return;
          throw e;
        }
      const status = decide(nf);
      if (!status) {
        if (attempt < 0) continue; // the base may be stale: decided again on a GET
        return;
      }
      try {
        const applied = await this.#o.rest.apply<NodeFence>(
          nfPath(victimNode, 'status'),
          {
            apiVersion: API_VERSION,
            kind: NODE_FENCE.kind,
            metadata: { name: victimNode, resourceVersion: nf.metadata.resourceVersion },
            status,
          },
          fm,
        );
        this.#peerWritten.remember(victimNode, applied);
        return;
      } catch (e) {
        if (e instanceof KubeApiError && e.code === 404) return;
        if (!(e instanceof KubeApiError && e.code === 409) || attempt >= 4) throw e;
      }
    }
  }

  /**
   * A Warning event `Fenced` on the fenced node's NodeFence. The fences of one node made
   * while its event is being written go together into the next one (a node that takes
   * over hundreds of volumes writes a few events, not one per volume); `related` names the
   * PersistentVolume when the event is of one.
   */
  fencedEvent(pv: string, victimNode: string, victimKey: PrKey): Promise<void> {
    return this.#fencedEvents.add(victimNode, { pv, key: victimKey });
  }

  async #writeFencedEvent(victimNode: string, fences: readonly { pv: string; key: PrKey }[]): Promise<void> {
    await this.#events.emit({
      regarding: { apiVersion: API_VERSION, kind: NODE_FENCE.kind, name: victimNode },
      ...(fences.length === 1
        ? { related: { apiVersion: 'v1', kind: 'PersistentVolume', name: fences[0]!.pv } }
        : {}),
      reason: 'Fenced',
      action: 'Fence',
      type: 'Warning',
      note: fencedNote(victimNode, this.#o.node, fences),
    });
  }

  /**
   * A Normal event on the volume's VolumeReservation: new paths appeared under its
   * dm-multipath device and this node registered its key again through them.
   */
  async pathsReregisteredEvent(pv: string, newPaths: readonly string[]): Promise<void> {
    await this.#events.emit({
      regarding: { apiVersion: API_VERSION, kind: VOLUME_RESERVATION.kind, name: pv },
      reason: 'PathsReregistered',
      action: 'Register',
      type: 'Normal',
      note: `path set changed: re-registered key ${formatKey(this.#o.key)} of ${this.#o.node} through new paths ${newPaths.join(', ')}`,
    });
  }

  /** A Warning event on this node's own NodeFence: its key is gone from devices (failfast). True once written. */
  async accessLostEvent(note: string): Promise<boolean> {
    return this.#events.emit({
      regarding: { apiVersion: API_VERSION, kind: NODE_FENCE.kind, name: this.#o.node },
      reason: 'AccessLost',
      action: 'Failfast',
      type: 'Warning',
      note,
    });
  }

  /**
   * This node's own NodeFence status (key, volumes, phase, conditions). Not forced: once a
   * peer marked this node Fenced it owns `phase`, and this write conflicts instead of
   * clearing the mark (S2); then it is written without `phase`.
   */
  async writeOwn(
    current: NodeFence | undefined,
    s: {
      phase: NodePhase;
      volumes: number;
      /** PVs this node holds the reservation of only to hand it over (omitted when none). */
      handingOver: readonly string[];
      conditions: Condition<'Degraded' | 'Ready' | 'AccessLost'>[];
    },
  ): Promise<void> {
    const writePhase = !(current?.status?.phase === 'Fenced' && s.phase !== 'Fenced');
    const status = {
      key: formatKey(this.#o.key),
      nodeUID: this.#o.nodeUid,
      volumes: s.volumes,
      ...(s.handingOver.length ? { handingOver: [...s.handingOver].sort() } : {}),
      ...(writePhase ? { phase: s.phase } : {}),
      conditions: s.conditions,
    };
    const body = JSON.stringify(status, (k, v: unknown) => (k === 'lastTransitionTime' ? undefined : v));
    if (body === this.#lastOwn) return;
    const old = current?.status?.conditions ?? [];
    status.conditions = s.conditions.map((c) => {
      const o = old.find((x) => x.type === c.type);
      return o && o.status === c.status ? { ...c, lastTransitionTime: o.lastTransitionTime } : c;
    });
    const apply = (st: object) =>
      this.#o.rest.apply(
        nfPath(this.#o.node, 'status'),
        { apiVersion: API_VERSION, kind: NODE_FENCE.kind, metadata: { name: this.#o.node }, status: st },
        this.fm,
        false,
      );
    try {
      await apply(status);
    } catch (e) {
      if (!(e instanceof KubeApiError && e.code === 409)) throw e;
      const { phase: _phase, ...rest } = status as typeof status & { phase?: NodePhase };
      await apply(rest);
    }
    this.#lastOwn = body;
  }

  /** Forget what was written for a PV that no longer concerns this node. */
  forget(pv: string): void {
    this.#last.delete(pv);
    this.#written.forget(pv);
  }
}

/**
 * The note of a `Fenced` event of one or more volumes: "removed key K of node-a from pv-1
 * (by node-b)", or for several "removed key K of node-a from 3 volumes (by node-b): pv-1,
 * pv-2, pv-3", with the key beside each volume when the keys differ (an earlier
 * incarnation's key on some). The event recorder cuts it at 1 KiB.
 */
export function fencedNote(
  victimNode: string,
  by: string,
  fences: readonly { pv: string; key: PrKey }[],
): string {
  const keys = new Set(fences.map((f) => f.key));
  const key = keys.size === 1 ? `key ${formatKey(fences[0]!.key)}` : 'keys';
  if (fences.length === 1) return `removed ${key} of ${victimNode} from ${fences[0]!.pv} (by ${by})`;
  const list = fences.map((f) => (keys.size === 1 ? f.pv : `${f.pv} (${formatKey(f.key)})`)).join(', ');
  return `removed ${key} of ${victimNode} from ${fences.length} volumes (by ${by}): ${list}`;
}
