/**
 * `kubectl get vr` and `kubectl get nf` as kubectl fetches them (the server-side Table
 * view of the CRDs' additionalPrinterColumns), with agents on memory LUs: READY and
 * REASON are filled for a reserved volume, a volume whose device is missing (and once it
 * appears), and a node without volumes (PHASE too).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { GROUP, VERSION } from '../../src/crd/types.js';
import { formatKey } from '../../src/pr/key.js';
import { clusterObjectPath } from '../../src/kube/rest-client.js';
import { eventually } from '../envtest/kube.js';
import { Cluster } from './agent-harness.js';

const TABLE = 'application/json;as=Table;v=v1;g=meta.k8s.io';

interface Table {
  kind: string;
  columnDefinitions: { name: string }[];
  rows: { cells: unknown[]; object: { metadata: { name: string } } }[];
}

describe('kubectl get vr / nf (Table view)', () => {
  const c = new Cluster();
  afterAll(async () => {
    await c.stopAll();
  });

  /** The row of `name` as {column name: cell}, as `kubectl get <plural>` prints it. */
  async function row(plural: string, name: string): Promise<Record<string, unknown>> {
    const t = await c.rest.send<Table>({
      method: 'GET',
      path: clusterObjectPath(GROUP, VERSION, plural),
      accept: TABLE,
    });
    expect(t.kind).toBe('Table');
    const r = t.rows.find((x) => x.object.metadata.name === name);
    if (!r) throw new Error(`no row ${name} yet`);
    return Object.fromEntries(t.columnDefinitions.map((d, i) => [d.name, r.cells[i]]));
  }

  async function rowWhere(
    plural: string,
    name: string,
    want: Record<string, unknown>,
  ): Promise<Record<string, unknown>> {
    return eventually(
      async () => {
        const r = await row(plural, name);
        for (const [k, v] of Object.entries(want))
          if (r[k] !== v)
            throw new Error(`${name}: ${k}=${String(r[k])}, want ${String(v)}: ${JSON.stringify(r)}`);
        return r;
      },
      { timeoutMs: 60_000, intervalMs: 200 },
    );
  }

  it('a reserved volume -> Ready True, Reason Reserved; its node -> Phase Registered, Ready True, Reason Registered', async () => {
    const na = await c.node('node-a');
    const { name: pv } = await c.pv();
    await c.startAgent(na);
    await c.attach(pv, na);
    const vr = await rowWhere('volumereservations', pv, { Ready: 'True', Reason: 'Reserved' });
    expect(vr.Holder).toBe(na);
    const nf = await rowWhere('nodefences', na, { Ready: 'True', Reason: 'Registered' });
    expect(nf.Phase).toBe('Registered');
    expect(nf.Volumes).toBe(1);
  });

  it('a volume whose device is missing -> Ready False, Reason DeviceNotFound; once the device appears -> Ready True, Reason Reserved', async () => {
    const nb = await c.node('node-b');
    const { name: pv, lu } = await c.pv();
    c.lus.delete(lu.id); // the node does not see the LU yet
    await c.startAgent(nb);
    await c.attach(pv, nb);
    await rowWhere('volumereservations', pv, { Ready: 'False', Reason: 'DeviceNotFound' });
    const vr = await c.vr(pv);
    expect(vr.status?.conditions?.find((x) => x.type === 'DeviceFound')).toMatchObject({ status: 'False' });
    c.lus.set(lu.id, lu);
    await rowWhere('volumereservations', pv, { Ready: 'True', Reason: 'Reserved' });
    // The device-missing conditions are gone with the write that recorded the device.
    const after = await c.vr(pv);
    expect(after.status?.conditions?.map((x) => x.type).sort()).toEqual(['Ready', 'Reserved']);
  });

  it('a node with a key and no volume -> Key, Phase Registered, Ready True, Reason NoVolumes', async () => {
    const nc = await c.node('node-c');
    const agent = await c.startAgent(nc);
    const nf = await rowWhere('nodefences', nc, { Ready: 'True', Reason: 'NoVolumes' });
    expect(nf.Phase).toBe('Registered');
    expect(nf.Key).toBe(formatKey(agent.key));
    expect(nf.Volumes).toBe(0);
  });
});
