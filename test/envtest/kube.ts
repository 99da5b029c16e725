/** Helpers for integration tests that share one real API server (see global-setup.ts). */
import { randomBytes } from 'node:crypto';
import { KubeConfig } from '@kubernetes/client-node';
import { inject } from 'vitest';

// What global-setup.ts provides to the integration tests.
declare module 'vitest' {
  export interface ProvidedContext {
    kubeconfigPath: string;
    apiServerUrl: string;
  }
}

/** The admin KubeConfig of the run's control plane. */
export function adminKubeConfig(): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(inject('kubeconfigPath'));
  return kc;
}

/** A DNS-1123 name unique in this run, so test files never collide on cluster-scoped objects. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString('hex')}`;
}

export interface EventuallyOptions {
  timeoutMs?: number;
  intervalMs?: number;
}

/**
 * Polls `fn` until it returns without throwing (and, if it returns a boolean, returns true);
 * resolves with its value. Throws the last error at the deadline. Never a fixed sleep.
 */
export async function eventually<T>(fn: () => Promise<T> | T, opts: EventuallyOptions = {}): Promise<T> {
  const end = Date.now() + (opts.timeoutMs ?? 15_000);
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== false) return v;
      last = new Error('eventually: condition returned false');
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw last;
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 50));
  }
}
