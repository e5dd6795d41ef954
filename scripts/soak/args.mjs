// Command line of `npm run soak`: pure, throws SoakUsageError (code ERR_SOAK_USAGE) on bad input.
import { commandLine } from '../lib/argv.mjs';
import { SCENARIO_NAMES } from './plan.mjs';

export const USAGE = `usage: npm run soak -- [--duration DUR] [--connections N] [--cap N] [--scenarios LIST]
                     [--json FILE] [--out DIR] [--seed TEXT] [--set SECTION.KEY=VALUE]...
                     [--fd-margin N] [--rss-margin MIB] [--prompt-ms MS] [--ramp-max RATE]

  --duration DUR      how long the N connections are held with traffic both ways while the
                      slow-peer, backend-fault, hostile-admin and hostile-agent scenarios run
                      beside them: "90", "30s", "5m", "1m30s"; default 1m
  --connections N     concurrent connections of the load (half pp=false, half pp=true, one in
                      ten over IPv6); default 200. Each costs the daemon two descriptors
  --cap N             listen.max_connections of the capacity scenario; default
                      clamp(connections / 2, 20, 1000)
  --scenarios LIST    comma-separated subset, run in the suite's order; default all:
                      ${SCENARIO_NAMES.join(', ')}
  --json FILE         also write the report as JSON to FILE
  --out DIR           where the report goes as soak-DATE.md and .json; default soak-results/
  --seed TEXT         seed of every byte stream (default: random, printed): a failure replays
  --set KEY=VALUE     adds or replaces a key of every config the soak gives the daemon, VALUE
                      in TOML: --set 'listen.accept="node"', --set upstream.pipe_size=0
                      (repeatable; the daemon itself refuses keys it does not know)
  --fd-margin N       descriptors the daemon may hold above its baseline once a scenario's
                      connections are gone; default 16
  --rss-margin MIB    resident memory (MiB) the daemon may keep above its baseline once the
                      load is gone, and may grow by under a backend that never reads; default 48
  --prompt-ms MS      how soon a refused, reset or shed client must see its connection end;
                      default 2000
  --ramp-max RATE     highest new-connection rate (per second) the ramp tries; default 5000
  -h, --help          this text

Needs root: it builds network namespaces named tpisoak* and removes them again on exit, also on
Ctrl-C and on failure. Exit codes: 0 every check passed, 1 a check failed (each is named),
2 bad usage, 4 the soak itself could not run, 124 its deadline passed, 130 interrupted.`;

export class SoakUsageError extends Error {
  constructor(message) {
    super(message);
    this.code = 'ERR_SOAK_USAGE';
  }
}

const UNIT_MS = { h: 3_600_000, m: 60_000, s: 1000, ms: 1 };

/**
 * "90" (seconds), "250ms", "30s", "5m", "1h", "1m30s". Returns milliseconds, or null when the
 * text is not a duration.
 */
export function parseDurationMs(text) {
  if (typeof text !== 'string') return null;
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  if (!/^(\d+(h|ms|m|s))+$/.test(text)) return null;
  let total = 0;
  for (const m of text.matchAll(/(\d+)(h|ms|m|s)/g)) total += Number(m[1]) * UNIT_MS[m[2]];
  return total;
}

const cli = commandLine(SoakUsageError);
const VALUE_OPTIONS = new Set([
  '--duration', '--connections', '--cap', '--scenarios', '--json', '--out', '--seed', '--set',
  '--fd-margin', '--rss-margin', '--prompt-ms', '--ramp-max',
]);

/** The capacity scenario's cap when --cap is not given. */
export function defaultCap(connections) {
  return Math.max(20, Math.min(1000, Math.floor(connections / 2)));
}

/**
 * @param {string[]} argv arguments after the script name
 * @returns {{ help: boolean, durationMs: number, connections: number, cap: number, scenarios: string[],
 *   json: string | null, out: string | null, seed: string | null, settings: Array<[string, string]>,
 *   fdMargin: number, rssMarginMiB: number, promptMs: number, rampMax: number }}
 */
export function parseSoakArgs(argv) {
  const opts = {
    help: false,
    durationMs: 60_000,
    connections: 200,
    cap: null,
    scenarios: [...SCENARIO_NAMES],
    json: null,
    out: null,
    seed: null,
    settings: [],
    fdMargin: 16,
    rssMarginMiB: 48,
    promptMs: 2000,
    rampMax: 5000,
  };
  opts.help = cli.walk(argv, VALUE_OPTIONS, (arg, value) => {
    switch (arg) {
      case '--duration': {
        const ms = parseDurationMs(value);
        if (ms === null || ms < 5000 || ms > 24 * 3_600_000) {
          throw new SoakUsageError(`--duration must be 5s..24h, as "90", "30s", "5m" or "1m30s", got ${JSON.stringify(value)}`);
        }
        opts.durationMs = ms;
        break;
      }
      case '--connections':
        opts.connections = cli.wholeNumber(arg, value, 4, 50_000);
        break;
      case '--cap':
        opts.cap = cli.wholeNumber(arg, value, 4, 50_000);
        break;
      case '--scenarios': {
        const names = cli.names(arg, value, SCENARIO_NAMES, 'scenario');
        opts.scenarios = SCENARIO_NAMES.filter((n) => names.includes(n));
        break;
      }
      case '--json':
        if (value === '') throw new SoakUsageError('--json needs a file name');
        opts.json = value;
        break;
      case '--out':
        if (value === '') throw new SoakUsageError('--out needs a directory');
        opts.out = value;
        break;
      case '--seed':
        if (!/^[\w.-]{1,64}$/.test(value)) throw new SoakUsageError(`--seed must be 1..64 letters, digits, '.', '_' or '-', got ${JSON.stringify(value)}`);
        opts.seed = value;
        break;
      case '--set': {
        const m = /^([a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+)=(.+)$/.exec(value);
        if (!m) throw new SoakUsageError(`--set must be SECTION.KEY=VALUE (VALUE in TOML, e.g. listen.port=15001), got ${JSON.stringify(value)}`);
        if (/[\r\n]/.test(m[2])) throw new SoakUsageError('--set: the value must be one line');
        opts.settings.push([m[1], m[2]]);
        break;
      }
      case '--fd-margin':
        opts.fdMargin = cli.wholeNumber(arg, value, 0, 100_000);
        break;
      case '--rss-margin':
        opts.rssMarginMiB = cli.wholeNumber(arg, value, 1, 65_536);
        break;
      case '--prompt-ms':
        opts.promptMs = cli.wholeNumber(arg, value, 100, 60_000);
        break;
      case '--ramp-max':
        opts.rampMax = cli.wholeNumber(arg, value, 10, 100_000);
        break;
    }
  });
  opts.cap ??= defaultCap(opts.connections);
  return opts;
}
