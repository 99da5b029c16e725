/**
 * What a node records of one device observation (src/agent/vr-record.ts): the initiators
 * that carry its own key, from the one-command state read.
 */
import { describe, expect, it } from 'vitest';
import { observedVrStatus } from '../../../src/agent/vr-record.js';
import type { DeviceState } from '../../../src/fence/executor.js';
import type { VolumeObservation } from '../../../src/fence/volume-fencer.js';
import type { Registrant } from '../../../src/pr/pr-device.js';

const OWN = 0x0e153df0c4afa101n;
const PEER = 0x0e153df0c4afa102n;

const iscsi = (key: bigint, isid: string, id = 'iqn.2026-12.io.prfence:node-a'): Registrant => ({
  key,
  holder: false,
  initiator: { transport: 'iscsi', id, isid },
});

function observation(state: DeviceState): VolumeObservation {
  return {
    kind: 'scsi',
    plan: { role: 'member', actions: [], keys: [] } as unknown as VolumeObservation['plan'],
    results: [],
    state,
    keys: [
      { key: OWN, class: 'own', node: 'node-a' },
      { key: PEER, class: 'legitimate', node: 'node-b' },
    ] as VolumeObservation['keys'],
    victims: [],
    outcome: 'done',
    rounds: 1,
    holderPreemptKeepsVictim: false,
    preemptAbortRefused: false,
    durationMs: 1,
  };
}

const record = (state: DeviceState) =>
  observedVrStatus({
    node: 'node-a',
    key: OWN,
    identity: 'wwid:naa.6001405000000001',
    obs: observation(state),
    selfLegit: true,
    holderPreemptKeepsVictim: false,
  }).status.registrants;

describe('the own registrants entry (observedVrStatus)', () => {
  it("a state read with one command: the own key through two paths (two I_T nexuses) and a peer's key -> the entry names the own key's two initiators, sorted, not the peer's", () => {
    const registrants = [
      iscsi(PEER, '000000000002', 'iqn.2026-12.io.prfence:node-b'),
      iscsi(OWN, 'f00000000002'),
      iscsi(OWN, '000000000001'),
    ];
    const keys = registrants.map((r) => r.key);
    expect(
      record({
        keys: { generation: 3, keys },
        reservation: { generation: 3, key: null, type: null },
        registrants,
      }),
    ).toEqual([
      {
        node: 'node-a',
        key: '0e153df0c4afa101',
        legitimate: true,
        initiators: [
          'iscsi iqn.2026-12.io.prfence:node-a (isid 000000000001)',
          'iscsi iqn.2026-12.io.prfence:node-a (isid f00000000002)',
        ],
      },
    ]);
  });

  it('a state read with two commands (no initiators known) -> no initiators field, not an empty list', () => {
    expect(
      record({
        keys: { generation: 3, keys: [OWN, PEER] },
        reservation: { generation: 3, key: null, type: null },
      }),
    ).toEqual([{ node: 'node-a', key: '0e153df0c4afa101', legitimate: true }]);
  });
});
