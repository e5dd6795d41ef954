#!/usr/bin/env node
// `npm run bench`: every path measured in one lab (scripts/lab.sh), one after the other, with the
// same backend services: direct routing, HAProxy and nginx transparent, and this project's daemon
// with pp=false and pp=true. Prints a Markdown table (ratios to HAProxy) and writes it with the
// JSON data to bench-results/. Needs root. Cleans up on success, failure, Ctrl-C and deadline.
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BenchUsageError, parseBenchArgs, USAGE } from './args.mjs';
import { baselineOf, INTERCEPTED_PORTS, LAB, PATHS, PIPE_SIZE, PORTS, estimateSeconds, idleConnectionBudget, portsFor } from './plan.mjs';
import { parseBackendAnswer, parseCpuTimes, parseIperf3Json, parseLinkPackets, parseNofileHardLimit, parseWrkOutput, summarizeFailure } from './parse.mjs';
import { busyPercent, cpuMicrosPerConnection, cpuSecondsPerGiB, gbitPerSec, kibPerConnection, machineMicrosPerConnection, mergeRounds, packetsPerConnection, pairedRatios, roundOrder, threadCpuProfile } from './compute.mjs';
import { COLUMNS, formatElapsed, formatPacketNote, formatPairedRatios, formatTable, formatThreadNote, resultBaseName } from './format.mjs';
import { fillTemplate, httpPadding } from './render.mjs';
import { createProcessTracker, runCommand, sampleThreads, sampleTree, sleep, sysctls, waitUntil } from './procs.mjs';
import { createProxies, GUARD_TABLE } from './proxies.mjs';
import { linkClientAgent } from './client-link.mjs';
import { guardLab, labPrefix, optionsOrExit } from '../lib/lab-run.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..', '..');
const CLI = path.join(ROOT, 'dist', 'cli.js');
const LAB_SH = path.join(ROOT, 'scripts', 'lab.sh');
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK']).stdout?.toString().trim()) || 100;

const log = (s) => process.stderr.write(`${s}\n`);
/** Above this share of the CPUs busy with other work before a path, the report warns. */
const BUSY_WARN_PCT = 20;

// ---------------------------------------------------------------------------------------------
// Options and global state (cleanup must reach it from signal handlers).

const opts = optionsOrExit({
  tool: 'bench',
  parse: parseBenchArgs,
  UsageError: BenchUsageError,
  usage: USAGE,
  rootReason: 'it creates network namespaces, nftables rules and policy routes inside them',
  rootExit: 1,
});

// Everything started from here inherits this limit (scripts/bench.sh raises it where it can).
const NOFILE_HARD = parseNofileHardLimit(readFileSync('/proc/self/limits', 'utf8'));
const NOFILE = Number.isFinite(NOFILE_HARD) ? NOFILE_HARD : 262_144;
const IDLE_CONNECTIONS = idleConnectionBudget(opts.connections, NOFILE_HARD);

const prefix = labPrefix('tpibench', 'TPIBENCH_PREFIX');
const ns = { client: `${prefix}-c`, gateway: `${prefix}-g`, backend: `${prefix}-b` };
const dir = mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
const tracker = createProcessTracker();
const guard = guardLab({ tool: 'bench', labSh: LAB_SH, prefix, dir, tracker, stopMs: 2000, interruptedExit: 130, deadlineExit: 124 });

// ---------------------------------------------------------------------------------------------
// The lab, and the backend services and client agent every path shares.

async function setUpLab() {
  await runCommand(null, ['bash', LAB_SH, 'up', prefix], { timeoutMs: 30_000 });
  // Limits for thousands of connections a second and 10k held ones, in the namespaces only.
  const ports = { 'net.ipv4.ip_local_port_range': '1024 65535', 'net.ipv4.tcp_tw_reuse': 1 };
  const queues = { 'net.core.somaxconn': 8192, 'net.ipv4.tcp_max_syn_backlog': 8192 };
  await sysctls(ns.client, ports);
  await sysctls(ns.gateway, { ...ports, ...queues });
  await sysctls(ns.backend, queues);
}

/** holdCount: open connections at the hold server; onHoldCount: who else wants each new count. */
const backend = { holdCount: 0, ppFront: null, onHoldCount: null };
/** The client namespace's one process for requests and idle connections (client-agent.mjs). */
let client = null;

async function listeningIn(namespace, port) {
  const { stdout } = await runCommand(namespace, ['ss', '-Hltn', `sport = :${port}`], { timeoutMs: 10_000 });
  return stdout.trim() !== '';
}

async function startSharedServices() {
  const nginxCfg = path.join(dir, 'nginx-backend.conf');
  writeFileSync(nginxCfg, fillTemplate(readFileSync(path.join(HERE, 'templates', 'nginx-backend.conf'), 'utf8'), {
    NOFILE,
    DIR: dir,
    BACKEND_IP: LAB.backend,
    HTTP_PORT: PORTS.http,
    HTTP_PP_PORT: PORTS.httpPp,
    PADDING: httpPadding(100, 19),
    PADDING_PP: httpPadding(100, 35),
  }));
  const ppCfg = path.join(dir, 'haproxy-backend-pp.cfg');
  writeFileSync(ppCfg, fillTemplate(readFileSync(path.join(HERE, 'templates', 'haproxy-backend-pp.cfg'), 'utf8'), {
    BACKEND_IP: LAB.backend,
    PP_PORT: PORTS.iperfPp,
    IPERF_PORT: PORTS.iperf,
  }));
  const nginx = tracker.start('backend nginx', ns.backend, ['nginx', '-c', nginxCfg, '-e', path.join(dir, 'nginx-backend.log')]);
  backend.ppFront = tracker.start('backend PROXY front (haproxy)', ns.backend, ['haproxy', '-db', '-f', ppCfg]);
  const agent = tracker.start('client agent', ns.client, ['node', path.join(HERE, 'client-agent.mjs')], { stdin: 'pipe' });
  client = linkClientAgent(agent);
  const hold = tracker.start('hold-server', ns.backend, ['node', path.join(HERE, 'hold-server.mjs'), LAB.backend, String(PORTS.hold)]);
  hold.onLine((line) => {
    if (line.startsWith('{')) {
      try {
        backend.holdCount = JSON.parse(line).count;
        backend.onHoldCount?.(backend.holdCount);
      } catch {
        // not ours
      }
    }
  });
  await hold.waitFor(/ready/, 10_000);
  await agent.waitFor(/^ready$/m, 10_000);
  for (const [proc, port] of [[nginx, PORTS.http], [nginx, PORTS.httpPp], [backend.ppFront, PORTS.iperfPp]]) {
    await waitUntil(`${proc.name} on ${port}`, async () => {
      if (!proc.alive()) throw new Error(`${proc.name} exited: ${proc.output().trim().slice(-800)}`);
      return listeningIn(ns.backend, port);
    }, 10_000);
  }
}

/** What must be back exactly as it was after each path: rules, routes, nft tables. */
async function gatewayState() {
  const parts = [];
  for (const argv of [['ip', '-4', 'rule'], ['ip', '-6', 'rule'], ['ip', '-4', 'route', 'show', 'table', 'all'], ['nft', 'list', 'tables']]) {
    parts.push((await runCommand(ns.gateway, argv, { timeoutMs: 10_000 })).stdout);
  }
  return parts.join('\n--\n');
}

// ---------------------------------------------------------------------------------------------
// Measurements.

/**
 * How busy the machine is with work that is not ours, sampled while the lab is idle: the other
 * tenants of these vCPUs make every figure noisier, and this says how much.
 */
async function hostBusyPercent(ms = 300) {
  const before = parseCpuTimes(readFileSync('/proc/stat', 'utf8'));
  await sleep(ms);
  return busyPercent(before, parseCpuTimes(readFileSync('/proc/stat', 'utf8')));
}

async function probeClientIp(port) {
  const r = await client.probe(LAB.backend, port, 5000);
  if (r.error) throw new Error(`request to ${LAB.backend}:${port} failed: ${r.error}`);
  if (r.status !== 200) throw new Error(`request to ${LAB.backend}:${port} answered ${r.status}`);
  return parseBackendAnswer(r.body);
}

async function iperf(port, streams, proxyPid) {
  const server = tracker.start('iperf3 server', ns.backend, ['iperf3', '-s', '-1', '-p', String(PORTS.iperf), '--forceflush']);
  try {
    await server.waitFor(/Server listening/, 10_000);
    const before = proxyPid ? sampleTree(proxyPid) : null;
    const frontBefore = port === PORTS.iperfPp ? sampleTree(backend.ppFront.pid) : null;
    const { stdout, stderr } = await runCommand(
      ns.client,
      ['iperf3', '-c', LAB.backend, '-p', String(port), '-t', String(opts.duration), '-P', String(streams), '-J', '--connect-timeout', '3000'],
      { timeoutMs: (opts.duration + 20) * 1000, allowFail: true },
    );
    const after = proxyPid ? sampleTree(proxyPid) : null;
    const frontAfter = frontBefore ? sampleTree(backend.ppFront.pid) : null;
    let parsed;
    try {
      parsed = parseIperf3Json(stdout);
    } catch (err) {
      throw new Error(`${err.message}${stderr.trim() ? ` (${stderr.trim().slice(-300)})` : ''}`);
    }
    return {
      ...parsed,
      proxyTicks: before && after ? after.ticks - before.ticks : null,
      proxyPids: after?.pids ?? null,
      frontTicks: frontBefore && frontAfter ? frontAfter.ticks - frontBefore.ticks : null,
    };
  } finally {
    await server.stop(2000);
  }
}

/** The gateway's packet counters per link (eth0 faces the client, eth1 the backend). */
async function gatewayPackets() {
  const { stdout } = await runCommand(ns.gateway, ['ip', '-s', '-j', 'link'], { timeoutMs: 10_000 });
  return parseLinkPackets(stdout);
}

/**
 * wrk; the proxy's CPU over the same wall time (its process tree's and each of its threads'), the
 * whole machine's, and the packets on the gateway's links.
 */
async function wrk(port, proxyPid) {
  const packetsBefore = await gatewayPackets();
  const machineBefore = parseCpuTimes(readFileSync('/proc/stat', 'utf8'));
  const before = proxyPid ? sampleTree(proxyPid) : null;
  const threadsBefore = before ? sampleThreads(before.pids) : null;
  const t0 = performance.now();
  const { stdout } = await runCommand(
    ns.client,
    ['wrk', '-c', '64', '-t', '2', '--latency', '-d', `${opts.duration}s`, '--timeout', '5s', '-H', 'Connection: close', `http://${LAB.backend}:${port}/`],
    { timeoutMs: (opts.duration + 20) * 1000 },
  );
  const seconds = (performance.now() - t0) / 1000;
  const after = proxyPid ? sampleTree(proxyPid) : null;
  const threadsAfter = after ? sampleThreads(after.pids) : null;
  const machineAfter = parseCpuTimes(readFileSync('/proc/stat', 'utf8'));
  const packetsAfter = await gatewayPackets();
  const parsed = parseWrkOutput(stdout);
  const machine = { before: machineBefore, after: machineAfter, packetsBefore, packetsAfter };
  if (!before) return { parsed, machine, profile: null };
  return {
    parsed,
    machine,
    profile: {
      during: 'wrk',
      seconds,
      clockTicksPerSec: CLK_TCK,
      processTicks: after.ticks - before.ticks,
      pids: after.pids,
      threads: threadCpuProfile(threadsBefore, threadsAfter, CLK_TCK, seconds),
    },
  };
}

/**
 * Opening the idle connections (hold-connections.mjs): at most HOLD_CONCURRENCY connects at once,
 * and none started while HOLD_WINDOW connected ones have not reached the backend. Both together
 * stay far below every proxy's accept queue here (the daemon's 4096, HAProxy's and nginx's 8192),
 * so no SYN is dropped and retransmitted 1 s later. Measured: windows of 128 and 256 open 10k as
 * fast as any for HAProxy and nginx, and twice as fast as none for the daemon; 1024 made the
 * daemon 3× slower.
 */
const HOLD_CONCURRENCY = 512;
const HOLD_WINDOW = 256;

async function idleConnections(port, proxyPid, proxyOutput) {
  const n = IDLE_CONNECTIONS;
  const base = backend.holdCount;
  const before = sampleTree(proxyPid);
  backend.onHoldCount = (count) => client.relayed(Math.max(0, count - base));
  const phases = { settleMs: null, releaseMs: null };
  try {
    const summary = await client.hold({ host: LAB.backend, port, count: n, concurrency: HOLD_CONCURRENCY, window: HOLD_WINDOW }, 90_000);
    if (summary.error) throw new Error(`client agent: ${summary.error}`);
    const t0 = Date.now();
    // The client's connect completes at the proxy; count them at the backend before reading RSS.
    // A few upstream connects may fail under the burst (the proxy then resets the client side):
    // settle for the count once it stops growing, if that is nearly all of them.
    let last = -1;
    let stableSince = Date.now();
    await waitUntil(`${summary.held} connections at the backend`, () => {
      const count = backend.holdCount - base;
      if (count !== last) {
        last = count;
        stableSince = Date.now();
      }
      return count >= summary.held || Date.now() - stableSince > 2000;
    }, 40_000, 20);
    const relayed = backend.holdCount - base;
    phases.settleMs = Date.now() - t0;
    if (relayed < summary.held * 0.95) {
      const now = sampleTree(proxyPid);
      const said = proxyOutput ? summarizeFailure(proxyOutput()) : '';
      throw new Error(
        `only ${relayed} of the ${summary.held} connections the client opened reached the backend ` +
          `(proxy: ${now.fds} descriptors open, ${before.fds} before${said ? `; it last said: ${said.slice(0, 400)}` : ''})`,
      );
    }
    // As soon as the backend has them all: read 0.1 to 0.6 s later, the RSS of every proxy here
    // was the same to the KiB.
    const after = sampleTree(proxyPid);
    return {
      held: summary.held,
      relayed,
      failed: summary.failed,
      errors: summary.errors,
      openMs: summary.ms,
      phases,
      rssBeforeKiB: before.rssKiB,
      rssAfterKiB: after.rssKiB,
      fdsBefore: before.fds,
      fdsAfter: after.fds,
      kibPerConn: kibPerConnection(before.rssKiB, after.rssKiB, relayed),
    };
  } finally {
    backend.onHoldCount = null;
    const releasing = Date.now();
    await client.release().catch((err) => log(`  ${err.message}`));
    // The client resets every connection; the proxy must have closed its side of each before it
    // is stopped. Stopped first, a proxy leaves its client-side sockets in TIME_WAIT on the gateway,
    // and the next path's SYNs that reuse those addresses and ports stall for 1 s retransmits
    // (opening 10k then took over a minute).
    await waitUntil('held connections to close', () => backend.holdCount <= base, 3_000, 20).catch(() => {});
    phases.releaseMs = Date.now() - releasing;
  }
}

// ---------------------------------------------------------------------------------------------
// One path.

/**
 * For the direct path. A transparent proxy's accepted sockets end in TIME_WAIT on the gateway
 * under the client's 4-tuples (60 s), and TCP early demux hands a forwarded SYN that matches one
 * to that socket instead of routing it: after a proxy path, direct connections would time out.
 * Forwarding needs no early demux, so it is off in the gateway while the direct path runs.
 */
async function forwardPastTimeWait() {
  const key = 'net.ipv4.tcp_early_demux';
  const { stdout } = await runCommand(ns.gateway, ['sysctl', '-n', key]);
  await sysctls(ns.gateway, { [key]: 0 });
  return {
    notes: [`${key} = 0 on the gateway during this path, so that a proxy path's TIME_WAIT sockets cannot capture forwarded connections`],
    teardown: () => sysctls(ns.gateway, { [key]: stdout.trim() }),
  };
}

async function runPath(benchPath, proxies, baselineState) {
  const started = Date.now();
  const ports = portsFor(benchPath);
  const result = {
    name: benchPath.name,
    label: benchPath.label,
    status: 'ok',
    reason: null,
    seen: null,
    metrics: { gbit1: null, gbit8: null, connPerSec: null, p50Ms: null, p99Ms: null, cpuUsPerConn: null, machineUsPerConn: null, cpuSecPerGiB: null, kibPerIdleConn: null },
    metricErrors: {},
    notApplicable: benchPath.proxy ? [] : ['cpuUsPerConn', 'cpuSecPerGiB', 'kibPerIdleConn'],
    notes: [],
    threadProfile: null,
    raw: {},
    timings: {},
    seconds: null,
  };
  let mark = Date.now();
  const lap = (what) => {
    const now = Date.now();
    result.timings[what] = (now - mark) / 1000;
    mark = now;
  };
  log(`\n== ${benchPath.name}: ${benchPath.label}`);
  let setup = null;
  try {
    result.hostBusyBeforePct = Math.round(await hostBusyPercent());
    result.loadAverage = os.loadavg().map((l) => Math.round(l * 100) / 100);
    log(`  machine busy with other work: ${result.hostBusyBeforePct}% (load ${result.loadAverage.join(' ')})`);
    lap('busy sample');
    if (benchPath.proxy === 'haproxy') setup = await proxies.haproxy(benchPath.pp);
    else if (benchPath.proxy === 'nginx') setup = await proxies.nginx();
    else if (benchPath.proxy === 'daemon') setup = await proxies.daemon(benchPath.pp);
    else setup = await forwardPastTimeWait();
    if (setup) result.notes.push(...setup.notes);
    lap('setup');

    // The client's IP must reach the backend, or the path is not measured at all.
    const seen = await probeClientIp(ports.http);
    lap('verify');
    result.seen = seen;
    log(`  backend saw client ${seen.client}${seen.peer ? ` (PROXY header; TCP peer ${seen.peer})` : ''}`);
    if (seen.client !== LAB.client) {
      result.status = 'broken';
      result.reason = `backend saw ${seen.client}, not the client ${LAB.client}`;
      return result;
    }

    const step = async (what, keys, fn) => {
      if (guard.interrupted) throw new Error('interrupted');
      try {
        await fn();
      } catch (err) {
        for (const k of keys) result.metricErrors[k] = err.message;
        result.notes.push(`${what} failed: ${err.message}`);
        log(`  ${what} FAILED: ${err.message}`);
      }
      lap(what);
    };
    const pid = setup?.pid ?? null;

    const measuring = (what) => opts.measure.includes(what);
    if (measuring('throughput')) await step('iperf3 1 stream', ['gbit1', 'cpuSecPerGiB'], async () => {
      const r = await iperf(ports.iperf, 1, pid);
      result.raw.iperf1 = r;
      result.metrics.gbit1 = gbitPerSec(r.bitsPerSecond);
      if (pid) result.metrics.cpuSecPerGiB = cpuSecondsPerGiB(r.proxyTicks, CLK_TCK, r.bytes);
      if (r.frontTicks !== null) {
        result.notes.push(`the backend's PROXY front used ${cpuSecondsPerGiB(r.frontTicks, CLK_TCK, r.bytes).toFixed(3)} CPU s/GiB on top (not in the table)`);
      }
      log(`  iperf3 -P 1: ${result.metrics.gbit1.toFixed(2)} Gbit/s${pid ? `, proxy CPU ${(r.proxyTicks / CLK_TCK).toFixed(2)} s for ${(r.bytes / 2 ** 30).toFixed(2)} GiB` : ''}`);
    });
    if (measuring('throughput')) await step('iperf3 8 streams', ['gbit8'], async () => {
      const r = await iperf(ports.iperf, 8, null);
      result.raw.iperf8 = r;
      result.metrics.gbit8 = gbitPerSec(r.bitsPerSecond);
      log(`  iperf3 -P 8: ${result.metrics.gbit8.toFixed(2)} Gbit/s`);
    });
    if (measuring('connections')) await step('wrk', ['connPerSec', 'p50Ms', 'p99Ms', 'cpuUsPerConn', 'machineUsPerConn'], async () => {
      const { parsed: r, machine, profile } = await wrk(ports.http, pid);
      result.raw.wrk = profile ? { ...r, proxyTicks: profile.processTicks, proxySeconds: profile.seconds } : r;
      result.metrics.connPerSec = r.requestsPerSec;
      result.metrics.p50Ms = r.p50Ms;
      result.metrics.p99Ms = r.p99Ms;
      if (r.requests > 0) {
        result.metrics.machineUsPerConn = machineMicrosPerConnection(machine.before, machine.after, CLK_TCK, r.requests);
        const packets = packetsPerConnection(machine.packetsBefore, machine.packetsAfter, r.requests);
        result.raw.packetsPerConnection = packets;
        result.notes.push(formatPacketNote(packets, { eth0: 'client side', eth1: 'backend side' }));
      } else {
        result.metricErrors.machineUsPerConn = 'wrk completed no requests';
      }
      const threadNote = profile ? formatThreadNote(profile) : null;
      if (profile) {
        result.threadProfile = profile;
        result.notes.push(threadNote);
        // Every request is its own connection (Connection: close).
        if (r.requests > 0) result.metrics.cpuUsPerConn = cpuMicrosPerConnection(profile.processTicks, CLK_TCK, r.requests);
        else result.metricErrors.cpuUsPerConn = 'wrk completed no requests';
      }
      const errs = r.socketErrors;
      const errTotal = errs.connect + errs.read + errs.write + errs.timeout;
      if (errTotal > 0 || r.non2xx > 0) {
        result.notes.push(`wrk: socket errors connect ${errs.connect}, read ${errs.read}, write ${errs.write}, timeout ${errs.timeout}; non-2xx ${r.non2xx} (of ${r.requests})`);
      }
      log(`  wrk: ${Math.round(r.requestsPerSec)} conn/s, p50 ${r.p50Ms.toFixed(2)} ms, p99 ${r.p99Ms.toFixed(2)} ms${errTotal ? `, ${errTotal} socket errors` : ''}` +
        `${result.metrics.cpuUsPerConn !== null ? `, proxy CPU ${Math.round(result.metrics.cpuUsPerConn)} µs/conn` : ''}` +
        `${result.metrics.machineUsPerConn !== null ? `, machine CPU ${Math.round(result.metrics.machineUsPerConn)} µs/conn` : ''}`);
      if (threadNote) log(`  ${threadNote}`);
    });
    if (pid && IDLE_CONNECTIONS > 0 && measuring('idle')) {
      await step('idle connections', ['kibPerIdleConn'], async () => {
        const r = await idleConnections(ports.hold, pid, setup.output);
        result.raw.idle = r;
        result.metrics.kibPerIdleConn = r.kibPerConn;
        if (r.failed > 0) result.notes.push(`idle connections: ${r.failed} of ${IDLE_CONNECTIONS} failed to open (${JSON.stringify(r.errors)})`);
        if (r.relayed < r.held) result.notes.push(`idle connections: ${r.held - r.relayed} of ${r.held} accepted by the proxy never reached the backend (upstream connect failed); KiB/idle conn is per relayed connection (${r.relayed})`);
        log(`  ${r.relayed} idle connections: RSS ${r.rssBeforeKiB} → ${r.rssAfterKiB} KiB = ${r.kibPerConn.toFixed(2)} KiB each (opened in ${r.openMs} ms; descriptors ${r.fdsBefore} → ${r.fdsAfter})`);
      });
    }
    if (benchPath.proxy) {
      const guard = await runCommand(ns.gateway, ['nft', 'list', 'table', 'inet', GUARD_TABLE], { timeoutMs: 10_000 });
      const dropped = [...guard.stdout.matchAll(/packets (\d+)/g)].reduce((s, m) => s + Number(m[1]), 0);
      result.raw.guardDroppedPackets = dropped;
      if (dropped > 0) result.notes.push(`the forward guard dropped ${dropped} packets on target ports (segments of already-closed connections, or traffic that bypassed the proxy)`);
    }
  } catch (err) {
    result.status = 'failed';
    result.reason = err.message.split('\n')[0].slice(0, 300);
    result.notes.push(`failed: ${err.message.slice(0, 2000)}`);
    if (err.detail) result.notes.push(`output:\n\n\`\`\`\n${err.detail}\n\`\`\``);
    log(`  FAILED: ${err.message.slice(0, 2000)}${err.detail ? `\n${err.detail}` : ''}`);
  } finally {
    mark = Date.now();
    if (setup) await setup.teardown();
    lap('teardown');
    if (!guard.interrupted) {
      const state = await gatewayState().catch((err) => `unreadable: ${err.message}`);
      if (state !== baselineState) {
        result.notes.push('the gateway was not restored to its initial rules/routes/tables after this path');
        log(`  WARNING: gateway state differs after ${benchPath.name}:\n${state}`);
      }
      lap('state check');
    }
    result.seconds = (Date.now() - started) / 1000;
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Output.

function firstLine(argv, stream = 'stdout') {
  const r = spawnSync(argv[0], argv.slice(1), { timeout: 5000 });
  return (r[stream]?.toString() || r.stderr?.toString() || '').split('\n')[0].trim();
}

function hostInfo() {
  return {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? null,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: os.release(),
    node: process.version,
    haproxy: firstLine(['haproxy', '-v']),
    nginx: firstLine(['nginx', '-v'], 'stderr'),
    iperf3: firstLine(['iperf3', '--version']),
    wrk: firstLine(['wrk', '--version']),
    commit: firstLine(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD']) || null,
  };
}

/** Other work on the same vCPUs skews every figure: say so under the table when it was there. */
function busyWarning(paths) {
  const busy = paths.filter((p) => typeof p.hostBusyBeforePct === 'number');
  if (busy.length === 0) return [];
  const max = Math.max(...busy.map((p) => p.hostBusyBeforePct));
  if (max < BUSY_WARN_PCT) return [];
  return [
    `**Noisy machine:** other work kept the CPUs busy before the paths (${busy.map((p) => `${p.name} ${p.hostBusyBeforePct}%`).join(', ')}, sampled with the lab idle); read the ratios as indicative.`,
    '',
  ];
}

function markdown(report) {
  const h = report.host;
  const lines = [
    `# tproxy-interceptor bench, ${report.startedAt}`,
    '',
    `${h.cpus} vCPU (${h.cpuModel}), ${h.memoryGiB} GiB, Linux ${h.kernel}, node ${h.node}, ${h.haproxy}, ${h.nginx}, ${h.iperf3}, ${h.wrk}${h.commit ? `, commit ${h.commit}` : ''}.`,
    `Each run ${report.options.duration} s${report.options.rounds > 1 ? `; every figure is the median of ${report.options.rounds} rounds (odd rounds in path order, even ones reversed; each round's figures are in the path's notes)` : ''}; lab client ${LAB.client} → gateway → backend ${LAB.backend} (network namespaces ${prefix}-*, everything on the same ${h.cpus} vCPUs). Each row's ratios are to the baseline its "ratios to" column names: pp=false paths to \`haproxy\` (transparent, usesrc clientip), the pp=true path to \`haproxy-pp\` (HAProxy sending a PROXY v2 header to the same PROXY-aware backend fronts); for ms, CPU and KiB lower is better.`,
    '',
    formatTable(report.paths, baselineOf),
    '',
    ...busyWarning(report.paths),
    '- Throughput: iperf3 -J, receiver bytes/seconds, `-P 1` and `-P 8`. conn/s, p50, p99: `wrk -c 64 -t 2 --latency -H "Connection: close"` against nginx on the backend (~100-byte answer), so every request is a new connection.',
    '- CPU µs/conn: utime+stime of the proxy\'s processes (all threads, all workers) during the wrk run, per request wrk completed: each is one connection accepted, connected upstream, ~100 bytes each way, closed. ' +
      'Each proxy path\'s "CPU during wrk by thread" splits the same time by thread name (/proc/PID/task/*/stat; cores = CPU seconds / wall seconds of the run).',
    '- machine µs/conn: the whole machine\'s busy CPU during the same wrk run (every process, the kernel, the softirqs: /proc/stat, all CPUs) per request: what one connection costs the lab, the floor being direct routing\'s. With the CPUs saturated, conn/s is about the number of CPUs divided by it. ' +
      'Each path\'s notes give the packets per connection on the gateway\'s two links during the same run.',
    '- CPU s/GiB: utime+stime of the proxy\'s processes during the 1-stream run, per GiB received. KiB/idle conn: growth of the proxy\'s summed VmRSS with ' +
      `${report.options.idleConnections} idle connections held through it (kernel socket memory not included; opened paced by what the backend has seen, no new connect while ${HOLD_WINDOW} were ahead of it, so that no proxy's accept queue overflows)` +
      (report.options.idleConnections < report.options.connections
        ? `; ${report.options.idleConnections}, not ${report.options.connections}, because the open-files hard limit here is ${report.options.nofileHardLimit} (scripts/bench.sh could not raise it) and a proxy needs two descriptors per connection.`
        : '.'),
    `- Both splice relays use ${PIPE_SIZE / 1024} KiB pipes: HAProxy \`tune.pipesize ${PIPE_SIZE}\`, this project's daemon \`upstream.pipe_size = ${PIPE_SIZE}\`; nginx stream does not splice.`,
    '- Every proxy path runs behind a forward-chain guard that drops target-port traffic routed around the proxy, and is measured only after one request showed the backend the client\'s address.',
    '',
    '## Per path',
    '',
  ];
  for (const r of report.paths) {
    lines.push(`### ${r.name}: ${r.label} (${r.status}, ${r.seconds?.toFixed(1)} s)`);
    if (r.hostBusyBeforePct !== undefined) lines.push(`- before it, the machine was ${r.hostBusyBeforePct}% busy with other work (load average ${r.loadAverage.join(', ')})`);
    if (r.seen) lines.push(`- backend saw client ${r.seen.client}${r.seen.peer ? ` via the PROXY header (TCP peer ${r.seen.peer})` : ''}`);
    for (const n of r.notes) lines.push(`- ${n}`);
    lines.push('');
  }
  lines.push(`Total ${formatElapsed(report.elapsedSec)} (expected ~${formatElapsed(report.expectedSec)}).`, '');
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const startedAt = new Date();
  const expectedSec = estimateSeconds(opts.paths, opts.duration, IDLE_CONNECTIONS, opts.measure) * opts.rounds;
  const rounds = opts.rounds > 1 ? `; ${opts.rounds} rounds, medians reported` : '';
  log(`bench: paths ${opts.paths.join(', ')}; ${opts.duration} s per run${rounds}; expected total ~${formatElapsed(expectedSec)} (lab ${prefix})`);
  if (IDLE_CONNECTIONS < opts.connections && opts.measure.includes('idle')) {
    log(`bench: the open-files limit is ${NOFILE_HARD} and cannot be raised here: holding ${IDLE_CONNECTIONS} idle connections instead of ${opts.connections} (a proxy needs two descriptors each)`);
  }
  // Nothing here may run unbounded: a hard deadline well beyond the estimate.
  const deadlineMs = (expectedSec * 3 + 180) * 1000;
  const deadline = guard.deadline(deadlineMs);

  const results = [];
  try {
    await setUpLab();
    await startSharedServices();
    const proxies = createProxies({ ns, dir, tracker, cli: CLI, threads: opts.threads, log, nofile: NOFILE, maxConnections: IDLE_CONNECTIONS });
    const baselineState = await gatewayState();
    const byPath = new Map(opts.paths.map((name) => [name, []]));
    for (let round = 0; round < opts.rounds && !guard.interrupted; round++) {
      if (opts.rounds > 1) log(`\n== round ${round + 1} of ${opts.rounds}`);
      for (const name of roundOrder(opts.paths, round)) {
        if (guard.interrupted) break;
        byPath.get(name).push(await runPath(PATHS.find((p) => p.name === name), proxies, baselineState));
      }
    }
    for (const name of opts.paths) if (byPath.get(name).length > 0) results.push(mergeRounds(byPath.get(name)));
    for (const r of results) {
      const baselineName = baselineOf(r.name);
      const baseline = results.find((b) => b.name === baselineName);
      const note = baseline ? formatPairedRatios(baselineName, pairedRatios(r, baseline, COLUMNS.map((c) => c.key))) : null;
      if (note) r.notes.push(note);
    }
  } finally {
    clearTimeout(deadline);
    if (!guard.interrupted) await guard.cleanup();
  }
  if (guard.interrupted) return 130;

  const finishedAt = new Date();
  const report = {
    version: 1,
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    elapsedSec: (finishedAt - startedAt) / 1000,
    expectedSec,
    options: { ...opts, idleConnections: IDLE_CONNECTIONS, nofileHardLimit: Number.isFinite(NOFILE_HARD) ? NOFILE_HARD : 'unlimited' },
    host: hostInfo(),
    lab: { ...LAB, prefix, interceptedPorts: INTERCEPTED_PORTS, ports: PORTS },
    baselines: Object.fromEntries(results.map((r) => [r.name, baselineOf(r.name)])),
    paths: results,
  };
  const md = markdown(report);
  const outDir = path.join(ROOT, 'bench-results');
  mkdirSync(outDir, { recursive: true });
  const base = path.join(outDir, resultBaseName(startedAt));
  writeFileSync(`${base}.md`, md);
  writeFileSync(`${base}.json`, `${JSON.stringify(report, null, 2)}\n`);
  if (opts.json) writeFileSync(opts.json, `${JSON.stringify(report, null, 2)}\n`);
  console.log(`\n${md}`);
  log(`bench: wrote ${path.relative(process.cwd(), base)}.md and .json${opts.json ? ` and ${opts.json}` : ''}; took ${formatElapsed(report.elapsedSec)} (expected ~${formatElapsed(expectedSec)})`);
  return results.every((r) => r.status === 'ok') ? 0 : 3;
}

guard.exitWith(main, 1);
