import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { startInformer, type ResilientInformer } from '../../../src/kube/informer.js';
import {
  KubeApiError,
  type RestClient,
  type RestRequest,
  type WatchEvent,
} from '../../../src/kube/rest-client.js';

interface Obj {
  metadata?: { name?: string; resourceVersion?: string; annotations?: Record<string, string> };
  spec?: { size?: number };
}
type ListPage = { metadata: { resourceVersion: string }; items: Obj[] };

/** One watch request the informer made: the test plays the server on it. */
interface WatchCall {
  query: Record<string, string>;
  /** Sends one event (an exception of the informer's handler ends the watch, as RestClient does). */
  emit(e: WatchEvent<Obj>): void;
  /** The server ends the watch cleanly. */
  end(): void;
  /** The request fails (an API error answer or a broken connection). */
  fail(err: Error): void;
}

/** The two RestClient methods the informer uses: LISTs answered from `lists`, watches played by the test. */
class FakeRest {
  readonly sends: RestRequest[] = [];
  readonly watches: WatchCall[] = [];
  readonly lists: ListPage[] = [];

  send<T>(req: RestRequest): Promise<T> {
    this.sends.push(req);
    const page = this.lists.shift();
    return page ? Promise.resolve(page as T) : Promise.reject(new Error('fake: no LIST answer queued'));
  }

  watch<T>(
    _path: string,
    query: Record<string, string>,
    onEvent: (e: WatchEvent<T>) => void,
    signal?: AbortSignal,
  ): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      // A closed watch delivers nothing more; a test that sends on one is wrong.
      let open = true;
      const close = (fn: () => void) => {
        open = false;
        fn();
      };
      signal?.addEventListener('abort', () => close(() => reject(new Error('aborted'))), { once: true });
      this.watches.push({
        query,
        emit: (e) => {
          if (!open) throw new Error(`fake: event on a closed watch: ${JSON.stringify(e)}`);
          try {
            onEvent(e as WatchEvent<T>);
          } catch (err) {
            close(() => reject(err as Error));
          }
        },
        end: () => close(resolve),
        fail: (err) => close(() => reject(err)),
      });
    });
  }

  /** The informer's watch request number `i` (0-based), once it is made. */
  async watchCall(i: number): Promise<WatchCall> {
    const end = Date.now() + 3000;
    while (!this.watches[i]) {
      if (Date.now() > end) throw new Error(`fake: no watch request #${i} (made ${this.watches.length})`);
      await new Promise((r) => setTimeout(r, 2));
    }
    return this.watches[i];
  }
}

const obj = (name: string, rv: string, size = 1): Obj => ({
  metadata: { name, resourceVersion: rv },
  spec: { size },
});
const added = (o: Obj): WatchEvent<Obj> => ({ type: 'ADDED', object: o });
const endBookmark = (rv: string): WatchEvent<Obj> => ({
  type: 'BOOKMARK',
  object: { metadata: { resourceVersion: rv, annotations: { 'k8s.io/initial-events-end': 'true' } } },
});
const plainBookmark = (rv: string): WatchEvent<Obj> => ({
  type: 'BOOKMARK',
  object: { metadata: { resourceVersion: rv } },
});
const watchError = (code: number, reason: string, message: string, causes?: unknown[]): WatchEvent<Obj> => ({
  type: 'ERROR',
  object: {
    kind: 'Status',
    status: 'Failure',
    code,
    reason,
    message,
    ...(causes ? { details: { causes } } : {}),
  } as Obj,
});
const expired = () => watchError(410, 'Expired', 'too old resource version: 1 (7)');

const STREAMING_QUERY = {
  sendInitialEvents: 'true',
  resourceVersionMatch: 'NotOlderThan',
  allowWatchBookmarks: 'true',
  timeoutSeconds: expect.stringMatching(/^(2[4-9]\d|3[0-5]\d)$/) as string, // 240..359, as the watch
};

const running: ResilientInformer<Obj>[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((i) => i.stop()));
});

function start(
  rest: FakeRest,
  extra: {
    fieldSelector?: string;
    streamingList?: boolean;
    maxBackoffMs?: number;
    relistSpreadMs?: number;
  } = {},
) {
  const events: string[] = [];
  const logs: { level: number; msg: string }[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => logs.push(JSON.parse(line)) });
  const inf = startInformer<Obj>({
    rest: rest as unknown as RestClient,
    path: '/apis/example.io/v1/things',
    log,
    maxBackoffMs: 100,
    handlers: {
      onAdd: (o) => events.push(`add ${o.metadata?.name}`),
      onUpdate: (o) => events.push(`update ${o.metadata?.name}`),
      onDelete: (o) => events.push(`delete ${o.metadata?.name}`),
    },
    ...extra,
  });
  running.push(inf);
  const names = () =>
    inf
      .list()
      .map((o) => o.metadata?.name)
      .sort();
  const infoLines = () => logs.filter((l) => l.level === 30).map((l) => l.msg);
  return { inf, events, names, infoLines };
}

describe('informer: streaming lists (WatchList)', () => {
  it('initial ADDED events + the end bookmark -> synced with exactly those objects, from one watch request with sendInitialEvents and no LIST; a re-list deletes the cached objects it lacks and leaves unchanged ones unnotified', async () => {
    const rest = new FakeRest();
    const { inf, events, names } = start(rest, { fieldSelector: 'spec.nodeName=n1' });
    const w0 = await rest.watchCall(0);
    // A fresh start asks for the most recent state: no resourceVersion.
    expect(w0.query).toEqual({ ...STREAMING_QUERY, fieldSelector: 'spec.nodeName=n1' });
    w0.emit(added(obj('a', '1')));
    w0.emit(added(obj('b', '2')));
    expect(inf.hasSynced()).toBe(false); // not before the end bookmark
    w0.emit(endBookmark('2'));
    await inf.synced;
    expect(names()).toEqual(['a', 'b']);

    w0.emit(expired()); // the watch is too old: re-list
    const w1 = await rest.watchCall(1);
    // A re-list resumes from the last resourceVersion seen (the watch cache serves it).
    expect(w1.query).toEqual({ ...STREAMING_QUERY, fieldSelector: 'spec.nodeName=n1', resourceVersion: '2' });
    w1.emit(added(obj('a', '1'))); // unchanged: no handler call
    w1.emit(added(obj('c', '3')));
    w1.emit(endBookmark('3'));
    expect(names()).toEqual(['a', 'c']);
    expect(events).toEqual(['add a', 'add b', 'add c', 'delete b']);
    expect(rest.sends).toEqual([]);
    expect(rest.watches).toHaveLength(2);
  });

  it('events after the end bookmark -> applied as the watch on the same connection (no second request); when the server ends it, the watch resumes from the last resourceVersion without sendInitialEvents', async () => {
    const rest = new FakeRest();
    const { inf, events, names } = start(rest);
    const w0 = await rest.watchCall(0);
    w0.emit(added(obj('a', '1')));
    w0.emit(added(obj('b', '2')));
    w0.emit(endBookmark('2'));
    await inf.synced;
    w0.emit({ type: 'MODIFIED', object: obj('a', '4', 7) });
    w0.emit({ type: 'DELETED', object: obj('b', '5') });
    w0.emit(added(obj('c', '6')));
    w0.emit(plainBookmark('7'));
    expect(names()).toEqual(['a', 'c']);
    expect(inf.get('a')?.spec?.size).toBe(7);
    expect(events).toEqual(['add a', 'add b', 'update a', 'delete b', 'add c']);
    expect(rest.watches).toHaveLength(1);

    w0.end(); // timeoutSeconds
    const w1 = await rest.watchCall(1);
    expect(w1.query).toEqual({
      resourceVersion: '7',
      allowWatchBookmarks: 'true',
      timeoutSeconds: STREAMING_QUERY.timeoutSeconds,
    });
    expect(rest.sends).toEqual([]);
  });

  it('the server rejects the parameters (422 "sendInitialEvents is forbidden ... WatchList feature gate") -> paged LIST + watch, one info line; a later re-list is a LIST again, never another streaming request', async () => {
    const rest = new FakeRest();
    rest.lists.push({ metadata: { resourceVersion: '5' }, items: [obj('a', '1')] });
    const { inf, names, infoLines } = start(rest);
    const w0 = await rest.watchCall(0);
    expect(w0.query).toEqual(STREAMING_QUERY);
    w0.fail(
      new KubeApiError(422, {
        kind: 'Status',
        reason: 'Invalid',
        code: 422,
        message:
          'ListOptions.meta.k8s.io "" is invalid: sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled',
      }),
    );
    await inf.synced;
    expect(names()).toEqual(['a']);
    expect(rest.sends).toHaveLength(1);
    expect(rest.sends[0]?.query).toMatchObject({ resourceVersion: '0', limit: '500' });
    const w1 = await rest.watchCall(1);
    expect(w1.query).toEqual({
      resourceVersion: '5',
      allowWatchBookmarks: 'true',
      timeoutSeconds: expect.any(String),
    });

    rest.lists.push({ metadata: { resourceVersion: '9' }, items: [obj('b', '8')] });
    w1.emit(expired()); // re-list
    const w2 = await rest.watchCall(2);
    expect(rest.sends).toHaveLength(2);
    expect(w2.query).toEqual({
      resourceVersion: '9',
      allowWatchBookmarks: 'true',
      timeoutSeconds: expect.any(String),
    });
    expect(names()).toEqual(['b']);
    expect(rest.watches.filter((w) => w.query.sendInitialEvents)).toHaveLength(1);
    expect(infoLines()).toEqual(['streaming lists not served; listing with LIST from now on']);
  });

  it('a stream that sends events and then ends without the end bookmark (a server that ignores sendInitialEvents) -> not synced by it; falls back to LIST, which prunes what the stream left', async () => {
    const rest = new FakeRest();
    const { inf, events, names, infoLines } = start(rest);
    const w0 = await rest.watchCall(0);
    w0.emit(added(obj('a', '1')));
    w0.emit(added(obj('b', '2')));
    expect(inf.hasSynced()).toBe(false);
    rest.lists.push({ metadata: { resourceVersion: '3' }, items: [obj('a', '1'), obj('c', '3')] });
    w0.end();
    await inf.synced;
    expect(names()).toEqual(['a', 'c']);
    expect(events).toEqual(['add a', 'add b', 'add c', 'delete b']);
    expect(rest.sends).toHaveLength(1);
    const w1 = await rest.watchCall(1);
    expect(w1.query).toMatchObject({ resourceVersion: '3' });
    expect(w1.query.sendInitialEvents).toBeUndefined();
    expect(infoLines()).toEqual(['streaming lists not served; listing with LIST from now on']);
  });

  it('a plain bookmark before the end bookmark (a server that ignores sendInitialEvents but keeps the watch open) -> falls back to LIST at once', async () => {
    const rest = new FakeRest();
    const { inf, names } = start(rest);
    const w0 = await rest.watchCall(0);
    rest.lists.push({ metadata: { resourceVersion: '4' }, items: [obj('a', '1')] });
    w0.emit(added(obj('a', '1')));
    w0.emit(plainBookmark('4'));
    await inf.synced;
    expect(names()).toEqual(['a']);
    expect(rest.sends).toHaveLength(1);
    expect((await rest.watchCall(1)).query.sendInitialEvents).toBeUndefined();
  });

  it('a broken connection during the initial events -> streams again (with backoff), no fallback to LIST', async () => {
    const rest = new FakeRest();
    const { inf, names, infoLines } = start(rest);
    const w0 = await rest.watchCall(0);
    w0.emit(added(obj('a', '1')));
    w0.fail(new Error('socket hang up'));
    const w1 = await rest.watchCall(1);
    expect(w1.query).toEqual(STREAMING_QUERY);
    w1.emit(added(obj('b', '2')));
    w1.emit(endBookmark('2'));
    await inf.synced;
    expect(names()).toEqual(['b']);
    expect(rest.sends).toEqual([]);
    expect(infoLines()).toEqual([]);
  });

  it('a streaming re-list answered "Too large resource version" (504) -> the next one asks for the most recent state (no resourceVersion)', async () => {
    const rest = new FakeRest();
    const { inf } = start(rest);
    const w0 = await rest.watchCall(0);
    w0.emit(endBookmark('50'));
    await inf.synced;
    w0.emit(expired());
    const w1 = await rest.watchCall(1);
    expect(w1.query.resourceVersion).toBe('50');
    w1.emit(
      watchError(504, 'Timeout', 'Timeout: Too large resource version: 50, current: 12', [
        { reason: 'ResourceVersionTooLarge', message: 'Too large resource version' },
      ]),
    );
    const w2 = await rest.watchCall(2);
    expect(w2.query).toEqual(STREAMING_QUERY);
    expect(rest.sends).toEqual([]);
  });

  it('streamingList: false -> paged LIST + watch from the start, no streaming request', async () => {
    const rest = new FakeRest();
    rest.lists.push({ metadata: { resourceVersion: '5' }, items: [obj('a', '1')] });
    const { inf, names, infoLines } = start(rest, { streamingList: false });
    await inf.synced;
    expect(names()).toEqual(['a']);
    const w0 = await rest.watchCall(0);
    expect(w0.query).toEqual({
      resourceVersion: '5',
      allowWatchBookmarks: 'true',
      timeoutSeconds: expect.any(String),
    });
    expect(infoLines()).toEqual([]);
  });

  it('every streaming list answered by an ERROR 410 event -> the waits between attempts grow (jittered, doubling), not reset by the error event', async () => {
    const rest = new FakeRest();
    start(rest, { maxBackoffMs: 10_000 });
    const at: number[] = [];
    for (let i = 0; i < 5; i++) {
      (await rest.watchCall(i)).emit(expired());
      at.push(Date.now());
    }
    await rest.watchCall(5);
    at.push(Date.now());
    const gaps = at.slice(1).map((t, i) => t - at[i]!);
    // 100, 200, 400, 800, 1600 ms halved to doubled by the jitter: 50-100 ... 800-1600.
    expect(gaps[0]).toBeLessThan(400);
    expect(gaps[4]).toBeGreaterThanOrEqual(750);
  });

  it('relistSpreadMs: a re-list forced by an API error waits a random 0..spread more (drawn uniformly: the fleet spreads out); a broken connection resumes the watch without it', async () => {
    const rest = new FakeRest();
    const spread = 1500;
    start(rest, { maxBackoffMs: 100, relistSpreadMs: spread });
    const w0 = await rest.watchCall(0);
    w0.emit(endBookmark('1'));
    // A broken connection: resumed from the last resourceVersion after the backoff alone.
    let t = Date.now();
    w0.fail(new Error('socket hang up'));
    const w1 = await rest.watchCall(1);
    const resumeMs = Date.now() - t;
    expect(w1.query.resourceVersion).toBe('1');
    // 410 on the resumed watch: the re-list waits backoff + a random share of the spread.
    const waits: number[] = [];
    let w = w1;
    for (let i = 2; i < 8; i++) {
      t = Date.now();
      w.emit(expired());
      w = await rest.watchCall(i);
      waits.push(Date.now() - t);
      expect(w.query.sendInitialEvents).toBe('true');
    }
    expect(resumeMs).toBeLessThan(400);
    // Six draws from 0..1500 ms (plus at most 100 ms backoff): spread out, not all alike.
    expect(Math.max(...waits)).toBeLessThanOrEqual(spread + 400);
    expect(Math.max(...waits) - Math.min(...waits)).toBeGreaterThan(150);
  }, 20_000);
});
