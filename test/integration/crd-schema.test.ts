import { readdirSync, readFileSync } from 'node:fs';
import { CustomObjectsApi } from '@kubernetes/client-node';
import { parse } from 'yaml';
import { RestClient } from '../../src/kube/rest-client.js';
import { describe, expect, it } from 'vitest';
import * as crd from '../../src/crd/types.js';
import { RESERVATION_TYPES } from '../../src/pr/reservation-type.js';
import { adminKubeConfig, uniqueName } from '../envtest/kube.js';

/** JSON schema as served (raw JSON: the typed client renames `enum` and `x-kubernetes-*`). */
interface Schema {
  description?: string;
  properties?: Record<string, Schema>;
  items?: Schema;
  enum?: string[];
  'x-kubernetes-list-type'?: string;
  'x-kubernetes-list-map-keys'?: string[];
}
async function schemaOf(name: string): Promise<Schema> {
  const c = await new RestClient(adminKubeConfig()).get<{
    spec: { versions: { schema: { openAPIV3Schema: Schema } }[] };
  }>(`/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${name}`);
  return c.spec.versions[0]!.schema.openAPIV3Schema;
}
const status = (s: Schema) => s.properties!.status!.properties!;
const objects = () => adminKubeConfig().makeApiClient(CustomObjectsApi);

async function createError(plural: string, body: object): Promise<string> {
  try {
    await objects().createClusterCustomObject({ group: crd.GROUP, version: crd.VERSION, plural, body });
  } catch (e) {
    return apiMessage(e);
  }
  return 'accepted';
}

/** The API server's Status message of a failed call. */
function apiMessage(e: unknown): string {
  const body = (e as { body?: unknown }).body;
  if (typeof body !== 'string') return String(e);
  return (JSON.parse(body) as { message?: string }).message ?? body;
}

describe('CRDs as installed from charts/prfence/crds', () => {
  it('NodeFence enums and status fields -> equal to src/crd/types.ts', async () => {
    const s = await schemaOf('nodefences.prfence.io');
    expect(s.properties!.spec!.properties!.fenceState!.enum).toEqual([...crd.FENCE_STATES]);
    expect(status(s).phase!.enum).toEqual([...crd.NODE_PHASES]);
    expect(status(s).conditions!.items!.properties!.type!.enum).toEqual([...crd.NODE_CONDITION_TYPES]);
    expect(Object.keys(status(s)).sort()).toEqual([...crd.NODE_FENCE_STATUS_FIELDS].sort());
  });

  it('VolumeReservation enums, registrants map list and status fields -> equal to the types', async () => {
    const s = await schemaOf('volumereservations.prfence.io');
    expect(status(s).reservationType!.enum).toEqual([...RESERVATION_TYPES]);
    expect(status(s).device!.properties!.kind!.enum).toEqual([...crd.DEVICE_KINDS]);
    expect(status(s).lastFence!.properties!.result!.enum).toEqual([...crd.FENCE_RESULTS]);
    expect(Object.keys(status(s).lastFence!.properties!).sort()).toEqual([...crd.LAST_FENCE_FIELDS].sort());
    expect(status(s).conditions!.items!.properties!.type!.enum).toEqual([...crd.VOLUME_CONDITION_TYPES]);
    expect(status(s).registrants!['x-kubernetes-list-type']).toBe('map');
    expect(status(s).registrants!['x-kubernetes-list-map-keys']).toEqual(['node']);
    expect(Object.keys(status(s)).sort()).toEqual([...crd.VOLUME_RESERVATION_STATUS_FIELDS].sort());
  });

  it('invalid objects -> rejected by the API server with a clear message', async () => {
    const nf = (spec: object) => ({
      apiVersion: crd.API_VERSION,
      kind: 'NodeFence',
      metadata: { name: uniqueName('nf') },
      spec,
    });
    expect(await createError('nodefences', nf({ fenceState: 'Maybe' }))).toMatch(
      /fenceState.*Unsupported value: "Maybe"/,
    );
    expect(await createError('nodefences', nf({ fenceState: 'Fenced' }))).toContain(
      'spec.reason is required when spec.fenceState is Fenced',
    );
    expect(await createError('nodefences', nf({ fenceState: 'Fenced', reason: 'node lost power' }))).toBe(
      'accepted',
    );
  });

  it('VolumeReservation spec (the desired state) fields -> equal to the types; spec.reservationType (removed: the PV / StorageClass annotation replaces it) -> not in the schema, pruned on create', async () => {
    const s = await schemaOf('volumereservations.prfence.io');
    expect(Object.keys(s.properties!.spec!.properties!).sort()).toEqual(
      [...crd.VOLUME_RESERVATION_SPEC_FIELDS].sort(),
    );
    const name = uniqueName('vr');
    await objects().createClusterCustomObject({
      group: crd.GROUP,
      version: crd.VERSION,
      plural: 'volumereservations',
      body: {
        apiVersion: crd.API_VERSION,
        kind: 'VolumeReservation',
        metadata: { name },
        spec: { reservationType: 'write-exclusive' },
      },
    });
    const stored = (await objects().getClusterCustomObject({
      group: crd.GROUP,
      version: crd.VERSION,
      plural: 'volumereservations',
      name,
    })) as { spec?: unknown };
    expect(stored.spec).toEqual({});
  });

  it('status -> only through the status subresource; bad key format and key 0 rejected', async () => {
    const name = uniqueName('nf');
    const base = { group: crd.GROUP, version: crd.VERSION, plural: 'nodefences', name };
    await objects().createClusterCustomObject({
      ...base,
      body: {
        apiVersion: crd.API_VERSION,
        kind: 'NodeFence',
        metadata: { name },
        spec: {},
        status: { key: 'aaaa000000000001' },
      },
    });
    const created = (await objects().getClusterCustomObject(base)) as crd.NodeFence;
    expect(created.status).toBeUndefined(); // status dropped on create: it has its own subresource
    const patch = async (key: string) => {
      try {
        await objects().patchClusterCustomObjectStatus(
          { ...base, body: [{ op: 'add', path: '/status', value: { key } }] },
          { headers: { 'Content-Type': 'application/json-patch+json' } } as never,
        );
        return 'accepted';
      } catch (e) {
        return apiMessage(e);
      }
    };
    expect(await patch('AAAA')).toMatch(/status.key/);
    expect(await patch('0000000000000000')).toContain('a reservation key is never 0');
    expect(await patch('aaaa000000000001')).toBe('accepted');
  });

  describe('`kubectl explain`: every field has a description', () => {
    const dir = 'charts/prfence/crds';
    const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'));
    /** path -> schema of every property below the root (items of arrays included). */
    const fields = (root: Schema): [string, Schema][] => {
      const out: [string, Schema][] = [];
      const walk = (s: Schema, path: string) => {
        for (const [k, child] of Object.entries(s.properties ?? {})) {
          out.push([`${path}.${k}`, child]);
          walk(child, `${path}.${k}`);
        }
        if (s.items) walk(s.items, `${path}[]`);
      };
      walk(root, '');
      return out;
    };
    // ObjectMeta: described by the API server itself.
    const undescribed = (root: Schema) =>
      fields(root)
        .filter(([p, s]) => p !== '.metadata' && !(typeof s.description === 'string' && s.description.trim()))
        .map(([p]) => p);
    // Catches a description cut at a comma inside a YAML flow mapping ({ description: a, b }).
    const KEYWORDS = new Set([
      'type',
      'description',
      'properties',
      'items',
      'enum',
      'default',
      'format',
      'pattern',
      'minimum',
      'maximum',
      'minLength',
      'maxLength',
      'maxItems',
      'maxProperties',
      'additionalProperties',
      'required',
      'x-kubernetes-validations',
      'x-kubernetes-list-type',
      'x-kubernetes-list-map-keys',
      'x-kubernetes-map-type',
    ]);

    it('three CRDs in crds/', () => expect(files).toHaveLength(3));

    it.each(files)(
      '%s (the file) -> every property has a non-empty description and only schema keywords',
      (f) => {
        const c = parse(readFileSync(`${dir}/${f}`, 'utf8')) as {
          spec: { versions: { name: string; schema: { openAPIV3Schema: Schema } }[] };
        };
        for (const v of c.spec.versions) {
          const root = v.schema.openAPIV3Schema;
          expect(fields(root).length).toBeGreaterThan(3);
          expect({
            version: v.name,
            root: !!root.description?.trim(),
            undescribed: undescribed(root),
          }).toEqual({
            version: v.name,
            root: true,
            undescribed: [],
          });
          const unknown = fields(root).flatMap(([p, s]) =>
            Object.keys(s)
              .filter((k) => !KEYWORDS.has(k))
              .map((k) => `${p}: ${k}`),
          );
          expect(unknown).toEqual([]);
        }
      },
    );

    it.each(['nodefences', 'volumereservations', 'reservationkeys'])(
      '%s as served by the API server (what kubectl explain reads) -> every property described, spec/status and vr.status.holder.* included',
      async (plural) => {
        const s = await schemaOf(`${plural}.prfence.io`);
        const paths = fields(s).map(([p]) => p);
        expect(paths).toEqual(expect.arrayContaining(plural === 'reservationkeys' ? ['.spec'] : ['.status']));
        if (plural === 'volumereservations')
          expect(paths).toEqual(expect.arrayContaining(['.status.holder.node', '.status.holder.key']));
        expect(undescribed(s)).toEqual([]);
      },
    );
  });
});
