/**
 * `prfence fence`, `unfence` and `status` against the real API server, with two agents on
 * a memory LU: a fence request removes the node's key and holds it off (S2); unfence lets
 * it register again; status shows both. The CLI runs in-process (runCli), as main.ts does.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inject, afterAll, describe, expect, it } from 'vitest';
import { registerClusterCommands } from '../../src/cli/cluster-command.js';
import { runCli } from '../../src/cli/program.js';
import { GROUP, VERSION } from '../../src/crd/types.js';
import { clusterObjectPath, RestClient } from '../../src/kube/rest-client.js';
import { adminKubeConfig, eventually, uniqueName } from '../envtest/kube.js';
import { freePort } from '../envtest/net.js';
import { Cluster } from './agent-harness.js';

async function cli(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(argv, { stdout: (l) => out.push(l), stderr: (l) => err.push(l) }, [
    registerClusterCommands,
  ]);
  return { code, out: out.join('\n'), err: err.join('\n') };
}

describe('prfence fence / unfence / status', () => {
  const c = new Cluster();
  const kc = inject('kubeconfigPath');
  afterAll(async () => {
    await c.stopAll();
  });

  // Its own waits add up to over 100 s on a busy machine: the test's limit is above them.
  it(
    'fence -> peers remove the key and it stays off; status shows it; unfence -> registered again',
    { timeout: 180_000 },
    async () => {
      const [na, nb] = [await c.node('node-a'), await c.node('node-b')];
      const { name: pv, lu } = await c.pv();
      const a = await c.startAgent(na);
      const b = await c.startAgent(nb);
      await c.attach(pv, na);
      await c.attach(pv, nb);
      await eventually(() => lu.state().registrations.length === 2, { timeoutMs: 20_000 });

      const fence = await cli('fence', na, '--reason', 'node lost its heartbeat', '--kubeconfig', kc);
      expect(fence, fence.err).toMatchObject({ code: 0 });
      expect(fence.out).toContain(`nodefence/${na}: fence requested`);
      await eventually(() => !lu.state().registrations.some((r) => r.key === a.key), { timeoutMs: 20_000 });
      expect(lu.write(na)).toBe('refused');
      expect((await c.nodeFence(na)).spec).toMatchObject({
        fenceState: 'Fenced',
        reason: 'node lost its heartbeat',
        requestedBy: expect.stringMatching(/^prfence-cli\//) as string,
      });

      // Each try spawns a CLI process (seconds on a busy machine); the marks follow the fence.
      const status = await eventually(
        async () => {
          const s = await cli('status', '--json', '--kubeconfig', kc);
          const j = JSON.parse(s.out) as {
            nodes: { node: string; phase: string | null; fenceState: string }[];
            volumes: { volume: string; lastFenced: string | null; holder: string | null }[];
          };
          const n = j.nodes.find((x) => x.node === na);
          const v = j.volumes.find((x) => x.volume === pv);
          if (n?.phase !== 'Fenced' || v?.lastFenced !== na)
            throw new Error(`not yet: ${JSON.stringify({ node: n, volume: v })}`);
          return { n, v };
        },
        { timeoutMs: 60_000 },
      );
      expect(status.n.fenceState).toBe('Fenced');
      expect(status.v.holder).toBe(nb);
      const text = await cli('status', '--kubeconfig', kc);
      expect(text.out).toMatch(new RegExp(`^${na}\\s+[0-9a-f]{16}\\s+Fenced\\s+Fenced`, 'm'));
      expect(text.out).toMatch(new RegExp(`^${pv}\\s+\\S+\\s+write-exclusive-reg-only\\s+${nb}\\s`, 'm'));

      // Held off while fenced (S2), registered again after unfence.
      await new Promise((r) => setTimeout(r, 1000));
      expect(lu.state().registrations.some((r) => r.key === a.key)).toBe(false);
      const unfence = await cli('unfence', na, '--kubeconfig', kc);
      expect(unfence, unfence.err).toMatchObject({ code: 0 });
      await eventually(() => lu.state().registrations.some((r) => r.key === a.key), { timeoutMs: 20_000 });
      expect(lu.write(na)).toBe('ok');
      expect(b.key).not.toBe(a.key);
    },
  );

  it('bad use -> one clear line and a usage (2) or API (6) exit code, nothing written', async () => {
    const noReason = await cli('fence', 'node-x', '--kubeconfig', kc);
    expect(noReason.code).toBe(2);
    expect(noReason.err).toContain("required option '--reason <text>' not specified");
    const unknown = await cli('unfence', 'no-such-node', '--kubeconfig', kc);
    expect(unknown.code).toBe(6);
    expect(unknown.err).toMatch(/^prfence: kube API 404: .*"no-such-node" not found$/);
    const ghost = await cli('fence', 'no-such-node', '--reason', 'typo', '--kubeconfig', kc);
    expect(ghost.code).toBe(2);
    expect(ghost.err).toBe('prfence: node "no-such-node" does not exist: nothing fenced');
    const nf = await new RestClient(adminKubeConfig())
      .get(clusterObjectPath(GROUP, VERSION, 'nodefences', 'no-such-node'))
      .catch((e: unknown) => e);
    expect(nf).toMatchObject({ code: 404 }); // nothing written
    // A kubeconfig pointing at nothing: refused connection -> the API exit code.
    const dir = mkdtempSync(join(tmpdir(), 'prfence-kc-'));
    const dead = join(dir, 'kubeconfig');
    const port = await freePort();
    writeFileSync(
      dead,
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [
          { name: 'c', cluster: { server: `https://127.0.0.1:${port}`, 'insecure-skip-tls-verify': true } },
        ],
        users: [{ name: 'u', user: { token: 't' } }],
        contexts: [{ name: 'x', context: { cluster: 'c', user: 'u' } }],
        'current-context': 'x',
      }),
    );
    const down = await cli('status', '--kubeconfig', dead);
    expect(down.code).toBe(6);
    expect(down.err).toMatch(/^prfence: API server https:\/\/127\.0\.0\.1:\d+: .*ECONNREFUSED/);
    const badKc = await cli('status', '--kubeconfig', '/nonexistent/kubeconfig');
    expect(badKc.code).toBe(2);
    expect(badKc.err).toMatch(/^prfence: kubeconfig \/nonexistent\/kubeconfig: /);
  });

  it("people's kubeconfigs: an exec credential plugin, a context picked with --context, KUBECONFIG files merged -> status works", async () => {
    const rest = new RestClient(adminKubeConfig());
    const sa = uniqueName('cli-sa');
    await rest.send({
      method: 'POST',
      path: '/api/v1/namespaces/default/serviceaccounts',
      body: { metadata: { name: sa } },
    });
    await rest.send({
      method: 'POST',
      path: '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings',
      body: {
        metadata: { name: sa },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'cluster-admin' },
        subjects: [{ kind: 'ServiceAccount', name: sa, namespace: 'default' }],
      },
    });
    const tr = await rest.send<{ status: { token: string } }>({
      method: 'POST',
      path: `/api/v1/namespaces/default/serviceaccounts/${sa}/token`,
      body: {
        apiVersion: 'authentication.k8s.io/v1',
        kind: 'TokenRequest',
        spec: { expirationSeconds: 600 },
      },
    });
    const admin = adminKubeConfig();
    const cluster = admin.getCurrentCluster()!;
    const dir = mkdtempSync(join(tmpdir(), 'prfence-kc-'));
    const credential = JSON.stringify({
      apiVersion: 'client.authentication.k8s.io/v1',
      kind: 'ExecCredential',
      status: { token: tr.status.token },
    });
    // File 1: only the cluster and an exec user; file 2: the contexts, current one unusable.
    writeFileSync(
      join(dir, 'users'),
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [
          {
            name: 'envtest',
            cluster: {
              server: cluster.server,
              'certificate-authority-data':
                cluster.caData ?? readFileSync(cluster.caFile!).toString('base64'),
            },
          },
        ],
        users: [
          {
            name: 'plugin',
            user: {
              exec: {
                apiVersion: 'client.authentication.k8s.io/v1',
                command: process.execPath,
                args: ['-e', `process.stdout.write(${JSON.stringify(credential)})`],
                interactiveMode: 'Never',
              },
            },
          },
        ],
      }),
    );
    writeFileSync(
      join(dir, 'contexts'),
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Config',
        contexts: [
          { name: 'broken', context: { cluster: 'nowhere', user: 'plugin' } },
          { name: 'via-plugin', context: { cluster: 'envtest', user: 'plugin' } },
        ],
        'current-context': 'broken',
      }),
    );
    const before = process.env.KUBECONFIG;
    process.env.KUBECONFIG = `${join(dir, 'users')}:${join(dir, 'contexts')}`;
    try {
      const ok = await cli('status', '--json', '--context', 'via-plugin');
      expect(ok, ok.err).toMatchObject({ code: 0 });
      expect(JSON.parse(ok.out)).toHaveProperty('nodes');
      const missing = await cli('status', '--context', 'no-such-context');
      expect(missing.code).toBe(2);
      expect(missing.err).toBe('prfence: kubeconfig: context "no-such-context" not found');
    } finally {
      if (before === undefined) delete process.env.KUBECONFIG;
      else process.env.KUBECONFIG = before;
    }
  });
});
