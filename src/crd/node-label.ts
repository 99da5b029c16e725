/**
 * The label that marks a VolumeReservation as concerning one node (its desired state lists
 * an attachment on the node, or the node's key is recorded on the device), so that a node
 * agent watches only its own volumes: `labelSelector=node.prfence.io/<node>`.
 *
 * A label name is at most 63 characters of [A-Za-z0-9_.-]; a node name is a DNS subdomain
 * of up to 253. A longer name is replaced by `h_` and a SHA-256 prefix: the `_` never
 * occurs in a node name, so the two forms cannot collide.
 */
import { createHash } from 'node:crypto';

export const NODE_LABEL_PREFIX = 'node.prfence.io/';

const LABEL_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

export function nodeLabel(node: string): string {
  if (LABEL_NAME.test(node)) return NODE_LABEL_PREFIX + node;
  return `${NODE_LABEL_PREFIX}h_${createHash('sha256').update(node).digest('hex').slice(0, 40)}`;
}
