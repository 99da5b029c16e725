/**
 * How to reach the API server: in-cluster (service account) or a kubeconfig file.
 *
 * The agent does not load client-node at run time: its config module pulls in every
 * generated API model (~80 MiB RSS measured, more than the whole agent should use), and a
 * DaemonSet pod needs only the service account. Supported here: in-cluster config, and
 * kubeconfig clusters/users with certificate-authority(-data), client-certificate(-data)
 * / client-key(-data), token / tokenFile, insecure-skip-tls-verify. Exec and
 * auth-provider plugins are refused with a clear error (a node agent never uses them).
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import { createRequire } from 'node:module';

export interface KubeConnection {
  /** https://host:port (or http:// for a local test server). */
  server: string;
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  /** Bearer token, read on each call (projected service account tokens rotate). */
  token?: () => string;
  insecureSkipTlsVerify?: boolean;
}

export class KubeConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KubeConfigError';
  }
}

const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** The pod's service account (KUBERNETES_SERVICE_HOST/PORT, token and CA files). */
export function inClusterConnection(env = process.env, dir = SA_DIR): KubeConnection {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT ?? '443';
  if (!host)
    throw new KubeConfigError('not in a cluster: KUBERNETES_SERVICE_HOST is not set (use --kubeconfig)');
  let cached = { at: 0, token: '' };
  return {
    server: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
    ca: readFileSync(join(dir, 'ca.crt')),
    token: () => {
      // Re-read at most once a minute: the kubelet rotates projected tokens on disk.
      if (Date.now() - cached.at > 60_000)
        cached = { at: Date.now(), token: readFileSync(join(dir, 'token'), 'utf8').trim() };
      return cached.token;
    },
  };
}

interface Named<T> {
  name: string;
  [k: string]: unknown;
  value?: T;
}

/**
 * JSON is YAML too: a JSON document is parsed without loading the YAML parser, which an
 * in-cluster agent never needs (it costs resident memory).
 */
function parseKubeconfigText(text: string): unknown {
  if (text.trimStart().startsWith('{')) return JSON.parse(text);
  const { parse } = createRequire(import.meta.url)('yaml') as typeof import('yaml');
  return parse(text);
}

/** Parses a kubeconfig document; relative file paths resolve against `baseDir`. */
export function connectionFromKubeconfig(text: string, baseDir = '.', context?: string): KubeConnection {
  const doc = (parseKubeconfigText(text) ?? {}) as Record<string, unknown>;
  const list = (k: string) => (Array.isArray(doc[k]) ? (doc[k] as Named<unknown>[]) : []);
  const ctxName = context ?? (doc['current-context'] as string | undefined);
  const ctx = list('contexts').find((c) => c.name === ctxName)?.context as
    { cluster?: string; user?: string } | undefined;
  if (!ctx) throw new KubeConfigError(`kubeconfig: context ${JSON.stringify(ctxName)} not found`);
  const cluster = list('clusters').find((c) => c.name === ctx.cluster)?.cluster as
    Record<string, unknown> | undefined;
  if (!cluster || typeof cluster.server !== 'string')
    throw new KubeConfigError(`kubeconfig: cluster ${JSON.stringify(ctx.cluster)} has no server`);
  const user = (list('users').find((u) => u.name === ctx.user)?.user ?? {}) as Record<string, unknown>;
  if (user.exec || user['auth-provider'])
    throw new KubeConfigError('kubeconfig: exec and auth-provider credentials are not supported by prfence');
  const file = (p: unknown) => readFileSync(isAbsolute(String(p)) ? String(p) : join(baseDir, String(p)));
  const pick = (o: Record<string, unknown>, dataKey: string, fileKey: string): Buffer | undefined =>
    typeof o[dataKey] === 'string'
      ? Buffer.from(o[dataKey], 'base64')
      : o[fileKey] !== undefined
        ? file(o[fileKey])
        : undefined;
  const conn: KubeConnection = { server: cluster.server };
  const ca = pick(cluster, 'certificate-authority-data', 'certificate-authority');
  const cert = pick(user, 'client-certificate-data', 'client-certificate');
  const key = pick(user, 'client-key-data', 'client-key');
  if (ca) conn.ca = ca;
  if (cert) conn.cert = cert;
  if (key) conn.key = key;
  if (cluster['insecure-skip-tls-verify'] === true) conn.insecureSkipTlsVerify = true;
  if (typeof user.token === 'string') {
    const t = user.token;
    conn.token = () => t;
  } else if (user.tokenFile !== undefined) {
    const f = user.tokenFile;
    conn.token = () => file(f).toString('utf8').trim();
  }
  return conn;
}

export function connectionFromKubeconfigFile(path: string, context?: string): KubeConnection {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new KubeConfigError(`kubeconfig ${path}: ${(e as Error).message}`);
  }
  return connectionFromKubeconfig(text, dirname(path), context);
}

/** Anything that can say how to connect: a KubeConnection, or a client-node KubeConfig (tests). */
export type ConnectionSource = KubeConnection | { exportConfig(): string };

export function toConnection(src: ConnectionSource): KubeConnection {
  return 'exportConfig' in src ? connectionFromKubeconfig(src.exportConfig()) : src;
}
