/**
 * `prfence controller`: the cluster-level controller the Deployment runs (2 replicas, one
 * leader). Imported when the command runs. Exit codes: 0 after SIGTERM/SIGINT (the
 * replica stopped acting, then released its Lease), 2 usage, 7 leader election lost (the
 * Lease was not renewed within the renew deadline: the replica stopped acting at the
 * deadline and exits so the pod restarts and campaigns again, as the csi sidecars do).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import {
  DEFAULT_CONTROLLER_WORKERS,
  loadControllerConfig,
  type RawControllerFlags,
} from '../config/controller-config.js';
import { LeaderElectionLostError } from './exit-codes.js';
import type { CliIo } from './program.js';

const SA_NAMESPACE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';

function inClusterNamespace(): string | undefined {
  try {
    return readFileSync(SA_NAMESPACE, 'utf8');
  } catch {
    return undefined;
  }
}

export function registerControllerCommand(program: Command, _io: CliIo): void {
  program
    .command('controller')
    .description(
      'run the cluster controller (what the Deployment runs): fence requests for out-of-service (and, with --auto-fence, lost) nodes, garbage collection',
    )
    .option('--kubeconfig <path>', 'kubeconfig (default: in-cluster, or env KUBECONFIG)')
    .option('--leader-election [bool]', 'campaign for the Lease; only the leader acts (true|false)', 'true')
    .option(
      '--leader-election-namespace <ns>',
      'namespace of the Lease (default: env POD_NAMESPACE, else the pod namespace)',
    )
    .option('--leader-election-lease-duration <duration>', 'a Lease unchanged this long is taken over', '15s')
    .option(
      '--leader-election-renew-deadline <duration>',
      'a leader that cannot renew within this stops acting and exits 7',
      '10s',
    )
    .option('--leader-election-retry-period <duration>', 'time between Lease attempts', '2s')
    .option('--resync <duration>', 'every object is looked at again this often', '60s')
    .option('--workers <n>', 'objects reconciled in parallel', String(DEFAULT_CONTROLLER_WORKERS))
    .option(
      '--auto-fence [bool]',
      'request the fence (NodeFence Fenced, reason NodeLost) of a node whose kube-node-lease Lease is not renewed for --node-lost-after (true|false)',
      'false',
    )
    .option(
      '--node-lost-after <duration>',
      "with --auto-fence: a node Lease seen unchanged this long (on the controller's clock) means the node is lost",
      '40s',
    )
    .option('--log-level <level>', 'fatal|error|warn|info|debug|trace', 'info')
    .option(
      '--http-endpoint <host:port>',
      'serve /metrics, /healthz, /readyz here, e.g. :9809 (default: off)',
    )
    .action(async (flags: RawControllerFlags) => {
      const cfg = loadControllerConfig(flags, process.env, inClusterNamespace());
      const [conn, { Controller }, { createLogger }, { createControllerMetrics }, { startDiagnostics }] =
        await Promise.all([
          import('../kube/connection.js'),
          import('../controller/controller.js'),
          import('../obs/logger.js'),
          import('../obs/controller-metrics.js'),
          import('../obs/http-server.js'),
        ]);
      const identity = `${cfg.podName}_${randomBytes(4).toString('hex')}`;
      const log = createLogger(cfg.logLevel, { component: 'controller', identity });
      const kc = cfg.kubeconfig
        ? conn.connectionFromKubeconfigFile(cfg.kubeconfig)
        : conn.inClusterConnection();
      const metrics = createControllerMetrics({ processMetrics: true });
      const controller = new Controller({
        kubeConfig: kc,
        log,
        identity,
        metrics,
        resyncMs: cfg.resyncMs,
        workers: cfg.workers,
        autoFence: cfg.autoFence,
        nodeLostAfterMs: cfg.nodeLostAfterMs,
        leaderElection: cfg.leaderElection
          ? {
              namespace: cfg.leaderElectionNamespace,
              leaseDurationMs: cfg.leaseDurationMs,
              renewDeadlineMs: cfg.renewDeadlineMs,
              retryPeriodMs: cfg.retryPeriodMs,
            }
          : false,
      });
      const diag = cfg.httpEndpoint
        ? await startDiagnostics({
            address: cfg.httpEndpoint,
            registry: metrics.registry,
            notReady: () => controller.notReady(),
          })
        : undefined;
      if (diag) log.info({ endpoint: cfg.httpEndpoint }, 'serving /metrics, /healthz, /readyz');
      const onSignal = () => void controller.stop();
      process.once('SIGTERM', onSignal);
      process.once('SIGINT', onSignal);
      log.info(
        {
          leaderElection: cfg.leaderElection,
          namespace: cfg.leaderElectionNamespace || undefined,
          autoFence: cfg.autoFence,
          ...(cfg.autoFence ? { nodeLostAfterMs: cfg.nodeLostAfterMs } : {}),
        },
        'controller starting',
      );
      const end = await controller.run();
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      await controller.stop();
      await diag?.close();
      if (end === 'lost')
        throw new LeaderElectionLostError(
          `leader election lost: the Lease was not renewed within ${cfg.renewDeadlineMs} ms; stopped acting`,
        );
      log.info('controller stopped');
    });
}
