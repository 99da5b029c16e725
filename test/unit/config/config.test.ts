import { describe, expect, it } from 'vitest';
import { ConfigError, loadAgentConfig } from '../../../src/config/config.js';

describe('agent config', () => {
  it('defaults + NODE_NAME from the environment -> frozen config', () => {
    const c = loadAgentConfig({}, { NODE_NAME: 'n1' });
    expect(c).toMatchObject({
      nodeName: 'n1',
      reservationType: 'write-exclusive-reg-only',
      fencingDefault: 'enabled',
      foreignKeys: 'leave',
      ioctlTimeoutMs: 10_000,
    });
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('flags win over the environment; durations parse', () => {
    const c = loadAgentConfig({ nodeName: 'f', ioctlTimeout: '2s', resync: '1m' }, { NODE_NAME: 'e' });
    expect([c.nodeName, c.ioctlTimeoutMs, c.resyncMs]).toEqual(['f', 2000, 60_000]);
  });

  it('--http-endpoint: host:port, :port, [v6]:port accepted; empty means off', () => {
    for (const e of ['127.0.0.1:9808', ':9808', '[::1]:9808'])
      expect(loadAgentConfig({ nodeName: 'n', httpEndpoint: e }, {}).httpEndpoint).toBe(e);
    expect(loadAgentConfig({ nodeName: 'n', httpEndpoint: '' }, {}).httpEndpoint).toBeUndefined();
    expect(loadAgentConfig({ nodeName: 'n' }, {}).httpEndpoint).toBeUndefined();
  });

  it('--scope: cluster by default; node parsed as given', () => {
    expect(loadAgentConfig({ nodeName: 'n' }, {}).scope).toBe('cluster');
    expect(loadAgentConfig({ nodeName: 'n', scope: 'node' }, {}).scope).toBe('node');
  });

  it('--fencing-default disabled / enabled -> parsed as given', () => {
    expect(loadAgentConfig({ nodeName: 'n', fencingDefault: 'disabled' }, {}).fencingDefault).toBe(
      'disabled',
    );
    expect(loadAgentConfig({ nodeName: 'n', fencingDefault: 'enabled' }, {}).fencingDefault).toBe('enabled');
  });

  it('failfast defaults: probe every 2 s, action report', () => {
    expect(loadAgentConfig({ nodeName: 'n' }, {})).toMatchObject({
      probeIntervalMs: 2000,
      failfastAction: 'report',
    });
  });

  it('--path-check-interval: 10 s by default, 3s and 0 (only at reconciles) as given, a non-duration refused', () => {
    expect(loadAgentConfig({ nodeName: 'n' }, {}).pathCheckIntervalMs).toBe(10_000);
    expect(loadAgentConfig({ nodeName: 'n', pathCheckInterval: '3s' }, {}).pathCheckIntervalMs).toBe(3000);
    expect(loadAgentConfig({ nodeName: 'n', pathCheckInterval: '0' }, {}).pathCheckIntervalMs).toBe(0);
    expect(() => loadAgentConfig({ nodeName: 'n', pathCheckInterval: 'often' }, {})).toThrow(
      /--path-check-interval must be a duration/,
    );
  });

  it('--probe-interval 500ms / 0 and --failfast-action taint parse; reboot with --failfast-allow-reboot is accepted', () => {
    expect(loadAgentConfig({ nodeName: 'n', probeInterval: '500ms' }, {}).probeIntervalMs).toBe(500);
    expect(loadAgentConfig({ nodeName: 'n', probeInterval: '0' }, {}).probeIntervalMs).toBe(0);
    expect(loadAgentConfig({ nodeName: 'n', failfastAction: 'taint' }, {}).failfastAction).toBe('taint');
    expect(
      loadAgentConfig({ nodeName: 'n', failfastAction: 'reboot', failfastAllowReboot: true }, {})
        .failfastAction,
    ).toBe('reboot');
  });

  it("--sysrq-trigger: the chart's /host/proc/sysrq-trigger unless given (an agent on the host: /proc/sysrq-trigger)", () => {
    expect(loadAgentConfig({ nodeName: 'n' }, {}).sysrqTrigger).toBe('/host/proc/sysrq-trigger');
    expect(loadAgentConfig({ nodeName: 'n', sysrqTrigger: '/proc/sysrq-trigger' }, {}).sysrqTrigger).toBe(
      '/proc/sysrq-trigger',
    );
  });

  it.each([
    ['no node name', {}, /node name missing/],
    [
      'reboot without --failfast-allow-reboot',
      { nodeName: 'n', failfastAction: 'reboot' },
      /--failfast-action reboot reboots this node .* pass --failfast-allow-reboot/,
    ],
    [
      'unknown failfast action',
      { nodeName: 'n', failfastAction: 'panic' },
      /--failfast-action must be report, taint, reboot, got "panic"/,
    ],
    ['bad probe interval', { nodeName: 'n', probeInterval: 'often' }, /--probe-interval must be a duration/],
    [
      'taint with the probe off',
      { nodeName: 'n', probeInterval: '0', failfastAction: 'taint' },
      /needs the probe/,
    ],
    ['unknown type', { nodeName: 'n', reservationType: 'shared' }, /unknown reservation type/],
    [
      'bad fencing default',
      { nodeName: 'n', fencingDefault: 'off' },
      /--fencing-default must be enabled or disabled, got "off"/,
    ],
    ['fencing default in capitals', { nodeName: 'n', fencingDefault: 'Disabled' }, /--fencing-default/],
    ['bad foreign policy', { nodeName: 'n', foreignKeys: 'sometimes' }, /foreign-keys/],
    ['unknown scope', { nodeName: 'n', scope: 'pod' }, /--scope must be cluster or node, got "pod"/],
    ['bad duration', { nodeName: 'n', ioctlTimeout: 'soon' }, /duration/],
    ['bad count', { nodeName: 'n', workers: '0' }, /positive integer/],
    ['http endpoint without port', { nodeName: 'n', httpEndpoint: 'localhost' }, /host:port/],
    ['http endpoint port too large', { nodeName: 'n', httpEndpoint: ':70000' }, /host:port/],
  ])('%s -> ConfigError with a clear message', (_n, flags, msg) => {
    expect(() => loadAgentConfig(flags, {})).toThrow(ConfigError);
    expect(() => loadAgentConfig(flags, {})).toThrow(msg);
  });
});
