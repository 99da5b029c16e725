export { MemoryLogicalUnit } from './memory-logical-unit.js';
export type {
  Fault,
  LateApplied,
  LogicalUnitState,
  MemoryLogicalUnitOptions,
  PrOp,
} from './memory-logical-unit.js';
export { MemoryPrDevice } from './memory-pr-device.js';
export type { MemoryPrDeviceOptions } from './memory-pr-device.js';
