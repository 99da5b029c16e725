import { afterEach, describe, expect, it } from 'vitest';
import { startDiagnostics, type DiagnosticsServer } from '../../../src/obs/http-server.js';
import { createAgentMetrics } from '../../../src/obs/metrics.js';
import { WorkQueue, type QueueClock } from '../../../src/kube/work-queue.js';

/** The value of one sample line of the Prometheus text, e.g. `workqueue_depth{name="volumes"}`. */
async function sample(m: ReturnType<typeof createAgentMetrics>, series: string): Promise<number | undefined> {
  const text = await m.registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('agent metrics', () => {
  it('work queue -> adds, depth, retries, time queued and time worked as client-go reports them', async () => {
    let now = 0;
    const clock: QueueClock = { now: () => now, setTimeout: () => 0, clearTimeout: () => undefined };
    const m = createAgentMetrics();
    const q = new WorkQueue<string>({ clock, metrics: m.queue });
    q.add('a');
    q.add('a'); // merged: not a second add
    q.add('b');
    expect(await sample(m, 'workqueue_adds_total{name="volumes"}')).toBe(2);
    expect(await sample(m, 'workqueue_depth{name="volumes"}')).toBe(2);
    now = 3000;
    const k = await q.get();
    expect(await sample(m, 'workqueue_depth{name="volumes"}')).toBe(1);
    expect(await sample(m, 'workqueue_queue_duration_seconds_sum{name="volumes"}')).toBe(3);
    now = 3500;
    q.done(k!);
    expect(await sample(m, 'workqueue_work_duration_seconds_sum{name="volumes"}')).toBe(0.5);
    expect(await sample(m, 'workqueue_work_duration_seconds_count{name="volumes"}')).toBe(1);
    q.addRateLimited('c');
    expect(await sample(m, 'workqueue_retries_total{name="volumes"}')).toBe(1);
  });

  it('native executor stats -> threads by state, queued calls and hung devices at scrape time', async () => {
    const m = createAgentMetrics();
    const stats = {
      threads: 7,
      busy: 2,
      stuck: 3,
      queued: 4,
      devices: 5,
      hungDevices: 3,
      starting: 1,
      exhausted: false,
    };
    m.observeNativeExecutor(() => stats);
    expect(await sample(m, 'prfence_native_threads{state="idle"}')).toBe(1);
    expect(await sample(m, 'prfence_native_threads{state="starting"}')).toBe(1);
    expect(await sample(m, 'prfence_native_threads{state="busy"}')).toBe(2);
    expect(await sample(m, 'prfence_native_threads{state="stuck"}')).toBe(3);
    expect(await sample(m, 'prfence_native_queued_calls')).toBe(4);
    expect(await sample(m, 'prfence_native_hung_devices')).toBe(3);
    stats.hungDevices = 0;
    expect(await sample(m, 'prfence_native_hung_devices')).toBe(0);
  });

  it('fences -> counted by result; only removed keys feed the latency histogram', async () => {
    const m = createAgentMetrics();
    m.fence('fenced', 0.02);
    m.fence('fenced', 0.3);
    m.fence('failed', 5);
    expect(await sample(m, 'prfence_fences_total{result="fenced"}')).toBe(2);
    expect(await sample(m, 'prfence_fences_total{result="failed"}')).toBe(1);
    expect(await sample(m, 'prfence_fence_duration_seconds_count')).toBe(2);
    expect(await sample(m, 'prfence_fence_duration_seconds_bucket{le="0.025"}')).toBe(1);
    m.registrationAllowed(false);
    expect(await sample(m, 'prfence_registration_allowed')).toBe(0);
    m.apiRequest('PATCH', 409);
    expect(await sample(m, 'prfence_kube_api_requests_total{method="PATCH",code="409"}')).toBe(1);
  });
});

describe('diagnostics endpoint', () => {
  let srv: DiagnosticsServer | undefined;
  afterEach(async () => {
    await srv?.close();
    srv = undefined;
  });

  it('/metrics, /healthz, /readyz (503 with the reason until ready), 404, 405', async () => {
    const m = createAgentMetrics({ processMetrics: true });
    let why: string | undefined = 'start failed: connect ECONNREFUSED';
    srv = await startDiagnostics({ address: '127.0.0.1:0', registry: m.registry, notReady: () => why });
    const url = (p: string) => `http://127.0.0.1:${srv!.port}${p}`;
    const metrics = await fetch(url('/metrics'));
    expect(metrics.status).toBe(200);
    expect(metrics.headers.get('content-type')).toContain('text/plain');
    const text = await metrics.text();
    expect(text).toContain('# TYPE prfence_fences_total counter');
    expect(text).toContain('process_resident_memory_bytes');
    expect((await fetch(url('/healthz'))).status).toBe(200);
    const notReady = await fetch(url('/readyz'));
    expect([notReady.status, await notReady.text()]).toEqual([
      503,
      'not ready: start failed: connect ECONNREFUSED\n',
    ]);
    why = undefined;
    expect((await fetch(url('/readyz'))).status).toBe(200);
    expect((await fetch(url('/nope'))).status).toBe(404);
    expect((await fetch(url('/metrics'), { method: 'POST' })).status).toBe(405);
  });

  it('an address in use -> start rejects (no silent second server)', async () => {
    const m = createAgentMetrics();
    srv = await startDiagnostics({ address: '127.0.0.1:0', registry: m.registry, notReady: () => undefined });
    await expect(
      startDiagnostics({ address: `127.0.0.1:${srv.port}`, registry: m.registry, notReady: () => undefined }),
    ).rejects.toThrow(/EADDRINUSE/);
  });
});
