/**
 * Watches which keys are registered on a memory LU, as a timeline per label: sampled after
 * every PR call an agent of the cluster makes (exact for the agents' own changes) and on an
 * interval (for changes made by the test, late-applied commands, other initiators).
 */
import type { MemoryLogicalUnit } from '../../src/pr/memory/index.js';
import { formatKey } from '../../src/pr/key.js';
import type { Cluster, DeviceCall } from './agent-harness.js';

export interface Transition {
  /** ms since the sampler started. */
  at: number;
  present: boolean;
  /** The call that caused it when it was seen right after one. */
  by?: string;
}

export class KeySampler {
  readonly #lu: MemoryLogicalUnit;
  readonly #keys: Map<string, bigint>;
  readonly #timelines = new Map<string, Transition[]>();
  readonly #t0 = performance.now();
  readonly #timer: NodeJS.Timeout;
  readonly #cluster: Cluster;
  readonly #hook: (c: DeviceCall) => void;

  constructor(cluster: Cluster, lu: MemoryLogicalUnit, keys: Record<string, bigint>, everyMs = 5) {
    this.#cluster = cluster;
    this.#lu = lu;
    this.#keys = new Map(Object.entries(keys));
    for (const label of this.#keys.keys()) this.#timelines.set(label, []);
    this.#hook = (c) => {
      if (c.lu === lu) this.sample(`${c.node} ${c.op} -> ${c.outcome}`);
    };
    cluster.deviceCalls.add(this.#hook);
    this.sample('start');
    this.#timer = setInterval(() => this.sample(), everyMs);
  }

  sample(by?: string): void {
    const present = new Set(this.#lu.state().registrations.map((r) => r.key));
    const at = Math.round(performance.now() - this.#t0);
    for (const [label, key] of this.#keys) {
      const tl = this.#timelines.get(label)!;
      const now = present.has(key);
      if (tl.at(-1)?.present !== now) tl.push({ at, present: now, ...(by ? { by } : {}) });
    }
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#cluster.deviceCalls.delete(this.#hook);
    this.sample('stop');
  }

  timeline(label: string): Transition[] {
    return this.#timelines.get(label) ?? [];
  }

  /** Times the label's key came back after it had first gone (a re-registration). */
  returns(label: string): Transition[] {
    const tl = this.timeline(label);
    const gone = tl.findIndex((t) => !t.present);
    return gone < 0 ? [] : tl.slice(gone + 1).filter((t) => t.present);
  }

  /** Times the label's key went away after it had first been seen. */
  losses(label: string): Transition[] {
    const tl = this.timeline(label);
    const seen = tl.findIndex((t) => t.present);
    return seen < 0 ? [] : tl.slice(seen + 1).filter((t) => !t.present);
  }

  /** Whether the label's key is registered at the last sample. */
  present(label: string): boolean {
    return this.timeline(label).at(-1)?.present ?? false;
  }

  /** The timelines, for failure messages. */
  describe(): string {
    return [...this.#keys]
      .map(
        ([label, key]) =>
          `${label} (${formatKey(key)}): ${this.timeline(label)
            .map((t) => `${t.at}ms ${t.present ? '+' : '-'}${t.by ? ` [${t.by}]` : ''}`)
            .join(', ')}`,
      )
      .join('\n');
  }
}
