/**
 * A real kube-apiserver + etcd for integration tests, started like controller-runtime's
 * envtest (pkg/internal/testing/controlplane): throwaway CA and certs made with openssl,
 * etcd on free loopback ports with a temporary data dir, kube-apiserver with RBAC on.
 * Binaries come from test/envtest/setup.sh (cached under ~/.cache/prfence/bin).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { createServer } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { repoRoot } from './repo-root.js';

export interface ControlPlane {
  /** Path of an admin kubeconfig (client cert in system:masters). */
  readonly kubeconfigPath: string;
  /** https://127.0.0.1:PORT */
  readonly server: string;
  /** Working directory: certs, etcd data, logs. Removed by stop(). */
  readonly dir: string;
  /** A fresh admin KubeConfig. */
  adminKubeConfig(): KubeConfig;
  /** Stops kube-apiserver and starts it again on the same port (etcd keeps the data). */
  restartApiServer(): Promise<void>;
  /** Stops only kube-apiserver (for "API server unreachable" tests); start it with restartApiServer. */
  stopApiServer(): Promise<void>;
  /** Kills both processes and removes the working directory. */
  stop(): Promise<void>;
}

export interface ControlPlaneOptions {
  /** Where the binaries are; default $PRFENCE_BIN_DIR or ~/.cache/prfence/bin. */
  binDir?: string;
  /** Time to wait for /readyz; default 90 s (a loaded 2-core machine is slow). */
  readyTimeoutMs?: number;
  /**
   * More kube-apiserver flags; `{dir}` in them is replaced by the working directory
   * (e.g. an audit log and policy there: the benchmark reads who listed what, when).
   */
  apiServerArgs?: readonly string[];
}

export function readVersions(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(join(repoRoot(), 'test', 'envtest', 'versions.env'), 'utf8').split('\n')) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m?.[1] && m[2] !== undefined) out[m[1]] = m[2];
  }
  return out;
}

/** Where setup.sh caches the binaries: $PRFENCE_BIN_DIR or ~/.cache/prfence/bin. */
export function binDir(): string {
  return (
    process.env.PRFENCE_BIN_DIR ??
    join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'prfence', 'bin')
  );
}

/** Paths of the cached binaries; throws a clear error naming setup.sh when missing. */
export function findBinaries(dirGiven?: string): { apiserver: string; etcd: string } {
  const dir = dirGiven ?? binDir();
  const v = readVersions();
  const apiserver = join(dir, `kube-apiserver-v${v.KUBE_VERSION}`);
  const etcd = join(dir, 'etcd');
  for (const p of [apiserver, etcd]) {
    if (!existsSync(p)) throw new Error(`missing ${p}: run test/envtest/setup.sh first`);
  }
  return { apiserver, etcd };
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

function makeCerts(dir: string): void {
  openssl(dir, ['genrsa', '-out', 'ca.key', '2048']);
  openssl(dir, [
    'req',
    '-x509',
    '-new',
    '-key',
    'ca.key',
    '-subj',
    '/CN=prfence-envtest-ca',
    '-days',
    '2',
    '-out',
    'ca.crt',
  ]);
  const sign = (name: string, subj: string, ext: string) => {
    openssl(dir, ['genrsa', '-out', `${name}.key`, '2048']);
    openssl(dir, ['req', '-new', '-key', `${name}.key`, '-subj', subj, '-out', `${name}.csr`]);
    writeFileSync(join(dir, `${name}.ext`), ext);
    openssl(dir, [
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-days',
      '2',
      '-extfile',
      `${name}.ext`,
      '-out',
      `${name}.crt`,
    ]);
  };
  sign(
    'serving',
    '/CN=kube-apiserver',
    'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n',
  );
  sign('admin', '/O=system:masters/CN=prfence-envtest-admin', 'extendedKeyUsage=clientAuth\n');
  openssl(dir, ['genrsa', '-out', 'sa.key', '2048']);
  openssl(dir, ['rsa', '-in', 'sa.key', '-pubout', '-out', 'sa.pub']);
}

function httpsGet(url: string, dir: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        ca: readFileSync(join(dir, 'ca.crt')),
        cert: readFileSync(join(dir, 'admin.crt')),
        key: readFileSync(join(dir, 'admin.key')),
        timeout: 5000,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

async function waitFor(
  what: string,
  deadlineMs: number,
  probe: () => Promise<boolean>,
  logs: string[],
): Promise<void> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    try {
      if (await probe()) return;
    } catch {
      // not up yet
    }
    if (Date.now() > end) {
      const tails = logs
        .filter((p) => existsSync(p))
        .map((p) => `--- ${p} ---\n${readFileSync(p, 'utf8').split('\n').slice(-40).join('\n')}`);
      throw new Error(`envtest: ${what} not ready after ${deadlineMs} ms\n${tails.join('\n')}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

function kill(proc: ChildProcess | undefined): Promise<void> {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    proc.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    proc.kill('SIGTERM');
  });
}

/** Starts etcd and kube-apiserver; resolves once /readyz is ok and namespace default exists. */
export async function startControlPlane(opts: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const bins = findBinaries(opts.binDir);
  const readyTimeoutMs = opts.readyTimeoutMs ?? 90_000;
  const dir = mkdtempSync(join(tmpdir(), 'prfence-envtest-'));
  makeCerts(dir);
  const [etcdClient, etcdPeer, securePort] = [await freePort(), await freePort(), await freePort()];
  const server = `https://127.0.0.1:${securePort}`;
  const etcdLog = join(dir, 'etcd.log');
  const apiLog = join(dir, 'kube-apiserver.log');

  const etcd = spawn(
    bins.etcd,
    [
      `--data-dir=${join(dir, 'etcd-data')}`,
      `--listen-client-urls=http://127.0.0.1:${etcdClient}`,
      `--advertise-client-urls=http://127.0.0.1:${etcdClient}`,
      `--listen-peer-urls=http://127.0.0.1:${etcdPeer}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeer}`,
      `--initial-cluster=default=http://127.0.0.1:${etcdPeer}`,
      '--unsafe-no-fsync',
      '--log-level=warn',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const etcdOut = createWriteStream(etcdLog);
  etcd.stdout.pipe(etcdOut);
  etcd.stderr.pipe(etcdOut);

  let api: ChildProcess | undefined;
  const apiArgs = [
    `--etcd-servers=http://127.0.0.1:${etcdClient}`,
    '--bind-address=127.0.0.1',
    '--advertise-address=127.0.0.1',
    `--secure-port=${securePort}`,
    `--cert-dir=${dir}`,
    `--tls-cert-file=${join(dir, 'serving.crt')}`,
    `--tls-private-key-file=${join(dir, 'serving.key')}`,
    `--client-ca-file=${join(dir, 'ca.crt')}`,
    '--authorization-mode=RBAC',
    '--service-account-issuer=https://kubernetes.default.svc',
    `--service-account-key-file=${join(dir, 'sa.pub')}`,
    `--service-account-signing-key-file=${join(dir, 'sa.key')}`,
    '--service-cluster-ip-range=10.0.0.0/24',
    '--allow-privileged=true',
    '--disable-admission-plugins=ServiceAccount',
    '--enable-priority-and-fairness=false',
    '--profiling=false',
    ...(opts.apiServerArgs ?? []).map((a) => a.replaceAll('{dir}', dir)),
  ];
  const startApi = () => {
    const proc = spawn(bins.apiserver, apiArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out = createWriteStream(apiLog, { flags: 'a' });
    proc.stdout?.pipe(out);
    proc.stderr?.pipe(out);
    api = proc;
  };
  const killAll = () => {
    api?.kill('SIGKILL');
    etcd.kill('SIGKILL');
  };
  process.once('exit', killAll);

  const waitApi = async () => {
    await waitFor(
      'kube-apiserver',
      readyTimeoutMs,
      async () => {
        if (api?.exitCode !== null && api?.exitCode !== undefined) {
          throw new Error(`kube-apiserver exited with ${api.exitCode}`);
        }
        const r = await httpsGet(`${server}/readyz`, dir);
        if (r.status !== 200) return false;
        return (await httpsGet(`${server}/api/v1/namespaces/default`, dir)).status === 200;
      },
      [apiLog, etcdLog],
    );
  };

  try {
    startApi();
    await waitApi();
  } catch (e) {
    killAll();
    throw e;
  }

  const kubeconfigPath = join(dir, 'kubeconfig');
  const b64 = (f: string) => readFileSync(join(dir, f)).toString('base64');
  writeFileSync(
    kubeconfigPath,
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: envtest',
      '  cluster:',
      `    server: ${server}`,
      `    certificate-authority-data: ${b64('ca.crt')}`,
      'users:',
      '- name: admin',
      '  user:',
      `    client-certificate-data: ${b64('admin.crt')}`,
      `    client-key-data: ${b64('admin.key')}`,
      'contexts:',
      '- name: envtest',
      '  context: {cluster: envtest, user: admin}',
      'current-context: envtest',
      '',
    ].join('\n'),
  );

  return {
    kubeconfigPath,
    server,
    dir,
    adminKubeConfig() {
      const kc = new KubeConfig();
      kc.loadFromFile(kubeconfigPath);
      return kc;
    },
    async stopApiServer() {
      await kill(api);
    },
    async restartApiServer() {
      await kill(api);
      startApi();
      await waitApi();
    },
    async stop() {
      process.removeListener('exit', killAll);
      await kill(api);
      await kill(etcd);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
