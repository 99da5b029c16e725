/**
 * Streaming lists (Kubernetes "WatchList", KEP-3157): the initial state comes over a
 * watch instead of a LIST. With sendInitialEvents=true the API server sends an ADDED
 * event per object (from its watch cache, without building a list response in memory),
 * then a BOOKMARK annotated `k8s.io/initial-events-end: "true"` whose resourceVersion is
 * the list's; the same connection then goes on as a plain watch.
 *
 * resourceVersion (client-go's reflector, watchList): "" (left out) asks for the most
 * recent state, as consistent as a quorum read; a re-list passes the last resourceVersion
 * seen, which the watch cache serves without etcd once it has caught up to it.
 *
 * A server that does not serve them either rejects the parameters (422 Invalid: WatchList
 * feature gate off, or older than 1.27, which forbade resourceVersionMatch on a watch) or
 * ignores them and sends a plain watch: events, plain bookmarks, never the end bookmark.
 * The informer falls back to the paged LIST (src/kube/paged-list.ts) in both cases.
 */
import type { CachedObject, ListSink } from './informer.js';
import { KubeApiError, type WatchEvent } from './rest-client.js';

/** The annotation on the bookmark that ends the initial events. */
export const INITIAL_EVENTS_END = 'k8s.io/initial-events-end';

/** The query of a streaming list (besides the watch's own fieldSelector, bookmarks and timeout). */
export function streamingListQuery(resourceVersion: string): Record<string, string> {
  return {
    sendInitialEvents: 'true',
    resourceVersionMatch: 'NotOlderThan',
    ...(resourceVersion ? { resourceVersion } : {}),
  };
}

/** The stream shows the server ignored sendInitialEvents: list some other way. */
export class StreamingListUnsupported extends Error {
  constructor(why: string) {
    super(`streaming list not served: ${why}`);
    this.name = 'StreamingListUnsupported';
  }
}

/** The initial events of one streaming list, applied to the cache as they come (like a LIST's pages). */
export class InitialEvents<T extends CachedObject> {
  readonly #sink: ListSink<T>;
  readonly #seen = new Set<string>();
  constructor(sink: ListSink<T>) {
    this.#sink = sink;
  }

  /** Applies one event; on the end bookmark, prunes what the stream lacked and returns the list's resourceVersion. */
  take(e: WatchEvent<T>): string | undefined {
    const name = e.object.metadata?.name ?? '';
    switch (e.type) {
      case 'ADDED':
      case 'MODIFIED': // not expected before the end bookmark; handled as client-go does
        this.#seen.add(name);
        this.#sink.upsert(e.object);
        return undefined;
      case 'DELETED':
        this.#seen.delete(name);
        this.#sink.remove(e.object);
        return undefined;
      case 'BOOKMARK': {
        const meta = (e.object as { metadata?: { annotations?: Record<string, string> } }).metadata;
        // A server that streams the initial events sends no other bookmark before this one.
        if (meta?.annotations?.[INITIAL_EVENTS_END] !== 'true')
          throw new StreamingListUnsupported('a bookmark came before the initial-events-end bookmark');
        this.#sink.prune(this.#seen);
        return e.object.metadata?.resourceVersion ?? '';
      }
      default:
        return undefined;
    }
  }
}

/**
 * The API server refused a streaming list's parameters (e.g. 422 "sendInitialEvents is
 * forbidden for watch unless the WatchList feature gate is enabled"), as opposed to an
 * error that a later request may not meet (403 RBAC, 5xx, 429).
 */
export function rejectsStreamingList(err: unknown): boolean {
  if (!(err instanceof KubeApiError)) return false;
  return /sendInitialEvents|resourceVersionMatch/i.test(`${err.message} ${JSON.stringify(err.body) ?? ''}`);
}

/**
 * The resourceVersion a streaming list asked for is unusable: 410 Gone/Expired, or newer
 * than the server knows (504 "Too large resource version", e.g. etcd restored from a
 * backup). client-go then asks for the most recent state ("").
 */
export function unusableResourceVersion(err: unknown): boolean {
  if (!(err instanceof KubeApiError)) return false;
  if (err.code === 410 || err.reason === 'Expired' || err.reason === 'Gone') return true;
  const causes = (err.body as { details?: { causes?: { reason?: string }[] } } | undefined)?.details?.causes;
  return (
    (causes ?? []).some((c) => c.reason === 'ResourceVersionTooLarge') ||
    /too large resource version/i.test(err.message)
  );
}
