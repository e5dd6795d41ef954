// kill -9 under load, then a restart. While connections carry traffic and registrations stream
// in through the CLI, the daemon is killed. Then: every cut connection must end (no hang); while
// it is down nothing may reach the backend (fail_closed: the backend's accept counter must not
// move, no client may connect); after the restart the rules must be exactly what they were (one
// table, one set of ip rules), every registration acknowledged before the kill must be there,
// and traffic must flow again on both paths.
import { sleep } from '../../bench/procs.mjs';
import { PORTS, registrationAddress, ROUTE_TABLE, TABLE } from '../plan.mjs';
import { PLANS } from '../wire.mjs';
import { loadTarget, makeSpec, TARGETS } from '../specs.mjs';
import { outcomeCounts } from '../reconcile.mjs';
import { compareGatewayStates } from '../gateway-state.mjs';
import { listInstances, probePaths, register, uniqueGroup } from './common.mjs';

const REGISTRARS = 3;
const DOWN_PROBES = 12;

/** Registers instances until stop() (CLI, REGISTRARS at once); counts what was acknowledged. */
function startRegistrations(ctx, daemon, firstIndex) {
  let stopped = false;
  let next = firstIndex;
  const acked = [];
  const failed = [];
  const worker = async () => {
    while (!stopped) {
      const i = next++;
      const id = `soak-reg-${i}`;
      const r = await register(ctx, daemon, id, ['--app', 'soak-crash', '--ip', registrationAddress(i), '--policy', `${PORTS.verify}`]);
      (r.code === 0 ? acked : failed).push(id);
    }
  };
  const running = Promise.all(Array.from({ length: REGISTRARS }, worker));
  return {
    acked,
    failed,
    next: () => next,
    async stop() {
      stopped = true;
      await running;
    },
  };
}

/** The backend's accepted-connection count on the ports the down-window probes aim at. */
async function acceptedOnVerifyPorts(ctx) {
  const { accepted } = await ctx.server.request('stats');
  return (accepted[PORTS.verify] ?? 0) + (accepted[PORTS.verifyPp] ?? 0);
}

/** @param {import('./common.mjs').SoakContext} ctx */
export async function run(ctx, result) {
  const state0 = await ctx.daemons.gatewayState();
  const n = Math.min(ctx.opts.connections, 200);
  const group = uniqueGroup('crash');
  const plan = { up: { chunk: 4096, intervalMs: 100, total: null }, down: { chunk: 4096, intervalMs: 100, total: null, afterEof: 0 } };
  const specs = Array.from({ length: n }, (_, i) => makeSpec(ctx.seed, `${group}-${i}`, loadTarget(i), plan));
  const opened = await ctx.client.request('open', { group, specs, concurrency: 128 }, 120_000);
  const regs = startRegistrations(ctx, ctx.main, ctx.registrationIndex);
  const underLoadMs = Math.round(Math.min(15_000, Math.max(3000, ctx.opts.durationMs / 10)));
  await sleep(underLoadMs);

  // The kill, with connections carrying bytes and registrations in flight.
  const ackedBeforeKill = new Set(ctx.acked);
  await ctx.daemons.kill9(ctx.main);
  const killedAt = Date.now();
  await regs.stop();
  ctx.registrationIndex = regs.next();
  // Every acknowledged registration counts, also one whose answer was read after the kill:
  // it was durable before the daemon answered.
  const acked = new Set([...ackedBeforeKill, ...regs.acked]);

  const { records: cut } = await ctx.client.request('wait', { group, timeoutMs: 10_000 }, 30_000);
  await ctx.server.request('take', { prefix: `${group}-` });
  const hung = cut.filter((c) => c.error === 'hung').length;
  result.check(
    `every connection cut by kill -9 ended within 10 s (no hang)`,
    hung === 0 && opened.opened === n,
    `${n} connections carrying traffic (${opened.opened} opened): ${JSON.stringify(outcomeCounts(cut))}`,
  );

  // The daemon is down: nothing may be forwarded.
  await sleep(500);
  const acceptedBefore = await acceptedOnVerifyPorts(ctx);
  const downGroup = uniqueGroup('down');
  const downSpecs = Array.from({ length: DOWN_PROBES }, (_, i) =>
    makeSpec(ctx.seed, `${downGroup}-${i}`, Object.values(TARGETS)[i % 4], PLANS.short(0), { connectTimeoutMs: 1500 }),
  );
  const down = await ctx.client.request('run', { group: downGroup, specs: downSpecs, timeoutMs: 10_000 }, 30_000);
  await sleep(500);
  const acceptedDuring = (await acceptedOnVerifyPorts(ctx)) - acceptedBefore;
  await ctx.server.request('take', { prefix: `${downGroup}-` });
  const connectedDown = down.records.filter((r) => r.connected).length;
  result.check(
    'nothing forwarded while the daemon was down (fail_closed): the backend accepted 0 connections, no client connected',
    acceptedDuring === 0 && connectedDown === 0,
    `backend accepted ${acceptedDuring} connections in the ${DOWN_PROBES}-probe window; ${connectedDown} of ${DOWN_PROBES} clients connected (${JSON.stringify(outcomeCounts(down.records))})`,
  );

  // Restart: same config, same registry.
  const t0 = Date.now();
  ctx.main = await ctx.daemons.start('main (restarted)', { file: ctx.main.configFile, socketPath: ctx.main.socketPath });
  const restartMs = Date.now() - t0;
  const state1 = await ctx.daemons.gatewayState();
  const cmp = compareGatewayStates(state0, state1, { table: TABLE, routeTable: ROUTE_TABLE });
  result.check('rules reconciled after the restart: one table, the same rules, no duplicate ip rules', cmp.ok, cmp.ok ? `restarted in ${restartMs} ms; table and ${state1.rules4.length + state1.rules6.length} ip rules as before` : cmp.problems.join('; '));

  const present = await listInstances(ctx, ctx.main);
  const lost = present ? [...acked].filter((id) => !present.has(id)) : [...acked];
  result.check(
    'registry intact: every registration acknowledged before the kill is there (0 lost)',
    present !== null && lost.length === 0,
    present === null
      ? '`instances list` did not answer after the restart'
      : `${acked.size} acknowledged (${regs.acked.length} during the load before the kill, ${regs.failed.length} in flight or refused), ${lost.length} lost${lost.length ? `: ${lost.slice(0, 10).join(', ')}` : ''}`,
  );
  const probe = await probePaths(ctx, 'restart');
  result.check('traffic flows again after the restart (pp=false and pp=true, IPv4 and IPv6)', probe.ok, probe.detail);

  result.figure('cutConnections', n);
  result.figure('registrations', { acked: acked.size, duringLoad: regs.acked.length, inFlightOrFailed: regs.failed.length, lost: lost.length });
  result.figure('downWindow', { probes: DOWN_PROBES, clientsConnected: connectedDown, backendAccepted: acceptedDuring, msAfterKill: Date.now() - killedAt });
  result.figure('restartMs', restartMs);
  result.figure('faults', { injected: 1, handled: cmp.ok && lost.length === 0 && acceptedDuring === 0 ? 1 : 0 });
}
