/**
 * The real `prfence agent` process (dist/, built here) against the real API server:
 * an API server that does not answer keeps it up and not ready, with nothing registered
 * (S2, no crash loop); once it answers, the agent registers its NodeFence, becomes ready
 * and serves its metrics; SIGTERM ends it with exit code 0 (S8: nothing released).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, connect, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { KubeApiError } from '../../src/kube/rest-client.js';
import { eventually } from '../envtest/kube.js';
import { Cluster } from './agent-harness.js';
import { freePort } from '../envtest/net.js';

/** A TCP relay to the API server, started late: before it listens, the agent's port refuses. */
function relay(port: number, to: URL): Promise<Server> {
  const srv = createServer((down) => {
    const up = connect(Number(to.port), to.hostname);
    down.pipe(up).pipe(down);
    up.on('error', () => down.destroy());
    down.on('error', () => up.destroy());
  });
  return new Promise((r) => srv.listen(port, '127.0.0.1', () => r(srv)));
}

describe('prfence agent process', () => {
  const c = new Cluster();
  let child: ChildProcess | undefined;
  let proxy: Server | undefined;
  const out: string[] = [];

  beforeAll(() => {
    execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json'], {
      stdio: 'inherit',
    });
  });
  afterAll(async () => {
    child?.kill('SIGKILL');
    proxy?.close();
  });

  it('API server unreachable -> up, not ready, nothing registered; reachable -> registered, ready, metrics; SIGTERM -> exit 0', async () => {
    const node = await c.node('node-p');
    const [apiPort, diagPort] = [await freePort(), await freePort()];
    const admin = JSON.parse(c.kc.exportConfig()) as { clusters: { cluster: { server: string } }[] };
    const server = new URL(inject('apiServerUrl'));
    for (const cl of admin.clusters) cl.cluster.server = `https://127.0.0.1:${apiPort}`;
    const kubeconfig = join(mkdtempSync(join(tmpdir(), 'prfence-kc-')), 'kubeconfig');
    writeFileSync(kubeconfig, JSON.stringify(admin));
    child = spawn(
      process.execPath,
      [
        'dist/src/cli/main.js',
        'agent',
        '--node-name',
        node,
        '--kubeconfig',
        kubeconfig,
        '--http-endpoint',
        `127.0.0.1:${diagPort}`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child.stdout!.on('data', (b: Buffer) => out.push(b.toString()));
    child.stderr!.on('data', (b: Buffer) => out.push(b.toString()));
    const diag = (p: string) => fetch(`http://127.0.0.1:${diagPort}${p}`);

    // Unreachable: serving, not ready with the reason, retrying, registered nowhere.
    const notReady = await eventually(async () => {
      const r = await diag('/readyz');
      return r.status === 503 ? r.text() : false;
    });
    expect(notReady).toMatch(/^not ready: start failed: .*ECONNREFUSED/);
    expect((await diag('/healthz')).status).toBe(200);
    await eventually(() => out.join('').split('agent not started').length > 2, { timeoutMs: 20_000 });
    expect(child.exitCode).toBeNull();
    await expect(c.nodeFence(node)).rejects.toSatisfy((e) => e instanceof KubeApiError && e.code === 404);

    // Reachable: it starts on its next retry, registers its key, becomes ready.
    proxy = await relay(apiPort, server);
    await eventually(async () => (await diag('/readyz')).status === 200, { timeoutMs: 40_000 });
    const nf = await c.nodeFence(node);
    expect(nf.status?.key).toMatch(/^[0-9a-f]{16}$/);
    const metrics = await (await diag('/metrics')).text();
    expect(metrics).toMatch(/prfence_kube_api_requests_total\{method="PATCH",code="20\d"\} [1-9]/);
    expect(metrics).toContain('workqueue_depth{name="volumes"}');
    expect(metrics).toContain('process_resident_memory_bytes');

    child.kill('SIGTERM');
    const code = await new Promise<number | null>((r) => child!.once('exit', (c) => r(c)));
    expect(code).toBe(0);
    expect(out.join('')).toContain('reservations stay in place (S8)');
  });
});
