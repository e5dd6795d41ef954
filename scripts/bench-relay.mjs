#!/usr/bin/env node
// Loopback throughput of one stream through the stream relay and the splice relay. iperf3 is the
// source and the sink, each in its own process, so this process's CPU time (all threads,
// process.cpuUsage) is the relay's alone. Needs a built dist/ (npx tsc -p tsconfig.json) and addon.
//
// --idle N instead holds N idle connections through the relay (scripts/bench/hold-client.mjs and
// hold-server.mjs, each in its own process, so every descriptor and byte of RSS that grows here is
// the relay's) and reports descriptors and VmRSS per connection, as `npm run bench` does: after a
// 300 ms settle, and again after a forced GC (with the JS heap's share).
//
//   node scripts/bench-relay.mjs [--bytes 4G] [--relay stream|splice|both] [--threads N] [--reverse]
//   node scripts/bench-relay.mjs --idle 2000 [--relay stream|splice|both] [--threads N]
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import v8 from 'node:v8';
import vm from 'node:vm';
import { pino } from 'pino';
import { spliceRelayStats } from '../dist/native/relay.js';
import { startRelay } from '../dist/proxy/relay.js';
import { createSpliceRelayStarter } from '../dist/proxy/splice-relay.js';

const HOST = '127.0.0.1';
const GiB = 2 ** 30;

const { values: args } = parseArgs({
  options: {
    bytes: { type: 'string', default: '4G' },
    relay: { type: 'string', default: 'both' },
    threads: { type: 'string' },
    reverse: { type: 'boolean', default: false },
    idle: { type: 'string' },
  },
});
const HOLD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'bench');

function listen(server) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, HOST, () => resolve(server.address().port));
  });
}

async function freePort() {
  const s = net.createServer();
  const port = await listen(s);
  await new Promise((resolve) => s.close(resolve));
  return port;
}

function run(cmd, argv, { stdin = 'ignore' } = {}) {
  const child = spawn(cmd, argv, { stdio: [stdin, 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  const exited = new Promise((resolve, reject) => {
    child.once('error', reject);
    // 'close', not 'exit': stdout may still hold data at 'exit'.
    child.once('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} exited with ${code}:\n${out}`))));
  });
  return { child, exited, output: () => out };
}

async function measure(kind) {
  const sinkPort = await freePort();
  const sink = run('iperf3', ['-s', '-1', '--forceflush', '-B', HOST, '-p', String(sinkPort)]);
  while (!sink.output().includes('Server listening')) await new Promise((r) => setTimeout(r, 20));

  const splice = kind === 'splice' ? createSpliceRelayStarter({ threads: args.threads ? Number(args.threads) : undefined, logger: pino({ level: 'warn' }) }) : null;
  const starter = splice ? splice.start : startRelay;
  const results = [];
  const front = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
    client.setNoDelay(true);
    const upstream = net.connect({ host: HOST, port: sinkPort, allowHalfOpen: true, noDelay: true }, () => {
      results.push(starter(client, upstream, 0).done);
    });
  });
  const frontPort = await listen(front);

  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const source = run('iperf3', ['-c', HOST, '-p', String(frontPort), '-n', args.bytes, '-Z', '-J', ...(args.reverse ? ['-R'] : [])]);
  const report = JSON.parse(await source.exited);
  await sink.exited;
  const relayResults = await Promise.all(results);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  front.close();
  await splice?.close();

  const bytes = report.end.sum_received.bytes;
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  return {
    relay: kind,
    gbitPerSecond: +(report.end.sum_received.bits_per_second / 1e9).toFixed(2),
    gib: +(bytes / GiB).toFixed(2),
    wallSeconds: +seconds.toFixed(2),
    cpuSecondsPerGiB: +(cpuSeconds / (bytes / GiB)).toFixed(3),
    cpuUserSeconds: +(cpu.user / 1e6).toFixed(2),
    cpuSystemSeconds: +(cpu.system / 1e6).toFixed(2),
    reasons: relayResults.map((r) => r.reason).join(','),
  };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(what, condition, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** This process's descriptors (and how many are pipes) and VmRSS. */
function sample() {
  let fds = 0;
  let pipes = 0;
  for (const name of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${name}`).startsWith('pipe:')) pipes++;
      fds++;
    } catch {
      // the directory's own descriptor
    }
  }
  const rssKiB = Number(readFileSync('/proc/self/status', 'utf8').match(/^VmRSS:\s+(\d+) kB$/m)[1]);
  return { fds, pipes, rssKiB, heapKiB: process.memoryUsage().heapUsed / 1024 };
}

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc');

async function measureIdle(kind, n) {
  const backendPort = await freePort();
  const backend = run(process.execPath, [path.join(HOLD, 'hold-server.mjs'), HOST, String(backendPort)]);
  await until('the hold server', () => backend.output().includes('ready'), 10_000);
  const backendCount = () => {
    const counts = backend.output().split('\n').filter((l) => l.startsWith('{"count"'));
    return counts.length ? JSON.parse(counts.at(-1)).count : 0;
  };

  const splice = kind === 'splice' ? createSpliceRelayStarter({ threads: args.threads ? Number(args.threads) : undefined, logger: pino({ level: 'warn' }) }) : null;
  const starter = splice ? splice.start : startRelay;
  const relays = new Set();
  const reasons = {};
  const front = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
    client.setNoDelay(true);
    client.on('error', () => {});
    const upstream = net.connect({ host: HOST, port: backendPort, allowHalfOpen: true, noDelay: true }, () => {
      const relay = starter(client, upstream, 0);
      relays.add(relay);
      void relay.done.then((r) => {
        relays.delete(relay);
        reasons[r.reason] = (reasons[r.reason] ?? 0) + 1;
      });
    });
    upstream.on('error', () => client.destroy());
  });
  front.listen({ host: HOST, port: 0, backlog: 4096 });
  await new Promise((resolve) => front.once('listening', resolve));
  const frontPort = front.address().port;

  // One short connection with bytes both ways first: the workers, and a pipe or two in their
  // pools, exist before the baseline is taken.
  await new Promise((resolve, reject) => {
    const c = net.connect({ host: HOST, port: frontPort }, () => c.end('warm-up'));
    c.on('error', reject);
    c.on('close', resolve);
    c.resume();
  });
  await until('the warm-up relay to end', () => relays.size === 0, 5000);
  await sleep(300);
  gc();
  const before = sample();

  const holder = run(process.execPath, [path.join(HOLD, 'hold-client.mjs'), HOST, String(frontPort), String(n), '--max-hold-ms', '120000'], { stdin: 'pipe' });
  try {
    await until(`${n} held connections`, () => holder.output().includes('"held"'), 60_000);
    const held = JSON.parse(holder.output().split('\n').find((l) => l.includes('"held"')));
    await until(`${held.held} relays and connections at the backend`, () => relays.size >= held.held && backendCount() >= held.held, 30_000);
    await sleep(300);
    const after = sample();
    gc();
    await sleep(100);
    const afterGc = sample();
    const stats = splice ? spliceRelayStats() : null;
    const per = (a, b) => +((b - a) / held.held).toFixed(2);
    return {
      relay: kind,
      idleConnections: held.held,
      failed: held.failed,
      fdsBefore: before.fds,
      fdsAfter: after.fds,
      fdsPerConn: per(before.fds, after.fds),
      pipeFdsBefore: before.pipes,
      pipeFdsAfter: after.pipes,
      ...(stats ? { pipesInUse: stats.pipesInUse, pipesPooled: stats.pipesPooled } : {}),
      rssBeforeKiB: before.rssKiB,
      rssAfterKiB: after.rssKiB,
      kibPerConn: per(before.rssKiB, after.rssKiB),
      rssAfterGcKiB: afterGc.rssKiB,
      kibPerConnAfterGc: per(before.rssKiB, afterGc.rssKiB),
      // Of which the JS heap (live objects after the GC): what JavaScript keeps per connection.
      heapKibPerConnAfterGc: per(before.heapKiB, afterGc.heapKiB),
    };
  } finally {
    holder.child.stdin.end(); // resets every held connection
    await holder.exited.catch(() => {});
    await until('the relays to end', () => relays.size === 0, 10_000).catch(() => {});
    front.close();
    await splice?.close();
    backend.child.kill('SIGTERM');
    await backend.exited.catch(() => {});
  }
}

const kinds = args.relay === 'both' ? ['stream', 'splice'] : [args.relay];
for (const kind of kinds) {
  if (kind !== 'stream' && kind !== 'splice') throw new Error(`--relay: stream, splice or both, not ${kind}`);
  if (args.idle !== undefined) {
    const n = Number(args.idle);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--idle: a number of connections, not ${args.idle}`);
    console.log(JSON.stringify(await measureIdle(kind, n)));
  } else {
    console.log(JSON.stringify(await measure(kind)));
  }
}
