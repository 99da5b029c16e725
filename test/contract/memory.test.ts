import { defineContractSuite } from './suite.js';
import { memoryTopology } from './memory-topology.js';

defineContractSuite('memory-lio (SCSI model)', memoryTopology('scsi'));
defineContractSuite('memory-nvmet (NVMe model)', memoryTopology('nvme'), { kind: 'nvme' });
