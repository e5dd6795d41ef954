// N concurrent connections through the daemon (pp=false and pp=true, one in ten over IPv6), each
// with traffic both ways for the whole duration, every byte compared on arrival at both ends.
// A warm-up of bulk transfers comes first, so that the baseline is the daemon's steady state
// (pools, heap), not a cold start; then the descriptors and RSS before, at peak, after.
import { sleep } from '../../bench/procs.mjs';
import { PLANS } from '../wire.mjs';
import { loadChunk, loadTarget, makeSpec } from '../specs.mjs';
import { describeProblems, reconcile } from '../reconcile.mjs';
import { formatBytes, mib } from '../figures.mjs';
import { runGroup, takeServerRecords, uniqueGroup } from './common.mjs';

const WARMUP_BYTES = 256 * 1024;

/** Bulk transfers on up to 128 connections at once: whole, and the daemon's steady state after. */
export async function warmUp(ctx, result) {
  const n = Math.min(ctx.opts.connections, 128);
  const group = uniqueGroup('warmup');
  const plan = { up: { chunk: 65536, intervalMs: 0, total: WARMUP_BYTES }, down: { chunk: 65536, intervalMs: 0, total: WARMUP_BYTES, afterEof: 0 } };
  const specs = Array.from({ length: n }, (_, i) => makeSpec(ctx.seed, `${group}-${i}`, loadTarget(i), plan));
  const { result: r, strays } = await runGroup(ctx, group, specs, { timeoutMs: 60_000 });
  result.check(
    `warm-up: ${n} bulk connections (256 KiB each way) whole`,
    r.whole === n && strays.length === 0,
    `${r.whole} of ${n} whole, ${formatBytes(r.bytesVerified)} verified${r.problems.length ? `; ${describeProblems(r.problems)}` : ''}${strays.length ? `; ${strays.length} stray connections at the backend` : ''}`,
  );
  return r.bytesVerified;
}

/** Opens the N load connections; they talk until finish(). */
export async function startLoad(ctx, result) {
  const n = ctx.opts.connections;
  const group = uniqueGroup('load');
  const specs = Array.from({ length: n }, (_, i) => makeSpec(ctx.seed, `${group}-${i}`, loadTarget(i), PLANS.load(loadChunk(ctx.seed, i))));
  const t0 = Date.now();
  const opened = await ctx.client.request('open', { group, specs, concurrency: 128 }, 300_000);
  const openMs = Date.now() - t0;
  result.check(
    `all ${n} load connections opened`,
    opened.opened === n,
    `${opened.opened} of ${n} connected in ${openMs} ms${opened.failed ? `; failures ${JSON.stringify(opened.errors)}` : ''}`,
  );
  result.figure('openMs', openMs);
  return { group, n };
}

/** Ends the load, matches both ends, and records the figures. */
export async function finishLoad(ctx, result, load) {
  const t0 = Date.now();
  const { records: clients } = await ctx.client.request('finish', { group: load.group, timeoutMs: 60_000 + load.n * 20 }, 180_000 + load.n * 20);
  const { records: servers, strays } = await takeServerRecords(ctx, load.group, clients);
  const r = reconcile(clients, servers);
  const v6 = clients.filter((c) => c.host.includes(':')).length;
  const pp = clients.filter((c) => c.pp).length;
  result.check(
    `every byte of the ${load.n} load connections arrived, both ways, held for the whole run`,
    r.whole === load.n && r.bytesLost === 0 && strays.length === 0,
    `${r.whole} of ${load.n} whole (${load.n - pp} pp=false, ${pp} pp=true, ${v6} over IPv6); ${formatBytes(r.bytesVerified)} verified, ${formatBytes(r.bytesLost)} lost` +
      `${r.problems.length ? `; ${describeProblems(r.problems)}` : ''}${strays.length ? `; ${strays.length} connections reached the backend without saying who they were` : ''}`,
  );
  result.figure('held', load.n);
  result.figure('heldPp', pp);
  result.figure('heldV6', v6);
  result.figure('bytesVerified', r.bytesVerified);
  result.figure('bytesLost', r.bytesLost);
  result.figure('finishMs', Date.now() - t0);
  return r;
}

/** Samples the daemon every second until stop() is called; peak() gives the highest readings. */
export function startSampler(ctx, daemon) {
  const samples = [];
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      if (ctx.daemons.alive(daemon)) samples.push(ctx.daemons.sample(daemon));
      await sleep(1000);
    }
  })();
  return {
    samples,
    async stop() {
      stopped = true;
      await loop;
      return samples;
    },
  };
}

export function describeResources(f) {
  return `descriptors ${f.fdsBefore} / ${f.fdsPeak} / ${f.fdsAfter}, RSS ${mib(f.rssBeforeKiB)} / ${mib(f.rssPeakKiB)} / ${mib(f.rssAfterKiB)} MiB (before / peak / after)`;
}
