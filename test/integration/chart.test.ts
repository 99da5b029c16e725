/**
 * The Helm chart renders, lints, and every object it renders is accepted by the real API
 * server; the agent's ClusterRole grants what the agent needs and nothing destructive.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { AuthorizationV1Api } from '@kubernetes/client-node';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { RestClient } from '../../src/kube/rest-client.js';
import { RESERVATION_TYPES } from '../../src/pr/reservation-type.js';
import { adminKubeConfig, uniqueName } from '../envtest/kube.js';
import { applyAll, helm, PATHS, render as renderChart, type Obj } from './chart-render.js';

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
    // The pod is not on the host network: the kubelet probes (and Prometheus scrapes) the pod
    // IP, where nothing listens for 127.0.0.1; and no port above 65535 (nor 0, a random port).
    ['httpEndpoint=127.0.0.1:9100', /at '\/httpEndpoint': .*does not match pattern/],
    ['httpEndpoint=:99999', /at '\/httpEndpoint': .*does not match pattern/],
    ['httpEndpoint=:0', /at '\/httpEndpoint': .*does not match pattern/],
    ['controller.httpEndpoint=localhost:9809', /at '\/controller\/httpEndpoint': .*does not match pattern/],
    ['controller.httpEndpoint=:65536', /at '\/controller\/httpEndpoint': .*does not match pattern/],
    ['image.digest=sha256:abc', /at '\/image\/digest': .*does not match pattern/],
    ['extraArgs[0]=-v', /at '\/extraArgs\/0': .*does not match pattern/],
    ['serviceAccount.creat=false', /at '\/serviceAccount': additional properties 'creat' not allowed/],
    ['metrics.serviceMonitor.enable=true', /additional properties 'enable' not allowed/],
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

  it('pathCheckInterval -> the agent runs --path-check-interval (default 10s, 0 as given); a non-duration -> refused by the schema', () => {
    const rendered = (set: string[]) =>
      execFileSync(helm, ['template', 't', 'charts/prfence', '--kube-version', '1.36.0', ...set], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    expect(rendered([])).toContain('- --path-check-interval=10s\n');
    expect(rendered(['--set-string', 'pathCheckInterval=0'])).toContain('- --path-check-interval=0\n');
    expect(() => rendered(['--set', 'pathCheckInterval=often'])).toThrow(/pathCheckInterval/);
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
      const role = docs.find((o) => o?.kind === 'ClusterRole' && o.metadata?.name === 't-prfence-agent')!;
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

  it('renders the CRDs, RBAC, admission policy, ServiceAccounts, DaemonSet and controller Deployment', () => {
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
        'ValidatingAdmissionPolicy/prfence-agent',
        'ValidatingAdmissionPolicyBinding/prfence-agent',
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

  it('controller.autoFence / nodeLostAfter -> --auto-fence / --node-lost-after (default false, 40s); the node-lease Role and patch on Nodes (the out-of-service taint) only with autoFence', () => {
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
              rules?: { apiGroups: string[]; resources: string[]; verbs: string[] }[];
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
        nodeVerbs: objs
          .filter((o) => o.kind === 'ClusterRole' && o.metadata.name.endsWith('-controller'))
          .flatMap((o) => o.rules ?? [])
          .filter((r) => r.apiGroups.includes('') && r.resources.includes('nodes'))
          .flatMap((r) => r.verbs)
          .sort(),
      };
    };
    expect({
      dflt: view([]),
      on: view(['--set', 'controller.autoFence=true', '--set', 'controller.nodeLostAfter=90s']),
    }).toEqual({
      dflt: {
        args: ['--auto-fence=false', '--node-lost-after=40s'],
        nodeLeaseRbac: [],
        nodeVerbs: ['get', 'list', 'watch'],
      },
      on: {
        args: ['--auto-fence=true', '--node-lost-after=90s'],
        nodeVerbs: ['get', 'list', 'patch', 'watch'],
        nodeLeaseRbac: [
          'Role/t-prfence-controller-node-leases',
          'RoleBinding/t-prfence-controller-node-leases',
        ],
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
    await applyAll(rest, objs);
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

  it('admissionPolicy -> a policy (Fail) and its binding (Deny) for the agent ServiceAccount of the release; none when disabled or before Kubernetes 1.30', () => {
    interface Policy extends Obj {
      spec: {
        failurePolicy?: string;
        policyName?: string;
        validationActions?: string[];
        matchConditions?: { expression: string }[];
      };
    }
    const policy = (set: string[]) =>
      renderChart<Policy>('r', set, 'ops').filter((o) => o.kind.startsWith('ValidatingAdmissionPolicy'));
    const [vap, binding] = policy(['--set', 'serviceAccount.name=fencer']);
    expect({
      names: [vap?.metadata.name, binding?.spec.policyName],
      failurePolicy: vap?.spec.failurePolicy,
      actions: binding?.spec.validationActions,
      agent: vap?.spec.matchConditions?.map((c) => c.expression),
    }).toEqual({
      names: ['r-prfence-agent', 'r-prfence-agent'],
      failurePolicy: 'Fail',
      actions: ['Deny'],
      agent: ["request.userInfo.username == 'system:serviceaccount:ops:fencer'"],
    });
    expect(policy(['--set', 'admissionPolicy.enabled=false'])).toEqual([]);
    expect(policy(['--kube-version', '1.29.0'])).toEqual([]);
  });

  it('controller.enabled=false -> no controller objects', () => {
    const out = execFileSync(
      helm,
      [
        'template',
        't',
        'charts/prfence',
        '--kube-version',
        '1.36.0',
        '--set',
        'controller.enabled=false',
        '--set',
        'scope=cluster',
      ],
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
    await applyAll(rest, objects, { dryRun: 'All' });
  });

  it('RBAC -> the agent may do its job and nothing destructive', async () => {
    const rest = new RestClient(adminKubeConfig());
    await applyAll(
      rest,
      objects.filter((x) => ['ClusterRole', 'ClusterRoleBinding', 'ServiceAccount'].includes(x.kind)),
    );
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
    await applyAll(
      rest,
      objects.filter((x) =>
        ['ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding', 'ServiceAccount'].includes(x.kind),
      ),
    );
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
      // The desired state: every attachment, the StorageClasses' policy annotations.
      watchVas: await can('watch', 'storage.k8s.io', 'volumeattachments'),
      watchScs: await can('watch', 'storage.k8s.io', 'storageclasses'),
      // The desired state is applied (server-side apply creates a missing VolumeReservation).
      patchVr: await can('patch', 'prfence.io', 'volumereservations'),
      createVr: await can('create', 'prfence.io', 'volumereservations'),
      patchNf: await can('patch', 'prfence.io', 'nodefences'),
      // status.isolation: the proof summary of a node asked to be fenced.
      patchNfStatus: await can('patch', 'prfence.io', 'nodefences', { subresource: 'status' }),
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
      // What the device says is the agents' to record.
      patchVrStatus: await can('patch', 'prfence.io', 'volumereservations', { subresource: 'status' }),
      patchVa: await can('patch', 'storage.k8s.io', 'volumeattachments'),
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
    await applyAll(rest, docs, {}, 'kubectl');
    for (const o of docs) expect(await rest.get(PATHS[o.kind]!(o))).toMatchObject({ kind: o.kind });
  });
});

interface Container {
  image: string;
  args: string[];
  ports?: { name: string; containerPort: number }[];
  startupProbe?: { httpGet: { path: string; port: string | number } };
  livenessProbe?: { httpGet: { path: string; port: string | number } };
  readinessProbe?: { httpGet: { path: string; port: string | number } };
}
interface Rendered extends Obj {
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  spec?: {
    selector?: { matchLabels: Record<string, string> } | Record<string, string>;
    template?: {
      metadata: { labels: Record<string, string>; annotations?: Record<string, string> };
      spec: {
        serviceAccountName: string;
        imagePullSecrets?: { name: string }[];
        containers: Container[];
      };
    };
    groups?: { rules: { alert: string; expr: string; annotations: Record<string, string> }[] }[];
    ports?: { name: string; port: number; targetPort: string | number }[];
    endpoints?: { port: string }[];
  };
  subjects?: { kind: string; name: string; namespace: string }[];
  roleRef?: { name: string };
}
const render = (release: string, set: string[] = [], ns = 'prfence') =>
  renderChart<Rendered>(release, set, ns);
const byKind = (objs: Rendered[], kind: string) => objs.filter((o) => o.kind === kind);
const workloads = (objs: Rendered[]) => ({
  agent: objs.find((o) => o.kind === 'DaemonSet')!,
  controller: objs.find((o) => o.kind === 'Deployment')!,
});
const CLUSTER_SCOPED = new Set([
  'ClusterRole',
  'ClusterRoleBinding',
  'CustomResourceDefinition',
  'Namespace',
  'ValidatingAdmissionPolicy',
  'ValidatingAdmissionPolicyBinding',
]);

describe('Helm chart conventions (names, image, pod options)', () => {
  it('release "prfence" -> the names of the chart before this change (upgrades rename nothing); other releases -> "<release>-prfence-*"', () => {
    const names = (objs: Rendered[]) => objs.map((o) => `${o.kind}/${o.metadata.name}`).sort();
    expect(names(render('prfence'))).toEqual(
      [
        'ClusterRole/prfence-agent',
        'ClusterRole/prfence-controller',
        'ClusterRoleBinding/prfence-agent',
        'ClusterRoleBinding/prfence-controller',
        'DaemonSet/prfence-agent',
        'Deployment/prfence-controller',
        'Role/prfence-controller-leader-election',
        'RoleBinding/prfence-controller-leader-election',
        'ServiceAccount/prfence-agent',
        'ServiceAccount/prfence-controller',
        'ValidatingAdmissionPolicy/prfence-agent',
        'ValidatingAdmissionPolicyBinding/prfence-agent',
      ].sort(),
    );
    expect(names(render('storage'))).toEqual(
      names(render('prfence')).map((n) => n.replace('/prfence-', '/storage-prfence-')),
    );
  });

  it('fullnameOverride / nameOverride -> every object named from them; bindings and pods refer to the renamed ServiceAccounts', () => {
    const full = render('a', ['--set', 'fullnameOverride=fence', '--set', 'controller.autoFence=true']);
    expect(full.every((o) => o.metadata.name.startsWith('fence-'))).toBe(true);
    const named = render('a', ['--set', 'nameOverride=pr']);
    expect(named.every((o) => o.metadata.name.startsWith('a-pr-'))).toBe(true);
    for (const objs of [full, named]) {
      const sas = byKind(objs, 'ServiceAccount').map((o) => o.metadata.name);
      const { agent, controller } = workloads(objs);
      expect(sas).toContain(agent.spec!.template!.spec.serviceAccountName);
      expect(sas).toContain(controller.spec!.template!.spec.serviceAccountName);
      for (const b of [...byKind(objs, 'ClusterRoleBinding'), ...byKind(objs, 'RoleBinding')]) {
        expect(sas).toContain(b.subjects![0]!.name);
        expect(
          objs.some((r) => r.kind === b.kind.replace('Binding', '') && r.metadata.name === b.roleRef!.name),
        ).toBe(true);
      }
    }
  });

  it('two releases in one cluster -> no cluster-scoped name (nor a namespaced name in a shared namespace) in common', () => {
    const key = (o: Rendered) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
    const a = render('prfence', ['--set', 'controller.autoFence=true'], 'prfence');
    const b = render('prfence-b', ['--set', 'controller.autoFence=true'], 'other');
    const c = render('c', ['--set', 'controller.autoFence=true'], 'other');
    const all = [...a, ...b, ...c].map(key);
    // kube-node-lease Roles are namespaced but shared by every release.
    expect(all.filter((k, i) => all.indexOf(k) !== i)).toEqual([]);
    expect([...a, ...b, ...c].filter((o) => CLUSTER_SCOPED.has(o.kind)).length).toBe(18);
  });

  it('every object -> helm.sh/chart and the app.kubernetes.io labels', () => {
    for (const o of render('prfence', [
      '--set',
      'metrics.serviceMonitor.enabled=true',
      '--set',
      'metrics.prometheusRule.enabled=true',
      '--set',
      'controller.autoFence=true',
    ]))
      expect({ o: `${o.kind}/${o.metadata.name}`, l: o.metadata.labels }).toMatchObject({
        l: {
          'helm.sh/chart': 'prfence-0.1.0',
          'app.kubernetes.io/name': 'prfence',
          'app.kubernetes.io/instance': 'prfence',
          'app.kubernetes.io/version': '0.1.0',
          'app.kubernetes.io/managed-by': 'Helm',
        },
      });
  });

  it('selectors (immutable) -> the same as before names followed the release, whatever the object names', () => {
    for (const set of [[], ['--set', 'fullnameOverride=x']]) {
      const { agent, controller } = workloads(render('r', set));
      expect([agent.spec!.selector, controller.spec!.selector]).toEqual([
        { matchLabels: { 'app.kubernetes.io/name': 'prfence', 'app.kubernetes.io/instance': 'r' } },
        {
          matchLabels: { 'app.kubernetes.io/name': 'prfence-controller', 'app.kubernetes.io/instance': 'r' },
        },
      ]);
      for (const w of [agent, controller])
        expect(w.spec!.template!.metadata.labels).toMatchObject(
          (w.spec!.selector as { matchLabels: Record<string, string> }).matchLabels,
        );
    }
  });

  it('image.digest -> repository@digest on both workloads (tag ignored); without it repository:tag', () => {
    const digest = `sha256:${createHash('sha256').update('prfence').digest('hex')}`;
    const images = (set: string[]) => {
      const { agent, controller } = workloads(render('r', set));
      return [agent, controller].map((w) => w.spec!.template!.spec.containers[0]!.image);
    };
    expect(images(['--set', `image.digest=${digest}`, '--set', 'image.tag=9.9.9'])).toEqual([
      `ghcr.io/prfence/prfence@${digest}`,
      `ghcr.io/prfence/prfence@${digest}`,
    ]);
    expect(images(['--set', 'image.tag=9.9.9'])).toEqual([
      'ghcr.io/prfence/prfence:9.9.9',
      'ghcr.io/prfence/prfence:9.9.9',
    ]);
  });

  it('imagePullSecrets, podLabels, podAnnotations, extraArgs, serviceAccount -> rendered on the right workload', () => {
    const objs = render('r', [
      '--set',
      'imagePullSecrets[0].name=regcred',
      '--set',
      'podLabels.team=storage',
      '--set',
      'controller.podLabels.team=ctl',
      '--set',
      'controller.podAnnotations.a=b',
      '--set',
      'extraArgs[0]=--workers=4',
      '--set',
      'controller.extraArgs[0]=--workers=3',
      '--set',
      'serviceAccount.annotations.x=y',
      '--set',
      'controller.serviceAccount.create=false',
      '--set',
      'controller.serviceAccount.name=byo',
    ]);
    const { agent, controller } = workloads(objs);
    const a = agent.spec!.template!;
    const c = controller.spec!.template!;
    expect({
      pullSecrets: [a.spec.imagePullSecrets, c.spec.imagePullSecrets],
      labels: [a.metadata.labels.team, c.metadata.labels.team],
      annotations: c.metadata.annotations,
      agentArgs: a.spec.containers[0]!.args.slice(-1),
      controllerArgs: c.spec.containers[0]!.args.slice(-1),
      sas: byKind(objs, 'ServiceAccount').map((o) => [o.metadata.name, o.metadata.annotations]),
      controllerSa: c.spec.serviceAccountName,
      controllerBinding: objs.find(
        (o) => o.kind === 'ClusterRoleBinding' && o.metadata.name === 'r-prfence-controller',
      )!.subjects,
    }).toEqual({
      pullSecrets: [[{ name: 'regcred' }], [{ name: 'regcred' }]],
      labels: ['storage', 'ctl'],
      annotations: { a: 'b' },
      agentArgs: ['--workers=4'],
      controllerArgs: ['--workers=3'],
      sas: [['r-prfence-agent', { x: 'y' }]],
      controllerSa: 'byo',
      controllerBinding: [{ kind: 'ServiceAccount', name: 'byo', namespace: 'prfence' }],
    });
  });

  it.each([
    [':9100', 9100],
    ['0.0.0.0:9200', 9200],
    ['[::]:65535', 65535],
  ])(
    'httpEndpoint %s -> the flag, containerPort %d, and startup/liveness/readiness probes on that port',
    (ep, port) => {
      const { agent, controller } = workloads(
        render('r', ['--set-string', `httpEndpoint=${ep}`, '--set-string', `controller.httpEndpoint=${ep}`]),
      );
      for (const w of [agent, controller]) {
        const c = w.spec!.template!.spec.containers[0]!;
        const named = (p: string | number) =>
          typeof p === 'number' ? p : c.ports!.find((x) => x.name === p)?.containerPort;
        expect({
          flag: c.args.filter((x) => x.startsWith('--http-endpoint')),
          startup: [c.startupProbe?.httpGet.path, named(c.startupProbe!.httpGet.port)],
          live: named(c.livenessProbe!.httpGet.port),
          ready: named(c.readinessProbe!.httpGet.port),
        }).toEqual({ flag: [`--http-endpoint=${ep}`], startup: ['/healthz', port], live: port, ready: port });
      }
    },
  );

  it('httpEndpoint empty -> no flag, no ports, no probes', () => {
    const { agent, controller } = workloads(
      render('r', ['--set-string', 'httpEndpoint=', '--set-string', 'controller.httpEndpoint=']),
    );
    for (const w of [agent, controller]) {
      const c = w.spec!.template!.spec.containers[0]!;
      expect([
        c.ports,
        c.startupProbe,
        c.livenessProbe,
        c.readinessProbe,
        c.args.some((a) => a.includes('http')),
      ]).toEqual([undefined, undefined, undefined, undefined, false]);
    }
  });
});

describe('Helm chart monitoring (opt-in)', () => {
  const MON = [
    '--set',
    'metrics.serviceMonitor.enabled=true',
    '--set',
    'metrics.prometheusRule.enabled=true',
  ];

  it('default -> no Service, ServiceMonitor or PrometheusRule', () => {
    expect(
      render('r').filter((o) => ['Service', 'ServiceMonitor', 'PrometheusRule'].includes(o.kind)),
    ).toEqual([]);
  });

  it('serviceMonitor.enabled -> headless metrics Services (not-ready pods published) selecting exactly the agent / controller pods, and ServiceMonitors selecting those Services', () => {
    const objs = render('r', [
      '--set',
      'metrics.serviceMonitor.enabled=true',
      '--set',
      'metrics.serviceMonitor.labels.release=kps',
    ]);
    const { agent, controller } = workloads(objs);
    const svcs = byKind(objs, 'Service');
    const sms = byKind(objs, 'ServiceMonitor');
    expect(byKind(objs, 'PrometheusRule')).toEqual([]);
    const matches = (sel: Record<string, string>, labels: Record<string, string>) =>
      Object.entries(sel).every(([k, v]) => labels[k] === v);
    const podsOf = (svc: Rendered) =>
      [agent, controller]
        .filter((w) =>
          matches(
            (svc.spec as unknown as { selector: Record<string, string> }).selector,
            w.spec!.template!.metadata.labels,
          ),
        )
        .map((w) => w.kind);
    expect(
      svcs.map((s) => ({
        name: s.metadata.name,
        pods: podsOf(s),
        headless: (s.spec as unknown as { clusterIP: string }).clusterIP,
        notReady: (s.spec as unknown as { publishNotReadyAddresses: boolean }).publishNotReadyAddresses,
        ports: s.spec!.ports,
        monitoredBy: sms
          .filter((m) =>
            matches(
              (m.spec!.selector as { matchLabels: Record<string, string> }).matchLabels,
              s.metadata.labels!,
            ),
          )
          .map((m) => [m.metadata.name, m.metadata.labels!.release, m.spec!.endpoints!.map((e) => e.port)]),
      })),
    ).toEqual([
      {
        name: 'r-prfence-agent-metrics',
        pods: ['DaemonSet'],
        headless: 'None',
        notReady: true,
        ports: [{ name: 'metrics', port: 9808, targetPort: 'http' }],
        monitoredBy: [['r-prfence-agent', 'kps', ['metrics']]],
      },
      {
        name: 'r-prfence-controller-metrics',
        pods: ['Deployment'],
        headless: 'None',
        notReady: true,
        ports: [{ name: 'metrics', port: 9809, targetPort: 'http' }],
        monitoredBy: [['r-prfence-controller', 'kps', ['metrics']]],
      },
    ]);
    for (const w of [agent, controller])
      expect(w.spec!.template!.spec.containers[0]!.ports!.map((p) => p.name)).toContain('http');
  });

  it('scope: node by default -> the agents run --scope=node; scope cluster -> --scope=cluster; node without the controller -> refused, saying why; a scope that does not exist -> refused by the schema', () => {
    const agentArgs = (set: string[]) =>
      (
        byKind(render('r', set), 'DaemonSet')[0] as unknown as {
          spec: { template: { spec: { containers: Container[] } } };
        }
      ).spec.template.spec.containers[0]!.args;
    expect(agentArgs([])).toContain('--scope=node');
    expect(agentArgs(['--set', 'scope=cluster', '--set', 'controller.enabled=false'])).toContain(
      '--scope=cluster',
    );
    const helmErr = (set: string[]) =>
      execFileSync(helm, ['template', 'r', 'charts/prfence', '--kube-version', '1.36.0', ...set], {
        stdio: 'pipe',
      });
    expect(() => helmErr(['--set', 'controller.enabled=false'])).toThrow(
      /scope: node needs controller.enabled/,
    );
    expect(() => helmErr(['--set', 'scope=pod'])).toThrow(/scope/);
  });

  it('monitoring without httpEndpoint -> refused', () => {
    expect(() =>
      execFileSync(
        helm,
        [
          'template',
          'r',
          'charts/prfence',
          '--kube-version',
          '1.36.0',
          ...MON,
          '--set-string',
          'httpEndpoint=',
        ],
        {
          stdio: 'pipe',
        },
      ),
    ).toThrow(/need httpEndpoint/);
  });

  it('prometheusRule.enabled -> the alerts on the real metric names and the scraped jobs, each with a runbook_url whose anchor is a heading of docs/runbooks.md', () => {
    const objs = render('r', MON, 'mon');
    const rule = byKind(objs, 'PrometheusRule');
    expect(rule.map((r) => r.apiVersion)).toEqual(['monitoring.coreos.com/v1']);
    const rules = rule[0]!.spec!.groups!.flatMap((g) => g.rules);
    expect(rules.map((r) => r.alert)).toEqual([
      'PrfenceFenceFailed',
      'PrfenceFenceUnrecorded',
      'PrfenceDeviceHung',
      'PrfenceAccessLost',
      'PrfenceAgentDown',
      'PrfenceRegistrationBlocked',
      'PrfenceControllerNoLeader',
    ]);
    // Every prfence_* metric an alert uses exists in src/obs.
    const src =
      readFileSync('src/obs/metrics.ts', 'utf8') + readFileSync('src/obs/controller-metrics.ts', 'utf8');
    const used = [...new Set(rules.flatMap((r) => r.expr.match(/prfence_[a-z_]+/g) ?? []))];
    expect(used.length).toBeGreaterThanOrEqual(5);
    expect(used.filter((m) => !src.includes(`name: '${m}'`))).toEqual([]);
    // ... on the jobs the ServiceMonitors produce (job = the Service name) in this namespace.
    const jobs = byKind(objs, 'Service').map((s) => s.metadata.name);
    for (const r of rules) {
      const job = /job="([^"]+)"/.exec(r.expr)?.[1];
      expect({ a: r.alert, job: jobs.includes(job!), ns: r.expr.includes('namespace="mon"') }).toEqual({
        a: r.alert,
        job: true,
        ns: true,
      });
    }
    // GitHub heading anchors of docs/runbooks.md.
    const anchors = readFileSync('docs/runbooks.md', 'utf8')
      .split('\n')
      .filter((l) => /^#{1,6} /.test(l))
      .map((l) =>
        l
          .replace(/^#+ /, '')
          .trim()
          .toLowerCase()
          .replace(/[^\w\- ]/g, '')
          .replace(/ /g, '-'),
      );
    for (const r of rules) {
      const url = r.annotations.runbook_url ?? '';
      expect(url).toMatch(/^https:\/\/\S+\/docs\/runbooks\.md#[a-z0-9-]+$/);
      expect(anchors).toContain(url.split('#')[1]);
    }
  });

  it('controller.enabled=false -> no controller metrics Service, ServiceMonitor or leader alert', () => {
    const objs = render('r', [...MON, '--set', 'controller.enabled=false', '--set', 'scope=cluster']);
    expect(objs.filter((o) => o.metadata.name.includes('controller'))).toEqual([]);
    expect(byKind(objs, 'PrometheusRule')[0]!.spec!.groups![0]!.rules.map((r) => r.alert)).not.toContain(
      'PrfenceControllerNoLeader',
    );
  });
});
