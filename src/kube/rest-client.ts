/**
 * A small JSON REST client over a KubeConfig's credentials, for custom resources and
 * server-side apply. client-node's typed serializer drops fields it does not model
 * (e.g. `enum`, `x-kubernetes-*` in CRD schemas, or any custom resource field), so
 * prfence talks to its own resources as plain JSON. No fencing knowledge here.
 */
import { Agent as HttpsAgent, request, type RequestOptions } from 'node:https';
import { request as httpRequest } from 'node:http';
import type { KubeConfig } from '@kubernetes/client-node';

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
  query?: Record<string, string>;
  signal?: AbortSignal;
  timeoutMs?: number;
}

export class RestClient {
  readonly #kc: KubeConfig;
  readonly #server: URL;
  /** Kept-alive TLS connections: client-node's agent opens one connection (and handshake) per request. */
  #agent: HttpsAgent | undefined;
  /** Requests sent (the benchmark reports API requests per fence). */
  requests = 0;

  readonly #onResponse: ((method: string, code: number) => void) | undefined;

  /** `onResponse` sees every answer's method and HTTP code (0: no answer), e.g. for metrics. */
  constructor(kc: KubeConfig, opts: { onResponse?: (method: string, code: number) => void } = {}) {
    this.#kc = kc;
    this.#onResponse = opts.onResponse;
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new Error('kubeconfig has no current cluster');
    this.#server = new URL(cluster.server);
  }

  /** Sends one request; resolves with the parsed JSON body, rejects with KubeApiError or a transport error. */
  async send<T = unknown>(req: RestRequest): Promise<T> {
    const url = new URL(req.path, this.#server);
    for (const [k, v] of Object.entries(req.query ?? {})) url.searchParams.set(k, v);
    const opts: RequestOptions = { method: req.method, headers: { Accept: 'application/json' } };
    // Credentials per request (tokens rotate); the connection pool is this client's own.
    await this.#kc.applyToHTTPSOptions(opts);
    if (url.protocol === 'https:' && !this.#kc.getCurrentCluster()?.proxyUrl) {
      this.#agent ??= new HttpsAgent({
        keepAlive: true,
        maxSockets: 32,
        ...(opts.ca ? { ca: opts.ca } : {}),
        ...(opts.cert ? { cert: opts.cert } : {}),
        ...(opts.key ? { key: opts.key } : {}),
        ...(opts.servername ? { servername: opts.servername } : {}),
        ...(opts.rejectUnauthorized !== undefined ? { rejectUnauthorized: opts.rejectUnauthorized } : {}),
      });
      opts.agent = this.#agent;
    }
    this.requests += 1;
    const payload =
      req.body === undefined ? undefined : typeof req.body === 'string' ? req.body : JSON.stringify(req.body);
    const headers = opts.headers as Record<string, string>;
    if (payload !== undefined) {
      headers['Content-Type'] = req.contentType ?? 'application/json';
      headers['Content-Length'] = String(Buffer.byteLength(payload));
    }
    const send = url.protocol === 'http:' ? httpRequest : request;
    return new Promise<T>((resolve, reject) => {
      const r = send(url, { ...opts, timeout: req.timeoutMs ?? 30_000, signal: req.signal }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: unknown = text;
          try {
            body = text ? JSON.parse(text) : undefined;
          } catch {
            // not JSON: keep the text
          }
          const code = res.statusCode ?? 0;
          this.#onResponse?.(req.method, code);
          if (code >= 200 && code < 300) resolve(body as T);
          else reject(new KubeApiError(code, body));
        });
      });
      r.on('timeout', () => r.destroy(new Error(`kube API ${req.method} ${req.path}: timeout`)));
      r.on('error', (e) => {
        this.#onResponse?.(req.method, 0);
        reject(e);
      });
      if (payload !== undefined) r.write(payload);
      r.end();
    });
  }

  /** Closes kept-alive connections (they would otherwise keep the process alive until idle). */
  close(): void {
    this.#agent?.destroy();
    this.#agent = undefined;
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
