// Hostile guest agents (hostile-agent.mjs) behind registered instances whose policy the daemon
// must learn: one drips its body, one streams 64 MiB, one answers non-JSON, one non-HTTP, one
// never answers, one drips its headers. Each fetch must fail within the configured limits (2 s
// a try, 3 tries), learn nothing, close its connections, and cost bounded memory, while the
// data path and the admin socket keep answering.
import { createHash } from 'node:crypto';
import { sleep } from '../../bench/procs.mjs';
import { HOSTILE_AGENTS } from '../plan.mjs';
import { mib } from '../figures.mjs';
import { poll, probePaths, register } from './common.mjs';

const ATTEMPTS = 3; // registry.fetch.max_retries = 2 in the soak's config
const SETTLE_MS = 25_000;

const idOf = (behaviour) => `hostile-${behaviour}`;

/** `instances show ID --json` → the fetch state, or null when the admin did not answer. */
async function fetchState(ctx, id) {
  const r = await ctx.daemons.instances(ctx.main, ['show', id, '--json'], { timeoutMs: 10_000 });
  if (r.code !== 0) return null;
  try {
    const fetch = JSON.parse(r.stdout).fetch;
    return fetch ? { state: fetch.state, attempts: fetch.attempts, error: fetch.last_error?.code ?? null } : { state: 'none', attempts: 0, error: null };
  } catch {
    return null;
  }
}

/**
 * @param {import('./common.mjs').SoakContext} ctx
 * @param {{ registered: () => void }} signals registered() once the instances are in (the admin
 *   flood may start then: it blocks the CLI for a while)
 */
export async function run(ctx, result, signals) {
  const rssBefore = ctx.daemons.sample(ctx.main).rssKiB;
  const refused = [];
  for (const a of HOSTILE_AGENTS) {
    const hash = createHash('sha256').update(`soak hostile ${a.behaviour}`).digest('hex');
    const r = await register(ctx, ctx.main, idOf(a.behaviour), ['--app', 'soak-hostile', '--ip', a.ip, '--compose-hash', hash]);
    if (r.code !== 0) refused.push(`${a.behaviour}: exit ${r.code} ${r.stderr.trim().slice(0, 200)}`);
  }
  signals.registered();
  if (!result.check('hostile instances registered (their policies to be learned from the agents)', refused.length === 0, refused.join('; ') || `${HOSTILE_AGENTS.length} registered`)) return;

  // While the fetches run: the data path and the RSS, sampled.
  let peakRssKiB = rssBefore;
  let probes = 0;
  const probeProblems = [];
  let done = false;
  const watcher = (async () => {
    while (!done) {
      peakRssKiB = Math.max(peakRssKiB, ctx.daemons.sample(ctx.main).rssKiB);
      const p = await probePaths(ctx, 'agent');
      probes++;
      if (!p.ok) probeProblems.push(p.detail);
      await sleep(500);
    }
  })();

  const t0 = Date.now();
  const states = new Map();
  const settled = await poll(async () => {
    for (const a of HOSTILE_AGENTS) {
      const s = await fetchState(ctx, idOf(a.behaviour));
      if (s) states.set(a.behaviour, s);
    }
    return HOSTILE_AGENTS.every((a) => ['failed', 'learned'].includes(states.get(a.behaviour)?.state));
  }, SETTLE_MS, 1000);
  const settleMs = Date.now() - t0;
  // Give the fetcher a moment to close what it opened, then ask the agents.
  await sleep(1500);
  done = true;
  await watcher;
  const { stats } = await ctx.agents.request('stats');

  const learned = HOSTILE_AGENTS.filter((a) => states.get(a.behaviour)?.state === 'learned').map((a) => a.behaviour);
  const stateText = HOSTILE_AGENTS.map((a) => {
    const s = states.get(a.behaviour);
    return `${a.behaviour}: ${s ? `${s.state}${s.error ? ` (${s.error})` : ''}` : 'no answer'}`;
  }).join(', ');
  result.check('no hostile answer was learned: every fetch failed', settled !== null && learned.length === 0, `${stateText}${settled === null ? `; not all settled within ${SETTLE_MS} ms` : `; settled in ${settleMs} ms`}`);
  const overTried = HOSTILE_AGENTS.filter((a) => (stats[a.behaviour]?.connections ?? 0) > ATTEMPTS);
  result.check(
    `the fetcher gave up within its limits (at most ${ATTEMPTS} requests to each agent)`,
    overTried.length === 0 && settled !== null,
    HOSTILE_AGENTS.map((a) => `${a.behaviour} ${stats[a.behaviour]?.connections ?? 0}`).join(', '),
  );
  const stillOpen = HOSTILE_AGENTS.filter((a) => (stats[a.behaviour]?.open ?? 0) > 0);
  result.check(
    'the fetcher closed every connection it opened to the agents',
    stillOpen.length === 0,
    stillOpen.length ? `still open: ${stillOpen.map((a) => `${a.behaviour} ${stats[a.behaviour].open}`).join(', ')}` : 'none left open',
  );
  result.check(
    'the data path kept working while the agents misbehaved',
    probes > 0 && probeProblems.length === 0 && ctx.daemons.alive(ctx.main),
    `${probes} probe rounds of the four paths${probeProblems.length ? `; ${probeProblems.slice(0, 3).join('; ')}` : ', all whole'}`,
  );
  result.check(
    `daemon memory bounded while a 64 MiB answer streamed (RSS grew at most ${ctx.opts.rssMarginMiB} MiB)`,
    peakRssKiB - rssBefore <= ctx.opts.rssMarginMiB * 1024,
    `RSS ${mib(rssBefore)} → peak ${mib(peakRssKiB)} MiB; the huge agent sent ${mib((stats.huge?.bytesSent ?? 0) / 1024)} MiB`,
  );
  result.figure('faults', { injected: HOSTILE_AGENTS.length, handled: HOSTILE_AGENTS.length - learned.length - overTried.length });
  result.figure('agentStats', stats);
  result.figure('settleMs', settleMs);
}
