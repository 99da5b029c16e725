/**
 * The Helm chart renders, lints, and every object it renders is accepted by the real API
 * server; the agent's ClusterRole grants what the agent needs and nothing destructive.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { AuthorizationV1Api } from '@kubernetes/client-node';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { RestClient } from '../../src/kube/rest-client.js';
import { RESERVATION_TYPES } from '../../src/pr/reservation-type.js';
import { adminKubeConfig, uniqueName } from '../envtest/kube.js';

const helm = join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'prfence', 'bin', 'helm');

interface Obj {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
}

const PATHS: Record<string, (o: Obj) => string> = {
  Namespace: (o) => `/api/v1/namespaces/${o.metadata.name}`,
  ServiceAccount: (o) => `/api/v1/namespaces/${o.metadata.namespace}/serviceaccounts/${o.metadata.name}`,
  ClusterRole: (o) => `/apis/rbac.authorization.k8s.io/v1/clusterroles/${o.metadata.name}`,
  ClusterRoleBinding: (o) => `/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/${o.metadata.name}`,
  DaemonSet: (o) => `/apis/apps/v1/namespaces/${o.metadata.namespace}/daemonsets/${o.metadata.name}`,
  CustomResourceDefinition: (o) =>
    `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${o.metadata.name}`,
};

describe('Helm chart', () => {
  let objects: Obj[];
  const ns = uniqueName('prfence');
  beforeAll(() => {
    if (!existsSync(helm)) throw new Error(`missing ${helm}: run tools/install-helm.sh`);
    const out = execFileSync(
      helm,
      [
        'template',
        'prfence',
        'charts/prfence',
        '--namespace',
        ns,
        '--include-crds',
        '--kube-version',
        '1.36.0',
      ],
      {
        encoding: 'utf8',
      },
    );
    objects = parseAllDocuments(out)
      .map((d) => d.toJS() as Obj | null)
      .filter((o): o is Obj => !!o);
  });

  it('helm lint -> no errors', () => {
    const out = execFileSync(helm, ['lint', 'charts/prfence'], { encoding: 'utf8' });
    expect(out).toContain('0 chart(s) failed');
  });

  it.each([
    ['reservationType=shared', /at '\/reservationType': value must be one of/],
    ['fencingDefault=off', /at '\/fencingDefault': value must be one of 'enabled', 'disabled'/],
    ['foreignKeys=sometimes', /at '\/foreignKeys': value must be one of 'leave', 'preempt'/],
    ['logLevl=debug', /additional properties 'logLevl' not allowed/],
    ['httpEndpoint=localhost', /at '\/httpEndpoint': .*does not match pattern/],
    ['ioctlTimeout=soon', /at '\/ioctlTimeout': .*does not match pattern/],
  ])('bad value %s -> helm refuses with a clear message', (set, msg) => {
    let err = '';
    try {
      execFileSync(helm, ['template', 't', 'charts/prfence', '--kube-version', '1.36.0', '--set', set], {
        encoding: 'utf8',
        stdio: 'pipe',
      });
    } catch (e) {
      err = String((e as { stderr?: string }).stderr);
    }
    expect(err).toMatch(msg);
  });

  it("values schema reservation types = the agent's", () => {
    const schema = JSON.parse(readFileSync('charts/prfence/values.schema.json', 'utf8')) as {
      properties: { reservationType: { enum: string[] } };
    };
    expect(schema.properties.reservationType.enum).toEqual([...RESERVATION_TYPES]);
  });

  it('fencingDefault -> passed to the agent as --fencing-default (default enabled)', () => {
    const args = (set: string[]) => {
      const out = execFileSync(
        helm,
        ['template', 't', 'charts/prfence', '--kube-version', '1.36.0', ...set],
        { encoding: 'utf8' },
      );
      const ds = parseAllDocuments(out)
        .map(
          (d) =>
            d.toJS() as {
              kind?: string;
              spec?: { template: { spec: { containers: { args: string[] }[] } } };
            },
        )
        .find((o) => o?.kind === 'DaemonSet');
      return ds!.spec!.template.spec.containers[0]!.args;
    };
    expect(args([])).toContain('--fencing-default=enabled');
    expect(args(['--set', 'fencingDefault=disabled'])).toContain('--fencing-default=disabled');
  });

  it('renders the CRDs, RBAC, ServiceAccount and DaemonSet', () => {
    expect(objects.map((o) => o.kind).sort()).toEqual(
      [
        'ClusterRole',
        'ClusterRoleBinding',
        'CustomResourceDefinition',
        'CustomResourceDefinition',
        'CustomResourceDefinition',
        'DaemonSet',
        'ServiceAccount',
      ].sort(),
    );
  });

  it('every rendered object -> accepted by the API server (server-side dry run)', async () => {
    const rest = new RestClient(adminKubeConfig());
    await rest.send({ method: 'POST', path: '/api/v1/namespaces', body: { metadata: { name: ns } } });
    for (const o of objects) {
      const path = PATHS[o.kind]!(o);
      await rest.send({
        method: 'PATCH',
        path,
        body: o,
        contentType: 'application/apply-patch+yaml',
        query: { fieldManager: 'chart-test', dryRun: 'All', force: 'true' },
      });
    }
  });

  it('RBAC -> the agent may do its job and nothing destructive', async () => {
    const rest = new RestClient(adminKubeConfig());
    for (const o of objects.filter((x) =>
      ['ClusterRole', 'ClusterRoleBinding', 'ServiceAccount'].includes(x.kind),
    )) {
      await rest.send({
        method: 'PATCH',
        path: PATHS[o.kind]!(o),
        body: o,
        contentType: 'application/apply-patch+yaml',
        query: { fieldManager: 'chart-test', force: 'true' },
      });
    }
    const authz = adminKubeConfig().makeApiClient(AuthorizationV1Api);
    const can = async (verb: string, group: string, resource: string, subresource?: string) =>
      (
        await authz.createSubjectAccessReview({
          body: {
            spec: {
              user: `system:serviceaccount:${ns}:prfence-agent`,
              resourceAttributes: { verb, group, resource, ...(subresource ? { subresource } : {}) },
            },
          },
        })
      ).status?.allowed ?? false;
    expect(await can('watch', 'storage.k8s.io', 'volumeattachments')).toBe(true);
    // The per-volume policy annotations of StorageClasses (read only).
    expect(await can('watch', 'storage.k8s.io', 'storageclasses')).toBe(true);
    expect(await can('update', 'storage.k8s.io', 'storageclasses')).toBe(false);
    expect(await can('patch', 'prfence.io', 'nodefences', 'status')).toBe(true);
    expect(await can('patch', 'prfence.io', 'volumereservations', 'status')).toBe(true);
    expect(await can('create', 'events.k8s.io', 'events')).toBe(true);
    expect(await can('delete', '', 'persistentvolumes')).toBe(false);
    expect(await can('delete', 'storage.k8s.io', 'volumeattachments')).toBe(false);
    expect(await can('delete', 'prfence.io', 'nodefences')).toBe(false);
    // Key claims: created once, never changed or removed by an agent (S6).
    expect(await can('create', 'prfence.io', 'reservationkeys')).toBe(true);
    expect(await can('update', 'prfence.io', 'reservationkeys')).toBe(false);
    expect(await can('delete', 'prfence.io', 'reservationkeys')).toBe(false);
    expect(await can('get', '', 'secrets')).toBe(false);
  });
});

describe('manifests/prfence.yaml', () => {
  it('equals `helm template` of the chart (regenerate with scripts/render-manifests.sh)', () => {
    const out = execFileSync('bash', ['scripts/render-manifests.sh', '--stdout'], { encoding: 'utf8' });
    expect(readFileSync('manifests/prfence.yaml', 'utf8')).toBe(out);
  });

  it('applied for real in file order (server-side apply, no dry run) on a cluster without the namespace -> every object exists', async () => {
    const rest = new RestClient(adminKubeConfig());
    const docs = parseAllDocuments(readFileSync('manifests/prfence.yaml', 'utf8'))
      .map((d) => d.toJS() as Obj | null)
      .filter((o): o is Obj => o !== null);
    expect(docs[0]).toMatchObject({ kind: 'Namespace', metadata: { name: 'prfence' } });
    for (const o of docs) {
      await rest.send({
        method: 'PATCH',
        path: PATHS[o.kind]!(o),
        body: o,
        contentType: 'application/apply-patch+yaml',
        query: { fieldManager: 'kubectl', force: 'true' },
      });
    }
    for (const o of docs) expect(await rest.get(PATHS[o.kind]!(o))).toMatchObject({ kind: o.kind });
  });
});
