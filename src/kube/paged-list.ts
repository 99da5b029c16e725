/**
 * The informer's classic way to its initial state (and every re-list): a paged LIST,
 * then a watch from the list's resourceVersion (src/kube/informer.ts). Used where the
 * API server does not serve streaming lists (src/kube/streaming-list.ts), or when the
 * informer is told not to try them.
 */
import type { CachedObject, ListSink } from './informer.js';
import type { RestClient } from './rest-client.js';

export interface PagedListOptions {
  rest: RestClient;
  path: string;
  pageSize: number;
  /** fieldSelector and labelSelector, as the watch gets them. */
  selectors: Record<string, string>;
  signal: AbortSignal;
}

/** Lists every object into `sink` (pruning what the list lacks); resolves with the list's resourceVersion. */
export async function pagedList<T extends CachedObject>(
  o: PagedListOptions,
  sink: ListSink<T>,
): Promise<string> {
  const seen = new Set<string>();
  let cont: string | undefined;
  let rv = '';
  do {
    const page = await o.rest.send<{
      metadata?: { resourceVersion?: string; continue?: string };
      items: T[];
    }>({
      method: 'GET',
      path: o.path,
      // resourceVersion=0: served from the API server's watch cache, not read from etcd
      // (a fleet re-listing after an API server restart costs no etcd reads); the cache
      // may lag a little, which the watch that follows catches up on. Device commands
      // never rest on this cache alone (src/agent/fresh-view.ts).
      query: {
        limit: String(o.pageSize),
        ...o.selectors,
        ...(cont ? { continue: cont } : { resourceVersion: '0' }),
      },
      signal: o.signal,
    });
    for (const item of page.items) {
      seen.add(item.metadata?.name ?? '');
      sink.upsert(item);
    }
    rv = page.metadata?.resourceVersion ?? rv;
    cont = page.metadata?.continue || undefined;
  } while (cont);
  sink.prune(seen);
  return rv;
}
