/** Installs the chart's CRDs (charts/prfence/crds, the single source of truth) and waits until Established. */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  ApiextensionsV1Api,
  type KubeConfig,
  type V1CustomResourceDefinition,
} from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';

export const CRD_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'charts', 'prfence', 'crds');

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

/** Creates (or replaces) the CRDs and waits until each is Established. */
export async function installCrds(
  kc: KubeConfig,
  crds = readChartCrds(),
  timeoutMs = 60_000,
): Promise<string[]> {
  const api = kc.makeApiClient(ApiextensionsV1Api);
  for (const crd of crds) {
    const name = crd.metadata?.name ?? '';
    try {
      const existing = await api.readCustomResourceDefinition({ name });
      crd.metadata = { ...crd.metadata, resourceVersion: existing.metadata?.resourceVersion };
      await api.replaceCustomResourceDefinition({ name, body: crd });
    } catch (e) {
      if ((e as { code?: number }).code !== 404) throw e;
      await api.createCustomResourceDefinition({ body: crd });
    }
  }
  const end = Date.now() + timeoutMs;
  for (const crd of crds) {
    const name = crd.metadata?.name ?? '';
    for (;;) {
      const got = await api.readCustomResourceDefinition({ name });
      if (got.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True')) break;
      if (Date.now() > end) throw new Error(`CRD ${name} not Established after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return crds.map((c) => c.metadata?.name ?? '');
}
