#!/usr/bin/env node
/** Entry point: wires the CLI to the process. All logic lives in run-process.ts, program.ts and the commands. */
import { defaultNativeExecutor } from '../pr/koffi/executor.js';

// Device commands need a native executor thread (a worker loading Node and koffi): start
// it first, so its start-up overlaps loading the rest of the CLI.
if (process.argv[2] === 'device' || process.argv[2] === 'demo')
  defaultNativeExecutor()
    .warm()
    .catch(() => {});

const { runProcess } = await import('./run-process.js');
await runProcess(process.argv.slice(2));
