/**
 * Reservation keys of this cluster (DESIGN.md "Keys", S6): high 32 bits a cluster tag,
 * low 32 bits a node slot. Never 0, unique in the cluster (each key is claimed with a
 * create-only ReservationKey object named after it, src/agent/key-claim.ts: the API
 * server refuses a second claim), stable for a node incarnation and new for a new one
 * (a new Node UID).
 */
import { createHash } from 'node:crypto';
import type { PrKey } from '../pr/key.js';

/** A stable 32-bit tag from the cluster id (default: the kube-system namespace UID). Never 0. */
export function clusterTag(clusterId: string): number {
  const h = createHash('sha256').update(`prfence/cluster/${clusterId}`).digest();
  const tag = h.readUInt32BE(0);
  return tag === 0 ? 1 : tag;
}

/** key = tag << 32 | slot. */
export function makeKey(tag: number, slot: number): PrKey {
  return (BigInt(tag >>> 0) << 32n) | BigInt(slot >>> 0);
}

export function tagOf(key: PrKey): number {
  return Number(key >> 32n);
}

export function slotOf(key: PrKey): number {
  return Number(key & 0xffffffffn);
}

/** Whether a key carries this cluster's tag; other keys are foreign (S7). */
export function isClusterKey(key: PrKey, tag: number): boolean {
  return key !== 0n && tagOf(key) === tag >>> 0;
}

/** A slot held by a node incarnation, as recorded in its NodeFence status. */
export interface SlotOwner {
  node: string;
  nodeUid: string;
}

/**
 * Picks the slot for (node, nodeUid): the slot this incarnation already owns if any;
 * else a slot derived from a hash of name and UID, probing upward past slots owned by
 * anyone else. Slot 0 is never used, so a key is never 0 even with tag bits... (S6).
 */
export function allocateSlot(node: string, nodeUid: string, taken: ReadonlyMap<number, SlotOwner>): number {
  for (const [slot, owner] of taken) {
    if (owner.node === node && owner.nodeUid === nodeUid) return slot;
  }
  const h = createHash('sha256').update(`prfence/node/${node}/${nodeUid}`).digest().readUInt32BE(0);
  let slot = (h % 0xfffffffe) + 1; // 1 .. 2^32-1
  for (let i = 0; i < 0xfffffffe; i++) {
    if (!taken.has(slot)) return slot;
    slot = slot === 0xffffffff ? 1 : slot + 1;
  }
  throw new Error('no free key slot in this cluster');
}
