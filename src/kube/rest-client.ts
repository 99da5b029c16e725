/**
 * A small JSON REST client (kept-alive TLS connections, the credentials of a
 * KubeConnection) for every API call of the agent, server-side apply and watches. client-node's typed serializer drops fields it does not model
 * (e.g. `enum`, `x-kubernetes-*` in CRD schemas, or any custom resource field), so
 * prfence talks to its own resources as plain JSON. No fencing knowledge here.
 */
import { Agent as HttpsAgent, request, type RequestOptions } from 'node:https';
import type { IncomingMessage } from 'node:http';
import { nodeHttp } from './http-builtin.js';
import { arch, platform } from 'node:os';
import type { Readable } from 'node:stream';
import { createGunzip, gunzip } from 'node:zlib';
import { toConnection, type ConnectionSource, type KubeConnection } from './connection.js';

/** An API error: HTTP status and the server's Status message. Match on `code`, not text. */
export class KubeApiError extends Error {
  readonly code: number;
  readonly reason: string | undefined;
  readonly body: unknown;
  constructor(code: number, body: unknown) {
    const status = body as { message?: string; reason?: string } | undefined;
    super(`kube API ${code}: ${status?.message ?? JSON.stringify(body)}`);
    this.name = 'KubeApiError';
    this.code = code;
    this.reason = status?.reason;
    this.body = body;
  }
}

export interface RestRequest {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  path: string;
  body?: unknown;
  contentType?: string;
  /** Accept header; default application/json (e.g. the Table view kubectl asks for). */
  accept?: string;
  query?: Record<string, string>;
  signal?: AbortSignal;
  timeoutMs?: number;
}

/** One event of a watch stream. */
export interface WatchEvent<T> {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: T;
}

export class RestClient {
  readonly #conn: KubeConnection;
  readonly #server: URL;
  readonly #agent: HttpsAgent | InstanceType<typeof nodeHttp.Agent>;
  /** Requests sent (for the benchmark's "API requests per fence"). */
  requests = 0;

  readonly #onResponse: ((method: string, code: number) => void) | undefined;
  readonly #userAgent: string;

  /**
   * `onResponse` sees every answer's method and HTTP code (0: no answer), e.g. for metrics.
   * `userAgent` names the caller in the API server's logs and audit (client-go style).
   */
  constructor(
    src: ConnectionSource,
    opts: { onResponse?: (method: string, code: number) => void; userAgent?: string } = {},
  ) {
    this.#conn = toConnection(src);
    this.#onResponse = opts.onResponse;
    this.#userAgent = `${opts.userAgent ?? 'prfence'} (${platform()}/${arch()}) node/${process.version}`;
    this.#server = new URL(this.#conn.server);
    const c = this.#conn;
    this.#agent =
      this.#server.protocol === 'http:'
        ? new nodeHttp.Agent({ keepAlive: true })
        : new HttpsAgent({
            keepAlive: true,
            maxSockets: 16,
            ...(c.ca ? { ca: c.ca } : {}),
            ...(c.cert ? { cert: c.cert } : {}),
            ...(c.key ? { key: c.key } : {}),
            rejectUnauthorized: !c.insecureSkipTlsVerify,
          });
  }

  #open(req: RestRequest, onResponse: (res: IncomingMessage) => void): ReturnType<typeof request> {
    this.requests += 1;
    const url = new URL(req.path, this.#server);
    for (const [k, v] of Object.entries(req.query ?? {})) url.searchParams.set(k, v);
    // gzip: the API server compresses large answers (lists) when asked.
    const headers: Record<string, string> = {
      Accept: req.accept ?? 'application/json',
      'Accept-Encoding': 'gzip',
      'User-Agent': this.#userAgent,
    };
    const token = this.#conn.token?.();
    if (token) headers.Authorization = `Bearer ${token}`;
    const payload =
      req.body === undefined ? undefined : typeof req.body === 'string' ? req.body : JSON.stringify(req.body);
    if (payload !== undefined) {
      headers['Content-Type'] = req.contentType ?? 'application/json';
      headers['Content-Length'] = String(Buffer.byteLength(payload));
    }
    const opts: RequestOptions = {
      method: req.method,
      headers,
      agent: this.#agent,
      ...(req.timeoutMs !== 0 ? { timeout: req.timeoutMs ?? 30_000 } : {}),
      ...(req.signal ? { signal: req.signal } : {}),
    };
    const r = (url.protocol === 'http:' ? nodeHttp.request : request)(url, opts, onResponse);
    r.on('timeout', () => r.destroy(new Error(`kube API ${req.method} ${req.path}: timeout`)));
    if (payload !== undefined) r.write(payload);
    r.end();
    return r;
  }

  /** Sends one request; resolves with the parsed JSON body, rejects with KubeApiError or a transport error. */
  send<T = unknown>(req: RestRequest): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const r = this.#open(req, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          this.#onResponse?.(req.method, res.statusCode ?? 0);
          const raw = Buffer.concat(chunks);
          if (res.headers['content-encoding'] === 'gzip') {
            // Off the event loop (libuv's pool): a big list inflates without a stall.
            gunzip(raw, (err, out) => (err ? reject(err) : finish(out)));
          } else finish(raw);
        });
        const finish = (buf: Buffer) => {
          const text = buf.toString('utf8');
          let body: unknown = text;
          try {
            body = text ? JSON.parse(text) : undefined;
          } catch {
            // not JSON: keep the text
          }
          const code = res.statusCode ?? 0;
          if (code >= 200 && code < 300) resolve(body as T);
          else reject(new KubeApiError(code, body));
        };
      });
      r.on('error', (e) => {
        this.#onResponse?.(req.method, 0);
        reject(e);
      });
    });
  }

  /**
   * A watch: calls `onEvent` for each line of the stream; resolves when the server ends
   * it (the caller watches again from its last resourceVersion), rejects on a transport
   * error or a non-2xx answer. Abort with `signal`.
   */
  watch<T>(
    path: string,
    query: Record<string, string>,
    onEvent: (e: WatchEvent<T>) => void,
    signal?: AbortSignal,
  ): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const r = this.#open(
        {
          method: 'GET',
          path,
          query: { ...query, watch: 'true' },
          timeoutMs: 0,
          ...(signal ? { signal } : {}),
        },
        (res) => {
          const code = res.statusCode ?? 0;
          if (code < 200 || code >= 300) {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () => {
              let body: unknown;
              try {
                body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
              } catch {
                body = undefined;
              }
              reject(new KubeApiError(code, body));
            });
            return;
          }
          let pending = '';
          const stream: Readable =
            res.headers['content-encoding'] === 'gzip' ? res.pipe(createGunzip()) : res;
          stream.setEncoding('utf8');
          stream.on('data', (chunk: string) => {
            pending += chunk;
            let nl: number;
            while ((nl = pending.indexOf('\n')) >= 0) {
              const line = pending.slice(0, nl);
              pending = pending.slice(nl + 1);
              if (!line.trim()) continue;
              try {
                onEvent(JSON.parse(line) as WatchEvent<T>);
              } catch (e) {
                r.destroy(e as Error);
                return;
              }
            }
          });
          stream.on('end', () => resolve());
          stream.on('error', reject);
          res.on('error', reject);
          // A connection that dies mid-stream may end with neither 'end' nor 'error'.
          res.on('close', () => {
            if (!res.complete) reject(new Error(`watch ${path}: connection closed`));
          });
        },
      );
      // The server ends a watch after timeoutSeconds; one that outlives it by far sits on a
      // half-open connection (a partition): give up on it and watch again.
      const ts = Number(query.timeoutSeconds);
      const watchdog =
        ts > 0
          ? setTimeout(() => r.destroy(new Error(`watch ${path}: no end after ${ts} s`)), (ts + 30) * 1000)
          : undefined;
      watchdog?.unref();
      r.on('close', () => clearTimeout(watchdog));
      r.on('error', reject);
    });
  }

  /** The API server's URL (for messages). */
  get server(): string {
    return this.#server.origin;
  }

  /** Closes kept-alive connections. */
  close(): void {
    this.#agent.destroy();
  }

  get<T = unknown>(path: string, query?: Record<string, string>): Promise<T> {
    return this.send<T>({ method: 'GET', path, ...(query ? { query } : {}) });
  }

  /**
   * Server-side apply (application/apply-patch+yaml; JSON is valid YAML) with a field
   * manager; `force` takes ownership of conflicting fields.
   */
  apply<T = unknown>(path: string, obj: unknown, fieldManager: string, force = true): Promise<T> {
    return this.send<T>({
      method: 'PATCH',
      path,
      body: obj,
      contentType: 'application/apply-patch+yaml',
      query: { fieldManager, ...(force ? { force: 'true' } : {}) },
    });
  }
}

/** Path of a cluster-scoped custom resource (or its status subresource). */
export function clusterObjectPath(
  group: string,
  version: string,
  plural: string,
  name?: string,
  sub?: 'status',
): string {
  return `/apis/${group}/${version}/${plural}${name ? `/${encodeURIComponent(name)}` : ''}${sub ? `/${sub}` : ''}`;
}
