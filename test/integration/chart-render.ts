/** Rendering the Helm chart and applying what it renders, for the chart's integration tests. */
import { execFileSync } from 'node:child_process';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import type { RestClient } from '../../src/kube/rest-client.js';

/** The Helm binary tools/install-helm.sh caches. */
export const helm = join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'prfence', 'bin', 'helm');

export interface Obj {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
}

/** The API path of every kind the chart renders (and the Namespace of the manifests). */
export const PATHS: Record<string, (o: Obj) => string> = {
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
  ValidatingAdmissionPolicy: (o) =>
    `/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/${o.metadata.name}`,
  ValidatingAdmissionPolicyBinding: (o) =>
    `/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings/${o.metadata.name}`,
};

/** `helm template` of the chart for Kubernetes 1.36; null documents dropped. */
export function render<T extends Obj = Obj>(release: string, set: string[] = [], ns = 'prfence'): T[] {
  return parseAllDocuments(
    execFileSync(
      helm,
      ['template', release, 'charts/prfence', '--namespace', ns, '--kube-version', '1.36.0', ...set],
      { encoding: 'utf8' },
    ),
  )
    .map((d) => d.toJS() as T | null)
    .filter((o): o is T => !!o);
}

/** Server-side apply of each object, in order (force: the test owns them). */
export async function applyAll(
  rest: RestClient,
  objs: readonly Obj[],
  query: Record<string, string> = {},
  fieldManager = 'chart-test',
): Promise<void> {
  for (const o of objs)
    await rest.send({
      method: 'PATCH',
      path: PATHS[o.kind]!(o),
      body: o,
      contentType: 'application/apply-patch+yaml',
      query: { fieldManager, force: 'true', ...query },
    });
}
