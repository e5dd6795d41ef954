// Odd peers beside the load, in rounds until it ends: slow writers (a few bytes every 50-70 ms
// each way), slow readers (2 MiB read 64 KiB at a time with pauses), half-open peers (the client
// ends its side, the backend goes on sending 1 MiB), and a backend that never reads while the
// client writes as fast as it can: the client must be held back (backpressure through the
// daemon) and the daemon's memory must not grow with what is held.
import { sleep } from '../../bench/procs.mjs';
import { LAB, PORTS } from '../plan.mjs';
import { PLANS } from '../wire.mjs';
import { makeSpec, TARGETS } from '../specs.mjs';
import { describeProblems } from '../reconcile.mjs';
import { formatBytes, mib } from '../figures.mjs';
import { runGroup, uniqueGroup } from './common.mjs';

const SINK_CONNECTIONS = 8;
/** The clients must be stopped (nothing more taken for STALL_MS) within SINK_MS. */
const SINK_MS = 10_000;
const STALL_MS = 1000;
/** Far above what kernel buffers along the path hold (a few MiB each side): more means a buffer grew somewhere. */
const SINK_MAX_BYTES = 64 * 1024 * 1024;

function peersRound(ctx) {
  const group = uniqueGroup('slow');
  const specs = [];
  const add = (kind, target, plan) => specs.push(makeSpec(ctx.seed, `${group}-${kind}-${specs.length}`, target, plan));
  for (const t of [TARGETS.v4, TARGETS.v4pp]) {
    add('writer', t, PLANS.slowWriter());
    add('reader', t, PLANS.slowReader());
    add('halfopen', t, PLANS.halfOpen());
  }
  return runGroup(ctx, group, specs, { timeoutMs: 60_000 });
}

/**
 * The never-reading backend: clients write as fast as they can until, for STALL_MS, none of them
 * gets another byte into the kernel (at most SINK_MS). Returns what each got in, whether they
 * stalled, and the daemon's RSS meanwhile.
 */
async function sinkRound(ctx) {
  const group = uniqueGroup('sink');
  const plan = { up: { chunk: 65536, intervalMs: 0, total: 2 ** 40 }, down: { chunk: 1, intervalMs: 1000, total: null, afterEof: 0 } };
  const specs = Array.from({ length: SINK_CONNECTIONS }, (_, i) => makeSpec(ctx.seed, `${group}-${i}`, { host: LAB.backend, port: PORTS.sink, pp: false }, plan));
  const before = ctx.daemons.sample(ctx.main);
  await ctx.client.request('open', { group, specs }, 30_000);
  let peakRssKiB = before.rssKiB;
  const t0 = Date.now();
  let end = [];
  let total = -1;
  let still = Date.now();
  let stalledMs = null;
  while (Date.now() - t0 < SINK_MS) {
    await sleep(250);
    peakRssKiB = Math.max(peakRssKiB, ctx.daemons.sample(ctx.main).rssKiB);
    end = (await ctx.client.request('progress', { group })).inKernel;
    const now = end.reduce((a, b) => a + b, 0);
    if (now !== total) {
      total = now;
      still = Date.now();
    } else if (Date.now() - still >= STALL_MS) {
      stalledMs = still - t0;
      break;
    }
  }
  await ctx.client.request('cut', { group }, 15_000);
  await ctx.server.request('sinks-close');
  return { before, peakRssKiB, end, stalledMs };
}

/** @param {import('./common.mjs').SoakContext} ctx */
export async function run(ctx, result) {
  const peers = { connections: 0, whole: 0, bytesVerified: 0, problems: [] };
  const sink = { rounds: 0, maxBytes: 0, totalBytes: 0, notStalled: 0, slowestStallMs: 0, maxGrowthKiB: 0 };
  let rounds = 0;
  do {
    const [p, s] = await Promise.all([peersRound(ctx), sinkRound(ctx)]);
    peers.connections += p.result.connections;
    peers.whole += p.result.whole;
    peers.bytesVerified += p.result.bytesVerified;
    for (const problem of p.result.problems) peers.problems.push(problem);
    sink.rounds++;
    sink.maxBytes = s.end.reduce((a, b) => Math.max(a, b), sink.maxBytes);
    sink.totalBytes += s.end.reduce((a, b) => a + b, 0);
    if (s.stalledMs === null) sink.notStalled++;
    else sink.slowestStallMs = Math.max(sink.slowestStallMs, s.stalledMs);
    sink.maxGrowthKiB = Math.max(sink.maxGrowthKiB, s.peakRssKiB - s.before.rssKiB);
    rounds++;
  } while (Date.now() < ctx.loadEndsAt && !ctx.stopping() && ctx.daemons.alive(ctx.main));

  const kinds = ['writer', 'reader', 'halfopen'];
  const labels = {
    writer: 'slow writers (7 bytes every 50 ms up, 5 every 70 ms down): every byte arrived',
    reader: 'slow readers (2 MiB down, 64 KiB at a time with 100 ms pauses): every byte arrived',
    halfopen: 'half-open peers (client ends its side, backend sends 1 MiB more): every byte arrived',
  };
  for (const k of kinds) {
    const mine = peers.problems.filter((p) => p.id.includes(`-${k}-`));
    const n = (peers.connections / kinds.length) | 0;
    result.check(labels[k], mine.length === 0, `${n - mine.length} of ${n} whole over ${rounds} rounds${mine.length ? `; ${describeProblems(mine)}` : ''}`);
  }
  result.check(
    `backend that never reads: every client held back (stopped within ${SINK_MS / 1000} s, at most ${formatBytes(SINK_MAX_BYTES)} taken)`,
    sink.maxBytes <= SINK_MAX_BYTES && sink.notStalled === 0,
    `${SINK_CONNECTIONS} connections × ${sink.rounds} rounds writing as fast as they could: ` +
      `${sink.notStalled ? `${sink.notStalled} rounds still moving after ${SINK_MS} ms` : `all stopped (the slowest round after ${sink.slowestStallMs} ms)`}, at most ${formatBytes(sink.maxBytes)} each in the kernel`,
  );
  result.check(
    `backend that never reads: daemon memory bounded (RSS grew at most ${ctx.opts.rssMarginMiB} MiB)`,
    sink.maxGrowthKiB <= ctx.opts.rssMarginMiB * 1024,
    `RSS grew at most ${mib(Math.max(0, sink.maxGrowthKiB))} MiB while ${formatBytes(sink.totalBytes / sink.rounds)} per round were held`,
  );
  result.figure('rounds', rounds);
  result.figure('connections', peers.connections);
  result.figure('bytesVerified', peers.bytesVerified);
  result.figure('sink', sink);
  result.figure('faults', { injected: peers.connections + sink.rounds * SINK_CONNECTIONS, handled: peers.whole + (sink.rounds - sink.notStalled) * SINK_CONNECTIONS });
}
