import { KoffiPrDevice } from '../../src/pr/koffi/koffi-pr-device.js';
import { directRead, directWrite } from '../../src/pr/koffi/direct-io.js';
import { ConflictError, type PrDevice } from '../../src/pr/index.js';
import { LIO_QUIRKS, NVMET_QUIRKS, type Topology, type TopologyFactory } from './topology.js';

/** One topology as the QEMU harness describes it in PRFENCE_KERNEL_TOPOLOGIES. */
export interface KernelTopologySpec {
  name: string;
  kind: 'scsi' | 'nvme';
  devices: string[];
  limitations: string[];
  /** The wide set: more initiators on a second LU of the same target (guest-init.sh WIDE). */
  wide?: string[];
  /** Force a read method (to exercise the fallback read path on a kernel that has the ioctls). */
  readMethod?: 'ioctl' | 'sg-io' | 'nvme-passthru';
}

/** Parses PRFENCE_KERNEL_TOPOLOGIES (set by test/kernel/run.mjs inside the guest). */
export function kernelTopologySpecs(env = process.env): KernelTopologySpec[] {
  const raw = env.PRFENCE_KERNEL_TOPOLOGIES;
  if (!raw) return [];
  return JSON.parse(raw) as KernelTopologySpec[];
}

const RESET_KEY = 0x7e5e700000000001n;

/**
 * The initiators test/kernel/guest-init.sh makes, in device order: iSCSI names of the
 * open-iscsi ifaces, and the hostid= of the nvmet loop connections (a UUID, its 16 bytes in
 * hex as the Reservation Report carries them). Three on the topology's LU (host-1..3), and
 * for the wide set wide-1..N (hostid a<i in 7 hex digits>-0000-4000-8000-<i in 12 hex digits>).
 */
function initiatorIdsOf(spec: KernelTopologySpec, wide = false): string[] | undefined {
  const base = spec.name.replace(/\+.*$/, '');
  const n = Array.from({ length: wide ? (spec.wide?.length ?? 0) : 3 }, (_, i) => i + 1);
  const hex = (i: number, width: number) => i.toString(16).padStart(width, '0');
  if (base === 'lio-iscsi') return n.map((i) => `iqn.2026-11.io.prfence:${wide ? 'wide' : 'host'}-${i}`);
  if (base === 'nvmet-loop')
    return n.map((i) =>
      wide
        ? `a${hex(i, 7)}000040008000${hex(i, 12)}`
        : `${String(i).repeat(8)}000040008000${String(i).padStart(12, '0')}`,
    );
  return undefined;
}

/**
 * Real devices: three paths (initiators) to one LU, through KoffiPrDevice; `wide` opens the
 * spec's wide set (another LU) as a topology of its own.
 */
export function kernelTopology(spec: KernelTopologySpec, ids = initiatorIdsOf(spec)): TopologyFactory {
  const wideSpec = spec.wide?.length ? { ...spec, devices: spec.wide, wide: undefined } : undefined;
  return async (): Promise<Topology> => {
    const devs: PrDevice[] = [];
    for (const d of spec.devices) {
      devs.push(
        await KoffiPrDevice.open(d, {
          timeoutMs: 8000,
          ...(spec.readMethod ? { readMethod: spec.readMethod } : {}),
        }),
      );
    }
    return {
      name: spec.name,
      kind: spec.kind,
      initiators: devs,
      initiatorIds: ids,
      ...(wideSpec ? { wide: kernelTopology(wideSpec, initiatorIdsOf(spec, true)) } : {}),
      limitations: new Set(spec.limitations),
      // Every SCSI target of the harness is LIO (tcm_loop, iSCSI loopback), every NVMe one nvmet.
      quirks: spec.kind === 'scsi' ? LIO_QUIRKS : NVMET_QUIRKS,
      write: (i) => directWrite(spec.devices[i]!),
      read: (i) => directRead(spec.devices[i]!),
      async reset() {
        if (spec.kind === 'scsi') {
          // A SCSI-2 reservation makes every PR command conflict (LIO, SPC-2 5.5.1): its
          // holder releases it first; RELEASE(6) from the others is GOOD and does nothing,
          // or conflicts when PR registrations exist (then no SCSI-2 reservation can).
          for (const d of devs as KoffiPrDevice[]) {
            await d.scsi2Release().catch((e: unknown) => {
              if (!(e instanceof ConflictError)) throw e;
            });
          }
        }
        // Take a registration whatever is there, then CLEAR removes every registration
        // and the reservation (SPC-4 5.13.11.2.5 / NVMe Reservation Release, clear).
        await devs[0]!.registerAndIgnore(RESET_KEY);
        await devs[0]!.clear(RESET_KEY);
      },
      async close() {
        for (const d of devs) await d.close();
      },
    };
  };
}
