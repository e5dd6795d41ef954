// Command line of `npm run bench`: pure, throws BenchUsageError (code ERR_BENCH_USAGE) on bad input.
import { PATH_NAMES } from './plan.mjs';

export const USAGE = `usage: npm run bench -- [--duration SECONDS] [--rounds N] [--paths ${PATH_NAMES.join(',')}] [--json FILE]
                      [--connections N] [--threads N]

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
  -h, --help           this text

Needs root: it builds network namespaces named tpibench* and removes them again on exit.`;

export class BenchUsageError extends Error {
  constructor(message) {
    super(message);
    this.code = 'ERR_BENCH_USAGE';
  }
}

const VALUE_OPTIONS = new Set(['--rounds', '--duration', '--paths', '--json', '--connections', '--threads']);
/** Options of the data paths the daemon no longer has: an error naming the replacement. */
const RETIRED = new Map([
  ['--relay', 'the daemon always splices now'],
  ['--accept', 'the daemon always accepts on its native loop threads now'],
  ['--workers', 'the daemon runs one process with --threads loop threads now'],
]);

/**
 * @param {string[]} argv arguments after the script name
 * @returns {{ help: boolean, duration: number, rounds: number, paths: string[], json: string | null, connections: number, threads: number | null }}
 */
export function parseBenchArgs(argv) {
  const opts = { help: false, duration: 10, rounds: 1, paths: [...PATH_NAMES], json: null, connections: 10_000, threads: null };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq > 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    if (arg === '-h' || arg === '--help') {
      opts.help = true;
      continue;
    }
    if (RETIRED.has(arg)) throw new BenchUsageError(`${arg} is no longer supported: ${RETIRED.get(arg)}`);
    if (!VALUE_OPTIONS.has(arg)) throw new BenchUsageError(`unknown argument ${JSON.stringify(argv[i])}`);
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new BenchUsageError(`${arg} needs a value`);
      value = argv[++i];
    }
    switch (arg) {
      case '--duration': {
        const n = Number(value);
        if (!/^\d+$/.test(value) || n < 1 || n > 3600) throw new BenchUsageError(`--duration must be a whole number of seconds in 1..3600, got ${JSON.stringify(value)}`);
        opts.duration = n;
        break;
      }
      case '--paths': {
        const names = value.split(',').map((s) => s.trim()).filter((s) => s !== '');
        if (names.length === 0) throw new BenchUsageError('--paths needs at least one path');
        for (const n of names) {
          if (!PATH_NAMES.includes(n)) throw new BenchUsageError(`--paths: unknown path ${JSON.stringify(n)}; known: ${PATH_NAMES.join(', ')}`);
        }
        if (new Set(names).size !== names.length) throw new BenchUsageError('--paths lists a path twice');
        opts.paths = names;
        break;
      }
      case '--rounds': {
        const n = Number(value);
        if (!/^\d+$/.test(value) || n < 1 || n > 20) throw new BenchUsageError(`--rounds must be a whole number in 1..20, got ${JSON.stringify(value)}`);
        opts.rounds = n;
        break;
      }
      case '--json':
        if (value === '') throw new BenchUsageError('--json needs a file name');
        opts.json = value;
        break;
      case '--connections': {
        const n = Number(value);
        if (!/^\d+$/.test(value) || n < 1 || n > 50_000) throw new BenchUsageError(`--connections must be a whole number in 1..50000, got ${JSON.stringify(value)}`);
        opts.connections = n;
        break;
      }
      case '--threads': {
        const n = Number(value);
        if (!/^\d+$/.test(value) || n < 1 || n > 256) throw new BenchUsageError(`--threads must be an integer 1..256, got ${JSON.stringify(value)}`);
        opts.threads = n;
        break;
      }
    }
  }
  return opts;
}
