import { describe, expect, it } from 'vitest';
import { defaultCap, parseDurationMs, parseSoakArgs } from '../../../scripts/soak/args.mjs';
import { SCENARIO_NAMES } from '../../../scripts/soak/plan.mjs';

describe('parseSoakArgs', () => {
  it('defaults: 1 minute, 200 connections, every scenario, a cap derived from the connections', () => {
    expect(parseSoakArgs([])).toEqual({
      help: false, durationMs: 60_000, connections: 200, cap: 100, scenarios: [...SCENARIO_NAMES], json: null, out: null, seed: null,
      settings: [], fdMargin: 16, rssMarginMiB: 48, promptMs: 2000, rampMax: 5000,
    });
  });

  it('takes --opt value and --opt=value, and --set more than once', () => {
    const o = parseSoakArgs(['--duration', '5m', '--connections=2000', '--cap', '500', '--set', 'listen.threads=2', '--set=upstream.pipe_size=0', '--seed', 'replay-1']);
    expect(o).toMatchObject({ durationMs: 300_000, connections: 2000, cap: 500, seed: 'replay-1', settings: [['listen.threads', '2'], ['upstream.pipe_size', '0']] });
  });

  it('runs a subset of scenarios in the suite order, whatever order they are given in', () => {
    expect(parseSoakArgs(['--scenarios', 'capacity,load']).scenarios).toEqual(['load', 'capacity']);
  });

  it.each([
    [['--duration', '2s'], /--duration must be 5s..24h/],
    [['--duration', '5 minutes'], /--duration/],
    [['--duration'], /needs a value/],
    [['--connections', '3'], /--connections must be a whole number in 4..50000/],
    [['--connections', '1.5'], /--connections/],
    [['--scenarios', 'load,chaos'], /unknown scenario "chaos"/],
    [['--scenarios', 'load,load'], /twice/],
    [['--set', 'threads=2'], /SECTION.KEY=VALUE/],
    [['--set', 'listen.port='], /SECTION.KEY=VALUE/],
    [['--seed', 'a b'], /--seed/],
    [['--prompt-ms', '50'], /--prompt-ms/],
    [['--fast'], /unknown argument/],
  ])('rejects %j with ERR_SOAK_USAGE', (argv, message) => {
    expect(() => parseSoakArgs(argv)).toThrow(message);
    try {
      parseSoakArgs(argv);
    } catch (err) {
      expect((err as { code?: string }).code).toBe('ERR_SOAK_USAGE');
    }
  });
});

describe('parseDurationMs', () => {
  it.each([
    ['90', 90_000],
    ['30s', 30_000],
    ['5m', 300_000],
    ['1m30s', 90_000],
    ['1h', 3_600_000],
    ['250ms', 250],
  ])('%s is %d ms', (text, ms) => expect(parseDurationMs(text)).toBe(ms));

  it.each(['', '5x', 'm5', '1.5m', '-3s'])('%j is not a duration', (text) => expect(parseDurationMs(text)).toBeNull());
});

describe('defaultCap', () => {
  it('is half the connections, between 20 and 1000', () => {
    expect(defaultCap(10)).toBe(20);
    expect(defaultCap(200)).toBe(100);
    expect(defaultCap(50_000)).toBe(1000);
  });
});
