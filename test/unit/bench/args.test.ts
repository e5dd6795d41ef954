import { describe, expect, it } from 'vitest';
import { parseBenchArgs } from '../../../scripts/bench/args.mjs';

describe('parseBenchArgs', () => {
  it('defaults: 10 s runs, every path, 10k idle connections, no extra JSON file', () => {
    expect(parseBenchArgs([])).toEqual({
      help: false, duration: 10, rounds: 1, paths: ['direct', 'haproxy', 'haproxy-pp', 'nginx', 'tpi', 'tpi-pp'], json: null, connections: 10_000, threads: null,
      measure: ['throughput', 'connections', 'idle'],
    });
  });

  it('takes --opt value and --opt=value', () => {
    const o = parseBenchArgs(['--duration', '3', '--paths=direct,tpi', '--json', 'out.json', '--connections=500', '--threads', '2', '--rounds', '3']);
    expect(o).toMatchObject({ duration: 3, paths: ['direct', 'tpi'], json: 'out.json', connections: 500, threads: 2, rounds: 3 });
  });

  it('measures only what --measure names', () => {
    expect(parseBenchArgs(['--measure', 'connections']).measure).toEqual(['connections']);
    expect(parseBenchArgs(['--measure=throughput,idle']).measure).toEqual(['throughput', 'idle']);
  });

  it.each([
    [['--measure', 'latency'], /unknown measurement "latency"/],
    [['--measure', 'idle,idle'], /twice/],
    [['--duration', '0'], /--duration/],
    [['--duration', '2.5'], /--duration/],
    [['--duration'], /needs a value/],
    [['--paths', 'direct,squid'], /unknown path "squid"/],
    [['--paths', 'tpi,tpi'], /twice/],
    [['--threads', '0'], /--threads must be an integer 1..256/],
    [['--relay', 'splice'], /--relay is no longer supported: the daemon always splices/],
    [['--accept', 'node'], /--accept is no longer supported/],
    [['--workers', '2'], /--workers is no longer supported: .*--threads/],
    [['--connections', '-1'], /--connections/],
    [['--rounds', '0'], /--rounds must be a whole number in 1..20/],
    [['--rounds', '21'], /--rounds/],
    [['--fast'], /unknown argument/],
  ])('rejects %j', (argv, message) => {
    expect(() => parseBenchArgs(argv)).toThrow(message);
    try {
      parseBenchArgs(argv);
    } catch (err) {
      expect((err as { code?: string }).code).toBe('ERR_BENCH_USAGE');
    }
  });
});
