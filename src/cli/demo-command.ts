import type { Command } from 'commander';
import type { CliIo } from './program.js';

/** `prfence demo`: placeholder registration, replaced by the fencing demo. */
export function registerDemoCommand(program: Command, io: CliIo): void {
  program
    .command('demo')
    .description('local failover demo on the in-memory device model (no cluster needed)')
    .action(() => {
      io.stdout('demo: not built yet');
    });
}
