/**
 * A list+watch cache that survives any watch error (client-go's reflector, in small):
 * list, then watch from the list's resourceVersion with bookmarks; a watch that ends or
 * fails is resumed from the last resourceVersion with exponential backoff; 410 Gone (or
 * any API error) re-lists and reports the differences as add/update/delete.
 *
 * Listing is a streaming list where the API server serves it (src/kube/streaming-list.ts:
 * one watch request whose initial events are the list, continuing as the watch), else a
 * paged LIST (src/kube/paged-list.ts); a server found not to serve streaming lists is
 * listed with LIST for the informer's life.
 *
 * Objects pass through `transform` before they are cached (client-go's SetTransform):
 * the agent keeps only the fields it reads, so 10,000 VolumeAttachments cost a few MiB.
 * Optional indexes (client-go's Indexers) answer "objects whose index value is X" without
 * scanning. Handlers only see objects; the caller enqueues keys (level-based).
 */
import type { Logger } from 'pino';
import { pagedList } from './paged-list.js';
import { KubeApiError, type RestClient, type WatchEvent } from './rest-client.js';
import {
  InitialEvents,
  rejectsStreamingList,
  StreamingListUnsupported,
  streamingListQuery,
  unusableResourceVersion,
} from './streaming-list.js';

export interface InformerHandlers<T> {
  onAdd?: (o: T) => void;
  onUpdate?: (o: T, old: T) => void;
  onDelete?: (o: T) => void;
}

export interface CachedObject {
  metadata?: { name?: string; resourceVersion?: string };
}

/** What a list strategy (paged-list.ts, streaming-list.ts) does to the informer's cache. */
export interface ListSink<T> {
  /** Caches a listed object (transform, index, onAdd/onUpdate) unless the cached one has its resourceVersion. */
  upsert(o: T): void;
  remove(o: T): void;
  /** The list is complete: removes (onDelete) every cached object not named in `seen`. */
  prune(seen: ReadonlySet<string>): void;
}

export interface ResilientInformer<T> {
  list(): readonly T[];
  get(name: string): T | undefined;
  /** Cached objects whose index `index` yields `value`. */
  byIndex(index: string, value: string): readonly T[];
  /** Resolves after the first complete list (a LIST, or a streaming list's end bookmark). */
  synced: Promise<void>;
  hasSynced(): boolean;
  /** Undefined while a watch is open and has shown life recently, else why not (for /readyz). */
  problem(): string | undefined;
  stop(): Promise<void>;
}

export interface InformerOptions<T> {
  rest: RestClient;
  /** Collection path, e.g. /apis/storage.k8s.io/v1/volumeattachments. */
  path: string;
  handlers: InformerHandlers<T>;
  log: Logger;
  /** Keeps what the caller reads (must keep metadata.name and metadata.resourceVersion). */
  transform?: (o: T) => T;
  indexes?: Record<string, (o: T) => readonly string[]>;
  maxBackoffMs?: number;
  pageSize?: number;
  /** Only the objects this selects, e.g. `metadata.name=node-1` (list and watch). */
  fieldSelector?: string;
  /**
   * Only the objects with these labels, e.g. `node.prfence.io/node-1` (list and watch). An
   * object that stops matching arrives as a delete.
   */
  labelSelector?: string;
  /**
   * A watch that shows no event and no bookmark for this long is taken as dead and
   * restarted (the API server sends a bookmark about every minute). Default 90 s.
   */
  idleTimeoutMs?: number;
  /** Try streaming lists (KEP-3157) before LIST; default true (false: paged LIST only). */
  streamingList?: boolean;
  /**
   * A re-list forced by an API error (410 Gone, or an API server still starting) waits a
   * further random 0..relistSpreadMs, so a fleet whose watches all broke at one API server
   * restart does not list again within the same second. Default 0 (the agents set it).
   */
  relistSpreadMs?: number;
}

export function startInformer<T extends CachedObject>(opts: InformerOptions<T>): ResilientInformer<T> {
  const cache = new Map<string, T>();
  const indexes = new Map<string, Map<string, Set<string>>>();
  const transform = opts.transform ?? ((o: T) => o);
  const abort = new AbortController();
  let synced = false;
  let markSynced!: () => void;
  const syncedP = new Promise<void>((r) => (markSynced = r));
  const { onAdd, onUpdate, onDelete } = opts.handlers;
  const nameOf = (o: T) => o.metadata?.name ?? '';
  const selectors: Record<string, string> = {
    ...(opts.fieldSelector ? { fieldSelector: opts.fieldSelector } : {}),
    ...(opts.labelSelector ? { labelSelector: opts.labelSelector } : {}),
  };

  const index = (o: T, add: boolean) => {
    for (const [iname, fn] of Object.entries(opts.indexes ?? {})) {
      let m = indexes.get(iname);
      if (!m) indexes.set(iname, (m = new Map()));
      for (const v of fn(o)) {
        let set = m.get(v);
        if (add) {
          if (!set) m.set(v, (set = new Set()));
          set.add(nameOf(o));
        } else if (set) {
          set.delete(nameOf(o));
          if (set.size === 0) m.delete(v);
        }
      }
    }
  };
  const put = (raw: T) => {
    const o = transform(raw);
    const old = cache.get(nameOf(o));
    if (old) index(old, false);
    cache.set(nameOf(o), o);
    index(o, true);
    if (old) onUpdate?.(o, old);
    else onAdd?.(o);
  };
  const remove = (raw: T) => {
    const old = cache.get(nameOf(raw));
    if (!old) return;
    index(old, false);
    cache.delete(nameOf(raw));
    onDelete?.(old);
  };

  const sink: ListSink<T> = {
    upsert: (o) => {
      if (cache.get(nameOf(o))?.metadata?.resourceVersion !== o.metadata?.resourceVersion) put(o);
    },
    remove,
    prune: (seen) => {
      for (const [name, o] of [...cache]) if (!seen.has(name)) remove(o);
    },
  };
  const markListed = (mode: string, rv: string) => {
    opts.log.debug({ path: opts.path, mode, resourceVersion: rv, objects: cache.size }, 'listed');
    if (!synced) {
      synced = true;
      markSynced();
    }
  };
  let streaming = opts.streamingList ?? true;
  const fallBack = (why: string) => {
    streaming = false;
    opts.log.info({ path: opts.path, why }, 'streaming lists not served; listing with LIST from now on');
  };

  const idleMs = opts.idleTimeoutMs ?? 90_000;
  let lastLife = 0;
  let lastError: string | undefined = 'not listed yet';
  // Full jitter (AWS architecture blog; client-go's wait.Jitter): restarts of many agents
  // after an API server restart spread out instead of arriving together.
  const jittered = (ms: number) => Math.round(ms / 2 + Math.random() * (ms / 2));
  const run = async () => {
    let backoff = 100;
    // Where the watch resumes; undefined: list first.
    let rv: string | undefined;
    // Where a streaming list starts: "" (the most recent state) at first and when the
    // server refuses the last one's, else the last resourceVersion seen (client-go).
    let listFrom = '';
    while (!abort.signal.aborted) {
      const watchAbort = new AbortController();
      const onStop = () => watchAbort.abort();
      abort.signal.addEventListener('abort', onStop, { once: true });
      let idleTimer: NodeJS.Timeout | undefined;
      const alive = () => {
        lastLife = Date.now();
        clearTimeout(idleTimer);
        idleTimer = setTimeout(
          () => watchAbort.abort(new Error(`no event or bookmark in ${idleMs} ms`)),
          idleMs,
        );
        idleTimer.unref?.();
      };
      // Set while this watch is a streaming list that has not seen its end bookmark.
      let initial: InitialEvents<T> | undefined;
      // What the event handler threw (the watch may reject with a transport error instead).
      let thrown: unknown;
      try {
        if (rv === undefined && !streaming) {
          const { rest, path } = opts;
          const pageSize = opts.pageSize ?? 500;
          rv = await pagedList({ rest, path, pageSize, selectors, signal: abort.signal }, sink);
          markListed('list', rv);
        }
        if (rv === undefined) initial = new InitialEvents(sink);
        else lastError = undefined;
        alive();
        await opts.rest.watch<T>(
          opts.path,
          {
            ...(initial ? streamingListQuery(listFrom) : { resourceVersion: rv ?? '' }),
            ...selectors,
            allowWatchBookmarks: 'true',
            timeoutSeconds: String(240 + Math.floor(Math.random() * 120)),
          },
          (e: WatchEvent<T>) => {
            try {
              alive();
              if (e.type === 'ERROR') {
                const code = (e.object as { code?: number }).code;
                throw new KubeApiError(code ?? 500, e.object);
              }
              // Only a delivered object or bookmark ends the backoff: an ERROR event (410
              // after 410) keeps it growing.
              backoff = 100;
              if (initial) {
                const listed = initial.take(e);
                if (listed === undefined) return;
                // The list is complete; the same connection goes on as the watch.
                initial = undefined;
                rv = listed;
                lastError = undefined;
                markListed('streaming', listed);
                return;
              }
              rv = e.object.metadata?.resourceVersion ?? rv;
              if (e.type === 'ADDED' || e.type === 'MODIFIED') put(e.object);
              else if (e.type === 'DELETED') remove(e.object);
            } catch (err) {
              thrown = err;
              throw err;
            }
          },
          watchAbort.signal,
        );
        // A server that streams lists ends the initial events with the bookmark even when
        // there are none; one that closes the watch before it ignored sendInitialEvents.
        if (initial) fallBack('the watch ended without the initial-events-end bookmark');
        continue; // the server closed the watch (timeoutSeconds): resume from rv
      } catch (caught) {
        if (abort.signal.aborted) return;
        const err = thrown ?? caught;
        if (initial && (err instanceof StreamingListUnsupported || rejectsStreamingList(err))) {
          fallBack(String(err));
          continue;
        }
        const why = watchAbort.signal.aborted ? String(watchAbort.signal.reason) : String(err);
        lastError = `watch ${opts.path}: ${why}`;
        // An API error (410 Gone: too old; anything else: unknown state) re-lists; a
        // transport error resumes the watch from the last resourceVersion. Every path
        // waits a jittered, growing delay (410 included: no re-list storm).
        let spread = 0;
        if (err instanceof KubeApiError) {
          if (rv !== undefined) listFrom = rv;
          else if (unusableResourceVersion(err)) listFrom = '';
          rv = undefined;
          spread = Math.round(Math.random() * (opts.relistSpreadMs ?? 0));
        }
        const wait = jittered(backoff) + spread;
        if (!(err instanceof KubeApiError && err.code === 410))
          opts.log.warn({ path: opts.path, err: why, retryInMs: wait }, 'watch failed; restarting');
        // The wait ends early when the informer is stopped.
        await new Promise<void>((r) => {
          const t = setTimeout(done, wait);
          t.unref?.();
          function done() {
            clearTimeout(t);
            abort.signal.removeEventListener('abort', done);
            r();
          }
          abort.signal.addEventListener('abort', done, { once: true });
        });
        backoff = Math.min(opts.maxBackoffMs ?? 10_000, backoff * 2);
      } finally {
        clearTimeout(idleTimer);
        abort.signal.removeEventListener('abort', onStop);
      }
    }
  };
  const running = run();

  return {
    list: () => [...cache.values()],
    get: (name) => cache.get(name),
    byIndex: (iname, value) => {
      const names = indexes.get(iname)?.get(value);
      return names ? [...names].flatMap((n) => cache.get(n) ?? []) : [];
    },
    synced: syncedP,
    hasSynced: () => synced,
    problem: () => {
      if (lastError) return lastError;
      if (Date.now() - lastLife > idleMs) return `watch ${opts.path}: silent for ${Date.now() - lastLife} ms`;
      return undefined;
    },
    async stop() {
      abort.abort();
      await running.catch(() => undefined);
    },
  };
}
