import { describe, expect, it } from 'vitest';
import { registerAgentCommand } from '../../../src/cli/agent-command.js';
import { runCli } from '../../../src/cli/program.js';

/** `prfence agent` refusals happen before anything starts (no API server, no device). */
async function run(...argv: string[]): Promise<{ code: number; err: string[] }> {
  const err: string[] = [];
  const io = { stdout: () => undefined, stderr: (l: string) => err.push(l) };
  const code = await runCli(argv, io, [registerAgentCommand]);
  return { code, err };
}

describe('prfence agent flags', () => {
  it('--failfast-action reboot without --failfast-allow-reboot -> exit 2 with a clear message', async () => {
    const r = await run('agent', '--node-name', 'n', '--failfast-action', 'reboot');
    expect(r.code).toBe(2);
    expect(r.err.join('\n')).toMatch(/pass --failfast-allow-reboot as well/);
  });

  it.each([
    ['misspelt flag', ['agent', '--node-name', 'n', '--probe-intervall', '1s']],
    ['unknown action', ['agent', '--node-name', 'n', '--failfast-action', 'panic']],
    ['bad interval', ['agent', '--node-name', 'n', '--probe-interval', 'soon']],
  ])('%s -> exit 2', async (_n, argv) => {
    const r = await run(...argv);
    expect(r.code).toBe(2);
    expect(r.err.length).toBeGreaterThanOrEqual(1);
  });
});
