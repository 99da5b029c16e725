/**
 * `prfence demo`: its options. The scenario (demo.ts) and what it needs (the fence logic,
 * the in-memory model, pino, the CRDs' YAML) load only when the demo runs, so no other
 * command (the agent above all) carries them in memory.
 */
import type { Command } from 'commander';
import type { DemoOptions } from './demo.js';
import type { CliIo } from './program.js';

/** Registers `prfence demo`. */
export function registerDemoCommand(program: Command, io: CliIo): void {
  program
    .command('demo')
    .description('local failover demo: two simulated nodes, one shared LU, no cluster needed')
    .option(
      '--device-a <path>',
      "node-a's path to a real PR-capable LU (with --device-b); CLEARS its registrations",
    )
    .option('--device-b <path>', "node-b's path to the same LU")
    .option('--yes', 'with --device-a/--device-b: clear the LU and run the failover on it')
    .option(
      '--no-identity-check',
      'with --device-a/--device-b: run even if sysfs shows no WWID or NGUID proving one LU behind both',
    )
    .option('--log-level <level>', 'also print the agent logs (JSON) at this level', 'silent')
    .action(async (o: DemoOptions & { logLevel: string }) => {
      const { runDemo } = await import('./demo.js');
      const r = await runDemo(io, { ...o, ...(io.resolve ? { resolve: io.resolve } : {}) });
      io.stdout(
        r.writesRefused && !r.reRegistered
          ? '\nresult: node-a is fenced at the storage; node-b owns the volume.'
          : '\nresult: FAILED: node-a was not fenced',
      );
      if (!r.writesRefused || r.reRegistered) throw new Error('demo failed');
    });
}
