#!/usr/bin/env node
// New connections per second through the proxy on loopback: the Node path (net.Server accept,
// connectUpstream, splice relay hand-off: what connection.ts does per connection) against the
// native path (addon acceptor, relayConnect). wrk drives HTTP/1.1 with Connection: close against
// a small node backend in its own process; each proxy mode runs in its own process, so the
// relay workers start fresh. Needs root (IP_TRANSPARENT on the listener), wrk, and dist/ built
// (npx tsc -p tsconfig.json).
//
//   node scripts/bench-accept.mjs [--duration 5] [--connections 64]
import { spawn, execFileSync } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const HOST = '127.0.0.1';
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const dist = (p) => import(pathToFileURL(path.join(ROOT, 'dist', p)).href);

const freePort = () =>
  new Promise((resolve) => {
    const s = net.createServer().listen(0, HOST, () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });

async function backend() {
  const reply = Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok');
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    s.once('data', () => s.end(reply));
  });
  server.listen(Number(arg('port')), HOST, () => process.send?.('ready'));
}

async function proxy(mode) {
  const port = Number(arg('port'));
  const backendPort = Number(arg('backend'));
  const { openTransparentListener } = await dist('native/sockets.js');
  let accepted = 0;
  if (mode === 'native') {
    const { startAcceptor } = await dist('native/acceptor.js');
    const { openSpliceRelayWorkers, connectRelay } = await dist('native/relay.js');
    const live = new Map();
    openSpliceRelayWorkers(2, (c) => live.delete(c.id));
    const fd = openTransparentListener(HOST, port);
    startAcceptor(fd, (batch) => {
      for (const acc of batch) {
        accepted++;
        const id = connectRelay({
          clientFd: acc.fd,
          family: acc.family,
          sourceAddress: null,
          address: HOST,
          port: backendPort,
          connectTimeoutMs: 5000,
          idleTimeoutMs: 300_000,
        });
        live.set(id, { acc, startedAt: performance.now() });
      }
    });
  } else {
    const { pino } = await import('pino');
    const { connectUpstream } = await dist('proxy/upstream.js');
    const { createSpliceRelayStarter } = await dist('proxy/splice-relay.js');
    const splice = createSpliceRelayStarter({ threads: 2, logger: pino({ level: 'silent' }) });
    const fd = openTransparentListener(HOST, port);
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, async (client) => {
      accepted++;
      client.setNoDelay(true);
      client.on('error', () => {});
      try {
        const upstream = await connectUpstream({ destination: { address: HOST, port: backendPort }, spoofSource: null, keepClientPort: false, timeoutMs: 5000 });
        await splice.start(client, upstream, 300_000).done;
      } catch {
        client.resetAndDestroy();
      }
    });
    server.listen({ fd });
  }
  const cpu0 = process.cpuUsage();
  process.on('message', (m) => {
    if (m !== 'report') return;
    const cpu = process.cpuUsage(cpu0);
    process.send({ accepted, cpuMs: Math.round((cpu.user + cpu.system) / 1000) });
  });
  process.send('ready');
}

function child(role, args) {
  const p = spawn(process.execPath, [fileURLToPath(import.meta.url), '--role', role, ...args], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  return new Promise((resolve) => p.once('message', () => resolve(p)));
}

function ask(p) {
  return new Promise((resolve) => {
    p.once('message', resolve);
    p.send('report');
  });
}

async function main() {
  const duration = arg('duration', '5');
  const connections = arg('connections', '64');
  const backendPort = await freePort();
  const back = await child('backend', ['--port', String(backendPort)]);
  const results = [];
  for (const mode of ['node', 'native']) {
    const port = await freePort();
    const p = await child(mode, ['--port', String(port), '--backend', String(backendPort)]);
    const out = execFileSync('wrk', ['-c', connections, '-t', '1', '--latency', '-d', `${duration}s`, '--timeout', '5s', '-H', 'Connection: close', `http://${HOST}:${port}/`], { encoding: 'utf8' });
    const report = await ask(p);
    p.kill();
    const rps = Number(out.match(/Requests\/sec:\s+([\d.]+)/)?.[1] ?? NaN);
    const p99 = out.match(/^\s+99%\s+(\S+)/m)?.[1] ?? '?';
    const errors = out.match(/Socket errors:.*|Non-2xx.*/g) ?? [];
    results.push({ mode, connPerSec: Math.round(rps), p99, proxyCpuUsPerConn: Math.round((report.cpuMs * 1000) / report.accepted), accepted: report.accepted, errors: errors.join('; ') });
  }
  back.kill();
  console.table(results);
}

const role = arg('role');
if (role === 'backend') await backend();
else if (role === 'node' || role === 'native') await proxy(role);
else await main();
