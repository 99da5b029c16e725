/**
 * The controller's reads and deletes. Every decision to write rests on a consistent read
 * (GET or LIST without a resourceVersion: served from etcd, never from a cache), and every
 * delete carries that read's uid and resourceVersion as preconditions, so an object that
 * was re-created or changed since is never deleted. An error other than 404 is thrown:
 * an unreadable object never leads to a write.
 */
import { GROUP, NODE_FENCE, RESERVATION_KEY, VERSION, VOLUME_RESERVATION } from '../crd/types.js';
import { clusterObjectPath, KubeApiError, type RestClient } from '../kube/rest-client.js';

export const nfPath = (name?: string) => clusterObjectPath(GROUP, VERSION, NODE_FENCE.plural, name);
export const vrPath = (name?: string) => clusterObjectPath(GROUP, VERSION, VOLUME_RESERVATION.plural, name);
export const rkPath = (name?: string) => clusterObjectPath(GROUP, VERSION, RESERVATION_KEY.plural, name);
export const nodePath = (name?: string) => `/api/v1/nodes${name ? `/${encodeURIComponent(name)}` : ''}`;
export const pvPath = (name?: string) =>
  `/api/v1/persistentvolumes${name ? `/${encodeURIComponent(name)}` : ''}`;

/** Time limit of each controller request (a partitioned API server must not hold a worker). */
export const REQUEST_TIMEOUT_MS = 10_000;

export const isNotFound = (e: unknown) => e instanceof KubeApiError && e.code === 404;
export const isConflict = (e: unknown) => e instanceof KubeApiError && e.code === 409;

/** A consistent GET; undefined only on 404. */
export async function getFresh<T>(rest: RestClient, path: string): Promise<T | undefined> {
  try {
    return await rest.send<T>({ method: 'GET', path, timeoutMs: REQUEST_TIMEOUT_MS });
  } catch (e) {
    if (isNotFound(e)) return undefined;
    throw e;
  }
}

/** A consistent LIST (no resourceVersion: not served from the watch cache). */
export async function listFresh<T>(rest: RestClient, path: string): Promise<T[]> {
  const items: T[] = [];
  let cont: string | undefined;
  do {
    const page = await rest.send<{ items: T[]; metadata?: { continue?: string } }>({
      method: 'GET',
      path,
      query: { limit: '500', ...(cont ? { continue: cont } : {}) },
      timeoutMs: REQUEST_TIMEOUT_MS,
    });
    items.push(...page.items);
    cont = page.metadata?.continue || undefined;
  } while (cont);
  return items;
}

/**
 * Deletes exactly the object that was read: preconditions uid and resourceVersion (409 if
 * it changed or was re-created). Resolves false if it is already gone.
 */
export async function deleteExact(
  rest: RestClient,
  path: string,
  meta: { uid?: string; resourceVersion?: string },
): Promise<boolean> {
  if (!meta.uid || !meta.resourceVersion) throw new Error(`delete ${path}: no uid or resourceVersion read`);
  try {
    await rest.send({
      method: 'DELETE',
      path,
      body: {
        apiVersion: 'v1',
        kind: 'DeleteOptions',
        preconditions: { uid: meta.uid, resourceVersion: meta.resourceVersion },
      },
      timeoutMs: REQUEST_TIMEOUT_MS,
    });
    return true;
  } catch (e) {
    if (isNotFound(e)) return false;
    throw e;
  }
}

/**
 * A merge patch of `metadata` of exactly the object that was read: its resourceVersion
 * goes with the patch (409 if the object changed since). Resolves false if it is gone.
 */
export async function patchExact(
  rest: RestClient,
  path: string,
  meta: { resourceVersion?: string },
  metadata: Record<string, unknown>,
): Promise<boolean> {
  if (!meta.resourceVersion) throw new Error(`patch ${path}: no resourceVersion read`);
  try {
    await rest.send({
      method: 'PATCH',
      path,
      contentType: 'application/merge-patch+json',
      body: { metadata: { ...metadata, resourceVersion: meta.resourceVersion } },
      timeoutMs: REQUEST_TIMEOUT_MS,
    });
    return true;
  } catch (e) {
    if (isNotFound(e)) return false;
    throw e;
  }
}
