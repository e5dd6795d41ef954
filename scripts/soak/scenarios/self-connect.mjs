// Connections aimed at the daemon itself. A transparent listener accepts connections to any
// address; relayed to "the original destination", a connection made straight to the listener,
// or to an intercepted address of the gateway, comes back to the listener: an open relay at best,
// a loop that nests connections until the descriptors run out at worst. Each must be refused at
// once (a reset), with no growth of the daemon's descriptors. Also: a wildcard listen address
// must be refused unless the config says so, and with it, a client connecting straight to the
// gateway must be refused too.
import { CONNECT_TIMEOUT_MS, LAB, LISTEN_PORT, PORTS, WILDCARD_PORT } from '../plan.mjs';
import { PLANS } from '../wire.mjs';
import { makeSpec } from '../specs.mjs';
import { outcomeOf } from '../reconcile.mjs';
import { linkAgent } from '../agent-link.mjs';
import { runCommand } from '../../bench/procs.mjs';
import path from 'node:path';
import { poll, register, uniqueGroup, watchFds } from './common.mjs';

const WATCH_MS = 2000;
/** Descriptor growth that is a loop, not noise (a loop nests thousands within seconds). */
const LOOP_GROWTH = 50;
const WILD = { table: 'tpi_soak_wild', mark: 0x2, routeTable: 102 };
const GUARD = 'a destination guard (issue 10, item 1)';

/**
 * One connection from `agent` to host:port; the daemon's descriptors watched meanwhile.
 * Returns { outcome, ms, growth, ok, text }.
 */
async function aimAt(ctx, agent, daemon, label, host, port) {
  const group = uniqueGroup(`self-${label}`);
  const spec = makeSpec(ctx.seed, `${group}-0`, { host, port, pp: false }, PLANS.short(0), { connectTimeoutMs: 5000 });
  const before = ctx.daemons.sample(daemon).fds;
  const [r, series] = await Promise.all([
    agent.request('run', { group, specs: [spec], timeoutMs: CONNECT_TIMEOUT_MS + 8000 }, 30_000),
    watchFds(ctx, daemon, WATCH_MS),
  ]);
  await ctx.server.request('take', { prefix: `${group}-` });
  const rec = r.records[0];
  const outcome = outcomeOf(rec);
  const growth = Math.max(0, series.reduce((a, b) => Math.max(a, b), before) - before);
  const alive = ctx.daemons.alive(daemon);
  const ok = outcome === 'reset' && rec.ms <= ctx.opts.promptMs && growth < LOOP_GROWTH && alive;
  const text = `${outcome} after ${rec.ms} ms, daemon descriptors +${growth} within ${WATCH_MS} ms${alive ? '' : ', the daemon died'}`;
  return { outcome, ms: rec.ms, growth, ok, looped: growth >= LOOP_GROWTH || !alive, text };
}

/** Kills a daemon that looped and starts it again; the checks that follow need it sane. */
async function recover(ctx, why) {
  ctx.log(`  self-connect: ${why}: kill -9 and restart`);
  await ctx.daemons.kill9(ctx.main);
  ctx.main = await ctx.daemons.start('main (after a loop)', { file: ctx.main.configFile, socketPath: ctx.main.socketPath });
}

/** Removes what a killed wildcard daemon left in the gateway namespace. */
async function removeWildRules(ctx) {
  const gw = ctx.lab.ns.gateway;
  const run = (argv) => runCommand(gw, argv, { timeoutMs: 10_000, allowFail: true });
  await run(['nft', 'delete', 'table', 'inet', WILD.table]);
  for (const fam of ['-4', '-6']) {
    await run(['ip', fam, 'rule', 'del', 'fwmark', `0x${WILD.mark.toString(16)}/0x${WILD.mark.toString(16)}`, 'lookup', String(WILD.routeTable)]);
    await run(['ip', fam, 'route', 'flush', 'table', String(WILD.routeTable)]);
  }
}

/** @param {import('./common.mjs').SoakContext} ctx */
export async function run(ctx, result) {
  // A client on the gateway itself, for the listener's own addresses.
  const proc = ctx.tracker.start('gateway client', ctx.lab.ns.gateway, ['node', path.join(ctx.root, 'scripts', 'soak', 'traffic-client.mjs')], { stdin: 'pipe' });
  await proc.waitFor(/^ready$/m, 15_000);
  const local = linkAgent(proc);
  try {
    const aims = [
      ['listener4', `the listener itself (127.0.0.1:${LISTEN_PORT}, from the gateway)`, local, '127.0.0.1', LISTEN_PORT],
      ['listener6', `the listener itself ([::1]:${LISTEN_PORT}, from the gateway)`, local, '::1', LISTEN_PORT],
      ['gateway4', `the gateway's own address in a target (${LAB.gatewayBackendSide}:${PORTS.verify})`, ctx.client, LAB.gatewayBackendSide, PORTS.verify],
      ['gateway6', `the gateway's own IPv6 address in a target ([${LAB.gatewayBackendSide6}]:${PORTS.verify})`, ctx.client, LAB.gatewayBackendSide6, PORTS.verify],
    ];
    for (const [slug, label, agent, host, port] of aims) {
      const a = await aimAt(ctx, agent, ctx.main, slug, host, port);
      result.check(`a connection to ${label} is reset at once, no loop`, a.ok, a.text, a.ok ? null : GUARD);
      if (a.looped) await recover(ctx, `a connection to ${label} looped`);
    }

    // An instance at the gateway's own address with a PROXY port: the daemon would connect to
    // itself from its own address (no spoofing), which the tproxy rule hands straight back.
    const self = await register(ctx, ctx.main, 'soak-self', ['--app', 'soak-self', '--ip', LAB.gatewayBackendSide, '--policy', `${PORTS.verify}:pp`]);
    if (self.code !== 0) {
      result.check("an instance at the gateway's own address cannot be registered (no PROXY loop through it)", true, `refused: ${self.stderr.trim().slice(0, 200)}`);
    } else {
      const a = await aimAt(ctx, ctx.client, ctx.main, 'gateway-instance', LAB.gatewayBackendSide, PORTS.verify);
      result.check(`with an instance registered at the gateway's own address (pp=true), a connection to it is reset at once, no loop`, a.ok, `the registration was accepted; ${a.text}`, a.ok ? null : GUARD);
      if (a.looped) await recover(ctx, 'a connection to an instance at the gateway looped');
      await ctx.daemons.instances(ctx.main, ['remove', 'soak-self']);
      ctx.acked.delete('soak-self');
    }
  } finally {
    await proc.stop(2000);
  }
  await wildcard(ctx, result);
}

async function wildcard(ctx, result) {
  const base = { name: 'wild', listenAddress: '0.0.0.0', listenAddress6: null, port: WILDCARD_PORT, table: WILD.table, mark: WILD.mark, routeTable: WILD.routeTable, targets: [{ cidr: '198.18.2.200/32', ports: '9999' }] };
  let daemon = null;
  const refused = await ctx.daemons.tryStart('wildcard (not allowed)', ctx.daemons.writeConfig('wild-plain', base), { timeoutMs: 20_000 });
  if (refused.started) {
    daemon = refused.daemon;
    result.missing('a wildcard listen address (0.0.0.0) is refused unless the config allows it', 'listen.allow_wildcard', 'the daemon started listening on 0.0.0.0 without a word');
  } else {
    const names = /listen\.address|allow_wildcard|wildcard/.test(refused.output);
    result.check('a wildcard listen address (0.0.0.0) is refused unless the config allows it', refused.code === 2 && names, `exit ${refused.code}: ${lastLine(refused.output)}`);
    const allowed = await ctx.daemons.tryStart('wildcard (allowed)', ctx.daemons.writeConfig('wild-allowed', { ...base, allowWildcard: true }), { timeoutMs: 20_000 });
    if (allowed.started) daemon = allowed.daemon;
    else result.missing('with listen.allow_wildcard = true, a client connecting straight to the gateway is reset, no loop', 'listen.allow_wildcard', `the daemon refused the key: exit ${allowed.code}: ${lastLine(allowed.output)}`);
  }
  if (!daemon) return;
  try {
    const a = await aimAt(ctx, ctx.client, daemon, 'wildcard-direct', LAB.gatewayClientSide, WILDCARD_PORT);
    result.check(`with a wildcard listener, a client connecting straight to the gateway (${LAB.gatewayClientSide}:${WILDCARD_PORT}) is reset at once, no loop`, a.ok, a.text, a.ok ? null : GUARD);
  } finally {
    const stopped = ctx.daemons.alive(daemon) ? await ctx.daemons.stop(daemon, 5000) : null;
    if (!stopped || stopped.signal === 'SIGKILL' || stopped.code !== 0) await removeWildRules(ctx);
    await poll(() => !ctx.daemons.alive(daemon), 5000, 100);
  }
}

function lastLine(text) {
  return text.trim().split('\n').filter(Boolean).pop()?.slice(0, 300) ?? '';
}
