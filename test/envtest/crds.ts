/** Installs the chart's CRDs (charts/prfence/crds, the single source of truth) and waits until Established. */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './repo-root.js';
import type { KubeConfig, V1CustomResourceDefinition } from '@kubernetes/client-node';
import { KubeApiError, RestClient } from '../../src/kube/rest-client.js';
import { parseAllDocuments } from 'yaml';

export const CRD_DIR = join(repoRoot(), 'charts', 'prfence', 'crds');

/** Reads every CRD document in charts/prfence/crds. */
export function readChartCrds(dir = CRD_DIR): V1CustomResourceDefinition[] {
  if (!existsSync(dir)) return [];
  const files = readdirSync(dir).filter((f) => /\.ya?ml$/.test(f));
  return files.flatMap((f) =>
    parseAllDocuments(readFileSync(join(dir, f), 'utf8'))
      .map((d) => d.toJS() as V1CustomResourceDefinition | null)
      .filter((d): d is V1CustomResourceDefinition => d?.kind === 'CustomResourceDefinition'),
  );
}

/**
 * Applies the CRDs as plain JSON (server-side apply; client-node's typed serializer would
 * drop `enum` and `x-kubernetes-*`) and waits until each is Established.
 */
export async function installCrds(
  kc: KubeConfig,
  crds = readChartCrds(),
  timeoutMs = 60_000,
): Promise<string[]> {
  const rest = new RestClient(kc);
  const base = '/apis/apiextensions.k8s.io/v1/customresourcedefinitions';
  for (const crd of crds) {
    await rest.apply(`${base}/${crd.metadata?.name ?? ''}`, crd, 'prfence-envtest');
  }
  const end = Date.now() + timeoutMs;
  for (const crd of crds) {
    const name = crd.metadata?.name ?? '';
    for (;;) {
      const got = await rest.get<V1CustomResourceDefinition>(`${base}/${name}`).catch((e: unknown) => {
        if (e instanceof KubeApiError && e.code === 404) return undefined;
        throw e;
      });
      if (got?.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True')) break;
      if (Date.now() > end) throw new Error(`CRD ${name} not Established after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return crds.map((c) => c.metadata?.name ?? '');
}

/** Waits until each CRD's objects can be listed (storage ready: no 429 / 404). */
export async function waitCrdStorage(kc: KubeConfig, names: string[], timeoutMs = 60_000): Promise<void> {
  const rest = new RestClient(kc);
  const end = Date.now() + timeoutMs;
  for (const name of names) {
    const [plural, ...group] = name.split('.');
    for (;;) {
      try {
        await rest.get(`/apis/${group.join('.')}/v1alpha1/${plural}`);
        break;
      } catch (e) {
        if (Date.now() > end) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
}
