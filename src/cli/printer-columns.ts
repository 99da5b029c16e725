/**
 * `kubectl get` for a custom resource, offline: the table the API server builds from the
 * CRD's additionalPrinterColumns, printed as kubectl prints it (NAME first, uppercase
 * headers, columns 3 spaces apart, `<none>` for a missing value, priority > 0 columns
 * only with `wide`, `date` columns as an age). Pure.
 *
 * The JSONPath is the subset prfence's CRDs use: field steps (`.status.holder.node`) and
 * an equality filter on a list (`.status.conditions[?(@.type=="Ready")].status`). Any
 * other form throws UnsupportedJsonPathError: a column is never printed blank because
 * its path was not understood.
 */
import type { Crd } from './shipped-crds.js';

export interface PrinterColumn {
  name: string;
  type: string;
  jsonPath: string;
  priority?: number;
  format?: string;
  description?: string;
}

export class UnsupportedJsonPathError extends Error {
  constructor(path: string, why: string) {
    super(`unsupported JSONPath ${JSON.stringify(path)}: ${why}`);
    this.name = 'UnsupportedJsonPathError';
  }
}

type Step = { kind: 'field'; name: string } | { kind: 'filter'; field: string; value: string };

const FIELD = /^\.([A-Za-z_][A-Za-z0-9_-]*)/;
const FILTER = /^\[\?\(@\.([A-Za-z_][A-Za-z0-9_-]*)\s*==\s*(?:"([^"\\]*)"|'([^'\\]*)')\)\]/;

/** The steps of a path in the supported subset; throws UnsupportedJsonPathError otherwise. */
export function parseJsonPath(path: string): Step[] {
  if (!path.startsWith('.')) throw new UnsupportedJsonPathError(path, 'it must start with "."');
  const steps: Step[] = [];
  for (let rest = path; rest.length;) {
    const f = FIELD.exec(rest);
    if (f) {
      steps.push({ kind: 'field', name: f[1]! });
      rest = rest.slice(f[0].length);
      continue;
    }
    const q = FILTER.exec(rest);
    if (q && steps.length) {
      steps.push({ kind: 'filter', field: q[1]!, value: q[2] ?? q[3]! });
      rest = rest.slice(q[0].length);
      continue;
    }
    throw new UnsupportedJsonPathError(path, `cannot parse at ${JSON.stringify(rest)}`);
  }
  return steps;
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** Every value `path` selects in `obj` (none: the field is missing or no list entry matches). */
export function evalJsonPath(obj: unknown, path: string): unknown[] {
  let cur: unknown[] = [obj];
  for (const s of parseJsonPath(path)) {
    cur =
      s.kind === 'field'
        ? cur.flatMap((v) => (isObject(v) && v[s.name] !== undefined ? [v[s.name]] : []))
        : cur.flatMap((v) =>
            Array.isArray(v) ? v.filter((e) => isObject(e) && e[s.field] === s.value) : [],
          );
  }
  return cur.filter((v) => v !== null && v !== undefined);
}

/** kubectl's age of a duration (k8s.io/apimachinery duration.HumanDuration). */
export function humanDuration(ms: number): string {
  const seconds = Math.trunc(ms / 1000);
  if (seconds < -1) return '<invalid>';
  if (seconds < 0) return '0s';
  if (seconds < 120) return `${seconds}s`;
  const minutes = Math.trunc(seconds / 60);
  if (minutes < 10) return seconds % 60 ? `${minutes}m${seconds % 60}s` : `${minutes}m`;
  if (minutes < 180) return `${minutes}m`;
  const hours = Math.trunc(minutes / 60);
  if (hours < 8) return minutes % 60 ? `${hours}h${minutes % 60}m` : `${hours}h`;
  if (hours < 48) return `${hours}h`;
  const days = Math.trunc(hours / 24);
  if (hours < 24 * 8) return hours % 24 ? `${days}d${hours % 24}h` : `${days}d`;
  if (hours < 24 * 365 * 2) return `${days}d`;
  const years = Math.trunc(days / 365);
  if (hours < 24 * 365 * 8) return days % 365 ? `${years}y${days % 365}d` : `${years}y`;
  return `${years}y`;
}

const NONE = '<none>';

function cell(col: PrinterColumn, values: unknown[], now: number): string {
  if (!values.length) return NONE;
  if (col.type === 'date' && values.length === 1 && typeof values[0] === 'string') {
    const t = Date.parse(values[0]);
    return Number.isNaN(t) ? values[0] : humanDuration(now - t);
  }
  return values.map((v) => (typeof v === 'object' ? JSON.stringify(v) : String(v))).join(' ');
}

/** The printer columns of `crd` in `version` (default: the storage version), in order. */
export function printerColumns(crd: Crd, version?: string): PrinterColumn[] {
  const v = crd.spec.versions.find((x) => (version ? x.name === version : x.storage));
  if (!v) throw new Error(`${crd.metadata.name}: no version ${version ?? '(storage)'}`);
  return v.additionalPrinterColumns ?? [];
}

/** The lines of `kubectl get` for `objects` (`wide`: also the priority > 0 columns). */
export function printTable(
  columns: readonly PrinterColumn[],
  objects: readonly { metadata: { name: string } }[],
  opts: { now?: number; wide?: boolean } = {},
): string[] {
  const now = opts.now ?? Date.now();
  const cols = columns.filter((c) => opts.wide || !c.priority);
  for (const c of cols) parseJsonPath(c.jsonPath); // an unsupported path throws even with no rows
  const rows = [
    ['NAME', ...cols.map((c) => c.name.toUpperCase())],
    ...objects.map((o) => [o.metadata.name, ...cols.map((c) => cell(c, evalJsonPath(o, c.jsonPath), now))]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) =>
    r
      .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('   ')
      .trimEnd(),
  );
}
