#!/usr/bin/env node
// `npm run soak`: the daemon under load and under attack in its own lab (scripts/lab.sh), driven
// only through its CLI and config. First N connections with traffic both ways for --duration,
// while slow peers, failing backends, a hostile admin client and hostile guest agents run beside
// them; then kill -9 under load and a restart; connections aimed at the daemon itself; the
// connection cap and a rate ramp. Prints a Markdown report (figures and every check), writes it
// with the JSON to soak-results/, and exits non-zero naming every check that failed. Cleans up on
// success, failure, Ctrl-C and its own deadline.
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createProcessTracker, sleep } from '../bench/procs.mjs';
import { parseNofileHardLimit } from '../bench/parse.mjs';
import { resultBaseName } from '../bench/format.mjs';
import { parseSoakArgs, SoakUsageError, USAGE } from './args.mjs';
import { AGENT_PORT, BESIDE_LOAD, descriptorNeeds, adminFloodSize, estimateSeconds, HOSTILE_AGENTS, MAIN_INSTANCES, MAIN_POLICY, PORTS } from './plan.mjs';
import { createLab } from './lab.mjs';
import { createDaemonControl } from './daemon.mjs';
import { linkAgent } from './agent-link.mjs';
import { guardLab, labPrefix, optionsOrExit } from '../lib/lab-run.mjs';
import { createScenarioResult, EXIT, verdict } from './verdict.mjs';
import { resourceFigures, returnedToBaseline } from './figures.mjs';
import { errorLines } from './gateway-state.mjs';
import { markdown } from './report.mjs';
import { probePaths, quiesce, register, settleFds } from './scenarios/common.mjs';
import { describeResources, finishLoad, startLoad, startSampler, warmUp } from './scenarios/load.mjs';
import * as slowPeers from './scenarios/slow-peers.mjs';
import * as backendFaults from './scenarios/backend-faults.mjs';
import * as hostileAdmin from './scenarios/hostile-admin.mjs';
import * as hostileAgent from './scenarios/hostile-agent.mjs';
import * as crash from './scenarios/crash.mjs';
import * as selfConnect from './scenarios/self-connect.mjs';
import * as capacity from './scenarios/capacity.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..', '..');
const CLI = path.join(ROOT, 'dist', 'cli.js');
const log = (s) => process.stderr.write(`${s}\n`);

const BESIDE = { 'slow-peers': slowPeers, 'backend-faults': backendFaults, 'hostile-admin': hostileAdmin, 'hostile-agent': hostileAgent };
const AFTER = { crash, 'self-connect': selfConnect, capacity };

const opts = optionsOrExit({
  tool: 'soak',
  parse: parseSoakArgs,
  UsageError: SoakUsageError,
  usage: USAGE,
  rootReason: 'it creates network namespaces, and the daemon installs nftables rules inside them',
  rootExit: EXIT.broken,
});

const NOFILE = parseNofileHardLimit(readFileSync('/proc/self/limits', 'utf8'));
const seed = opts.seed ?? randomBytes(6).toString('hex');
const prefix = labPrefix('tpisoak', 'TPISOAK_PREFIX');
const dir = mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
const tracker = createProcessTracker();
const lab = createLab({ root: ROOT, prefix });
const guard = guardLab({
  tool: 'soak', labSh: path.join(ROOT, 'scripts', 'lab.sh'), prefix, dir, tracker, stopMs: 3000,
  interruptedExit: EXIT.interrupted, deadlineExit: EXIT.deadline,
});

function startAgent(name, ns, [script, ...args]) {
  const proc = tracker.start(name, ns, ['node', path.join(HERE, script), ...args], { stdin: 'pipe' });
  return { proc, link: linkAgent(proc) };
}

async function runScenario(ctx, results, name, fn) {
  const result = results.get(name);
  const t0 = Date.now();
  log(`\n== ${name}`);
  try {
    await fn(result);
  } catch (err) {
    if (guard.interrupted) return; // everything is being torn down: its errors say nothing
    result.check('the scenario ran to the end', false, err.message.split('\n').slice(0, 3).join(' ').slice(0, 600));
    log(`  ${name}: ${err.stack ?? err.message}`);
  }
  result.seconds = (Date.now() - t0) / 1000;
  if (guard.interrupted) return;
  for (const c of result.checks) log(`  ${c.ok ? 'pass' : 'FAIL'} ${c.name}${c.ok ? '' : `: ${c.detail}`}`);
}

/** The load, with the scenarios that run beside it; the resource check covers them all. */
async function loadPhase(ctx, results) {
  const selected = (n) => results.has(n);
  const beside = BESIDE_LOAD.filter(selected);
  if (!selected('load') && beside.length === 0) return;
  const owners = selected('load') ? [results.get('load')] : beside.map((n) => results.get(n));
  const t0 = Date.now();
  let load = null;
  if (selected('load')) {
    log('\n== load: warm-up');
    const bytes = await warmUp(ctx, results.get('load'));
    results.get('load').figure('warmupBytesVerified', bytes);
  }
  const before = await quiesce(ctx, ctx.main);
  const sampler = startSampler(ctx, ctx.main);
  if (selected('load')) {
    log(`\n== load: opening ${opts.connections} connections`);
    load = await startLoad(ctx, results.get('load'));
  }
  ctx.loadEndsAt = Date.now() + opts.durationMs;
  log(`  holding them ${opts.durationMs / 1000} s${beside.length ? ` with ${beside.join(', ')} beside` : ''}`);

  // The admin flood blocks the CLI for a while: the agents' instances are registered first.
  let registered;
  const agentsRegistered = new Promise((r) => (registered = r));
  if (!selected('hostile-agent')) registered();
  await Promise.all(
    beside.map((name) =>
      runScenario(ctx, results, name, async (result) => {
        if (name === 'hostile-admin') await agentsRegistered;
        try {
          await BESIDE[name].run(ctx, result, { registered });
        } finally {
          if (name === 'hostile-agent') registered();
        }
      }),
    ),
  );
  while (Date.now() < ctx.loadEndsAt && !guard.interrupted) await sleep(Math.min(1000, ctx.loadEndsAt - Date.now()));
  if (load) {
    log('\n== load: finishing');
    await finishLoad(ctx, results.get('load'), load).catch((err) =>
      results.get('load').check('the load finished', false, err.message.slice(0, 600)),
    );
  }
  const samples = await sampler.stop();
  const after = await settleFds(ctx, ctx.main, before.fds + opts.fdMargin, 20_000);
  const figures = resourceFigures(before, samples, after);
  const back = returnedToBaseline(before, after, opts);
  const alive = ctx.daemons.alive(ctx.main);
  for (const r of owners) {
    r.check(
      'after the load and everything beside it, the daemon is alive and back to its baseline',
      back.ok && alive,
      `${back.detail}${alive ? '' : '; the daemon is not running'}`,
    );
    r.figure('resources', figures);
  }
  if (selected('load')) results.get('load').seconds = (Date.now() - t0) / 1000;
  log(`  ${describeResources(figures)}`);
}

function hostInfo() {
  const git = spawnSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { timeout: 5000 });
  return {
    cpus: os.cpus().length,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: os.release(),
    node: process.version,
    commit: git.stdout?.toString().trim() || null,
    nofile: Number.isFinite(NOFILE) ? NOFILE : 'unlimited',
  };
}

async function main() {
  const startedAt = new Date();
  const expected = estimateSeconds(opts);
  log(`soak: ${opts.scenarios.join(', ')}; ${opts.connections} connections for ${opts.durationMs / 1000} s; seed ${seed}; lab ${prefix}; expected ~${expected} s`);
  const needs = descriptorNeeds(opts.connections, adminFloodSize(opts.connections));
  if (Number.isFinite(NOFILE) && (needs.daemon > NOFILE || needs.agent > NOFILE)) {
    log(`soak: ${opts.connections} connections need about ${needs.daemon} descriptors in the daemon and ${needs.agent} in the client, over the open-files limit ${NOFILE}: lower --connections`);
    return EXIT.usage;
  }
  const deadlineMs = (expected * 3 + 300) * 1000;
  const deadline = guard.deadline(deadlineMs);

  const results = new Map(opts.scenarios.map((n) => [n, createScenarioResult(n)]));
  let broken = null;
  let ctx = null;
  try {
    await lab.up();
    const server = startAgent('backend', lab.ns.backend, ['traffic-server.mjs', '--verify', `${PORTS.verify},${PORTS.flap}`, '--pp', `${PORTS.verifyPp}`, '--sink', `${PORTS.sink}`, '--reset', `${PORTS.reset}`]);
    const client = startAgent('client', lab.ns.client, ['traffic-client.mjs']);
    const agents = startAgent('hostile agents', lab.ns.backend, ['hostile-agent.mjs', String(AGENT_PORT), ...HOSTILE_AGENTS.map((a) => `${a.behaviour}=${a.ip}`)]);
    await Promise.all([server, client, agents].map((a) => a.proc.waitFor(/^ready$/m, 15_000)));
    const daemons = createDaemonControl({ lab, tracker, dir, cli: CLI, settings: opts.settings });
    const main = await daemons.start('main', daemons.writeConfig('main', { name: 'main' }));
    ctx = {
      opts, seed, log, lab, daemons, main, tracker, dir, root: ROOT, cli: CLI,
      client: client.link, server: server.link, agents: agents.link,
      acked: new Set(), registrationIndex: 0, loadEndsAt: 0,
      stopping: () => guard.interrupted !== null,
    };
    for (const inst of MAIN_INSTANCES) {
      const r = await register(ctx, ctx.main, inst.id, ['--app', inst.app, '--ip', inst.ip, '--policy', MAIN_POLICY]);
      if (r.code !== 0) throw new Error(`registering ${inst.id} failed (exit ${r.code}): ${r.stderr.trim().slice(0, 400)}`);
    }
    const first = await probePaths(ctx, 'first');
    if (!first.ok) throw new Error(`the daemon did not relay a first connection on every path: ${first.detail}`);

    await loadPhase(ctx, results);
    for (const name of Object.keys(AFTER)) {
      if (!results.has(name) || guard.interrupted) continue;
      if (!daemons.alive(ctx.main)) {
        results.get(name).check('the daemon was running when the scenario began', false, 'it had died: restarted for this scenario');
        ctx.main = await daemons.start('main (restarted)', { file: ctx.main.configFile, socketPath: ctx.main.socketPath });
      }
      await runScenario(ctx, results, name, (result) => AFTER[name].run(ctx, result));
    }
    if (daemons.alive(ctx.main)) await daemons.stop(ctx.main);
  } catch (err) {
    broken = err;
    log(`soak: ${err.stack ?? err.message}`);
  } finally {
    clearTimeout(deadline);
    if (!guard.interrupted) await guard.cleanup();
  }
  if (guard.interrupted) return EXIT.interrupted;

  // What the run itself left behind.
  const teardown = createScenarioResult('teardown');
  const gone = await lab.gone();
  teardown.check('the lab is gone: namespaces removed, every process stopped', gone && tracker.live.size === 0, `${gone ? 'no namespace' : 'namespaces'} left, ${tracker.live.size} processes running`);
  const logs = ctx ? ctx.daemons.all.map((d) => ({ daemon: d.name, ...d.logs })) : [];
  // A broken setup leaves scenarios that never began: they are not failures of their own.
  const ran = [...results.values()].filter((r) => !broken || r.checks.length > 0);
  const scenarios = [...ran, teardown].map((r) => ({ scenario: r.scenario, checks: r.checks, figures: r.figures, seconds: r.seconds ?? null }));
  if (broken) {
    const detail = broken.message.split('\n').slice(0, 6).join(' ').slice(0, 800);
    scenarios.unshift({ scenario: 'setup', checks: [{ scenario: 'setup', name: 'the soak could run', ok: false, detail, missing: null }], figures: {}, seconds: null });
  }

  const finishedAt = new Date();
  const v = verdict(scenarios);
  const report = {
    version: 1,
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    elapsedSec: (finishedAt - startedAt) / 1000,
    seed,
    options: opts,
    host: hostInfo(),
    lab: { prefix },
    daemonLog: logs.map((l) => ({ daemon: l.daemon, reasons: l.reasons, errors: l.errors, errorLines: errorLines(l), messages: l.messages })),
    scenarios,
    verdict: v,
  };
  const md = markdown(report);
  const outDir = opts.out ? path.resolve(opts.out) : path.join(ROOT, 'soak-results');
  mkdirSync(outDir, { recursive: true });
  const base = path.join(outDir, resultBaseName(startedAt, 'soak'));
  writeFileSync(`${base}.md`, md);
  writeFileSync(`${base}.json`, `${JSON.stringify(report, null, 2)}\n`);
  // The daemons' warning and error lines, for finding a failed connection by its client address.
  writeFileSync(`${base}-daemon.log`, logs.flatMap((l) => l.warnings.map((w) => `${l.daemon}\t${w}`)).join('\n'));
  if (opts.json) writeFileSync(opts.json, `${JSON.stringify(report, null, 2)}\n`);
  console.log(`\n${md}`);
  log(`soak: ${v.ok ? 'PASSED' : `FAILED: ${v.failed.length} of ${v.total} checks`}; wrote ${path.relative(process.cwd(), base)}.md, .json and -daemon.log${opts.json ? ` and ${opts.json}` : ''}`);
  return broken ? EXIT.broken : v.exitCode;
}

guard.exitWith(main, EXIT.broken);
