import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../../src/config/config.js';
import { loadControllerConfig } from '../../../src/config/controller-config.js';
import { runCli } from '../../../src/cli/program.js';
import { registerControllerCommand } from '../../../src/cli/controller-command.js';
import { EXIT, exitCodeFor, LeaderElectionLostError } from '../../../src/cli/exit-codes.js';

describe('controller config', () => {
  it('defaults: leader election on, 15 s / 10 s / 2 s, namespace and pod from the environment', () => {
    const c = loadControllerConfig({}, { POD_NAME: 'p-1', POD_NAMESPACE: 'prfence' });
    expect(c).toMatchObject({
      podName: 'p-1',
      leaderElection: true,
      leaderElectionNamespace: 'prfence',
      leaseDurationMs: 15_000,
      renewDeadlineMs: 10_000,
      retryPeriodMs: 2000,
      resyncMs: 60_000,
      workers: 10,
    });
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('namespace: flag, else POD_NAMESPACE, else the service account file', () => {
    expect(loadControllerConfig({}, { HOSTNAME: 'h' }, 'from-file\n').leaderElectionNamespace).toBe(
      'from-file',
    );
    expect(
      loadControllerConfig({ leaderElectionNamespace: 'flag' }, { HOSTNAME: 'h', POD_NAMESPACE: 'env' })
        .leaderElectionNamespace,
    ).toBe('flag');
  });

  it('node loss: --auto-fence off by default, --node-lost-after 40 s; flags parsed', () => {
    expect(loadControllerConfig({ leaderElection: 'false' }, { HOSTNAME: 'h' })).toMatchObject({
      autoFence: false,
      nodeLostAfterMs: 40_000,
    });
    expect(
      loadControllerConfig(
        { leaderElection: 'false', autoFence: true, nodeLostAfter: '5s' },
        { HOSTNAME: 'h' },
      ),
    ).toMatchObject({ autoFence: true, nodeLostAfterMs: 5000 });
  });

  it('--leader-election=false needs no namespace', () => {
    expect(loadControllerConfig({ leaderElection: 'false' }, { HOSTNAME: 'h' }).leaderElection).toBe(false);
  });

  it.each([
    ['no namespace with leader election', {}, { HOSTNAME: 'h' }, /namespace unknown/],
    ['no pod name', { leaderElection: 'false' }, {}, /pod name unknown/],
    ['bad bool', { leaderElection: 'yes' }, { HOSTNAME: 'h' }, /true or false/],
    [
      'renew deadline not shorter than the lease',
      { leaderElectionNamespace: 'n', leaderElectionRenewDeadline: '20s' },
      { HOSTNAME: 'h' },
      /lease duration must be longer/,
    ],
    ['bad duration', { leaderElectionNamespace: 'n', resync: 'soon' }, { HOSTNAME: 'h' }, /duration/],
    [
      'bad --auto-fence',
      { leaderElection: 'false', autoFence: 'maybe' },
      { HOSTNAME: 'h' },
      /--auto-fence must be true or false/,
    ],
    [
      'bad --node-lost-after',
      { leaderElection: 'false', nodeLostAfter: 'soon' },
      { HOSTNAME: 'h' },
      /--node-lost-after must be a duration/,
    ],
    [
      '--node-lost-after 0',
      { leaderElection: 'false', nodeLostAfter: '0s' },
      { HOSTNAME: 'h' },
      /--node-lost-after must be more than 0/,
    ],
  ])('%s -> ConfigError', (_n, flags, env, msg) => {
    expect(() => loadControllerConfig(flags, env)).toThrow(ConfigError);
    expect(() => loadControllerConfig(flags, env)).toThrow(msg);
  });

  it('prfence controller --no-such-flag -> exit 2 (usage), nothing started', async () => {
    const err: string[] = [];
    const code = await runCli(
      ['controller', '--no-such-flag'],
      { stdout: () => {}, stderr: (l) => err.push(l) },
      [registerControllerCommand],
    );
    expect(code).toBe(EXIT.usage);
    expect(err.join('\n')).toMatch(/unknown option '--no-such-flag'/);
  });

  it('leader election lost -> exit 8', () => {
    expect(EXIT.leaderLost).toBe(8);
    expect(exitCodeFor(new LeaderElectionLostError('lost'))).toBe(8);
  });
});
