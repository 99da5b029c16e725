/**
 * `prfence crds apply`: the supported way to upgrade the CRDs (Helm installs `crds/` on
 * the first install only and never upgrades them). Server-side applies the CRDs shipped
 * with this prfence (charts/prfence/crds in the package, crds/ in the image) with the
 * field manager `prfence-crds` and force: the first apply takes over the fields Helm (or
 * kubectl) created, later applies own them already. Refuses, before writing anything, to
 * apply a CRD that would drop a version the server still stores (status.storedVersions)
 * or serves: that is an older prfence than the one that wrote the cluster's CRDs.
 */
import type { Command } from 'commander';
import { KubeApiError, type RestClient } from '../kube/rest-client.js';
import { ApiUnreachableError, CrdVersionError } from './exit-codes.js';
import { withApi } from './cluster-command.js';
import type { CliIo } from './program.js';
import type { Crd } from './shipped-crds.js';

export const CRD_FIELD_MANAGER = 'prfence-crds';
const BASE = '/apis/apiextensions.k8s.io/v1/customresourcedefinitions';

/**
 * Why applying `embedded` over `live` would drop a version the server still stores or
 * serves (undefined: it would not). Objects stored in a version missing from the CRD
 * could not be read any more; the API server itself refuses to drop a stored version.
 */
export function droppedVersions(live: Crd, embedded: Crd): string | undefined {
  const have = new Set(embedded.spec.versions.map((v) => v.name));
  const stored = (live.status?.storedVersions ?? []).filter((v) => !have.has(v));
  const served = live.spec.versions.filter((v) => v.served && !have.has(v.name)).map((v) => v.name);
  const lost = [...new Set([...stored, ...served])];
  if (!lost.length) return undefined;
  return (
    `${live.metadata.name}: the cluster has version(s) ${lost.join(', ')} ` +
    `(${stored.length ? `stored: ${stored.join(', ')}` : `served: ${served.join(', ')}`}) ` +
    `that this prfence's CRD (versions ${[...have].join(', ')}) does not have: ` +
    'the CRDs in the cluster are newer; use the prfence release that installed them'
  );
}

/** JSON with sorted keys: what the apply changed, independent of key order. */
function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    x && typeof x === 'object' && !Array.isArray(x)
      ? Object.fromEntries(
          Object.entries(x as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b)),
        )
      : x,
  );
}
const content = (c: Crd) =>
  canonical({ spec: c.spec, labels: c.metadata.labels ?? {}, annotations: c.metadata.annotations ?? {} });

async function getCrd(rest: RestClient, name: string): Promise<Crd | undefined> {
  try {
    return await rest.get<Crd>(`${BASE}/${name}`);
  } catch (e) {
    if (e instanceof KubeApiError && e.code === 404) return undefined;
    throw e;
  }
}

async function waitEstablished(rest: RestClient, name: string, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const c = await getCrd(rest, name);
    const est = c?.status?.conditions?.find((x) => x.type === 'Established');
    if (est?.status === 'True') return;
    if (Date.now() > end) {
      const names = c?.status?.conditions?.find((x) => x.type === 'NamesAccepted');
      throw new ApiUnreachableError(
        `${name}: not Established after ${timeoutMs / 1000} s` +
          (names?.status === 'False' ? ` (NamesAccepted=False: ${names.message ?? names.reason ?? ''})` : ''),
      );
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

export interface CrdsApplyOptions {
  dryRun?: boolean;
  timeoutMs?: number;
}

/** Applies the embedded CRDs; one line per CRD through `out`. Throws before writing on a dropped version. */
export async function applyCrds(
  rest: RestClient,
  crds: readonly Crd[],
  out: (line: string) => void,
  o: CrdsApplyOptions = {},
): Promise<void> {
  const live = new Map<string, Crd | undefined>();
  for (const c of crds) live.set(c.metadata.name, await getCrd(rest, c.metadata.name));
  // Every CRD is checked before any is written: all or nothing.
  const refused = crds.flatMap((c) => {
    const l = live.get(c.metadata.name);
    const why = l ? droppedVersions(l, c) : undefined;
    return why ? [why] : [];
  });
  if (refused.length) throw new CrdVersionError(`refusing to apply the CRDs: ${refused.join('; ')}`);
  for (const c of crds) {
    const name = c.metadata.name;
    const before = live.get(name);
    const { resourceVersion: _rv, ...metadata } = c.metadata;
    const applied = await rest.send<Crd>({
      method: 'PATCH',
      path: `${BASE}/${name}`,
      contentType: 'application/apply-patch+yaml',
      body: { ...c, metadata },
      query: {
        fieldManager: CRD_FIELD_MANAGER,
        force: 'true',
        ...(o.dryRun ? { dryRun: 'All' } : {}),
      },
    });
    const what = !before ? 'created' : content(before) === content(applied) ? 'unchanged' : 'configured';
    if (!o.dryRun) await waitEstablished(rest, name, o.timeoutMs ?? 60_000);
    out(
      `customresourcedefinition.apiextensions.k8s.io/${name} ${what}${o.dryRun ? ' (server dry run)' : ''}`,
    );
  }
}

export function registerCrdsCommand(program: Command, io: CliIo): void {
  const crds = program.command('crds').description("prfence's CustomResourceDefinitions");
  crds
    .command('apply')
    .description(
      'server-side apply the CRDs of this prfence (run before helm upgrade: Helm never upgrades CRDs)',
    )
    .option('--dry-run', 'send the apply as a server dry run: print what would change, change nothing')
    .option('--kubeconfig <path>', 'kubeconfig (default: $KUBECONFIG, ~/.kube/config, in-cluster)')
    .option('--context <name>', 'kubeconfig context (default: the current context)')
    .action(async (o: { dryRun?: boolean; kubeconfig?: string; context?: string }) => {
      const { embeddedCrdDir, readCrds } = await import('./shipped-crds.js'); // YAML: only when used
      const embedded = readCrds(embeddedCrdDir()); // before connecting: a broken package says so
      await withApi(o, (rest) => applyCrds(rest, embedded, io.stdout, { dryRun: o.dryRun === true }));
    });
}
