/**
 * `prfence demo`: the failover prfence exists for, on one machine and no cluster. Two
 * simulated nodes share one logical unit (the in-memory model by default, or two real
 * device paths to one LU with --device-a/--device-b); the volume moves from node-a to
 * node-b while node-a is still alive and writing; node-b's fence logic (the same
 * fenceVolume the agent runs) cuts node-a off at the storage; node-a's restart does not
 * get it back (S2).
 *
 * On real devices the demo CLEARS the LU first, so it needs --yes, and it runs only when
 * sysfs shows the same WWID or NGUID behind both paths (src/pr/resolve.ts readIdentity);
 * --no-identity-check skips that for LUs sysfs shows no identity of (LIO over iSCSI on
 * Linux 6.1 and 7.x: ENXIO). Every refusal is a UsageError (exit 2) before any device I/O.
 *
 * The command's options are in demo-command.ts, which loads this module only when the demo runs.
 */
import pino from 'pino';
import { vrStatusToWrite } from '../agent/vr-status.js';
import { fenceRecord, observedVrStatus } from '../agent/vr-record.js';
import { ownNodeStatus } from '../agent/nf-status.js';
import {
  API_VERSION,
  NODE_FENCE,
  VOLUME_RESERVATION,
  type NodeFence,
  type VolumeReservation,
} from '../crd/types.js';
import { clusterTag, makeKey } from '../fence/keys.js';
import type { NodeKey } from '../fence/rule.js';
import { fenceVolume, type VolumeObservation } from '../fence/volume-fencer.js';
import { formatKey } from '../pr/key.js';
import { MemoryLogicalUnit } from '../pr/memory/index.js';
import type { PrDevice } from '../pr/pr-device.js';
import { readIdentity, sameLogicalUnit, type DeviceIdentity, type ResolveOptions } from '../pr/resolve.js';
import { embeddedCrdDir, readCrds } from './shipped-crds.js';
import { UsageError } from './exit-codes.js';
import { printerColumns, printTable } from './printer-columns.js';
import type { CliIo } from './program.js';

/** The shipped CRD of `plural` (charts/prfence/crds, located as `prfence crds apply` does). */
export function crdOf(plural: string, dir = embeddedCrdDir()) {
  const crd = readCrds(dir).find((c) => (c.spec as { names?: { plural?: string } }).names?.plural === plural);
  if (!crd) throw new Error(`no CRD for ${plural} in ${dir}`);
  return crd;
}

interface DemoNode {
  name: 'node-a' | 'node-b';
  key: bigint;
  device: PrDevice;
  write: () => Promise<'ok' | 'refused'>;
}

export interface DemoOptions {
  /** Two paths to one real PR-capable LU; without them, the in-memory model. */
  deviceA?: string;
  deviceB?: string;
  /** Needed with devices: the demo CLEARS the LU. */
  yes?: boolean;
  /** false: do not compare the two paths' sysfs identities (default true). */
  identityCheck?: boolean;
  logLevel?: string;
  /** Where sysfs is (tests: a fake tree). */
  resolve?: ResolveOptions;
}

const describeIdentity = (path: string, i: DeviceIdentity) =>
  `${path}: ${[i.wwid && `wwid ${i.wwid}`, i.nguid && `nguid ${i.nguid}`].filter(Boolean).join(', ') || 'no WWID or NGUID in sysfs'}`;

/**
 * Refuses a demo on real devices (UsageError, nothing opened) unless both paths are given,
 * with --yes, and sysfs shows one LU behind both. Resolves the identity the agent would
 * record (`wwid:...`, else `nguid:...`, else the path).
 */
async function checkDemoDevices(opts: DemoOptions): Promise<string | undefined> {
  const { deviceA: pa, deviceB: pb } = opts;
  if (!pa && !pb) {
    if (opts.yes || opts.identityCheck === false)
      throw new UsageError('demo: --yes and --no-identity-check apply only with --device-a and --device-b');
    return undefined;
  }
  if (!pa || !pb)
    throw new UsageError('demo: --device-a and --device-b go together (two paths to one logical unit)');
  if (!opts.yes)
    throw new UsageError(
      `demo: refused without --yes: it would clear every registration and the reservation of the ` +
        `logical unit behind ${pa} and ${pb}, then register, reserve and preempt-abort on it; nothing sent`,
    );
  const [ia, ib] = await Promise.all([readIdentity(pa, opts.resolve), readIdentity(pb, opts.resolve)]);
  if (opts.identityCheck !== false) {
    const same = sameLogicalUnit(ia, ib);
    if (same === 'different')
      throw new UsageError(
        `demo: ${pa} and ${pb} are not one logical unit (${describeIdentity(pa, ia)}; ` +
          `${describeIdentity(pb, ib)}); nothing sent`,
      );
    if (same === 'unknown')
      throw new UsageError(
        `demo: cannot tell that ${pa} and ${pb} are one logical unit (${describeIdentity(pa, ia)}; ` +
          `${describeIdentity(pb, ib)}); check it another way and add --no-identity-check; nothing sent`,
      );
  }
  return ib.wwid ? `wwid:${ib.wwid}` : ib.nguid ? `nguid:${ib.nguid}` : pb;
}

/** Runs the scripted failover; returns the final observation of node-b (for tests). */
export async function runDemo(
  io: Pick<CliIo, 'stdout'>,
  opts: DemoOptions = {},
): Promise<{
  a: DemoNode;
  b: DemoNode;
  final: VolumeObservation;
  writesRefused: boolean;
  reRegistered: boolean;
}> {
  const say = (s: string) => io.stdout(s);
  const log = pino({ level: opts.logLevel ?? 'silent' });
  const tag = clusterTag('prfence-demo-cluster');
  const known: NodeKey[] = [];
  let a: DemoNode;
  let b: DemoNode;
  let deviceIdentity: string; // what the agent records as status.device.identity (the LU's WWID on a node)
  const realIdentity = await checkDemoDevices(opts);
  if (realIdentity !== undefined && opts.deviceA && opts.deviceB) {
    const { KoffiPrDevice } = await import('../pr/koffi/koffi-pr-device.js');
    const { directWrite } = await import('../pr/koffi/direct-io.js');
    const [pa, pb] = [opts.deviceA, opts.deviceB];
    deviceIdentity = realIdentity;
    a = {
      name: 'node-a',
      key: makeKey(tag, 1),
      device: await KoffiPrDevice.open(pa),
      write: () => directWrite(pa),
    };
    b = {
      name: 'node-b',
      key: makeKey(tag, 2),
      device: await KoffiPrDevice.open(pb),
      write: () => directWrite(pb),
    };
    say(`devices: node-a ${pa}, node-b ${pb} (real kernel devices, one logical unit)`);
    // A demo LU starts clean: take a registration whatever is there, then CLEAR.
    const reset = makeKey(tag, 0xffff);
    await b.device.registerAndIgnore(reset);
    await b.device.clear(reset);
    say('    cleared every registration on the LU first (demo devices only)');
  } else {
    const lu = new MemoryLogicalUnit({ kind: 'scsi', id: 'lun-demo' });
    deviceIdentity = 'lun-demo';
    a = {
      name: 'node-a',
      key: makeKey(tag, 1),
      device: lu.initiator('node-a'),
      write: async () => lu.write('node-a'),
    };
    b = {
      name: 'node-b',
      key: makeKey(tag, 2),
      device: lu.initiator('node-b'),
      write: async () => lu.write('node-b'),
    };
    say(
      'devices: one in-memory SCSI logical unit seen by node-a and node-b (the model the contract suite proves against LIO)',
    );
  }
  known.push({ node: a.name, key: a.key }, { node: b.name, key: b.key });
  const created = new Date().toISOString();
  const step = (n: number, s: string) => say(`\n[${n}] ${s}`);
  const input = (self: DemoNode, legitimate: DemoNode[], mayRegister = true) => ({
    self: {
      node: self.name,
      key: self.key,
      legitimate: legitimate.includes(self),
      mayRegister,
      inUse: false,
    },
    legitimate: legitimate.map((n) => ({ node: n.name, key: n.key })),
    known,
    clusterTag: tag,
    desiredType: 'write-exclusive-reg-only' as const,
    foreignKeys: 'leave' as const,
  });
  const show = (o: VolumeObservation) => {
    for (const r of o.results) {
      const what =
        r.action.kind === 'preempt-abort'
          ? `preempt-abort ${formatKey(r.action.victim)} (${r.action.victimNode ?? '?'})`
          : r.action.kind;
      say(
        `    ${what}: ${r.result}; device now: generation ${r.after?.keys.generation}, keys [${r.after?.keys.keys.map(formatKey).join(', ')}]`,
      );
    }
  };

  say(
    `cluster tag ${tag.toString(16).padStart(8, '0')}; node-a key ${formatKey(a.key)}, node-b key ${formatKey(b.key)}`,
  );
  step(
    1,
    "VolumeAttachment pv-demo -> node-a. node-a's agent registers and reserves (write-exclusive-reg-only).",
  );
  show(await fenceVolume({ device: a.device, input: input(a, [a]), log }));
  say(`    node-a writes: ${await a.write()}`);

  step(
    2,
    'node-a is cut off from the API server but still alive and writing. The volume is force-detached and attached to node-b.',
  );
  say(`    node-a writes: ${await a.write()}   <- without fencing, two writers on one volume`);

  step(3, "node-b's agent sees the new VolumeAttachment: node-a is no longer legitimate, its key is stale.");
  const final = await fenceVolume({ device: b.device, input: input(b, [b]), log });
  show(final);
  for (const v of final.victims)
    say(`    fenced ${v.node} (key ${formatKey(v.key)}): ${v.result}, in ${final.durationMs.toFixed(1)} ms`);
  const aw = await a.write();
  const bw = await b.write();
  say(`    node-a writes: ${aw}   <- the storage itself refuses the stale node (EBADE on Linux)`);
  say(`    node-b writes: ${bw}`);

  step(4, "node-a's agent restarts. Its NodeFence says Fenced, so it must not register again (S2).");
  const again = await fenceVolume({ device: a.device, input: input(a, [a], false), log });
  say(`    node-a: ${again.outcome} (${again.plan.reason})`);
  const keysAfter = (await b.device.readKeys()).keys;
  const reRegistered = keysAfter.includes(a.key);
  say(`    node-a writes: ${await a.write()}`);

  // What node-b's agent records for pv-demo after step 3 (node-a's write in step 4 is a
  // fallback Ready that yields to it): the agent's own status helpers, then the CRD's
  // printer columns, as `kubectl get vr` shows it.
  const observed = observedVrStatus({
    node: b.name,
    key: b.key,
    identity: deviceIdentity,
    obs: final,
    selfLegit: true,
    holderPreemptKeepsVictim: final.holderPreemptKeepsVictim,
  });
  const fenced = final.victims.filter((v) => v.result !== 'left' && !v.takeover);
  const vr: VolumeReservation = {
    apiVersion: API_VERSION,
    kind: VOLUME_RESERVATION.kind,
    metadata: { name: 'pv-demo', creationTimestamp: created },
    status: {
      ...vrStatusToWrite(observed.status, undefined).status,
      ...(fenced.length
        ? { lastFence: fenceRecord(fenced.at(-1)!, b.name, new Date().toISOString(), final.durationMs) }
        : {}),
    },
  };
  say('\nkubectl get vr (what the agent records):');
  for (const line of printTable(printerColumns(crdOf(VOLUME_RESERVATION.plural)), [vr])) say(line);

  // Each node's own NodeFence write after step 4 (the agent's ownNodeStatus), and on
  // node-a the Fenced mark node-b wrote when it fenced it (StatusWriter.markFenced).
  // spec.fenceState: the API server's default (nobody asked for a fence).
  const mark = vr.status?.lastFence;
  const nf = (
    n: DemoNode,
    registered: number,
    blocked: number,
    fencedBy?: string,
    fencedAt?: string,
  ): NodeFence => {
    const own = ownNodeStatus({
      recordedPhase: fencedBy ? 'Fenced' : undefined,
      fencedBy,
      fenceRequested: fencedBy !== undefined,
      blockedVolumes: blocked,
      registeredVolumes: registered,
    });
    return {
      apiVersion: API_VERSION,
      kind: NODE_FENCE.kind,
      metadata: { name: n.name, creationTimestamp: created },
      spec: { fenceState: 'Unfenced' },
      status: {
        key: formatKey(n.key),
        volumes: own.volumes,
        phase: own.phase,
        conditions: own.conditions,
        ...(fencedBy ? { fencedBy, fencedAt } : {}),
      },
    };
  };
  const nfs = [
    nf(a, reRegistered ? 1 : 0, again.outcome === 'blocked' ? 1 : 0, mark?.by, mark?.at),
    nf(b, keysAfter.includes(b.key) ? 1 : 0, 0),
  ];
  say('\nkubectl get nf:');
  for (const line of printTable(printerColumns(crdOf(NODE_FENCE.plural)), nfs)) say(line);
  await a.device.close();
  await b.device.close();
  return { a, b, final, writesRefused: aw === 'refused' && bw === 'ok', reRegistered };
}
