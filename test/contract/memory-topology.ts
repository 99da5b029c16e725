import { MemoryLogicalUnit } from '../../src/pr/memory/index.js';
import {
  LIO_QUIRKS,
  MEMORY_INITIATORS,
  NVMET_QUIRKS,
  type Topology,
  type TopologyFactory,
} from './topology.js';

/**
 * A fresh memory LU per scenario, with {@link MEMORY_INITIATORS} initiators: a, b, c, then
 * i04, i05, ... (the suite's a, b and c are the first three).
 */
export function memoryTopology(kind: 'scsi' | 'nvme'): TopologyFactory {
  return async (): Promise<Topology> => {
    let lu = new MemoryLogicalUnit({ kind, id: `memory-${kind}` });
    const names = [
      'a',
      'b',
      'c',
      ...Array.from({ length: MEMORY_INITIATORS - 3 }, (_, i) => `i${String(i + 4).padStart(2, '0')}`),
    ];
    const topology: Topology = {
      name: kind === 'scsi' ? 'memory-lio' : 'memory-nvmet',
      kind,
      get initiators() {
        return names.map((n) => lu.initiator(n));
      },
      initiatorIds: names,
      limitations: new Set(),
      // The model of kind 'scsi' is a model of LIO, and of kind 'nvme' of nvmet, quirks included.
      quirks: kind === 'scsi' ? LIO_QUIRKS : NVMET_QUIRKS,
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
