/**
 * The fence record of a volume as one JSON patch (RFC 6902) of its VolumeReservation's
 * status, computed from a read of it. Pure: the status writer sends it
 * (`StatusWriter.completeFence`). One write instead of three (the fenced node's registrant
 * entry, the record, the intent's removal): on a node that takes over hundreds of volumes
 * at once the API server's time per request bounds the fence, so each request counts.
 */
import type { FencedKey, LastFence, VolumeReservationStatus } from '../crd/types.js';

export type JsonPatchOp =
  { op: 'test' | 'add' | 'replace'; path: string; value: unknown } | { op: 'remove'; path: string };

export interface FenceRecord {
  /** Recorded as `lastFence` (undefined: the one on record stays). */
  lastFence: LastFence | undefined;
  /** The whole `fencedKeys` list to record (empty: the field is removed). */
  fencedKeys: readonly FencedKey[];
  /** Keys this fence removed from the device: the registrant entries naming them go. */
  removed: readonly FencedKey[];
  /** Removes this node's intent (`fenceIntent.by` is `node`); another node's stays. */
  closeIntent: boolean;
}

/**
 * The ops that record `r` on a status read at `resourceVersion`, tested against it first:
 * the patch lands on exactly that read or not at all (422), so the read-modify-write of
 * `fencedKeys` loses no entry a peer added meanwhile. A registrant entry goes only if it
 * names the node and the key removed (an entry with another key, the node back as a new
 * incarnation, stays: that key may be on the device). Empty: nothing to change.
 */
export function fenceRecordPatch(
  resourceVersion: string | undefined,
  recorded: VolumeReservationStatus | undefined,
  node: string,
  r: FenceRecord,
): JsonPatchOp[] {
  const ops: JsonPatchOp[] = [];
  const s = recorded ?? {};
  const registrants = s.registrants ?? [];
  for (let i = registrants.length - 1; i >= 0; i--) {
    const e = registrants[i]!;
    if (!r.removed.some((f) => f.node !== undefined && f.node === e.node && f.key === e.key)) continue;
    ops.push(
      { op: 'test', path: `/status/registrants/${i}/node`, value: e.node },
      { op: 'test', path: `/status/registrants/${i}/key`, value: e.key },
      { op: 'remove', path: `/status/registrants/${i}` },
    );
  }
  if (r.lastFence && JSON.stringify(r.lastFence) !== JSON.stringify(s.lastFence))
    ops.push({ op: 'add', path: '/status/lastFence', value: r.lastFence });
  if (r.fencedKeys.length) {
    if (JSON.stringify(r.fencedKeys) !== JSON.stringify(s.fencedKeys ?? []))
      ops.push({ op: 'add', path: '/status/fencedKeys', value: r.fencedKeys });
  } else if (s.fencedKeys) ops.push({ op: 'remove', path: '/status/fencedKeys' });
  if (r.closeIntent && s.fenceIntent?.by === node)
    ops.push(
      { op: 'test', path: '/status/fenceIntent/by', value: node },
      { op: 'remove', path: '/status/fenceIntent' },
    );
  if (!ops.length) return [];
  return [
    { op: 'test', path: '/metadata/resourceVersion', value: resourceVersion },
    ...(recorded ? [] : [{ op: 'add' as const, path: '/status', value: {} }]),
    ...ops,
  ];
}
