// What the metrics count per connection, counted in place from the event batches the loop threads
// deliver (connections.ts hands each batch here once): plain arrays and maps, no object per
// connection, nothing on the loop threads. prom-client reads the totals only when scraped
// (metrics.ts): its own counters and histograms cost ~150-230 ns per update here, against a few ns
// for an array slot, and the JavaScript thread handles every connection's end.
import {
  nextRecord,
  recordAcceptedUs,
  recordBytesIn,
  recordBytesOut,
  recordConnectedUs,
  recordDecidedUs,
  recordInbound,
  recordKind,
  recordType,
} from '../datapath/events.js';
import { recordCloseReason, recordErrorCode, type CloseReason } from '../proxy/connections.js';

/** The `path` label: the decision, or `none` for a connection whose trusted PROXY header was rejected before it. */
export const PATHS = ['transparent', 'proxy', 'refused', 'none'] as const;
export type PathLabel = (typeof PATHS)[number];

/** The phases the events carry, timed per connection. */
export const PHASES = ['decide', 'inbound_pp', 'connect'] as const;
export type Phase = (typeof PHASES)[number];

/** Upper bounds in seconds: the decision takes µs, a connect from tens of µs to the connect timeout. */
export const PHASE_BUCKETS: readonly number[] = [
  0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

export interface HistogramCounts {
  /** Per bucket (not cumulative), then one for +Inf. */
  readonly buckets: readonly number[];
  readonly sum: number;
  readonly count: number;
}

export interface Totals {
  /** Ended connections: path → close reason → count. */
  readonly closed: ReadonlyMap<PathLabel, ReadonlyMap<CloseReason, number>>;
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly phases: ReadonlyMap<Phase, HistogramCounts>;
  /** Ended connections that failed, by error code. */
  readonly errors: ReadonlyMap<string, number>;
}

export interface Tally {
  /** Counts the `end` records of one event batch. */
  add(batch: Buffer): void;
  totals(): Totals;
}

const PATH_OF: Readonly<Record<string, number>> = { transparent: 0, proxy: 1, refuse: 2 };

export function createTally(): Tally {
  const closed = PATHS.map(() => new Map<CloseReason, number>());
  const hist = PHASES.map(() => ({ buckets: new Array<number>(PHASE_BUCKETS.length + 1).fill(0), sum: 0, count: 0 }));
  const errors = new Map<string, number>();
  let bytesIn = 0;
  let bytesOut = 0;

  const observe = (phase: number, us: number): void => {
    const s = Math.max(0, us) / 1e6;
    const h = hist[phase]!;
    let i = 0;
    while (i < PHASE_BUCKETS.length && s > PHASE_BUCKETS[i]!) i++;
    h.buckets[i]!++;
    h.sum += s;
    h.count++;
  };

  return {
    add(batch) {
      for (let at = 0; at < batch.length; at = nextRecord(batch, at)) {
        if (recordType(batch, at) !== 'end') continue;
        const kind = recordKind(batch, at);
        const byReason = closed[kind === null ? 3 : PATH_OF[kind]!]!;
        const reason = recordCloseReason(batch, at);
        byReason.set(reason, (byReason.get(reason) ?? 0) + 1);
        bytesIn += recordBytesIn(batch, at);
        bytesOut += recordBytesOut(batch, at);
        const decided = recordDecidedUs(batch, at);
        if (decided > 0) {
          observe(recordInbound(batch, at) !== 0 ? 1 : 0, decided - recordAcceptedUs(batch, at));
          const connected = recordConnectedUs(batch, at);
          if (connected > 0) observe(2, connected - decided);
        }
        const code = recordErrorCode(batch, at);
        if (code !== null) errors.set(code, (errors.get(code) ?? 0) + 1);
      }
    },
    totals: () => ({
      closed: new Map(PATHS.map((p, i) => [p, new Map(closed[i])])),
      bytesIn,
      bytesOut,
      phases: new Map(PHASES.map((p, i) => [p, { buckets: [...hist[i]!.buckets], sum: hist[i]!.sum, count: hist[i]!.count }])),
      errors: new Map(errors),
    }),
  };
}
