/**
 * `prfence agent`: the node agent the DaemonSet runs. The agent is imported when the
 * command runs, so `prfence device ...` starts fast. The agent itself talks to the API
 * server with src/kube (no client-node at run time: see src/kube/connection.ts).
 */
import type { Command } from 'commander';
import { loadAgentConfig, type RawAgentFlags } from '../config/config.js';
import type { CliIo } from './program.js';

export function registerAgentCommand(program: Command, _io: CliIo): void {
  program
    .command('agent')
    .description('run the node agent (what the DaemonSet runs)')
    .option('--node-name <name>', 'this node (default: env NODE_NAME)')
    .option('--kubeconfig <path>', 'kubeconfig (default: in-cluster, or env KUBECONFIG)')
    .option('--cluster-id <id>', 'cluster id for the key tag (default: kube-system namespace UID)')
    .option('--reservation-type <type>', 'default reservation type', 'write-exclusive-reg-only')
    .option('--foreign-keys <policy>', 'leave | preempt keys of other clusters (S7)', 'leave')
    .option('--ioctl-timeout <duration>', 'time limit per PR ioctl', '10s')
    .option('--max-in-flight <n>', 'PR ioctls in flight per device', '2')
    .option('--workers <n>', 'volumes reconciled in parallel', '2')
    .option('--resync <duration>', 'periodic re-check of every volume', '30s')
    .option('--log-level <level>', 'fatal|error|warn|info|debug|trace', 'info')
    .action(async (flags: RawAgentFlags) => {
      const cfg = loadAgentConfig(flags, process.env);
      const [conn, { Agent }, { createLogger }, { KoffiPrDevice }] = await Promise.all([
        import('../kube/connection.js'),
        import('../agent/agent.js'),
        import('../obs/logger.js'),
        import('../pr/koffi/koffi-pr-device.js'),
      ]);
      const log = createLogger(cfg.logLevel, { node: cfg.nodeName });
      const kc = cfg.kubeconfig
        ? conn.connectionFromKubeconfigFile(cfg.kubeconfig)
        : conn.inClusterConnection();
      const agent = await Agent.start({
        kubeConfig: kc,
        nodeName: cfg.nodeName,
        log,
        reservationType: cfg.reservationType,
        foreignKeys: cfg.foreignKeys,
        workers: cfg.workers,
        resyncMs: cfg.resyncMs,
        ...(cfg.clusterId ? { clusterId: cfg.clusterId } : {}),
        openDevice: (identity) =>
          KoffiPrDevice.open(identity, { timeoutMs: cfg.ioctlTimeoutMs, maxInFlight: cfg.maxInFlight }),
      });
      log.info('agent running');
      await new Promise<void>((resolve) => {
        const stop = () => resolve();
        process.once('SIGTERM', stop);
        process.once('SIGINT', stop);
      });
      log.info('stopping; reservations stay in place (S8)');
      await agent.stop();
    });
}
