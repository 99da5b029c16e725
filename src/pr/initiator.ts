/** How an initiator that carries a registration (READ FULL STATUS, Reservation Report) is named for people. */
import type { InitiatorId } from './pr-device.js';

/**
 * One initiator as `prfence device status` prints it and the agent records it (its own
 * registrants entry of a VolumeReservation): transport, id, then what else the device said.
 */
export function describeInitiator(i: InitiatorId): string {
  const name =
    i.transport === 'nvme'
      ? `nvme hostid ${i.id}`
      : i.transport === 'other'
        ? `scsi protocol ${i.protocolId ?? '?'} transport id ${i.id}`
        : `${i.transport} ${i.id}`;
  const more = [
    i.isid === undefined ? '' : `isid ${i.isid}`,
    i.controllerId === undefined ? '' : `controller ${i.controllerId}`,
    i.relativeTargetPort === undefined ? '' : `target port ${i.relativeTargetPort}`,
    i.allTargetPorts ? 'all target ports' : '',
  ].filter(Boolean);
  return more.length ? `${name} (${more.join(', ')})` : name;
}
