/**
 * `prfence crds apply` upgrades the CRDs of the first release (commit 0270bad, copied into
 * fixtures/crds-0270bad; it had no ReservationKey CRD), installed as Helm installs them,
 * on a control plane of its own (the shared one has the current CRDs already).
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registerCrdsCommand } from '../../src/cli/crds-command.js';
import { readCrds } from '../../src/cli/shipped-crds.js';
import { runCli } from '../../src/cli/program.js';
import { API_VERSION, GROUP, VERSION, type NodeFence, type VolumeReservation } from '../../src/crd/types.js';
import { clusterObjectPath, RestClient } from '../../src/kube/rest-client.js';
import { startControlPlane, type ControlPlane } from '../envtest/control-plane.js';
import { waitCrdStorage } from '../envtest/crds.js';
import { eventually } from '../envtest/kube.js';

const OLD = join(import.meta.dirname, 'fixtures', 'crds-0270bad');
const BASE = '/apis/apiextensions.k8s.io/v1/customresourcedefinitions';
const NAMES = ['nodefences.prfence.io', 'reservationkeys.prfence.io', 'volumereservations.prfence.io'];
const line = (name: string, what: string) => `customresourcedefinition.apiextensions.k8s.io/${name} ${what}`;

async function cli(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(argv, { stdout: (l) => out.push(l), stderr: (l) => err.push(l) }, [
    registerCrdsCommand,
  ]);
  return { code, out, err: err.join('\n') };
}

interface Crd {
  metadata: { name: string; resourceVersion: string; managedFields?: { manager: string }[] };
  spec: { versions: { name: string; served: boolean; storage: boolean; schema: unknown }[] };
  status?: { storedVersions?: string[]; conditions?: { type: string; status: string }[] };
}

describe('prfence crds apply', () => {
  let cp: ControlPlane;
  let kc: string;
  let rest: RestClient;
  const nf = (name: string, sub?: 'status') => clusterObjectPath(GROUP, VERSION, 'nodefences', name, sub);
  const crd = (name: string) => rest.get<Crd>(`${BASE}/${name}`);

  beforeAll(async () => {
    cp = await startControlPlane();
    kc = cp.kubeconfigPath;
    rest = new RestClient(cp.adminKubeConfig());
    // As `helm install` does: a create of each file in crds/ (field manager helm).
    for (const c of readCrds(OLD))
      await rest.send({ method: 'POST', path: BASE, body: c, query: { fieldManager: 'helm' } });
    await eventually(
      async () => {
        for (const n of ['nodefences.prfence.io', 'volumereservations.prfence.io'])
          if (
            !(await crd(n)).status?.conditions?.some((x) => x.type === 'Established' && x.status === 'True')
          )
            return false;
        return true;
      },
      { timeoutMs: 60_000 },
    );
    await waitCrdStorage(cp.adminKubeConfig(), ['nodefences.prfence.io', 'volumereservations.prfence.io']);
  }, 180_000);
  afterAll(async () => {
    rest?.close();
    await cp?.stop();
  });

  it('old CRDs -> dry run changes nothing; apply upgrades them (new fields kept, ReservationKey served, old object intact); a second run -> unchanged', async () => {
    // An object written under the old schema; a field of the new schema is pruned there.
    await rest.send({
      method: 'POST',
      path: clusterObjectPath(GROUP, VERSION, 'nodefences'),
      body: {
        apiVersion: API_VERSION,
        kind: 'NodeFence',
        metadata: { name: 'old-node' },
        spec: { fenceState: 'Fenced', reason: 'before the upgrade' },
      },
    });
    await rest.send({
      method: 'PATCH',
      path: nf('old-node', 'status'),
      contentType: 'application/merge-patch+json',
      body: { status: { key: 'aaaa000000000001', phase: 'Registered', volumes: 1, handingOver: ['pv-x'] } },
    });
    expect((await rest.get<NodeFence>(nf('old-node'))).status?.handingOver).toBeUndefined();

    const dry = await cli('crds', 'apply', '--dry-run', '--kubeconfig', kc);
    expect(dry, dry.err).toMatchObject({ code: 0 });
    expect(dry.out).toEqual([
      `${line(NAMES[0]!, 'configured')} (server dry run)`,
      `${line(NAMES[1]!, 'created')} (server dry run)`,
      `${line(NAMES[2]!, 'configured')} (server dry run)`,
    ]);
    expect(await crd(NAMES[1]!).catch((e: unknown) => e)).toMatchObject({ code: 404 });
    expect(JSON.stringify((await crd(NAMES[0]!)).spec)).not.toContain('handingOver');

    const first = await cli('crds', 'apply', '--kubeconfig', kc);
    expect(first, first.err).toMatchObject({ code: 0 });
    expect(first.out).toEqual([
      line(NAMES[0]!, 'configured'),
      line(NAMES[1]!, 'created'),
      line(NAMES[2]!, 'configured'),
    ]);
    for (const n of NAMES) {
      const c = await crd(n);
      expect(c.status?.conditions).toContainEqual(
        expect.objectContaining({ type: 'Established', status: 'True' }),
      );
      expect(c.metadata.managedFields?.map((m) => m.manager)).toContain('prfence-crds');
    }
    await waitCrdStorage(cp.adminKubeConfig(), NAMES);

    // The old object reads back as it was.
    const old = await rest.get<NodeFence>(nf('old-node'));
    expect(old.spec).toMatchObject({ fenceState: 'Fenced', reason: 'before the upgrade' });
    expect(old.status).toMatchObject({ key: 'aaaa000000000001', phase: 'Registered', volumes: 1 });
    // New fields are accepted and kept (they were pruned before).
    await eventually(async () => {
      await rest.send({
        method: 'PATCH',
        path: nf('old-node', 'status'),
        contentType: 'application/merge-patch+json',
        body: { status: { handingOver: ['pv-x'] } },
      });
      expect((await rest.get<NodeFence>(nf('old-node'))).status?.handingOver).toEqual(['pv-x']);
    });
    const vrPath = clusterObjectPath(GROUP, VERSION, 'volumereservations');
    await rest.send({
      method: 'POST',
      path: vrPath,
      body: { apiVersion: API_VERSION, kind: 'VolumeReservation', metadata: { name: 'pv-x' } },
    });
    const intent = { victimKey: 'aaaa000000000002', by: 'node-b', at: '2026-01-01T00:00:00Z' };
    await rest.send({
      method: 'PATCH',
      path: `${vrPath}/pv-x/status`,
      contentType: 'application/merge-patch+json',
      body: { status: { fenceIntent: intent } },
    });
    expect((await rest.get<VolumeReservation>(`${vrPath}/pv-x`)).status?.fenceIntent).toEqual(intent);
    // The ReservationKey CRD exists and its objects are served.
    await rest.send({
      method: 'POST',
      path: clusterObjectPath(GROUP, VERSION, 'reservationkeys'),
      body: {
        apiVersion: API_VERSION,
        kind: 'ReservationKey',
        metadata: { name: 'aaaa000000000001' },
        spec: { node: 'old-node', nodeUID: 'uid-1' },
      },
    });

    const again = await cli('crds', 'apply', '--kubeconfig', kc);
    expect(again, again.err).toMatchObject({ code: 0 });
    expect(again.out).toEqual(NAMES.map((n) => line(n, 'unchanged')));
  });

  it('the cluster stores a version this prfence does not have -> refused (exit 7), nothing written', async () => {
    // A newer prfence added v1beta1 and made it the storage version.
    const c = await crd(NAMES[0]!);
    const v1 = c.spec.versions[0]!;
    await rest.send({
      method: 'PUT',
      path: `${BASE}/${NAMES[0]}`,
      body: {
        ...c,
        spec: {
          ...c.spec,
          versions: [
            { ...v1, storage: false },
            { ...v1, name: 'v1beta1', storage: true },
          ],
        },
      },
    });
    await eventually(async () => (await crd(NAMES[0]!)).status?.storedVersions?.includes('v1beta1') === true);
    const before = await Promise.all(NAMES.map(async (n) => (await crd(n)).metadata.resourceVersion));

    const r = await cli('crds', 'apply', '--kubeconfig', kc);
    expect(r.code).toBe(7);
    expect(r.out).toEqual([]);
    expect(r.err).toMatch(
      /^prfence: refusing to apply the CRDs: nodefences\.prfence\.io: the cluster has version\(s\) v1beta1 \(stored: v1beta1\)/,
    );
    const after = await Promise.all(NAMES.map(async (n) => (await crd(n)).metadata.resourceVersion));
    expect(after).toEqual(before);
    expect((await crd(NAMES[0]!)).spec.versions.map((v) => v.name)).toEqual(['v1alpha1', 'v1beta1']);
  });

  it('bad use -> exit 2 (unknown flag) or 6 (API server unreachable)', async () => {
    const bad = await cli('crds', 'apply', '--force', '--kubeconfig', kc);
    expect(bad.code).toBe(2);
    expect(bad.err).toContain("unknown option '--force'");
    await cp.stopApiServer();
    try {
      const down = await cli('crds', 'apply', '--kubeconfig', kc);
      expect(down.code).toBe(6);
      expect(down.err).toMatch(/^prfence: API server https:\/\/127\.0\.0\.1:\d+: /);
    } finally {
      await cp.restartApiServer();
    }
  });
});
