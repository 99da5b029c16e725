/**
 * RFC 6902 for the unit tests' fake API servers: `test`, `add`, `replace` and `remove` on
 * JSON pointers, all or nothing (a failed test or a missing path throws, and the input is
 * not changed), as the API server applies a JSON patch.
 */
import type { JsonPatchOp } from '../../../src/agent/fence-record-patch.js';

export class PatchFailed extends Error {}

export function applyJsonPatch<T>(doc: T, ops: readonly JsonPatchOp[]): T {
  const out = structuredClone(doc) as unknown;
  for (const op of ops) {
    const parts = op.path
      .split('/')
      .slice(1)
      .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
    const last = parts.pop()!;
    let parent = out as Record<string, unknown> | unknown[];
    for (const p of parts) {
      const next = (parent as Record<string, unknown>)[p];
      if (next === null || typeof next !== 'object') throw new PatchFailed(`no ${op.path}`);
      parent = next as Record<string, unknown>;
    }
    const has = Array.isArray(parent) ? Number(last) < parent.length : last in parent;
    if (op.op === 'test') {
      const at = has ? (parent as Record<string, unknown>)[last] : undefined;
      if (JSON.stringify(at) !== JSON.stringify(op.value)) throw new PatchFailed(`test ${op.path}`);
    } else if (op.op === 'remove') {
      if (!has) throw new PatchFailed(`no ${op.path}`);
      if (Array.isArray(parent)) parent.splice(Number(last), 1);
      else delete parent[last];
    } else if (Array.isArray(parent)) {
      if (last === '-') parent.push(op.value);
      else if (op.op === 'add') parent.splice(Number(last), 0, op.value);
      else parent[Number(last)] = op.value;
    } else {
      if (op.op === 'replace' && !has) throw new PatchFailed(`no ${op.path}`);
      parent[last] = op.value;
    }
  }
  return out as T;
}
