// Backends that fail, beside the load, in rounds until it ends: nothing listening (refused),
// SYNs dropped (blackholed: the connect times out), a reset right after accept, and a listener
// that goes up and down while clients keep connecting. Every client must see its connection
// reset promptly (the blackholed one after the configured connect timeout), a flapping one
// either whole or reset, and the daemon must live through all of it.
import { CONNECT_TIMEOUT_MS, LAB, PORTS } from '../plan.mjs';
import { PLANS } from '../wire.mjs';
import { makeSpec } from '../specs.mjs';
import { outcomeOf, reconcile } from '../reconcile.mjs';
import { runGroup, takeServerRecords, uniqueGroup } from './common.mjs';

const FLAP = { upMs: 300, downMs: 300, durationMs: 3000, perSecond: 12 };

/** Tallies of one fault kind across rounds. */
function tally() {
  return { injected: 0, asExpected: 0, outcomes: {}, slowestMs: 0, bad: [] };
}

function count(t, rec, ok, why) {
  t.injected++;
  const o = outcomeOf(rec);
  t.outcomes[o] = (t.outcomes[o] ?? 0) + 1;
  t.slowestMs = Math.max(t.slowestMs, rec.ms);
  if (ok) t.asExpected++;
  else if (t.bad.length < 5) t.bad.push(`${rec.id}: ${why}`);
}

/** Probes that must end in a reset within [minMs, maxMs]. */
async function resetProbes(ctx, name, port, n, t, minMs, maxMs) {
  const group = uniqueGroup(`fault-${name}`);
  const specs = Array.from({ length: n }, (_, i) =>
    makeSpec(ctx.seed, `${group}-${i}`, { host: i % 2 ? LAB.backend6 : LAB.backend, port, pp: false }, PLANS.short(0), { connectTimeoutMs: 5000 }),
  );
  const { clients } = await runGroup(ctx, group, specs, { timeoutMs: maxMs + 10_000, backend: false });
  for (const c of clients) {
    const o = outcomeOf(c);
    const ok = o === 'reset' && c.ms >= minMs && c.ms <= maxMs;
    count(t, c, ok, `${o} after ${c.ms} ms (want a reset within ${minMs}..${maxMs} ms)`);
  }
}

async function flapRound(ctx, t) {
  const group = uniqueGroup('fault-flap');
  const flapping = ctx.server.request('flap', { port: PORTS.flap, upMs: FLAP.upMs, downMs: FLAP.downMs, durationMs: FLAP.durationMs }, FLAP.durationMs + 10_000);
  const n = Math.round((FLAP.durationMs / 1000) * FLAP.perSecond);
  const opened = [];
  for (let i = 0; i < n; i++) {
    const spec = makeSpec(ctx.seed, `${group}-${i}`, { host: LAB.backend, port: PORTS.flap, pp: false }, PLANS.short(0), { connectTimeoutMs: 5000 });
    opened.push(ctx.client.request('open', { group, specs: [spec] }, 20_000));
    await new Promise((r) => setTimeout(r, 1000 / FLAP.perSecond));
  }
  await Promise.all(opened);
  await flapping;
  const { records: clients } = await ctx.client.request('wait', { group, timeoutMs: 15_000 }, 30_000);
  const { records: servers } = await takeServerRecords(ctx, group, clients);
  const byId = new Map(servers.map((s) => [s.id, s]));
  for (const c of clients) {
    const whole = reconcile([c], byId.has(c.id) ? [byId.get(c.id)] : []).whole === 1;
    const o = outcomeOf(c);
    const ok = whole || (o === 'reset' && c.ms <= ctx.opts.promptMs);
    count(t, c, ok, whole ? '' : `${o} after ${c.ms} ms, not whole (want whole, or a reset within ${ctx.opts.promptMs} ms)`);
  }
}

/** @param {import('./common.mjs').SoakContext} ctx */
export async function run(ctx, result) {
  const prompt = ctx.opts.promptMs;
  const kinds = { refused: tally(), blackholed: tally(), reset: tally(), flapping: tally() };
  let rounds = 0;
  await ctx.lab.blackhole();
  try {
    do {
      await Promise.all([
        resetProbes(ctx, 'refused', PORTS.refused, 4, kinds.refused, 0, prompt),
        resetProbes(ctx, 'blackholed', PORTS.blackhole, 2, kinds.blackholed, CONNECT_TIMEOUT_MS - 100, CONNECT_TIMEOUT_MS + prompt),
        resetProbes(ctx, 'reset', PORTS.reset, 4, kinds.reset, 0, prompt),
        flapRound(ctx, kinds.flapping),
      ]);
      rounds++;
    } while (Date.now() < ctx.loadEndsAt && !ctx.stopping() && ctx.daemons.alive(ctx.main));
  } finally {
    await ctx.lab.unblackhole();
  }
  const describe = (t) => `${t.asExpected} of ${t.injected} as expected; outcomes ${JSON.stringify(t.outcomes)}, slowest ${t.slowestMs} ms${t.bad.length ? `; ${t.bad.join('; ')}` : ''}`;
  result.check(`refused backend (nothing listening): every client reset within ${prompt} ms`, kinds.refused.asExpected === kinds.refused.injected, describe(kinds.refused));
  result.check(
    `blackholed backend (SYNs dropped): every client reset after the ${CONNECT_TIMEOUT_MS} ms connect timeout, within ${prompt} ms of it`,
    kinds.blackholed.asExpected === kinds.blackholed.injected,
    describe(kinds.blackholed),
  );
  result.check(`backend that resets after accept: every client reset within ${prompt} ms`, kinds.reset.asExpected === kinds.reset.injected, describe(kinds.reset));
  result.check(
    `flapping backend (listener up ${FLAP.upMs} ms / down ${FLAP.downMs} ms): every connection whole or reset within ${prompt} ms`,
    kinds.flapping.asExpected === kinds.flapping.injected && (kinds.flapping.outcomes.completed ?? 0) > 0,
    describe(kinds.flapping),
  );
  result.check('the daemon survived every backend fault', ctx.daemons.alive(ctx.main), `${rounds} rounds`);
  const injected = Object.values(kinds).reduce((n, t) => n + t.injected, 0);
  const survived = Object.values(kinds).reduce((n, t) => n + t.asExpected, 0);
  result.figure('rounds', rounds);
  result.figure('faults', { injected, handled: survived, kinds: Object.fromEntries(Object.entries(kinds).map(([k, t]) => [k, { injected: t.injected, asExpected: t.asExpected, outcomes: t.outcomes, slowestMs: t.slowestMs }])) });
}
