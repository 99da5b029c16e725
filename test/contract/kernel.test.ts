/**
 * The contract suite on real kernel targets. Runs only inside the QEMU guest
 * (test/kernel/run.mjs), which sets PRFENCE_KERNEL_TOPOLOGIES.
 */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { kernelTopology, kernelTopologySpecs } from './kernel-topology.js';
import { defineContractSuite } from './suite.js';

const specs = kernelTopologySpecs();
const uname = (() => {
  try {
    return execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
})();

describe('kernel topologies', () => {
  it('the harness described at least one topology of three initiators', () => {
    expect(specs.length).toBeGreaterThan(0);
    for (const s of specs) expect(s.devices).toHaveLength(3);
  });

  it('every LIO over iSCSI and nvmet topology has the wide set the harness was asked for (PRFENCE_WIDE more initiators on a second LU)', () => {
    const want = Number(process.env.PRFENCE_WIDE ?? 0);
    for (const s of specs.filter((x) => /^(lio-iscsi|nvmet-loop)$/.test(x.name)))
      expect(s.wide?.length ?? 0, s.name).toBe(want);
  });

  it('a SCSI topology without the tcm_loop hang (LIO over iSCSI) is among them', () => {
    // Missing when the host has no open-iscsi (test/kernel/setup.sh installs it): then no
    // SCSI target would run PREEMPT AND ABORT, the way the agent fences.
    expect(specs.filter((s) => s.kind === 'scsi' && s.limitations.length === 0).map((s) => s.name)).toContain(
      'lio-iscsi',
    );
  });
});

for (const spec of specs) {
  console.log(`kernel ${uname}: topology ${spec.name} (${spec.kind}) on ${spec.devices.join(', ')}`);
  if (spec.limitations.length) {
    process.env.PRFENCE_TOPOLOGY_LIMITATIONS = [
      ...(process.env.PRFENCE_TOPOLOGY_LIMITATIONS ?? '').split(',').filter(Boolean),
      ...spec.limitations.map((l) => `${spec.name} @ ${uname}:${l}`),
    ].join(',');
  }
  const initiators = spec.wide?.length ?? spec.devices.length;
  defineContractSuite(`${spec.name} @ ${uname}`, kernelTopology(spec), { kind: spec.kind, initiators });
  if (spec.kind === 'nvme') {
    // The same suite with reads through the NVMe Reservation Report passthrough, the
    // path kernels without IOC_PR_READ_KEYS take.
    const passthru = { ...spec, name: `${spec.name}+passthru-reads`, readMethod: 'nvme-passthru' as const };
    defineContractSuite(`${passthru.name} @ ${uname}`, kernelTopology(passthru), {
      kind: spec.kind,
      initiators,
    });
  }
}
