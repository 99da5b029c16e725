import { defineContractSuite } from './suite.js';
import { memoryTopology } from './memory-topology.js';
import { MEMORY_INITIATORS } from './topology.js';

defineContractSuite('memory-lio (SCSI model)', memoryTopology('scsi'), { initiators: MEMORY_INITIATORS });
defineContractSuite('memory-nvmet (NVMe model)', memoryTopology('nvme'), {
  kind: 'nvme',
  initiators: MEMORY_INITIATORS,
});
