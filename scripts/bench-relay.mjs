#!/usr/bin/env node
// Loopback throughput of one stream through the stream relay and the splice relay. iperf3 is the
// source and the sink, each in its own process, so this process's CPU time (all threads,
// process.cpuUsage) is the relay's alone. Needs a built dist/ (npx tsc -p tsconfig.json) and addon.
//
//   node scripts/bench-relay.mjs [--bytes 4G] [--relay stream|splice|both] [--threads N] [--reverse]
import { spawn } from 'node:child_process';
import net from 'node:net';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
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
  },
});

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

function run(cmd, argv) {
  const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'inherit'] });
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

const kinds = args.relay === 'both' ? ['stream', 'splice'] : [args.relay];
for (const kind of kinds) {
  if (kind !== 'stream' && kind !== 'splice') throw new Error(`--relay: stream, splice or both, not ${kind}`);
  console.log(JSON.stringify(await measure(kind)));
}
