/**
 * Proof of isolation, pure: which devices a node asked to be fenced still has a
 * registration on (as the VolumeReservations record it), and which have a proof (a live
 * peer removed its key with its own PREEMPT AND ABORT and read the device back: NodeFence
 * `status.proofs`). No I/O; the controller decides from this, on consistent reads.
 */
import { intentVictims } from '../crd/fence-intent.js';
import {
  type IsolationProof,
  type IsolationStatus,
  type NodeFence,
  type VolumeReservation,
} from '../crd/types.js';

/** At most this many pending devices are listed in status (the counts stay exact). */
export const MAX_PENDING_LISTED = 64;

/** Asked to be fenced (spec) or marked fenced by a peer (status). */
export const fenceRequestedOrMarked = (nf: NodeFence | undefined) =>
  nf?.spec?.fenceState === 'Fenced' || nf?.status?.phase === 'Fenced';

/** Matches an entry (node name, key) that names `node` or its key `key`. */
const names = (node: string, key: string | undefined) => (n: string | undefined, k: string | undefined) =>
  n === node || (key !== undefined && k === key);

/** Why the VolumeReservation says `node` (key `key`) may still be on its device; undefined: it does not. */
export function registrationOnRecord(
  vr: VolumeReservation,
  node: string,
  key: string | undefined,
): string | undefined {
  const s = vr.status ?? {};
  const mine = names(node, key);
  if (s.registrants?.some((r) => mine(r.node, r.key)))
    return 'registered there on record (status.registrants); no proof yet';
  if (s.holder && mine(s.holder.node, s.holder.key))
    return 'holds the reservation on record (status.holder); no proof yet';
  if (s.fenceIntent && intentVictims(s.fenceIntent).some((v) => mine(v.victimNode, v.victimKey)))
    return `a fence is under way (intent by ${s.fenceIntent.by})`;
  return undefined;
}

/**
 * Proofs that belong to the current fence: newer than the last unfence (an older proof
 * is of an earlier fence; the node may have registered again since), and of the node's
 * current key (a proof that an earlier incarnation's key is gone says nothing of the
 * current one's).
 */
export function currentProofs(nf: NodeFence): IsolationProof[] {
  const unfencedAt = nf.spec?.unfencedAt ? Date.parse(nf.spec.unfencedAt) : Number.NEGATIVE_INFINITY;
  const key = nf.status?.key;
  return (nf.status?.proofs ?? []).filter(
    (p) => Date.parse(p.at) > unfencedAt && (key === undefined || p.victimKey === key),
  );
}

export interface Proof {
  proven: number;
  total: number;
  /** Devices without a proof, sorted by volume name. */
  pending: { volume: string; reason: string }[];
  /** At least one device, and every one proven. */
  complete: boolean;
}

/**
 * The proof of a fenced node's isolation. A device counts once: proven if a current proof
 * names it, else pending if a VolumeReservation still records the node there.
 */
export function evaluateProof(nf: NodeFence, vrs: readonly VolumeReservation[]): Proof {
  const node = nf.metadata.name;
  const key = nf.status?.key;
  const proven = new Set(currentProofs(nf).map((p) => p.volume));
  const pending: Proof['pending'] = [];
  for (const vr of vrs) {
    const volume = vr.metadata.name;
    if (proven.has(volume)) continue;
    const reason = registrationOnRecord(vr, node, key);
    if (reason) pending.push({ volume, reason });
  }
  pending.sort((a, b) => (a.volume < b.volume ? -1 : a.volume > b.volume ? 1 : 0));
  const total = proven.size + pending.length;
  return { proven: proven.size, total, pending, complete: total > 0 && pending.length === 0 };
}

/** Nodes whose VolumeReservations record a registration of theirs (for the taint removal rule). */
export function hasRegistrationOnRecord(
  vrs: readonly VolumeReservation[],
  node: string,
  key: string | undefined,
): boolean {
  const mine = names(node, key);
  return vrs.some((vr) => {
    const s = vr.status ?? {};
    return (
      !!s.registrants?.some((r) => mine(r.node, r.key)) || (!!s.holder && mine(s.holder.node, s.holder.key))
    );
  });
}

/** status.isolation as the controller writes it (without the taint record, kept apart). */
export function isolationStatus(p: Proof, lost: boolean | undefined): IsolationStatus {
  return {
    ...(lost !== undefined ? { lost } : {}),
    proven: p.proven,
    total: p.total,
    summary: `${p.proven}/${p.total}`,
    complete: p.complete,
    ...(p.pending.length ? { pending: p.pending.slice(0, MAX_PENDING_LISTED) } : {}),
  };
}
