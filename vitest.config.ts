import { defineConfig } from 'vitest/config';

// Four projects:
//  - unit: pure logic and the in-memory device model (includes the contract suite on MemoryPrDevice);
//  - integration: a real kube-apiserver + etcd started by test/envtest (global setup);
//  - kernel: the contract suite against real kernel devices, only inside the QEMU guest (test/kernel/);
//  - kernel-e2e: the agent failover with its own API server, inside the QEMU guest (test/kernel-e2e/).
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
          // Opening the devices starts native executor threads (Node + koffi), slow in an
          // emulated guest on a busy host.
          hookTimeout: 180_000,
          fileParallelism: false,
        },
      },
      {
        // The agent end to end on a real kernel: kube-apiserver, etcd and two agents in the guest.
        test: {
          name: 'kernel-e2e',
          include: ['test/kernel-e2e/**/*.test.ts'],
          testTimeout: 1_400_000,
          hookTimeout: 1_400_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
