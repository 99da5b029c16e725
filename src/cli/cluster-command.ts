/**
 * `prfence fence NODE`, `prfence unfence NODE`, `prfence status`: cluster operations
 * through the API server, for people and scripts (DESIGN.md "The prfence command").
 * They only write NodeFence records; the agents do the fencing (a fence request makes
 * every legitimate peer remove the node's key, S2 keeps it off until unfenced).
 */
import { existsSync } from 'node:fs';
import { userInfo } from 'node:os';
import type { Command } from 'commander';
import { ConfigError } from '../config/config.js';
import {
  API_VERSION,
  GROUP,
  NODE_FENCE,
  VERSION,
  VOLUME_RESERVATION,
  type IsolationStatus,
  type NodeFence,
  type VolumeReservation,
} from '../crd/types.js';
import type { KubeConnection } from '../kube/connection.js';
import { clusterObjectPath, KubeApiError, type RestClient } from '../kube/rest-client.js';
import { ApiUnreachableError, CrdVersionError } from './exit-codes.js';
import type { CliIo } from './program.js';

const FIELD_MANAGER = 'prfence-cli';
const nfPath = (name?: string, sub?: 'status') =>
  clusterObjectPath(GROUP, VERSION, NODE_FENCE.plural, name, sub);

/**
 * Credentials as kubectl finds them, through client-node's KubeConfig (these commands run
 * with a person's own kubeconfig): --kubeconfig, else $KUBECONFIG (every file, merged),
 * else ~/.kube/config, else in-cluster; --context picks a context. Exec plugins (EKS, GKE,
 * AKS), OIDC and token files work: client-node resolves the credentials once, and the
 * command's few requests use them. (The in-cluster agent keeps its lean loader.)
 */
async function connect(flag: string | undefined, context?: string): Promise<RestClient> {
  const [{ KubeConfig }, { RestClient }] = await Promise.all([
    import('@kubernetes/client-node'),
    import('../kube/rest-client.js'),
  ]);
  const kc = new KubeConfig();
  let c: KubeConnection;
  try {
    if (flag) {
      if (!existsSync(flag)) throw new Error(`kubeconfig ${flag}: no such file`);
      kc.loadFromFile(flag);
    } else kc.loadFromDefault();
    if (context) {
      if (!kc.getContextObject(context)) throw new Error(`kubeconfig: context "${context}" not found`);
      kc.setCurrentContext(context);
    }
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new Error('kubeconfig: no current cluster (use --kubeconfig or --context)');
    const opts: {
      ca?: Buffer | string;
      cert?: Buffer | string;
      key?: Buffer | string;
      headers?: Record<string, string>;
    } = {};
    await kc.applyToHTTPSOptions(opts as Parameters<typeof kc.applyToHTTPSOptions>[0]);
    const auth = opts.headers?.Authorization ?? opts.headers?.authorization;
    const buf = (v: Buffer | string | undefined) => (v === undefined ? undefined : Buffer.from(v));
    c = {
      server: cluster.server,
      ...(opts.ca ? { ca: buf(opts.ca)! } : {}),
      ...(opts.cert ? { cert: buf(opts.cert)! } : {}),
      ...(opts.key ? { key: buf(opts.key)! } : {}),
      ...(cluster.skipTLSVerify ? { insecureSkipTlsVerify: true } : {}),
      ...(auth ? { token: () => auth.replace(/^Bearer /, '') } : {}),
    };
  } catch (e) {
    throw new ConfigError(e instanceof Error ? e.message : String(e));
  }
  return new RestClient(c, { userAgent: 'prfence-cli' });
}

/**
 * Runs `body` with a client and closes it. Any failure that is not an answer of the API
 * server nor a usage error (refused, reset, TLS, time-out) is reported as the API server
 * being unreachable, with its own exit code (6), never as a device I/O error (5).
 */
export async function withApi(
  o: { kubeconfig?: string; context?: string },
  body: (rest: RestClient) => Promise<void>,
): Promise<void> {
  const rest = await connect(o.kubeconfig, o.context);
  try {
    await body(rest);
  } catch (e) {
    if (
      e instanceof KubeApiError ||
      e instanceof ConfigError ||
      e instanceof ApiUnreachableError ||
      e instanceof CrdVersionError
    )
      throw e;
    throw new ApiUnreachableError(`API server ${rest.server}: ${e instanceof Error ? e.message : String(e)}`);
  } finally {
    rest.close();
  }
}

function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) =>
    r
      .map((c, i) => c.padEnd(widths[i]!))
      .join('   ')
      .trimEnd(),
  );
}

export function registerClusterCommands(program: Command, io: CliIo): void {
  program
    .command('fence')
    .description(
      "ask every peer to remove NODE's key from every shared device (NodeFence spec.fenceState=Fenced)",
    )
    .argument('<node>', 'the node to fence')
    .requiredOption('--reason <text>', 'why (recorded in the NodeFence; required)')
    .option('--kubeconfig <path>', 'kubeconfig (default: $KUBECONFIG, ~/.kube/config, in-cluster)')
    .option('--context <name>', 'kubeconfig context (default: the current context)')
    .action(async (node: string, o: { reason: string; kubeconfig?: string; context?: string }) => {
      await withApi(o, async (rest) => {
        // A fence of a node that does not exist would block a future node of that name.
        await rest.get(`/api/v1/nodes/${encodeURIComponent(node)}`).catch((e: unknown) => {
          if (e instanceof KubeApiError && e.code === 404)
            throw new ConfigError(`node "${node}" does not exist: nothing fenced`);
          throw e;
        });
        await rest.apply(
          nfPath(node),
          {
            apiVersion: API_VERSION,
            kind: NODE_FENCE.kind,
            metadata: { name: node },
            spec: {
              fenceState: 'Fenced',
              reason: o.reason,
              requestedBy: `${FIELD_MANAGER}/${userInfo().username}`,
            },
          },
          FIELD_MANAGER,
        );
        io.stdout(
          `nodefence/${node}: fence requested (${o.reason}); peers remove its key, it stays off until unfenced`,
        );
      });
    });

  program
    .command('unfence')
    .description('let NODE register again: withdraw the fence request and clear the Fenced mark')
    .argument('<node>', 'the node to unfence (repaired or rebooted)')
    .option('--kubeconfig <path>', 'kubeconfig (default: $KUBECONFIG, ~/.kube/config, in-cluster)')
    .option('--context <name>', 'kubeconfig context (default: the current context)')
    .action(async (node: string, o: { kubeconfig?: string; context?: string }) => {
      await withApi(o, async (rest) => {
        await rest.get(nfPath(node)); // a clear 404 for a node prfence never saw
        await rest.apply(
          nfPath(node),
          {
            apiVersion: API_VERSION,
            kind: NODE_FENCE.kind,
            metadata: { name: node },
            // unfencedAt always changes the spec (a new metadata.generation): a node that
            // remembers losing its key on the host registers again only after it (S2).
            spec: { fenceState: 'Unfenced', unfencedAt: new Date().toISOString() },
          },
          FIELD_MANAGER,
        );
        // The mark is owned by the peer that fenced: a merge patch with null removes the
        // fields and their owners (only this clears S2's hold).
        await rest.send({
          method: 'PATCH',
          path: nfPath(node, 'status'),
          contentType: 'application/merge-patch+json',
          body: { status: { phase: null, fencedBy: null, fencedAt: null } },
        });
        io.stdout(`nodefence/${node}: unfenced; its agent registers again on its next reconcile`);
      });
    });

  program
    .command('status')
    .description('nodes (key, phase, fence) and volumes (holder, last fence) as prfence recorded them')
    .option('--kubeconfig <path>', 'kubeconfig (default: $KUBECONFIG, ~/.kube/config, in-cluster)')
    .option('--context <name>', 'kubeconfig context (default: the current context)')
    .option('--json', 'print {"nodes": [...], "volumes": [...]}')
    .action(async (o: { kubeconfig?: string; context?: string; json?: boolean }) => {
      await withApi(o, async (rest) => {
        const [nfs, vrs] = await Promise.all([
          rest.get<{ items: NodeFence[] }>(nfPath()),
          rest.get<{ items: VolumeReservation[] }>(
            clusterObjectPath(GROUP, VERSION, VOLUME_RESERVATION.plural),
          ),
        ]);
        const nodes = nfs.items.map((n) => ({
          node: n.metadata.name,
          key: n.status?.key ?? null,
          phase: n.status?.phase ?? null,
          fenceState: n.spec?.fenceState ?? 'Unfenced',
          volumes: n.status?.volumes ?? 0,
          fencedBy: n.status?.fencedBy ?? null,
          fencedAt: n.status?.fencedAt ?? null,
          isolation: n.status?.isolation ?? null,
        }));
        const volumes = vrs.items.map((v) => ({
          volume: v.metadata.name,
          device: v.status?.device?.identity ?? null,
          type: v.status?.reservationType ?? null,
          holder: v.status?.holder?.node ?? v.status?.holder?.key ?? null,
          registrants: (v.status?.registrants ?? []).map((r) => r.node),
          lastFenced: v.status?.lastFence?.victimNode ?? v.status?.lastFence?.victimKey ?? null,
          fencedBy: v.status?.lastFence?.by ?? null,
          fencedAt: v.status?.lastFence?.at ?? null,
        }));
        if (o.json) {
          io.stdout(JSON.stringify({ nodes, volumes }));
          return;
        }
        const s = (x: unknown) => (x === null || x === undefined ? '-' : String(x));
        for (const l of table([
          ['NODE', 'KEY', 'PHASE', 'FENCE', 'VOLUMES', 'FENCED-BY', 'FENCED-AT'],
          ...nodes.map((n) => [
            n.node,
            s(n.key),
            s(n.phase),
            n.fenceState,
            String(n.volumes),
            s(n.fencedBy),
            s(n.fencedAt),
          ]),
        ]))
          io.stdout(l);
        for (const n of nodes)
          for (const l of isolationLines(n.node, n.fenceState, n.isolation)) io.stdout(l);
        io.stdout('');
        for (const l of table([
          ['VOLUME', 'DEVICE', 'TYPE', 'HOLDER', 'REGISTRANTS', 'LAST-FENCED', 'FENCED-BY', 'FENCED-AT'],
          ...volumes.map((v) => [
            v.volume,
            s(v.device),
            s(v.type),
            s(v.holder),
            v.registrants.join(',') || '-',
            s(v.lastFenced),
            s(v.fencedBy),
            s(v.fencedAt),
          ]),
        ]))
          io.stdout(l);
      });
    });
}

/**
 * Why the out-of-service taint was or was not applied to a node asked to be fenced (the
 * controller's status.isolation), for `prfence status`.
 */
export function isolationLines(node: string, fenceState: string, iso: IsolationStatus | null): string[] {
  if (!iso) return [];
  const out: string[] = [];
  if (iso.summary !== undefined) {
    const taint = iso.taintedAt
      ? `out-of-service taint applied at ${iso.taintedAt} (bootID ${iso.taintedBootID || '-'}); removed after an unfence once the node booted again and holds no registration`
      : iso.complete
        ? 'proof complete; out-of-service taint: applied by the controller only for its own NodeLost request with autoFence'
        : 'out-of-service taint not applied: the proof is incomplete';
    out.push(`${node}: isolation proof ${iso.summary}${iso.lost ? ', node lost' : ''}; ${taint}`);
    for (const p of iso.pending ?? []) out.push(`  ${p.volume}: ${p.reason}`);
  } else if (iso.taintedAt)
    out.push(
      `${node}: ${fenceState.toLowerCase()}; out-of-service taint applied at ${iso.taintedAt} stays until the node booted again (bootID ${iso.taintedBootID || '-'}) and holds no registration`,
    );
  else if (iso.lost) out.push(`${node}: node lost (its Lease is not renewed)`);
  return out;
}
