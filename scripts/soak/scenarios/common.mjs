// Steps several scenarios share: running a group of connections to their end and matching both
// ends' records, probing the four paths, watching the daemon's descriptors.
import { sleep } from '../../bench/procs.mjs';
import { PLANS } from '../wire.mjs';
import { makeSpec, TARGETS } from '../specs.mjs';
import { reconcile } from '../reconcile.mjs';

/**
 * The soak context every scenario gets.
 * @typedef {{ opts: object, seed: string, log: (s: string) => void, lab: object, daemons: object,
 *   main: object, client: { request: Function }, server: { request: Function }, agents: { request: Function },
 *   tracker: object, root: string, cli: string, dir: string, acked: Set<string>, loadEndsAt: number,
 *   stopping: () => boolean }} SoakContext
 */

let groupSeq = 0;

/** A group name unique in the run (the backend's records are taken by this prefix). */
export function uniqueGroup(name) {
  return `${name}.${++groupSeq}`;
}

/**
 * Hands over the backend's records of a group, and the strays it saw meanwhile. The backend
 * may see a connection close a moment after the client did: with `clients` (the client's
 * records), it waits up to 3 s for a record of each connection that reached it.
 */
export async function takeServerRecords(ctx, group, clients = null) {
  const records = [];
  const strays = [];
  const want = clients ? new Set(clients.filter((c) => c.connected).map((c) => c.id)) : new Set();
  const until = Date.now() + 3000;
  for (;;) {
    const r = await ctx.server.request('take', { prefix: `${group}-` }, 30_000);
    // Loops, not push(...list): a ramp hands over tens of thousands at once.
    for (const s of r.records) {
      records.push(s);
      want.delete(s.id);
    }
    for (const s of r.strays) strays.push(s);
    if (want.size === 0 || Date.now() > until) return { records, strays };
    await sleep(100);
  }
}

/**
 * Runs the specs to their end (client side), then matches both ends (`backend: false`: for
 * connections meant never to reach a verifying backend, the client's side only).
 * @returns {Promise<{ clients: object[], servers: object[], strays: object[], result: ReturnType<typeof reconcile> }>}
 */
export async function runGroup(ctx, group, specs, { timeoutMs = 30_000, concurrency = 128, backend = true } = {}) {
  const r = await ctx.client.request('run', { group, specs, concurrency, timeoutMs }, timeoutMs + 30_000);
  const { records: servers, strays } = backend ? await takeServerRecords(ctx, group, r.records) : { records: [], strays: [] };
  return { clients: r.records, servers, strays, result: reconcile(r.records, servers) };
}

/** One short exchange on each of the four paths: { ok, detail }. */
export async function probePaths(ctx, label) {
  const group = uniqueGroup(`probe-${label}`);
  const specs = Object.entries(TARGETS).map(([name, t]) => makeSpec(ctx.seed, `${group}-${name}`, t, PLANS.short(0), { connectTimeoutMs: 5000 }));
  const { result } = await runGroup(ctx, group, specs, { timeoutMs: 15_000 });
  return {
    ok: result.whole === specs.length,
    detail: result.problems.length ? result.problems.map((p) => `${p.id}: ${p.problem}`).join('; ') : `${result.whole} of ${specs.length} paths whole`,
  };
}

/** The daemon's descriptor count every intervalMs for ms. */
export async function watchFds(ctx, daemon, ms, intervalMs = 100) {
  const series = [];
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (!ctx.daemons.alive(daemon)) break;
    series.push(ctx.daemons.sample(daemon).fds);
    await sleep(intervalMs);
  }
  return series;
}

/** Waits (up to timeoutMs) until the daemon holds at most `fds` descriptors; returns the last sample. */
export async function settleFds(ctx, daemon, fds, timeoutMs = 15_000) {
  const until = Date.now() + timeoutMs;
  let s = ctx.daemons.sample(daemon);
  while (s.fds > fds && Date.now() < until && ctx.daemons.alive(daemon)) {
    await sleep(200);
    s = ctx.daemons.sample(daemon);
  }
  return s;
}

/** A sample of the daemon once its descriptor count has held still for stableMs (at most timeoutMs). */
export async function quiesce(ctx, daemon, { stableMs = 1000, timeoutMs = 10_000 } = {}) {
  let last = ctx.daemons.sample(daemon);
  let since = Date.now();
  const until = Date.now() + timeoutMs;
  while (Date.now() < until && Date.now() - since < stableMs) {
    await sleep(200);
    const s = ctx.daemons.sample(daemon);
    if (s.fds !== last.fds) since = Date.now();
    last = s;
  }
  return last;
}

/** Polls check() every intervalMs until it returns a truthy value or timeoutMs passes (then null). */
export async function poll(check, timeoutMs, intervalMs = 500) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() >= until) return null;
    await sleep(intervalMs);
  }
}

/** `instances add` through the CLI; records acknowledged registrations in ctx.acked. */
export async function register(ctx, daemon, id, args) {
  const r = await ctx.daemons.instances(daemon, ['add', id, ...args]);
  if (r.code === 0) ctx.acked.add(id);
  return r;
}

/** `instances list --json` → the set of instance ids, or null when it did not answer. */
export async function listInstances(ctx, daemon, timeoutMs = 20_000) {
  const r = await ctx.daemons.instances(daemon, ['list', '--json'], { timeoutMs });
  if (r.code !== 0) return null;
  try {
    return new Set(JSON.parse(r.stdout).instances.map((i) => i.instance_id));
  } catch {
    return null;
  }
}
