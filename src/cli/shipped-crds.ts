/**
 * The CustomResourceDefinitions shipped with this prfence: where they are in the package
 * or image, and reading them from their YAML. Used by `prfence crds apply` and the demo.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import type { PrinterColumn } from './printer-columns.js';

export interface CrdVersion {
  name: string;
  served?: boolean;
  storage?: boolean;
  additionalPrinterColumns?: PrinterColumn[];
}
export interface Crd {
  apiVersion: string;
  kind: string;
  metadata: { name: string; resourceVersion?: string; labels?: unknown; annotations?: unknown };
  spec: { versions: CrdVersion[] } & Record<string, unknown>;
  status?: {
    storedVersions?: string[];
    conditions?: { type: string; status: string; reason?: string; message?: string }[];
  };
}

/**
 * The CRD directory of this prfence: found by walking up from this file to the package
 * root (src/cli from the sources, dist/src/cli when built), then charts/prfence/crds, or
 * crds/ (the container image copies them there).
 */
export function embeddedCrdDir(from = dirname(fileURLToPath(import.meta.url))): string {
  for (let dir = from; ; dir = dirname(dir)) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'prfence') {
      for (const d of [join(dir, 'charts', 'prfence', 'crds'), join(dir, 'crds')])
        if (existsSync(d)) return d;
      throw new Error(`no CRDs in the prfence package at ${dir} (charts/prfence/crds or crds)`);
    }
    if (dirname(dir) === dir) throw new Error(`no prfence package.json above ${from}`);
  }
}

/** Every CustomResourceDefinition in the YAML files of `dir`, sorted by name. */
export function readCrds(dir: string): Crd[] {
  const files = readdirSync(dir)
    .filter((f) => /\.ya?ml$/.test(f))
    .sort();
  const crds = files.flatMap((f) =>
    parseAllDocuments(readFileSync(join(dir, f), 'utf8')).map((d) => {
      if (d.errors.length) throw new Error(`${join(dir, f)}: ${d.errors[0]!.message}`);
      return d.toJS() as Crd | null;
    }),
  );
  const out = crds.filter((c): c is Crd => c?.kind === 'CustomResourceDefinition');
  if (!out.length) throw new Error(`no CustomResourceDefinition in ${dir}`);
  return out.sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
}
