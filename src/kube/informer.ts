/**
 * A list+watch cache that survives any watch error: client-node's ListWatch stops on
 * errors other than 410 Gone, so this restarts it (re-list, keep the cache) with
 * exponential backoff. Handlers only see objects; the caller enqueues keys (level-based).
 */
import {
  ListWatch,
  Watch,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
} from '@kubernetes/client-node';
import type { Logger } from 'pino';

export interface InformerHandlers<T> {
  onAdd?: (o: T) => void;
  onUpdate?: (o: T) => void;
  onDelete?: (o: T) => void;
}

export interface ResilientInformer<T extends KubernetesObject> {
  list(): readonly T[];
  get(name: string): T | undefined;
  /** Resolves after the first successful list. */
  synced: Promise<void>;
  hasSynced(): boolean;
  stop(): Promise<void>;
}

export interface InformerOptions<T extends KubernetesObject> {
  kc: KubeConfig;
  /** Watch path, e.g. /apis/storage.k8s.io/v1/volumeattachments. */
  path: string;
  list: () => Promise<KubernetesListObject<T>>;
  handlers: InformerHandlers<T>;
  log: Logger;
  maxBackoffMs?: number;
}

export function startInformer<T extends KubernetesObject>(opts: InformerOptions<T>): ResilientInformer<T> {
  const lw = new ListWatch<T>(opts.path, new Watch(opts.kc), opts.list, false);
  let stopped = false;
  let synced = false;
  let backoff = 100;
  let markSynced!: () => void;
  const syncedP = new Promise<void>((r) => (markSynced = r));
  const { onAdd, onUpdate, onDelete } = opts.handlers;
  if (onAdd) lw.on('add', onAdd);
  if (onUpdate) lw.on('update', onUpdate);
  if (onDelete) lw.on('delete', onDelete);
  lw.on('connect', () => {
    backoff = 100;
  });
  const restart = (err: unknown) => {
    if (stopped) return;
    opts.log.warn({ path: opts.path, err: String(err), retryInMs: backoff }, 'watch failed; restarting');
    const t = setTimeout(() => {
      if (!stopped)
        lw.start().then(() => {
          if (!synced) {
            synced = true;
            markSynced();
          }
        }, restart);
    }, backoff);
    t.unref?.();
    backoff = Math.min(opts.maxBackoffMs ?? 10_000, backoff * 2);
  };
  lw.on('error', restart);
  // start() resolves once the initial list is in the cache: only then is it "synced".
  lw.start().then(() => {
    if (!synced) {
      synced = true;
      markSynced();
    }
  }, restart);
  return {
    list: () => lw.list(),
    get: (name) => lw.get(name),
    synced: syncedP,
    hasSynced: () => synced,
    async stop() {
      stopped = true;
      await lw.stop();
    },
  };
}
