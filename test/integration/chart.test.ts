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
  Deployment: (o) => `/apis/apps/v1/namespaces/${o.metadata.namespace}/deployments/${o.metadata.name}`,
  Role: (o) =>
    `/apis/rbac.authorization.k8s.io/v1/namespaces/${o.metadata.namespace}/roles/${o.metadata.name}`,
  RoleBinding: (o) =>
    `/apis/rbac.authorization.k8s.io/v1/namespaces/${o.metadata.namespace}/rolebindings/${o.metadata.name}`,
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
    ['failfastAction=panic', /at '\/failfastAction': value must be one of/],
    ['failfastAction=reboot', /set failfastAllowReboot: true as well/],
    ['controller.replica=3', /at '\/controller': additional properties 'replica' not allowed/],
    ['controller.replicas=-1', /at '\/controller\/replicas': .*minimum/],
    ['controller.resync=soon', /at '\/controller\/resync': .*does not match pattern/],
    ['controller.autoFence=yes', /at '\/controller\/autoFence': got string, want boolean/],
    ['controller.nodeLostAfter=0s', /at '\/controller\/nodeLostAfter': .*does not match pattern/],
    ['controller.nodeLostAfter=40', /at '\/controller\/nodeLostAfter': got number, want string/],
    ['controller.nodeLostAfter=soon', /at '\/controller\/nodeLostAfter': .*does not match pattern/],
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

  it('failfast values -> agent flags; reboot mounts the host /proc and needs failfastAllowReboot; taint adds patch on nodes', () => {
    interface Rendered {
      kind?: string;
      rules?: { resources?: string[]; verbs?: string[] }[];
      metadata?: { name?: string };
      spec?: {
        template: {
          spec: {
            containers: { args: string[]; volumeMounts: { name: string; mountPath: string }[] }[];
            volumes: { name: string; hostPath?: { path: string } }[];
          };
        };
      };
    }
    const render = (set: string[]) => {
      const docs = parseAllDocuments(
        execFileSync(helm, ['template', 't', 'charts/prfence', '--kube-version', '1.36.0', ...set], {
          encoding: 'utf8',
        }),
      ).map((d) => d.toJS() as Rendered);
      const ds = docs.find((o) => o?.kind === 'DaemonSet')!.spec!.template.spec;
      const role = docs.find((o) => o?.kind === 'ClusterRole' && o.metadata?.name === 'prfence-agent')!;
      return {
        args: ds.containers[0]!.args.filter((a) => /probe|failfast/.test(a)),
        proc: ds.volumes.find((v) => v.name === 'host-proc')?.hostPath?.path,
        mount: ds.containers[0]!.volumeMounts.find((m) => m.name === 'host-proc')?.mountPath,
        patchNodes: role.rules!.some((r) => r.resources?.includes('nodes') && r.verbs?.includes('patch')),
      };
    };
    expect(render([])).toEqual({
      args: ['--probe-interval=2s', '--failfast-action=report'],
      proc: undefined,
      mount: undefined,
      patchNodes: false,
    });
    expect(render(['--set', 'failfastAction=taint', '--set', 'probeInterval=500ms'])).toEqual({
      args: ['--probe-interval=500ms', '--failfast-action=taint'],
      proc: undefined,
      mount: undefined,
      patchNodes: true,
    });
    expect(render(['--set', 'failfastAction=reboot', '--set', 'failfastAllowReboot=true'])).toEqual({
      args: ['--probe-interval=2s', '--failfast-action=reboot', '--failfast-allow-reboot'],
      proc: '/proc',
      mount: '/host/proc',
      patchNodes: false,
    });
  });

  it('renders the CRDs, RBAC, ServiceAccounts, DaemonSet and controller Deployment', () => {
    expect(objects.map((o) => `${o.kind}/${o.metadata.name}`).sort()).toEqual(
      [
        'ClusterRole/prfence-agent',
        'ClusterRoleBinding/prfence-agent',
        'ClusterRole/prfence-controller',
        'ClusterRoleBinding/prfence-controller',
        'CustomResourceDefinition/nodefences.prfence.io',
        'CustomResourceDefinition/reservationkeys.prfence.io',
        'CustomResourceDefinition/volumereservations.prfence.io',
        'DaemonSet/prfence-agent',
        'Deployment/prfence-controller',
        'Role/prfence-controller-leader-election',
        'RoleBinding/prfence-controller-leader-election',
        'ServiceAccount/prfence-agent',
        'ServiceAccount/prfence-controller',
      ].sort(),
    );
  });

  it('controller Deployment: 2 replicas, `prfence controller` with leader election in its namespace, probes, resources, not root, no privileges', () => {
    const d = objects.find((o) => o.kind === 'Deployment') as unknown as {
      spec: {
        replicas: number;
        selector: { matchLabels: Record<string, string> };
        template: {
          spec: {
            serviceAccountName: string;
            securityContext: { runAsNonRoot: boolean; runAsUser: number };
            containers: {
              image: string;
              args: string[];
              env: { name: string }[];
              livenessProbe?: unknown;
              readinessProbe?: unknown;
              resources: { requests?: unknown; limits?: unknown };
              securityContext: Record<string, unknown>;
            }[];
          };
        };
      };
    };
    const ds = objects.find((o) => o.kind === 'DaemonSet') as unknown as {
      spec: {
        selector: { matchLabels: Record<string, string> };
        template: { spec: { containers: { image: string }[] } };
      };
    };
    const pod = d.spec.template.spec;
    const c = pod.containers[0]!;
    expect({
      replicas: d.spec.replicas,
      sa: pod.serviceAccountName,
      args: c.args.slice(0, 3),
      sameImage: c.image === ds.spec.template.spec.containers[0]!.image,
      env: c.env.map((e) => e.name),
      probes: [!!c.livenessProbe, !!c.readinessProbe],
      resources: [!!c.resources.requests, !!c.resources.limits],
      podSecurity: pod.securityContext.runAsNonRoot && pod.securityContext.runAsUser > 0,
      container: c.securityContext,
      // the DaemonSet's selector must not match the controller's pods
      selectorsDisjoint:
        ds.spec.selector.matchLabels['app.kubernetes.io/name'] !==
        d.spec.selector.matchLabels['app.kubernetes.io/name'],
    }).toEqual({
      replicas: 2,
      sa: 'prfence-controller',
      args: ['controller', '--leader-election=true', `--leader-election-namespace=${ns}`],
      sameImage: true,
      env: ['POD_NAME', 'POD_NAMESPACE'],
      probes: [true, true],
      resources: [true, true],
      podSecurity: true,
      container: {
        allowPrivilegeEscalation: false,
        privileged: false,
        readOnlyRootFilesystem: true,
        capabilities: { drop: ['ALL'] },
      },
      selectorsDisjoint: true,
    });
  });

  it('controller.autoFence / nodeLostAfter -> --auto-fence / --node-lost-after (default false, 40s); the node-lease Role only with autoFence', () => {
    const render = (set: string[]) =>
      parseAllDocuments(
        execFileSync(helm, ['template', 't', 'charts/prfence', '--kube-version', '1.36.0', ...set], {
          encoding: 'utf8',
        }),
      )
        .map(
          (d) =>
            d.toJS() as {
              kind?: string;
              metadata: { name: string; namespace?: string };
              spec?: { template: { spec: { containers: { args: string[] }[] } } };
            } | null,
        )
        .filter((o) => !!o);
    const view = (set: string[]) => {
      const objs = render(set);
      const d = objs.find((o) => o.kind === 'Deployment')!;
      return {
        args: d.spec!.template.spec.containers[0]!.args.filter((a) =>
          /^--(auto-fence|node-lost-after)=/.test(a),
        ),
        nodeLeaseRbac: objs
          .filter((o) => o.metadata.namespace === 'kube-node-lease')
          .map((o) => `${o.kind}/${o.metadata.name}`),
      };
    };
    expect({
      dflt: view([]),
      on: view(['--set', 'controller.autoFence=true', '--set', 'controller.nodeLostAfter=90s']),
    }).toEqual({
      dflt: { args: ['--auto-fence=false', '--node-lost-after=40s'], nodeLeaseRbac: [] },
      on: {
        args: ['--auto-fence=true', '--node-lost-after=90s'],
        nodeLeaseRbac: ['Role/prfence-controller-node-leases', 'RoleBinding/prfence-controller-node-leases'],
      },
    });
  });

  it('RBAC (autoFence) -> the controller may get/list/watch Leases in kube-node-lease and nothing more there', async () => {
    const rest = new RestClient(adminKubeConfig());
    // The ServiceAccount's namespace need not exist for an access review.
    await rest
      .send({ method: 'POST', path: '/api/v1/namespaces', body: { metadata: { name: 'kube-node-lease' } } })
      .catch(() => undefined); // the API server creates it
    const objs = parseAllDocuments(
      execFileSync(
        helm,
        [
          'template',
          'prfence',
          'charts/prfence',
          '--namespace',
          ns,
          '--kube-version',
          '1.36.0',
          '--set',
          'controller.autoFence=true',
        ],
        { encoding: 'utf8' },
      ),
    )
      .map((d) => d.toJS() as Obj | null)
      .filter((o): o is Obj => !!o && o.metadata.namespace === 'kube-node-lease');
    expect(objs.map((o) => o.kind).sort()).toEqual(['Role', 'RoleBinding']);
    for (const o of objs)
      await rest.send({
        method: 'PATCH',
        path: PATHS[o.kind]!(o),
        body: o,
        contentType: 'application/apply-patch+yaml',
        query: { fieldManager: 'chart-test', force: 'true' },
      });
    const authz = adminKubeConfig().makeApiClient(AuthorizationV1Api);
    const can = async (verb: string, namespace: string, resource = 'leases', group = 'coordination.k8s.io') =>
      (
        await authz.createSubjectAccessReview({
          body: {
            spec: {
              user: `system:serviceaccount:${ns}:prfence-controller`,
              resourceAttributes: {
                verb,
                group,
                resource,
                namespace,
                name: verb === 'list' || verb === 'watch' ? undefined : 'node-1',
              },
            },
          },
        })
      ).status?.allowed ?? false;
    const verbs = ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete', 'deletecollection'];
    const inNodeLease = Object.fromEntries(
      await Promise.all(verbs.map(async (v) => [v, await can(v, 'kube-node-lease')])),
    );
    expect({
      inNodeLease,
      listKubeSystemLeases: await can('list', 'kube-system'),
      getSecretsInNodeLease: await can('get', 'kube-node-lease', 'secrets', ''),
    }).toEqual({
      inNodeLease: {
        get: true,
        list: true,
        watch: true,
        create: false,
        update: false,
        patch: false,
        delete: false,
        deletecollection: false,
      },
      listKubeSystemLeases: false,
      getSecretsInNodeLease: false,
    });
  });

  it('controller.enabled=false -> no controller objects', () => {
    const out = execFileSync(
      helm,
      ['template', 't', 'charts/prfence', '--kube-version', '1.36.0', '--set', 'controller.enabled=false'],
      { encoding: 'utf8' },
    );
    expect(out).not.toMatch(/prfence-controller/);
  });

  it('RBAC: no wildcard verb, resource or group in any rule', () => {
    const rules = objects
      .filter((o) => o.kind === 'ClusterRole' || o.kind === 'Role')
      .flatMap(
        (o) =>
          (o as unknown as { rules: { verbs: string[]; resources: string[]; apiGroups: string[] }[] }).rules,
      );
    expect(rules.length).toBeGreaterThan(10);
    expect(rules.filter((r) => [...r.verbs, ...r.resources, ...r.apiGroups].includes('*'))).toEqual([]);
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

  it('RBAC -> the controller may lead, request fences and collect, and nothing more', async () => {
    const rest = new RestClient(adminKubeConfig());
    await rest
      .send({ method: 'POST', path: '/api/v1/namespaces', body: { metadata: { name: ns } } })
      .catch(() => undefined); // created by an earlier test
    for (const o of objects.filter((x) =>
      ['ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding', 'ServiceAccount'].includes(x.kind),
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
    const can = async (
      verb: string,
      group: string,
      resource: string,
      where: { namespace?: string; name?: string; subresource?: string } = {},
    ) =>
      (
        await authz.createSubjectAccessReview({
          body: {
            spec: {
              user: `system:serviceaccount:${ns}:prfence-controller`,
              resourceAttributes: { verb, group, resource, ...where },
            },
          },
        })
      ).status?.allowed ?? false;
    const lease = { namespace: ns, name: 'prfence-controller' };
    const allowed = {
      getLease: await can('get', 'coordination.k8s.io', 'leases', lease),
      updateLease: await can('update', 'coordination.k8s.io', 'leases', lease),
      createLease: await can('create', 'coordination.k8s.io', 'leases', { namespace: ns }),
      watchNodes: await can('watch', '', 'nodes'),
      watchPvs: await can('watch', '', 'persistentvolumes'),
      patchNf: await can('patch', 'prfence.io', 'nodefences'),
      deleteNf: await can('delete', 'prfence.io', 'nodefences'),
      deleteVr: await can('delete', 'prfence.io', 'volumereservations'),
      listRk: await can('list', 'prfence.io', 'reservationkeys'),
      deleteRk: await can('delete', 'prfence.io', 'reservationkeys'),
      createEvents: await can('create', 'events.k8s.io', 'events', { namespace: 'default' }),
    };
    const denied = {
      otherLease: await can('update', 'coordination.k8s.io', 'leases', { namespace: ns, name: 'other' }),
      leaseElsewhere: await can('update', 'coordination.k8s.io', 'leases', {
        namespace: 'kube-system',
        name: 'prfence-controller',
      }),
      deleteLease: await can('delete', 'coordination.k8s.io', 'leases', lease),
      patchNfStatus: await can('patch', 'prfence.io', 'nodefences', { subresource: 'status' }),
      patchVr: await can('patch', 'prfence.io', 'volumereservations'),
      createRk: await can('create', 'prfence.io', 'reservationkeys'),
      updateRk: await can('update', 'prfence.io', 'reservationkeys'),
      deleteNodes: await can('delete', '', 'nodes'),
      patchNodes: await can('patch', '', 'nodes'),
      deletePvs: await can('delete', '', 'persistentvolumes'),
      deleteVa: await can('delete', 'storage.k8s.io', 'volumeattachments'),
      secrets: await can('get', '', 'secrets', { namespace: ns }),
    };
    expect({ allowed, denied }).toEqual({
      allowed: Object.fromEntries(Object.keys(allowed).map((k) => [k, true])),
      denied: Object.fromEntries(Object.keys(denied).map((k) => [k, false])),
    });
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
