// Command line of `npm run bench`: pure, throws BenchUsageError (code ERR_BENCH_USAGE) on bad input.
import { commandLine } from '../lib/argv.mjs';
import { MEASURES, PATH_NAMES } from './plan.mjs';

export const USAGE = `usage: npm run bench -- [--duration SECONDS] [--rounds N] [--paths ${PATH_NAMES.join(',')}] [--json FILE]
                      [--connections N] [--threads N] [--measure ${MEASURES.join(',')}]

  --duration SECONDS   length of each measured run (iperf3 -t, wrk -d); default 10. Every path
                       takes 3 runs plus a few seconds: --duration 2 measures all six in
                       about 60 s on a 2-vCPU machine
  --rounds N           measure every path N times (odd rounds in --paths order, even ones
                       reversed) and report each figure's median; default 1
  --paths LIST         comma-separated paths to measure, in this order; default all:
                       ${PATH_NAMES.join(', ')}
  --json FILE          also write the results as JSON to FILE
  --connections N      idle connections held open for the memory figure; default 10000
  --threads N          loop threads of this project's daemon (listen.threads); default: the
                       daemon's (one per CPU)
  --measure LIST       what to measure on every path; default all: throughput (iperf3 1 and
                       8 streams), connections (wrk), idle (memory per idle connection). For
                       quick comparisons of one kind of figure
  -h, --help           this text

Needs root: it builds network namespaces named tpibench* and removes them again on exit.`;

export class BenchUsageError extends Error {
  constructor(message) {
    super(message);
    this.code = 'ERR_BENCH_USAGE';
  }
}

const cli = commandLine(BenchUsageError);
const VALUE_OPTIONS = new Set(['--rounds', '--duration', '--paths', '--json', '--connections', '--threads', '--measure']);
/** Options of the data paths the daemon no longer has: an error naming the replacement. */
const RETIRED = new Map([
  ['--relay', 'the daemon always splices now'],
  ['--accept', 'the daemon always accepts on its native loop threads now'],
  ['--workers', 'the daemon runs one process with --threads loop threads now'],
]);

/**
 * @param {string[]} argv arguments after the script name
 * @returns {{ help: boolean, duration: number, rounds: number, paths: string[], json: string | null, connections: number, threads: number | null, measure: string[] }}
 */
export function parseBenchArgs(argv) {
  const opts = { help: false, duration: 10, rounds: 1, paths: [...PATH_NAMES], json: null, connections: 10_000, threads: null, measure: [...MEASURES] };
  opts.help = cli.walk(argv, VALUE_OPTIONS, (arg, value) => {
    switch (arg) {
      case '--duration':
        opts.duration = cli.wholeNumber(arg, value, 1, 3600, 'a whole number of seconds in 1..3600');
        break;
      case '--paths':
        opts.paths = cli.names(arg, value, PATH_NAMES, 'path');
        break;
      case '--rounds':
        opts.rounds = cli.wholeNumber(arg, value, 1, 20);
        break;
      case '--json':
        if (value === '') throw new BenchUsageError('--json needs a file name');
        opts.json = value;
        break;
      case '--connections':
        opts.connections = cli.wholeNumber(arg, value, 1, 50_000);
        break;
      case '--measure':
        opts.measure = cli.names(arg, value, MEASURES, 'measurement');
        break;
      case '--threads':
        opts.threads = cli.wholeNumber(arg, value, 1, 256, 'an integer 1..256');
        break;
    }
  }, RETIRED);
  return opts;
}
