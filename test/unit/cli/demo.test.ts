import { describe, expect, it } from 'vitest';
import { runDemo } from '../../../src/cli/demo.js';
import { runCli } from '../../../src/cli/program.js';
import { registerDemoCommand } from '../../../src/cli/demo-command.js';

describe('prfence demo', () => {
  it('failover on the model -> node-a fenced (writes refused), node-b holds, node-a does not re-register', async () => {
    const out: string[] = [];
    const r = await runDemo({ stdout: (l) => out.push(l) });
    expect(r.writesRefused).toBe(true);
    expect(r.reRegistered).toBe(false);
    expect(r.final.victims).toEqual([{ key: r.a.key, node: 'node-a', result: 'fenced' }]);
    expect(r.final.state.reservation.key).toBe(r.b.key);
    expect(out.join('\n')).toContain('node-a writes: refused');
  });

  it('the command exits 0 and prints the result line', async () => {
    const out: string[] = [];
    const code = await runCli(['demo'], { stdout: (l) => out.push(l), stderr: () => {} }, [
      registerDemoCommand,
    ]);
    expect(code).toBe(0);
    expect(out.at(-1)).toContain('node-a is fenced at the storage');
  });
});
