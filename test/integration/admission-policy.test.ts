/**
 * The chart's ValidatingAdmissionPolicy on the real API server, with the chart's RBAC
 * (docs/design.md "Who may write what"). Agents authenticate as the chart's agent
 * ServiceAccount with tokens bound to Pods on Nodes (the node-name claim), and run the
 * agent's own write code (key-claim.ts, status-writer.ts): what a node's agent writes
 * passes, the same write about another node or against a Fenced mark is refused, people
 * and the controller are not restricted. Last, two whole agents fence end to end with the
 * policy on and no write of theirs refused.
 */
import { KubeConfig, type V1Namespace, type V1Node } from '@kubernetes/client-node';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { claimKey, nfPath } from '../../src/agent/key-claim.js';
import { cond, INTENT_EXPIRY_MS, StatusWriter, vrPath } from '../../src/agent/status-writer.js';
import { fenceRecord } from '../../src/agent/vr-record.js';
import {
  API_VERSION,
  GROUP,
  NODE_FENCE,
  RESERVATION_KEY,
  VERSION,
  VOLUME_RESERVATION,
  type IsolationProof,
  type NodeFence,
} from '../../src/crd/types.js';
import { nodeLabel } from '../../src/crd/node-label.js';
import { clusterTag } from '../../src/fence/keys.js';
import { clusterObjectPath, KubeApiError, RestClient } from '../../src/kube/rest-client.js';
import { createAgentMetrics } from '../../src/obs/metrics.js';
import { formatKey, type PrKey } from '../../src/pr/key.js';
import { eventually, uniqueName } from '../envtest/kube.js';
import { Cluster } from './agent-harness.js';
import { applyAll, PATHS, render } from './chart-render.js';

const ns = uniqueName('vap');
const release = uniqueName('vap');
const log = pino({ level: 'silent' });
/** A sampling window (several resyncs happen in it); never used to wait for a condition. */
const observeFor = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Agent {
  node: string;
  rest: RestClient;
  key: PrKey;
  writer: StatusWriter;
}

/** allowed, or refused by the admission policy; any other error is thrown. */
async function verdict(write: Promise<unknown>): Promise<string> {
  try {
    await write;
    return 'allowed';
  } catch (e) {
    if (
      e instanceof KubeApiError &&
      e.code === 403 &&
      /ValidatingAdmissionPolicy .* denied request/.test(e.message)
    )
      return 'refused';
    throw e;
  }
}

const merge = (rest: RestClient, path: string, body: object) =>
  rest.send({ method: 'PATCH', path, contentType: 'application/merge-patch+json', body });
const jsonPatch = (rest: RestClient, path: string, body: object[]) =>
  rest.send({ method: 'PATCH', path, contentType: 'application/json-patch+json', body });
const applyNfStatus = (rest: RestClient, name: string, status: object, fm: string) =>
  rest.apply(
    nfPath(name, 'status'),
    { apiVersion: API_VERSION, kind: NODE_FENCE.kind, metadata: { name }, status },
    fm,
  );

describe('admission policy: node-restricted writes of the agents', () => {
  const c = new Cluster();
  const admin = c.rest;
  const cluster = c.kc.getCurrentCluster()!;
  let agentSa = '';
  let controllerSa = '';
  let tag = 0;

  /** A KubeConfig that authenticates with `token`. */
  const kubeConfigAs = (token: string) => {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'envtest', server: cluster.server, caData: cluster.caData, caFile: cluster.caFile }],
      users: [{ name: 'sa', token }],
      contexts: [{ name: 'sa', cluster: 'envtest', user: 'sa' }],
      currentContext: 'sa',
    });
    return kc;
  };

  /** A token of `sa`, bound to the Pod `pod` (its node gives the node-name claim) or to nothing. */
  const token = async (sa: string, pod?: { name: string; uid: string }) =>
    (
      await admin.send<{ status: { token: string } }>({
        method: 'POST',
        path: `/api/v1/namespaces/${ns}/serviceaccounts/${sa}/token`,
        body: {
          apiVersion: 'authentication.k8s.io/v1',
          kind: 'TokenRequest',
          spec: {
            expirationSeconds: 3600,
            ...(pod ? { boundObjectRef: { apiVersion: 'v1', kind: 'Pod', ...pod } } : {}),
          },
        },
      })
    ).status.token;

  /** The agent pod's token on `node` (a Pod object with spec.nodeName: no scheduler, no kubelet). */
  const podToken = async (node: string) => {
    const pod = await admin.send<{ metadata: { name: string; uid: string } }>({
      method: 'POST',
      path: `/api/v1/namespaces/${ns}/pods`,
      body: {
        metadata: { name: uniqueName('agent') },
        spec: {
          nodeName: node,
          serviceAccountName: agentSa,
          containers: [{ name: 'agent', image: 'ghcr.io/prfence/prfence:test' }],
        },
      },
    });
    return token(agentSa, pod.metadata);
  };

  /** A node and its agent's identity, key claimed and NodeFence created by key-claim.ts. */
  const agentOn = async (prefix: string): Promise<Agent> => {
    const node = await c.node(prefix);
    const nodeUid = (await admin.get<V1Node>(`/api/v1/nodes/${node}`)).metadata!.uid!;
    const rest = new RestClient(kubeConfigAs(await podToken(node)));
    const key = await claimKey({ rest, node, nodeUid, tag, fieldManager: `prfence-agent/${node}`, log });
    return { node, rest, key, writer: new StatusWriter({ rest, node, key, nodeUid, log }) };
  };

  const proof = (
    a: Agent,
    volume: string,
    victimKey: PrKey,
    at = new Date().toISOString(),
  ): IsolationProof => ({
    volume,
    victimKey: formatKey(victimKey),
    result: 'Fenced',
    generation: 2,
    by: a.node,
    at,
  });

  /** Y fences X on `pv` as FenceRecords (fence-records.ts) records a fence (intent first, then the records; the last one also drops X's registrant entry). */
  const fence = async (y: Agent, x: Agent, pv: string) => {
    const at = new Date().toISOString();
    const intent = { victimKey: formatKey(x.key), victimNode: x.node, by: y.node, at };
    expect(await y.writer.recordIntent(pv, intent)).toBe(true);
    await y.writer.markFenced(x.node, at);
    await y.writer.recordProof(x.node, proof(y, pv, x.key, at));
    const fenced = { node: x.node, key: formatKey(x.key), at };
    await y.writer.completeFence(
      pv,
      fenceRecord({ ...fenced, key: x.key, result: 'fenced' }, y.node, at, 5),
      [fenced],
    );
  };

  const registered = (a: Agent, pv: string) =>
    a.writer.writeVolume(pv, {
      registrants: [{ node: a.node, key: formatKey(a.key), legitimate: true }],
      generation: 1,
    });

  beforeAll(async () => {
    const objs = render(release, [], ns);
    agentSa = objs.find((o) => o.kind === 'ServiceAccount' && o.metadata.name.endsWith('-agent'))!.metadata
      .name;
    controllerSa = objs.find((o) => o.kind === 'ServiceAccount' && o.metadata.name.endsWith('-controller'))!
      .metadata.name;
    await admin.send({ method: 'POST', path: '/api/v1/namespaces', body: { metadata: { name: ns } } });
    await applyAll(
      admin,
      objs.filter((o) =>
        [
          'ServiceAccount',
          'ClusterRole',
          'ClusterRoleBinding',
          'ValidatingAdmissionPolicy',
          'ValidatingAdmissionPolicyBinding',
        ].includes(o.kind),
      ),
    );
    tag = clusterTag((await admin.get<V1Namespace>('/api/v1/namespaces/kube-system')).metadata!.uid!);
    // The policy is in force once a write with a token bound to no pod is refused (policies
    // are loaded asynchronously).
    const probe = new RestClient(kubeConfigAs(await token(agentSa)));
    await eventually(
      async () =>
        (await verdict(
          probe.send({
            method: 'POST',
            path: vrPath(),
            body: {
              apiVersion: API_VERSION,
              kind: 'VolumeReservation',
              metadata: { name: uniqueName('probe') },
            },
            query: { dryRun: 'All' },
          }),
        )) === 'refused',
      { timeoutMs: 30_000 },
    );
  });

  afterEach(async () => {
    await c.unfenceAll();
    await c.stopAll();
  });

  afterAll(async () => {
    for (const o of render(release, [], ns).filter((x) => x.kind.startsWith('ValidatingAdmissionPolicy')))
      await admin.send({ method: 'DELETE', path: PATHS[o.kind]!(o) });
  });

  it('token bound to a pod on node X -> the API server adds the node-name claim (SelfSubjectReview); bound to nothing -> no claim', async () => {
    const node = await c.node('vap-x');
    const review = async (t: string) =>
      (
        await new RestClient(kubeConfigAs(t)).send<{
          status: { userInfo: { username: string; extra?: Record<string, string[]> } };
        }>({
          method: 'POST',
          path: '/apis/authentication.k8s.io/v1/selfsubjectreviews',
          body: { apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' },
        })
      ).status.userInfo;
    const bound = await review(await podToken(node));
    const unbound = await review(await token(agentSa));
    expect({
      bound: [bound.username, bound.extra?.['authentication.kubernetes.io/node-name']],
      unbound: [unbound.username, unbound.extra?.['authentication.kubernetes.io/node-name']],
    }).toEqual({
      bound: [`system:serviceaccount:${ns}:${agentSa}`, [node]],
      unbound: [`system:serviceaccount:${ns}:${agentSa}`, undefined],
    });
  });

  it("a node's own writes (key claim, NodeFence created, own status, own registrant entry) -> allowed", async () => {
    const x = await agentOn('vap-x'); // claimKey: ReservationKey, NodeFence created, status.key
    const pv = uniqueName('pv');
    const nf = await c.nodeFence(x.node);
    await x.writer.writeOwn(nf, {
      phase: 'Blocked',
      volumes: 1,
      handingOver: [pv],
      conditions: [cond('Ready', 'False', 'Blocked', 'registration refused (S2) on 1 volume(s)')],
    });
    await registered(x, pv);
    expect({
      nf: (await c.nodeFence(x.node)).status,
      registrants: (await c.vr(pv)).status?.registrants,
    }).toMatchObject({
      nf: { key: formatKey(x.key), phase: 'Blocked', volumes: 1, handingOver: [pv] },
      registrants: [{ node: x.node, key: formatKey(x.key) }],
    });
  });

  it('a peer fences X (intent, Fenced mark, registrant entry dropped, proof, lastFence) -> allowed; X keeps writing its status under the mark; a second fencer keeps the mark and adds its own proof', async () => {
    const [x, y, z] = [await agentOn('vap-x'), await agentOn('vap-y'), await agentOn('vap-z')];
    const [pv, pv2] = [uniqueName('pv'), uniqueName('pv')];
    await registered(x, pv);
    await registered(y, pv);
    const own = (volumes: number) => ({
      phase: 'Registered' as const,
      volumes,
      handingOver: [],
      conditions: [cond('Ready', 'True', 'Registered', `key registered on ${volumes} volume(s)`)],
    });
    const cached = await c.nodeFence(x.node);
    await x.writer.writeOwn(cached, own(1));
    await fence(y, x, pv);
    // X's agent, its cache not yet showing the mark: phase is refused by the mark's owner
    // (409, before the policy is asked), then written without it (writeOwn).
    await x.writer.writeOwn(cached, own(0));
    await z.writer.markFenced(x.node, new Date().toISOString());
    await z.writer.recordProof(x.node, proof(z, pv2, x.key));
    // A current proof by Y on pv stands: Z's proof of the same volume is not written.
    await z.writer.recordProof(x.node, proof(z, pv, x.key));
    const nf = await c.nodeFence(x.node);
    const vr = await c.vr(pv);
    expect({
      phase: nf.status?.phase,
      fencedBy: nf.status?.fencedBy,
      volumes: nf.status?.volumes,
      proofs: nf.status?.proofs?.map(
        (p) => `${p.volume === pv ? 'pv' : 'pv2'} by ${p.by === y.node ? 'y' : 'z'}`,
      ),
      registrants: vr.status?.registrants?.map((r) => r.node),
      lastFence: vr.status?.lastFence?.by,
      intent: vr.status?.fenceIntent,
    }).toEqual({
      phase: 'Fenced',
      fencedBy: y.node,
      volumes: 0,
      proofs: ['pv by y', 'pv2 by z'],
      registrants: [y.node],
      lastFence: y.node,
      intent: undefined,
    });
  });

  it("two agents' fence intents on one volume -> the first is one request; the second's apply is refused by the API server (the field is the first's) and records nothing; after the first completes (its removal leaves the field without an owner) the second records in one request; an intent older than 120 s is taken over", async () => {
    const [x, y, z] = [await agentOn('int-x'), await agentOn('int-y'), await agentOn('int-z')];
    const pv = uniqueName('pv');
    await registered(y, pv);
    await registered(z, pv);
    const intentBy = (a: Agent, at = new Date()) => ({
      victimKey: formatKey(x.key),
      victimNode: x.node,
      by: a.node,
      at: at.toISOString(),
    });
    const sent = async (a: Agent, write: () => Promise<boolean>) => {
      const before = a.rest.requests;
      const ok = await write();
      return { ok, requests: a.rest.requests - before };
    };
    const holder = async () => (await c.vr(pv)).status?.fenceIntent?.by;
    const first = await sent(y, () => y.writer.recordIntent(pv, intentBy(y)));
    const second = await sent(z, () => z.writer.recordIntent(pv, intentBy(z)));
    const whileOpen = await holder();
    await y.writer.completeFence(pv, undefined, []);
    const afterCompletion = await holder();
    const third = await sent(z, () => z.writer.recordIntent(pv, intentBy(z)));
    const zHolds = await holder();
    // Z's intent, abandoned: recorded 3 minutes ago (Z replaces its own, its manager owns it).
    expect(
      await z.writer.recordIntent(pv, intentBy(z, new Date(Date.now() - INTENT_EXPIRY_MS - 60_000))),
    ).toBe(true);
    const takeover = await sent(y, () => y.writer.recordIntent(pv, intentBy(y)));
    expect({
      first,
      second,
      whileOpen,
      afterCompletion,
      third,
      zHolds,
      takeover,
      after: await holder(),
    }).toEqual({
      first: { ok: true, requests: 1 },
      second: { ok: false, requests: 2 }, // the refused apply, then the GET that shows Y's intent
      whileOpen: y.node,
      afterCompletion: undefined,
      third: { ok: true, requests: 1 }, // the removal (a JSON patch) left the field without an owner
      zHolds: z.node,
      takeover: { ok: true, requests: 3 }, // refused apply, GET, forced apply on its resourceVersion
      after: y.node,
    });
  });

  it('a second fence of one node on a volume before the first is recorded -> its intent (one request) names both keys; a record that leaves another fence unrecorded keeps the intent, the last one removes it', async () => {
    const [x, y, z] = [await agentOn('int2-x'), await agentOn('int2-y'), await agentOn('int2-z')];
    const pv = uniqueName('pv');
    await registered(y, pv);
    const at = new Date().toISOString();
    await y.writer.recordIntent(pv, { victimKey: formatKey(x.key), victimNode: x.node, by: y.node, at });
    const before = y.rest.requests;
    const second = {
      victimKey: formatKey(z.key),
      victimNode: z.node,
      by: y.node,
      at,
      earlierVictims: [{ victimKey: formatKey(x.key), victimNode: x.node }],
    };
    expect(await y.writer.recordIntent(pv, second)).toBe(true);
    const requests = y.rest.requests - before;
    const open = (await c.vr(pv)).status?.fenceIntent;
    const fenced = (k: PrKey, n: string) => [{ key: formatKey(k), node: n, at }];
    await y.writer.completeFence(pv, undefined, fenced(z.key, z.node), undefined, { closeIntent: false });
    const kept = (await c.vr(pv)).status?.fenceIntent;
    await y.writer.completeFence(pv, undefined, fenced(x.key, x.node));
    const after = (await c.vr(pv)).status;
    expect({
      requests,
      open,
      kept,
      intentAfter: after?.fenceIntent,
      fencedKeys: after?.fencedKeys?.map((f) => f.node),
    }).toEqual({
      requests: 1,
      open: second,
      kept: second,
      intentAfter: undefined,
      fencedKeys: [z.node, x.node],
    });
  });

  it("a fencer drops a node's registrant entry only if it names the key the fence removed -> an entry with another key (the node back as a new incarnation) stays", async () => {
    const [x, y] = [await agentOn('drop-x'), await agentOn('drop-y')];
    const pv = uniqueName('pv');
    await registered(x, pv);
    await registered(y, pv);
    const nodes = async () => (await c.vr(pv)).status?.registrants?.map((r) => r.node).sort();
    const fenced = (key: PrKey) => [{ node: x.node, key: formatKey(key), at: new Date().toISOString() }];
    await y.writer.completeFence(pv, undefined, fenced(x.key ^ 1n)); // an earlier key of node-x
    const afterOtherKey = await nodes();
    await y.writer.completeFence(pv, undefined, fenced(x.key));
    expect({ afterOtherKey, afterItsKey: await nodes() }).toEqual({
      afterOtherKey: [x.node, y.node].sort(),
      afterItsKey: [y.node],
    });
  });

  it('writes an agent may not make -> refused by the policy, each with its reason', async () => {
    const [x, y, z, w] = [
      await agentOn('vap-x'),
      await agentOn('vap-y'),
      await agentOn('vap-z'),
      await agentOn('vap-w'),
    ];
    const pv = uniqueName('pv');
    await registered(x, pv);
    await registered(y, pv);
    await registered(z, pv);
    await fence(y, x, pv); // X: Fenced by Y, a proof by Y; W: not fenced
    const fmOf = (a: Agent) => `prfence-agent/${a.node}`;
    const nfStatus = (a: Agent) => nfPath(a.node, 'status');
    const message = async (write: Promise<unknown>) => {
      try {
        await write;
        return 'allowed';
      } catch (e) {
        return e instanceof KubeApiError ? e.message.replace(/^.*denied request: /, '') : String(e);
      }
    };
    const writes: Record<string, () => Promise<unknown>> = {
      // X on its own NodeFence, marked Fenced by Y.
      'X clears its own Fenced mark (merge patch)': () =>
        merge(x.rest, nfStatus(x), { status: { phase: 'Registered' } }),
      'X takes phase over with a forced apply': () =>
        applyNfStatus(x.rest, x.node, { phase: 'AccessLost' }, fmOf(x)),
      'X removes fencedBy and fencedAt': () =>
        merge(x.rest, nfStatus(x), { status: { fencedBy: null, fencedAt: null } }),
      'X writes a proof of its own isolation': () =>
        applyNfStatus(x.rest, x.node, { proofs: [proof(x, uniqueName('pv'), x.key)] }, fmOf(x)),
      'X writes its own status.isolation': () =>
        merge(x.rest, nfStatus(x), { status: { isolation: { complete: true, proven: 1, total: 1 } } }),
      'X unfences itself (spec)': () =>
        merge(x.rest, nfPath(x.node), {
          spec: { fenceState: 'Unfenced', unfencedAt: new Date().toISOString() },
        }),
      'Y asks for a fence of W (spec)': () =>
        merge(y.rest, nfPath(w.node), { spec: { fenceState: 'Fenced', reason: 'y says so' } }),
      'Y creates the NodeFence of another node': () =>
        y.rest.send({
          method: 'POST',
          path: nfPath(),
          body: {
            apiVersion: API_VERSION,
            kind: NODE_FENCE.kind,
            metadata: { name: uniqueName('vap-v') },
            spec: {},
          },
        }),
      // Peers on another node's NodeFence.
      'Z marks W Fenced with fencedBy Y': () =>
        applyNfStatus(
          z.rest,
          w.node,
          { phase: 'Fenced', fencedBy: y.node, fencedAt: new Date().toISOString() },
          fmOf(z),
        ),
      'Z marks itself Fenced by itself': () =>
        merge(z.rest, nfStatus(z), {
          status: { phase: 'Fenced', fencedBy: z.node, fencedAt: new Date().toISOString() },
        }),
      'Z re-marks X (fencedBy Z)': () =>
        merge(z.rest, nfStatus(x), { status: { fencedBy: z.node, fencedAt: new Date().toISOString() } }),
      "Z changes W's key": () => merge(z.rest, nfStatus(w), { status: { key: '00000000000000ab' } }),
      "Z changes W's phase to Blocked": () => merge(z.rest, nfStatus(w), { status: { phase: 'Blocked' } }),
      "Z writes W's conditions": () =>
        merge(z.rest, nfStatus(w), {
          status: { conditions: [cond('Ready', 'True', 'Registered', 'fine')] },
        }),
      'Z adds a proof by Y to X': () =>
        jsonPatch(z.rest, nfStatus(x), [
          { op: 'add', path: '/status/proofs/-', value: proof(y, uniqueName('pv'), x.key) },
        ]),
      "Z removes Y's proof from X": () =>
        jsonPatch(z.rest, nfStatus(x), [{ op: 'remove', path: '/status/proofs/0' }]),
      "Z changes Y's proof on X": () =>
        jsonPatch(z.rest, nfStatus(x), [{ op: 'replace', path: '/status/proofs/0/generation', value: 9 }]),
      // VolumeReservation.
      "Z writes the volume's desired state (spec)": () =>
        merge(z.rest, vrPath(pv), { spec: { attachments: [{ node: z.node, name: 'va-z' }] } }),
      'Z labels the volume for W': () =>
        merge(z.rest, vrPath(pv), { metadata: { labels: { [nodeLabel(w.node)]: 'true' } } }),
      'Z creates a VolumeReservation with a spec': () =>
        z.rest.send({
          method: 'POST',
          path: vrPath(),
          body: {
            apiVersion: API_VERSION,
            kind: VOLUME_RESERVATION.kind,
            metadata: { name: uniqueName('pv') },
            spec: { device: 'wwid:x' },
          },
        }),
      'Z adds a registrant entry for W': () =>
        jsonPatch(z.rest, vrPath(pv, 'status'), [
          { op: 'add', path: '/status/registrants/-', value: { node: w.node, key: formatKey(w.key) } },
        ]),
      "Z changes Y's registrant entry": () =>
        jsonPatch(z.rest, vrPath(pv, 'status'), [
          { op: 'test', path: '/status/registrants/0/node', value: y.node },
          { op: 'replace', path: '/status/registrants/0/key', value: formatKey(z.key) },
        ]),
      'Z records a fence intent by Y': () =>
        merge(z.rest, vrPath(pv, 'status'), {
          status: { fenceIntent: { victimKey: formatKey(w.key), by: y.node, at: new Date().toISOString() } },
        }),
      'Z records a lastFence by Y': () =>
        merge(z.rest, vrPath(pv, 'status'), {
          status: { lastFence: { victimKey: formatKey(w.key), by: y.node, at: new Date().toISOString() } },
        }),
      // Key claims (S6).
      'Z claims a key for W': () =>
        z.rest.send({
          method: 'POST',
          path: clusterObjectPath(GROUP, VERSION, RESERVATION_KEY.plural),
          body: {
            apiVersion: API_VERSION,
            kind: RESERVATION_KEY.kind,
            metadata: { name: '00000000000000cd' },
            spec: { node: w.node, nodeUID: 'uid' },
          },
        }),
    };
    const got: Record<string, string> = {};
    for (const [what, write] of Object.entries(writes)) got[what] = await message(write());
    const refused = (why: RegExp) => expect.stringMatching(why);
    expect(got).toEqual({
      'X clears its own Fenced mark (merge patch)': refused(/away from Fenced; only prfence unfence/),
      'X takes phase over with a forced apply': refused(/away from Fenced/),
      'X removes fencedBy and fencedAt': refused(
        /may not remove or change status.fencedBy or status.fencedAt/,
      ),
      'X writes a proof of its own isolation': refused(
        /may not write status.proofs or status.isolation of its own/,
      ),
      'X writes its own status.isolation': refused(
        /may not write status.proofs or status.isolation of its own/,
      ),
      'X unfences itself (spec)': refused(/may not write a NodeFence spec/),
      'Y asks for a fence of W (spec)': refused(/may not write a NodeFence spec/),
      'Y creates the NodeFence of another node': refused(/may create only its own NodeFence/),
      'Z marks W Fenced with fencedBy Y': refused(
        /may set a Fenced mark only on another node, with status.phase Fenced and status.fencedBy/,
      ),
      'Z marks itself Fenced by itself': refused(/may set a Fenced mark only on another node/),
      'Z re-marks X (fencedBy Z)': refused(/may not remove or change status.fencedBy/),
      "Z changes W's key": refused(/may write only the Fenced mark/),
      "Z changes W's phase to Blocked": refused(/may write only the Fenced mark/),
      "Z writes W's conditions": refused(/may write only the Fenced mark/),
      'Z adds a proof by Y to X': refused(/may add or replace only its own entries .* in status.proofs/),
      "Z removes Y's proof from X": refused(/a proof by another node stays until an unfence/),
      "Z changes Y's proof on X": refused(/in status.proofs/),
      "Z writes the volume's desired state (spec)": refused(/may not write the spec or labels/),
      'Z labels the volume for W': refused(/may not write the spec or labels/),
      'Z creates a VolumeReservation with a spec': refused(/may not write the spec or labels/),
      'Z adds a registrant entry for W': refused(
        /may add or change only its own entry .* in status.registrants/,
      ),
      "Z changes Y's registrant entry": refused(/in status.registrants/),
      'Z records a fence intent by Y': refused(/only its own\s+fence intent/),
      'Z records a lastFence by Y': refused(/status.lastFence/),
      'Z claims a key for W': refused(/claim a reservation key only for its\s+own node/),
    });
    // None of them got through.
    const nf = await c.nodeFence(x.node);
    expect([nf.status?.phase, nf.status?.fencedBy, nf.spec?.fenceState, nf.status?.proofs?.length]).toEqual([
      'Fenced',
      y.node,
      'Unfenced',
      1,
    ]);
    // What an agent may do to another node's entry: remove it (after a fence).
    const yFenced = [{ node: y.node, key: formatKey(y.key), at: new Date().toISOString() }];
    expect(await verdict(z.writer.completeFence(pv, undefined, yFenced))).toBe('allowed');
    expect((await c.vr(pv)).status?.registrants?.map((r) => r.node)).toEqual([z.node]);
  });

  it('a token bound to no pod -> every agent write refused; people and the controller -> not restricted', async () => {
    const x = await agentOn('vap-x');
    const y = await agentOn('vap-y');
    const pv = uniqueName('pv');
    await registered(y, pv);
    await fence(y, x, pv);
    const unbound = new RestClient(kubeConfigAs(await token(agentSa)));
    const controller = new RestClient(kubeConfigAs(await token(controllerSa)));
    expect({
      ownStatus: await verdict(merge(unbound, nfPath(x.node, 'status'), { status: { volumes: 3 } })),
      createVr: await verdict(
        unbound.send({
          method: 'POST',
          path: vrPath(),
          body: { apiVersion: API_VERSION, kind: 'VolumeReservation', metadata: { name: uniqueName('pv') } },
        }),
      ),
      vrStatus: await verdict(merge(unbound, vrPath(pv, 'status'), { status: { foreignKeys: 1 } })),
      // The controller's proof summary, a person's unfence (prfence unfence): no policy.
      controllerIsolation: await verdict(
        applyNfStatus(
          controller,
          x.node,
          { isolation: { proven: 1, total: 1, complete: true } },
          'prfence-controller',
        ),
      ),
      personUnfence: await verdict(c.setFenceState(x.node, 'Unfenced', true)),
    }).toEqual({
      ownStatus: 'refused',
      createVr: 'refused',
      vrStatus: 'refused',
      controllerIsolation: 'allowed',
      personUnfence: 'allowed',
    });
    expect((await c.nodeFence(x.node)).status?.phase).toBeUndefined();
  });

  it('after an unfence, a proof of the earlier fence no longer counts -> another node proves the volume again in its place', async () => {
    const [x, y, z] = [await agentOn('vap-x'), await agentOn('vap-y'), await agentOn('vap-z')];
    const pv = uniqueName('pv');
    await registered(y, pv);
    await fence(y, x, pv);
    await c.setFenceState(x.node, 'Unfenced', true); // prfence unfence: the mark cleared, unfencedAt now
    await registered(x, pv);
    await fence(z, x, pv);
    const nf = await c.nodeFence(x.node);
    expect({
      mark: [nf.status?.phase, nf.status?.fencedBy],
      proofs: nf.status?.proofs?.map((p) => [p.volume, p.by]),
    }).toEqual({ mark: ['Fenced', z.node], proofs: [[pv, z.node]] });
  });

  it("a NodeFence with 3,000 proofs by other nodes -> a peer's proof is checked within the API server's CEL cost budget: adding its own allowed, removing another's refused", async () => {
    const [x, z] = [await agentOn('vap-x'), await agentOn('vap-z')];
    const at = new Date().toISOString();
    const proofs = Array.from({ length: 3000 }, (_, i) => ({
      ...proof(x, `pv-${i}`, x.key, at),
      by: `node-${i % 50}`,
    }));
    await merge(admin, nfPath(x.node, 'status'), {
      status: { phase: 'Fenced', fencedBy: 'node-0', fencedAt: at, proofs },
    });
    expect(await verdict(z.writer.recordProof(x.node, proof(z, uniqueName('pv'), x.key)))).toBe('allowed');
    expect(
      await verdict(
        jsonPatch(z.rest, nfPath(x.node, 'status'), [{ op: 'remove', path: '/status/proofs/7' }]),
      ),
    ).toBe('refused');
    expect((await c.nodeFence(x.node)).status?.proofs?.length).toBe(3001);
  });

  it('two agents with pod-bound tokens, the policy on -> a fence request is carried out (mark, proof, registrant dropped) and no write of theirs is refused', async () => {
    await c.unfenceAll();
    const [na, nb] = [await c.node('vap-a'), await c.node('vap-b')];
    const { name: pv, lu } = await c.pv();
    const [ma, mb] = [createAgentMetrics(), createAgentMetrics()];
    await c.startAgent(na, kubeConfigAs(await podToken(na)), { metrics: ma });
    await c.startAgent(nb, kubeConfigAs(await podToken(nb)), { metrics: mb });
    await c.attach(pv, na);
    await c.attach(pv, nb);
    await eventually(() => lu.state().registrations.length === 2, { timeoutMs: 30_000 });
    await c.setFenceState(na, 'Fenced');
    await eventually(
      async () => {
        const nf: NodeFence = await c.nodeFence(na);
        return nf.status?.phase === 'Fenced' && (nf.status.proofs?.length ?? 0) > 0;
      },
      { timeoutMs: 30_000 },
    );
    await observeFor(3 * 2000); // three resyncs: A writes its own status under the mark
    const nf = await c.nodeFence(na);
    const vr = await c.vr(pv);
    const refusedWrites = async (m: typeof ma) =>
      [
        ...(await m.registry.metrics()).matchAll(
          /prfence_kube_api_requests_total\{method="\w+",code="403"\} (\d+)/g,
        ),
      ]
        .map((r) => Number(r[1]))
        .reduce((n, v) => n + v, 0);
    expect({
      registered: lu.state().registrations.map((r) => r.initiator),
      mark: [nf.status?.phase, nf.status?.fencedBy],
      ownStatus: nf.status?.conditions?.find((x) => x.type === 'Ready')?.reason,
      proofs: nf.status?.proofs?.map((p) => [p.volume, p.by]),
      registrants: vr.status?.registrants?.map((r) => r.node),
      lastFence: [vr.status?.lastFence?.victimNode, vr.status?.lastFence?.by],
      refused: [await refusedWrites(ma), await refusedWrites(mb)],
    }).toEqual({
      registered: [nb],
      mark: ['Fenced', nb],
      ownStatus: 'Fenced',
      proofs: [[pv, nb]],
      registrants: [nb],
      lastFence: [na, nb],
      refused: [0, 0],
    });
  });
});
