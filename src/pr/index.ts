export * from './errors.js';
export * from './key.js';
export * from './reservation-type.js';
export type * from './pr-device.js';
export * from './scsi2.js';
