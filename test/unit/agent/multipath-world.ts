/**
 * One volume, two nodes (a, b), as plain data for the VolumeReconciler: the informer
 * caches, a fresh view (read anew each time), and a status writer that records the events
 * of path changes. Shared by the multipath unit tests and the kernel test
 * (test/kernel/multipath.test.ts), which runs the reconciler on a real dm-multipath map.
 */
import type { V1Node, V1VolumeAttachment } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { ClusterCaches } from '../../../src/agent/cluster-view.js';
import { DeviceRegistry } from '../../../src/agent/device-registry.js';
import { FenceMemory } from '../../../src/agent/fence-memory.js';
import type { FreshView, FreshViewSource } from '../../../src/agent/fresh-view.js';
import type { StatusWriter } from '../../../src/agent/status-writer.js';
import { VolumeReconciler } from '../../../src/agent/volume-reconciler.js';
import type { NodeFence } from '../../../src/crd/types.js';
import type { VolumePolicy } from '../../../src/fence/volume-policy.js';
import { clusterTag, makeKey } from '../../../src/fence/keys.js';
import { formatKey } from '../../../src/pr/key.js';
import type { PrDevice } from '../../../src/pr/pr-device.js';

export const TAG = clusterTag('unit');
export const K = { a: makeKey(TAG, 1), b: makeKey(TAG, 2) };
export const PV = 'pv-1';
export const WEAR: VolumePolicy = {
  kind: 'fenced',
  reservationType: 'write-exclusive-all-regs',
  fencingFrom: { from: 'default' },
  typeFrom: { from: 'default' },
};

export interface World {
  vas: string[];
  fenced?: string[];
  fenceRequested?: string[];
  /** NodeFence spec.unfencedAt per node (an unfence: forgives a loss older than it). */
  unfencedAt?: Partial<Record<'a' | 'b', string>>;
}

export function caches(w: World): ClusterCaches {
  const nfs = (['a', 'b'] as const).map((n): NodeFence => ({
    apiVersion: 'prfence.io/v1alpha1',
    kind: 'NodeFence',
    metadata: { name: n },
    ...(w.fenceRequested?.includes(n)
      ? { spec: { fenceState: 'Fenced' as const } }
      : w.unfencedAt?.[n]
        ? { spec: { fenceState: 'Unfenced' as const, unfencedAt: w.unfencedAt[n] } }
        : {}),
    status: { key: formatKey(K[n]), ...(w.fenced?.includes(n) ? { phase: 'Fenced' as const } : {}) },
  }));
  const vas = w.vas.map((n): V1VolumeAttachment => ({
    metadata: { name: `va-${n}` },
    spec: { attacher: 'x', nodeName: n, source: { persistentVolumeName: PV } },
  }));
  return {
    vasOf: (pv) => (pv === PV ? vas : []),
    nodeFences: (n) => nfs.find((x) => x.metadata.name === n),
    allNodeFences: nfs,
    nodes: (n): V1Node => ({ metadata: { name: n, uid: `uid-${n}` } }),
  };
}

/** A fresh view of `get()`, read anew each time; `down`: every read fails. */
export function freshOf(get: () => World, down: () => boolean = () => false) {
  let reads = 0;
  return {
    reads: () => reads,
    now: () => performance.now(),
    isFresh: () => true,
    problem: () => undefined,
    get: (): Promise<FreshView> => {
      reads += 1;
      if (down()) return Promise.reject(new Error('API server unreachable'));
      const c = caches(get());
      return Promise.resolve({
        startedAt: performance.now(),
        basis: 'test',
        nodeFences: new Map(c.allNodeFences.map((n) => [n.metadata.name, n])),
        keyClaims: [],
        cachesFor: () => Promise.resolve(c),
      });
    },
  };
}

export function writerStub() {
  const events: string[][] = [];
  return {
    events,
    writeVolume: () => Promise.resolve(undefined),
    recordRegistering: () => Promise.resolve(),
    recordIntent: () => Promise.resolve(true),
    completeFence: () => Promise.resolve(),
    markFenced: () => Promise.resolve(),
    recordProof: () => Promise.resolve(),
    fencedEvent: () => Promise.resolve(),
    pathsReregisteredEvent: (_pv: string, paths: readonly string[]) => (
      events.push([...paths]),
      Promise.resolve()
    ),
    forget: () => undefined,
    fencedOn: () => Promise.resolve([]),
  };
}

/**
 * The reconciler of node a for PV, on `device` (opened once), with the paths under it
 * from `pathsOf`; the caches say `api()`, the fresh view `fresh()` (default the same).
 */
export async function reconcilerOf(
  device: () => Promise<PrDevice>,
  pathsOf: (d: PrDevice) => Promise<readonly string[] | undefined>,
  api: () => World,
  opts: { fresh?: () => World; down?: () => boolean } = {},
) {
  const fresh = freshOf(opts.fresh ?? api, opts.down);
  const writer = writerStub();
  const memory = await FenceMemory.open(undefined);
  const devices = new DeviceRegistry(() => device());
  const r = new VolumeReconciler({
    node: 'a',
    key: K.a,
    tag: TAG,
    caches: () => caches(api()),
    identityOf: () => 'lu',
    fresh: fresh as unknown as FreshViewSource,
    devices,
    memory,
    writer: writer as unknown as StatusWriter,
    policyOf: () => WEAR,
    foreignKeys: 'leave',
    leaveGraceMs: 0,
    pathsOf,
    signal: new AbortController().signal,
  });
  return { fresh, writer, r, devices, memory, reconcile: (log: Logger) => r.reconcile(PV, log) };
}
