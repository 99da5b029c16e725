/**
 * The diagnostics endpoint (`--http-endpoint`, as in the kubernetes-csi sidecars):
 * GET /metrics (Prometheus text), /healthz (the process serves), /readyz (the agent
 * started: API server answered, caches synced). Nothing here changes any state.
 */
import type { Server } from 'node:http';
import { nodeHttp } from '../kube/http-builtin.js';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';

export interface DiagnosticsOptions {
  /** host:port or :port (all interfaces). */
  address: string;
  registry: Registry;
  /** Undefined when ready, else why not (shown in the 503 body). */
  notReady: () => string | undefined;
}

export interface DiagnosticsServer {
  readonly port: number;
  close(): Promise<void>;
}

export function parseHostPort(address: string): { host: string | undefined; port: number } {
  const m = /^(.*):(\d+)$/.exec(address.trim());
  const port = Number(m?.[2]);
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535)
    throw new Error(`http endpoint must be host:port or :port, got "${address}"`);
  const host = m[1]!.replace(/^\[(.*)\]$/, '$1');
  return { host: host === '' ? undefined : host, port };
}

export async function startDiagnostics(o: DiagnosticsOptions): Promise<DiagnosticsServer> {
  const { host, port } = parseHostPort(o.address);
  const server: Server = nodeHttp.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/metrics') {
      o.registry.metrics().then(
        (text) => res.writeHead(200, { 'Content-Type': o.registry.contentType }).end(text),
        (e: unknown) => res.writeHead(500, { 'Content-Type': 'text/plain' }).end(String(e)),
      );
      return;
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'Content-Type': 'text/plain' }).end('ok\n');
      return;
    }
    if (path === '/readyz') {
      const why = o.notReady();
      res
        .writeHead(why ? 503 : 200, { 'Content-Type': 'text/plain' })
        .end(why ? `not ready: ${why}\n` : 'ok\n');
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
