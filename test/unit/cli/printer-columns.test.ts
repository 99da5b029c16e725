import { describe, expect, it } from 'vitest';
import { embeddedCrdDir, readCrds } from '../../../src/cli/shipped-crds.js';
import { crdOf, runDemo } from '../../../src/cli/demo.js';
import {
  evalJsonPath,
  humanDuration,
  parseJsonPath,
  printerColumns,
  printTable,
  UnsupportedJsonPathError,
  type PrinterColumn,
} from '../../../src/cli/printer-columns.js';

const obj = {
  metadata: { name: 'x' },
  status: {
    holder: { node: 'node-b', key: 'k2' },
    volumes: 0,
    conditions: [
      { type: 'Reserved', status: 'True', reason: 'Reserved' },
      { type: 'Ready', status: 'False', reason: 'NotReserved' },
    ],
  },
};

describe('JSONPath subset', () => {
  it('field steps', () => {
    expect(evalJsonPath(obj, '.status.holder.node')).toEqual(['node-b']);
    expect(evalJsonPath(obj, '.status.volumes')).toEqual([0]);
    expect(evalJsonPath(obj, '.metadata.name')).toEqual(['x']);
  });

  it('the filter form, with either quote', () => {
    expect(evalJsonPath(obj, '.status.conditions[?(@.type=="Ready")].status')).toEqual(['False']);
    expect(evalJsonPath(obj, ".status.conditions[?(@.type=='Ready')].reason")).toEqual(['NotReserved']);
    expect(evalJsonPath(obj, '.status.conditions[?(@.type == "Reserved")].status')).toEqual(['True']);
  });

  it('missing fields and unmatched filters select nothing', () => {
    expect(evalJsonPath(obj, '.status.lastFence.victimNode')).toEqual([]);
    expect(evalJsonPath(obj, '.status.conditions[?(@.type=="Degraded")].status')).toEqual([]);
    expect(
      evalJsonPath({ metadata: { name: 'y' } }, '.status.conditions[?(@.type=="Ready")].status'),
    ).toEqual([]);
    expect(evalJsonPath(obj, '.status.holder.node.deeper')).toEqual([]);
  });

  it.each([
    '.items[0]',
    '.status.conditions[*].status',
    '{.status.phase}',
    'status.phase',
    '.status..phase',
    '.status.conditions[?(@.type!="Ready")].status',
    '.status.conditions[?(@.status)]',
    '[?(@.type=="Ready")]',
    '',
  ])('%j is not supported: throws', (p) => {
    expect(() => parseJsonPath(p)).toThrow(UnsupportedJsonPathError);
    expect(() => evalJsonPath(obj, p)).toThrow(UnsupportedJsonPathError);
  });

  it('covers every printer column of every shipped CRD', () => {
    const crds = readCrds(embeddedCrdDir());
    expect(crds.length).toBeGreaterThanOrEqual(3);
    for (const crd of crds)
      for (const v of crd.spec.versions)
        for (const c of v.additionalPrinterColumns ?? [])
          expect(() => parseJsonPath(c.jsonPath)).not.toThrow();
  });
});

describe('humanDuration (kubectl ages)', () => {
  it.each([
    [-5000, '<invalid>'],
    [-1000, '0s'],
    [0, '0s'],
    [5_000, '5s'],
    [119_000, '119s'],
    [120_000, '2m'],
    [150_000, '2m30s'],
    [11 * 60_000, '11m'],
    [3 * 3600_000, '3h'],
    [3 * 3600_000 + 5 * 60_000, '3h5m'],
    [30 * 3600_000, '30h'],
    [3 * 86400_000 + 4 * 3600_000, '3d4h'],
    [100 * 86400_000, '100d'],
    [(3 * 365 + 2) * 86400_000, '3y2d'],
    [10 * 365 * 86400_000, '10y'],
  ])('%d ms -> %s', (ms, s) => expect(humanDuration(ms)).toBe(s));
});

describe('printTable', () => {
  const cols: PrinterColumn[] = [
    { name: 'Ready', type: 'string', jsonPath: '.status.conditions[?(@.type=="Ready")].status' },
    { name: 'Device', type: 'string', jsonPath: '.status.device', priority: 1 },
    { name: 'Last-Fenced', type: 'string', jsonPath: '.status.lastFence.victimNode' },
    { name: 'Volumes', type: 'integer', jsonPath: '.status.volumes' },
    { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
  ];
  const now = Date.parse('2026-01-01T00:10:00Z');
  const rows = [
    { ...obj, metadata: { name: 'pv-1', creationTimestamp: '2026-01-01T00:09:55Z' } },
    { metadata: { name: 'pv-long-name', creationTimestamp: '2026-01-01T00:08:00Z' } },
  ];

  it('kubectl layout: NAME first, uppercase headers, 3 spaces, <none>, priority > 0 hidden, dates as ages', () => {
    expect(printTable(cols, rows, { now })).toEqual([
      'NAME           READY    LAST-FENCED   VOLUMES   AGE',
      'pv-1           False    <none>        0         5s',
      'pv-long-name   <none>   <none>        <none>    2m',
    ]);
  });

  it('wide shows the priority > 0 columns', () => {
    expect(printTable(cols, rows, { now, wide: true })[0]).toBe(
      'NAME           READY    DEVICE   LAST-FENCED   VOLUMES   AGE',
    );
  });

  it('a column whose path is not supported throws, even with no rows', () => {
    const bad = [...cols, { name: 'First', type: 'string', jsonPath: '.status.conditions[0].type' }];
    expect(() => printTable(bad, rows, { now })).toThrow(UnsupportedJsonPathError);
    expect(() => printTable(bad, [], { now })).toThrow(UnsupportedJsonPathError);
  });
});

describe('prfence demo prints the CRDs’ own columns', () => {
  const header = (plural: string) => [
    'NAME',
    ...printerColumns(crdOf(plural))
      .filter((c) => !c.priority)
      .map((c) => c.name.toUpperCase()),
  ];
  const viewOf = (out: string[], title: string) => {
    const i = out.findIndex((l) => l.includes(title));
    expect(i).toBeGreaterThanOrEqual(0);
    return out.slice(i + 1).map((l) => l.split(/ {3,}/));
  };

  it('kubectl get vr: header = the VolumeReservation CRD columns (priority 0) in order; the agent’s record', async () => {
    const out: string[] = [];
    await runDemo({ stdout: (l) => out.push(l) });
    const [head, row] = viewOf(out, 'kubectl get vr');
    expect(head).toEqual(header('volumereservations'));
    const cell = (name: string) => row![head!.indexOf(name)];
    expect(row![0]).toBe('pv-demo');
    expect(cell('READY')).toBe('True');
    expect(cell('REASON')).toBe('Reserved');
    expect(cell('TYPE')).toBe('write-exclusive-reg-only');
    expect(cell('HOLDER')).toBe('node-b');
    expect(cell('LAST-FENCED')).toBe('node-a');
    expect(cell('FENCED-BY')).toBe('node-b');
    expect(head).not.toContain('REGISTRANTS');
  });

  it('kubectl get nf: header = the NodeFence CRD columns; node-a Fenced by node-b', async () => {
    const out: string[] = [];
    await runDemo({ stdout: (l) => out.push(l) });
    const [head, a, b] = viewOf(out, 'kubectl get nf');
    expect(head).toEqual(header('nodefences'));
    const cell = (row: string[] | undefined, name: string) => row![head!.indexOf(name)];
    expect([a![0], cell(a, 'PHASE'), cell(a, 'READY'), cell(a, 'FENCED-BY')]).toEqual([
      'node-a',
      'Fenced',
      'False',
      'node-b',
    ]);
    expect([b![0], cell(b, 'PHASE'), cell(b, 'READY'), cell(b, 'FENCED-BY')]).toEqual([
      'node-b',
      'Registered',
      'True',
      '<none>',
    ]);
  });
});
