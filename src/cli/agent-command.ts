/**
 * `prfence agent`: the node agent the DaemonSet runs. The agent is imported when the
 * command runs, so `prfence device ...` starts fast. The agent itself talks to the API
 * server with src/kube (no client-node at run time: see src/kube/connection.ts).
 */
import type { Command } from 'commander';
import { DEFAULT_SYSRQ_TRIGGER, sysrqReboot } from '../agent/failfast.js';
import { DEFAULT_AGENT_WORKERS, loadAgentConfig, type RawAgentFlags } from '../config/config.js';
import { endProcess } from './end-process.js';
import type { CliIo } from './program.js';

export function registerAgentCommand(program: Command, _io: CliIo): void {
  program
    .command('agent')
    .description('run the node agent (what the DaemonSet runs)')
    .option('--node-name <name>', 'this node (default: env NODE_NAME)')
    .option('--kubeconfig <path>', 'kubeconfig (default: in-cluster, or env KUBECONFIG)')
    .option('--cluster-id <id>', 'cluster id for the key tag (default: kube-system namespace UID)')
    .option(
      '--reservation-type <type>',
      'reservation type of volumes without a prfence.io/reservation-type annotation (PV, StorageClass)',
      'write-exclusive-reg-only',
    )
    .option(
      '--fencing-default <mode>',
      'enabled | disabled: fence volumes without a prfence.io/fencing annotation (PV, StorageClass)',
      'enabled',
    )
    .option('--foreign-keys <policy>', 'leave | preempt keys of other clusters (S7)', 'leave')
    .option('--ioctl-timeout <duration>', 'time limit per PR ioctl', '10s')
    .option('--max-in-flight <n>', 'ignored: one PR ioctl is in flight per device', '2')
    .option('--workers <n>', 'volumes reconciled in parallel', String(DEFAULT_AGENT_WORKERS))
    .option('--resync <duration>', 'periodic re-check of every volume', '30s')
    .option('--freshness <duration>', 'a device command needs API reads no older than this', '5s')
    .option(
      '--leave-grace <duration>',
      'time a node that left by a normal detach has to unregister before it is fenced',
      '10s',
    )
    .option(
      '--state-dir <dir>',
      'host directory where the node remembers losing its key across restarts (S2)',
      '/var/lib/prfence',
    )
    .option(
      '--probe-interval <duration>',
      'failfast probe: read the own key on every device this node is registered on this often (0: off)',
      '2s',
    )
    .option(
      '--path-check-interval <duration>',
      'read the paths under each dm-multipath device this often, to register the key on a path added to the map (0: only at reconciles)',
      '10s',
    )
    .option(
      '--failfast-action <action>',
      'report | taint | reboot: what the node does when its own key is removed from a device',
      'report',
    )
    .option('--failfast-allow-reboot', 'allow --failfast-action reboot (sysrq reboot of this node)')
    .option(
      '--sysrq-trigger <path>',
      "the host's sysrq trigger that --failfast-action reboot writes (/proc/sysrq-trigger for an agent run on the host)",
      DEFAULT_SYSRQ_TRIGGER,
    )
    .option(
      '--observe',
      'observer: remove the key of a node asked to be fenced from volumes that have no legitimate node, where the LU is visible here (SANs that show every LU to every node)',
    )
    .option(
      '--scope <scope>',
      'cluster | node: watch every VolumeAttachment, PV and StorageClass, or only the VolumeReservations the controller labels for this node (needs prfence controller)',
      'cluster',
    )
    .option('--log-level <level>', 'fatal|error|warn|info|debug|trace', 'info')
    .option(
      '--http-endpoint <host:port>',
      'serve /metrics, /healthz, /readyz here, e.g. :9808 (default: off)',
    )
    .action(async (flags: RawAgentFlags) => {
      const cfg = loadAgentConfig(flags, process.env);
      const [
        conn,
        { Agent },
        { createLogger, describeError },
        { KoffiPrDevice },
        { NativeExecutor },
        { createAgentMetrics },
        { startDiagnostics },
        { resolveDevice },
        { devicePathsOf },
      ] = await Promise.all([
        import('../kube/connection.js'),
        import('../agent/agent.js'),
        import('../obs/logger.js'),
        import('../pr/koffi/koffi-pr-device.js'),
        import('../pr/koffi/executor.js'),
        import('../obs/metrics.js'),
        import('../obs/http-server.js'),
        import('../pr/resolve.js'),
        import('../pr/dm-paths.js'),
      ]);
      const log = createLogger(cfg.logLevel, { node: cfg.nodeName });
      const kc = cfg.kubeconfig
        ? conn.connectionFromKubeconfigFile(cfg.kubeconfig)
        : conn.inClusterConnection();
      const metrics = createAgentMetrics({ processMetrics: true });
      // Every PR ioctl of this agent runs on these threads (never libuv's pool).
      const executor = new NativeExecutor();
      metrics.observeNativeExecutor(() => executor.stats());
      let agent: Awaited<ReturnType<typeof Agent.start>> | undefined;
      let notReady = 'starting';
      const diag = cfg.httpEndpoint
        ? await startDiagnostics({
            address: cfg.httpEndpoint,
            registry: metrics.registry,
            notReady: () =>
              !agent
                ? notReady
                : executor.stats().exhausted
                  ? 'every native executor thread is stuck in a device call'
                  : agent.notReady(),
          })
        : undefined;
      if (diag) log.info({ endpoint: cfg.httpEndpoint }, 'serving /metrics, /healthz, /readyz');
      const stopping = new Promise<void>((resolve) => {
        process.once('SIGTERM', () => resolve());
        process.once('SIGINT', () => resolve());
      });
      let stop = false;
      void stopping.then(() => (stop = true));
      // Start, or retry with backoff: an API server that does not answer is no reason to
      // exit (a crash loop); nothing is registered until it answers (S2).
      for (let delay = 1000; !stop; delay = Math.min(delay * 2, 30_000)) {
        try {
          agent = await Agent.start({
            kubeConfig: kc,
            nodeName: cfg.nodeName,
            log,
            metrics,
            reservationType: cfg.reservationType,
            fencingDefault: cfg.fencingDefault,
            foreignKeys: cfg.foreignKeys,
            workers: cfg.workers,
            resyncMs: cfg.resyncMs,
            freshnessMs: cfg.freshnessMs,
            leaveGraceMs: cfg.leaveGraceMs,
            observe: cfg.observe,
            scope: cfg.scope,
            stateDir: cfg.stateDir,
            probeIntervalMs: cfg.probeIntervalMs,
            failfastAction: cfg.failfastAction,
            allowReboot: cfg.failfastAction === 'reboot',
            rebootTrigger: () => sysrqReboot(cfg.sysrqTrigger),
            ...(cfg.clusterId ? { clusterId: cfg.clusterId } : {}),
            devicePaths: devicePathsOf(),
            pathPollMs: cfg.pathCheckIntervalMs,
            openDevice: async (identity) =>
              KoffiPrDevice.open(await resolveDevice(identity), {
                timeoutMs: cfg.ioctlTimeoutMs,
                executor,
              }),
          });
          break;
        } catch (e) {
          notReady = `start failed: ${describeError(e)}`;
          log.warn(
            { err: describeError(e), retryInMs: delay },
            'agent not started (nothing registered); retrying',
          );
          await Promise.race([stopping, new Promise((r) => setTimeout(r, delay))]);
        }
      }
      if (agent) {
        log.info('agent running');
        await stopping;
        log.info('stopping; reservations stay in place (S8)');
        await agent.stop();
      }
      executor.shutdown();
      await diag?.close();
      // A thread still inside an ioctl on a hung device would hold the exit until the
      // kernel answers: exit at once (the reservations stay, S8).
      await endProcess(0, executor);
    });
}
