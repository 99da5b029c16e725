/**
 * `npm run bench`: prints figures and ratios. Sections: the agent against a real API
 * server (fence latency, RSS), the cost of today's design at cluster scale (20 agent
 * processes and the controller against 100 and 1,000 heartbeating Nodes and 10,000 PVs
 * and VolumeAttachments: traffic, RSS, CPU, an API server restart, fence latency; see
 * scale-bench.ts), then the device layer on real kernels in QEMU (koffi vs C vs
 * sg_persist, one fence by prfence vs fence_scsi -o off, event-loop delay with stuck calls), and the native executor on the host with
 * hung (FIFO) devices, and the failfast probe's cost (1,000 devices). The failover section
 * runs a lost node's StatefulSet on a real control plane with and without prfence
 * (failover-bench.ts; Kubernetes alone is capped at 15 minutes).
 * PRFENCE_BENCH=agent|scale|failover|executor|failfast|device runs one section.
 */
import { spawnSync } from 'node:child_process';
import { agentBench } from './agent-bench.js';
import { scaleBench } from './scale-bench.js';
import { executorBench } from './device/executor-bench.js';
import { failfastBench } from './device/failfast-bench.js';
import { failoverBench } from './failover-bench.js';

const which = process.env.PRFENCE_BENCH ?? 'all';
if (which === 'all' || which === 'agent') await agentBench();
if (which === 'all' || which === 'scale') await scaleBench();
if (which === 'all' || which === 'failover') await failoverBench();
if (which === 'all' || which === 'executor') await executorBench();
if (which === 'all' || which === 'failfast') await failfastBench();
if (which === 'all' || which === 'device') {
  const r = spawnSync(process.execPath, ['test/kernel/run.mjs', '--bench'], {
    stdio: ['ignore', 'pipe', 'inherit'],
    encoding: 'utf8',
  });
  const lines = (r.stdout ?? '')
    .split('\n')
    .filter((l) => !/\] (SeaBIOS|iPXE|Press|Booting|.*9p: Multiple)/.test(l));
  console.log(
    lines
      .map((l) => l.replace(/^ {2}\[bench-[^\]]+\] /, ''))
      .filter((l) => !l.startsWith('PRFENCE-'))
      .join('\n'),
  );
  if (r.status !== 0) process.exitCode = 1;
}
