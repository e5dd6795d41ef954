// The connection cap. The daemon is restarted with listen.max_connections = --cap (a daemon that
// does not know the key fails this scenario's first check, and the ramp then runs without a cap).
// Holding cap + extra connections: the cap must hold, every connection past it must be reset at
// once (never left in the accept queue), the held ones must stay whole. Then new connections at
// rising rates, each held a while: the rate at which shedding (or, without a cap, failure)
// starts, and whether every failure was a prompt reset.
import { sleep } from '../../bench/procs.mjs';
import { rampHoldMs, rampRates, rampStepMs, TABLE, ROUTE_TABLE } from '../plan.mjs';
import { PLANS } from '../wire.mjs';
import { loadTarget, makeSpec, TARGETS } from '../specs.mjs';
import { outcomeOf, reconcile } from '../reconcile.mjs';
import { analyzeRamp, returnedToBaseline } from '../figures.mjs';
import { nothingLeft } from '../gateway-state.mjs';
import { quiesce, settleFds, takeServerRecords, uniqueGroup } from './common.mjs';

async function holdPastCap(ctx, result, daemon, cap) {
  const extra = Math.max(10, Math.round(cap / 10));
  const total = cap + extra;
  const group = uniqueGroup('cap');
  const plan = { up: { chunk: 1024, intervalMs: 500, total: null }, down: { chunk: 1024, intervalMs: 500, total: null, afterEof: 1024 } };
  const specs = Array.from({ length: total }, (_, i) => makeSpec(ctx.seed, `${group}-${i}`, loadTarget(i), plan, { connectTimeoutMs: 5000 }));
  const base = ctx.daemons.sample(daemon);
  await ctx.client.request('open', { group, specs, concurrency: 64 }, 120_000);
  // The over-capacity ones must be gone at once; the rest talk for a while.
  await sleep(Math.max(2000, ctx.opts.promptMs + 500));
  const peak = ctx.daemons.sample(daemon);
  const { records: clients } = await ctx.client.request('finish', { group, timeoutMs: 30_000 }, 60_000);
  const { records: servers } = await takeServerRecords(ctx, group, clients);
  const byId = new Map(servers.map((s) => [s.id, s]));
  let whole = 0;
  let shed = 0;
  let other = 0;
  const problems = [];
  for (const c of clients) {
    const s = byId.get(c.id);
    if (reconcile([c], s ? [s] : []).whole === 1) whole++;
    else if (outcomeOf(c) === 'reset' && c.ms <= ctx.opts.promptMs && c.downVerified === 0) shed++;
    else if (++other <= 5) problems.push(`${c.id}: ${outcomeOf(c)} after ${c.ms} ms, ${c.downVerified} bytes received`);
  }
  result.check(
    `${total} connections against max_connections = ${cap}: at most ${cap} held (all whole), every one past it reset within ${ctx.opts.promptMs} ms`,
    whole <= cap && whole >= Math.floor(cap * 0.9) && shed >= 1 && other === 0,
    `${whole} whole, ${shed} reset at once, ${other} neither${problems.length ? ` (${problems.join('; ')})` : ''}; daemon descriptors ${base.fds} → ${peak.fds}`,
  );
  result.figure('hold', { cap, total, whole, shed, other, fdsBefore: base.fds, fdsPeak: peak.fds });
}

/** cap: the daemon's cap, or null when it has none (the hold time still follows --cap). */
async function ramp(ctx, result, daemon, cap) {
  const holdMs = rampHoldMs(ctx.opts.cap, ctx.opts.rampMax);
  const stepMs = rampStepMs(ctx.opts.durationMs);
  const rates = rampRates(ctx.opts.rampMax);
  const group = uniqueGroup('ramp');
  const r = await ctx.client.request(
    'ramp',
    { group, host: TARGETS.v4.host, port: TARGETS.v4.port, pp: false, rates, stepMs, spec: { ...PLANS.short(holdMs), connectTimeoutMs: 5000 }, runSeed: ctx.seed, extraSteps: 1, settleMs: holdMs + 20_000 },
    rates.length * (stepMs + holdMs + 40_000),
  );
  await sleep(500);
  const atBackend = await ctx.server.request('summarize', { prefix: `${group}-` }, 60_000);
  const corrupt = atBackend.wrongCount;
  const a = analyzeRamp(r.steps, ctx.opts.promptMs);
  const stepText = a.steps.map((s) => `${s.rate}/s: ${s.attempted - s.failed}/${s.attempted} completed${s.failed ? ` ${JSON.stringify(s.counts)}` : ''}`).join('; ');
  const onset = cap !== null ? a.resetStartRate ?? a.failureStartRate : a.failureStartRate;
  result.figure('ramp', { holdMs, stepMs, cap, ...a });
  result.figure(cap !== null ? 'sheddingStartsAt' : 'failuresStartAt', onset);
  result.check(
    `under a rising connection rate (each held ${holdMs} ms) every connection completed or was reset within ${ctx.opts.promptMs} ms, none corrupted`,
    a.unclean.length === 0 && corrupt === 0,
    `${onset === null ? `no failure up to ${a.maxRateTried}/s` : `${cap !== null ? 'shedding' : 'failures'} from ${onset}/s`}` +
      `${a.clientLimitRate !== null ? ` (at ${a.clientLimitRate}/s the client ran out of its own descriptors or ports: that step is left out)` : ''}` +
      `${a.unclean.length ? `; not prompt resets: ${a.unclean.map((u) => `${u.count} ${u.outcome} at ${u.rate}/s`).join(', ')}` : ''}` +
      `${corrupt ? `; ${corrupt} corrupted at the backend: ${atBackend.wrong.join(', ')}` : ''}; ${stepText}`,
  );
}

/** @param {import('./common.mjs').SoakContext} ctx */
export async function run(ctx, result) {
  const cap = ctx.opts.cap;
  // The main daemon stops cleanly first: everything it installed must go.
  const stop = await ctx.daemons.stop(ctx.main);
  const left = nothingLeft(await ctx.daemons.gatewayState(), { table: TABLE, routeTable: ROUTE_TABLE });
  result.check('a clean stop (SIGTERM) exits 0 and removes every rule it installed', stop.code === 0 && left.length === 0, `exit ${stop.code ?? stop.signal} after ${stop.ms} ms${left.length ? `; left: ${left.join(', ')}` : ''}`);

  const capped = await ctx.daemons.tryStart('main (max_connections)', ctx.daemons.writeConfig('capped', { name: 'main', maxConnections: cap }));
  let daemon;
  let effectiveCap = cap;
  if (capped.started) {
    daemon = capped.daemon;
    result.check(`listen.max_connections = ${cap} accepted`, true, 'the daemon started with the cap');
  } else {
    const lines = capped.output.trim().split('\n');
    result.missing(`listen.max_connections = ${cap} accepted`, 'listen.max_connections', `the daemon refused the key: exit ${capped.code}: ${lines[lines.length - 1]?.slice(0, 300)}`);
    daemon = await ctx.daemons.start('main (no cap)', { file: ctx.main.configFile, socketPath: ctx.main.socketPath });
    effectiveCap = null;
  }
  ctx.main = daemon;
  const before = await quiesce(ctx, daemon);
  if (effectiveCap !== null) await holdPastCap(ctx, result, daemon, effectiveCap);
  else result.missing(`connections past the cap are reset at once, the held ones stay whole`, 'listen.max_connections', 'no cap to hold against');
  await ramp(ctx, result, daemon, effectiveCap);
  const after = await settleFds(ctx, daemon, before.fds + ctx.opts.fdMargin);
  const back = returnedToBaseline(before, after, ctx.opts);
  result.check('after the cap and the ramp the daemon is back to its baseline', back.ok && ctx.daemons.alive(daemon), back.detail);
}
