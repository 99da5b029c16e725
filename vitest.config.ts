import { defineConfig } from 'vitest/config';

// Three projects:
//  - unit: pure logic and the in-memory device model (includes the contract suite on MemoryPrDevice);
//  - integration: a real kube-apiserver + etcd started by test/envtest (global setup);
//  - kernel: the contract suite against real kernel devices, only inside the QEMU guest (test/kernel/).
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts', 'test/contract/**/*.test.ts'],
          exclude: ['test/contract/kernel.test.ts'],
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          globalSetup: ['test/envtest/global-setup.ts'],
          testTimeout: 60_000,
          hookTimeout: 180_000,
          fileParallelism: false,
        },
      },
      {
        test: {
          name: 'kernel',
          include: ['test/contract/kernel.test.ts', 'test/kernel/**/*.test.ts'],
          testTimeout: 30_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
