import { MemoryLogicalUnit } from '../../src/pr/memory/index.js';
import { LIO_QUIRKS, type Topology, type TopologyFactory } from './topology.js';

/** A fresh memory LU with three initiators (a, b, c) per scenario. */
export function memoryTopology(kind: 'scsi' | 'nvme'): TopologyFactory {
  return async (): Promise<Topology> => {
    let lu = new MemoryLogicalUnit({ kind, id: `memory-${kind}` });
    const names = ['a', 'b', 'c'];
    const topology: Topology = {
      name: kind === 'scsi' ? 'memory-lio' : 'memory-nvmet',
      kind,
      get initiators() {
        return names.map((n) => lu.initiator(n));
      },
      initiatorIds: names,
      limitations: new Set(),
      // The model of kind 'scsi' is a model of LIO, quirks included.
      quirks: kind === 'scsi' ? LIO_QUIRKS : new Set(),
      write: async (i) => lu.write(names[i]!),
      read: async (i) => lu.read(names[i]!),
      reset: async () => {
        lu = new MemoryLogicalUnit({ kind, id: `memory-${kind}` });
      },
      close: async () => {},
    };
    return topology;
  };
}
