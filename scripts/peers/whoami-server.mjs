#!/usr/bin/env node
// A backend that answers with the address it sees: first a JSON line
// {"remote":"ip:port","local":"ip:port"}, then it echoes every byte back, and ends its side
// when the client has ended its own (half-close). --pause-ms N: it reads nothing for the first
// N ms of each connection (a stalled backend). --log: also print "connection from IP:PORT to IP:PORT"
// for each connection (the Vagrant lab's backend shows it in its journal).
// usage: whoami-server.mjs PORT [PORT...] [--host ADDR] [--pause-ms N] [--log]   prints "ready" once listening.
import net from 'node:net';

const args = process.argv.slice(2);
const hostIndex = args.indexOf('--host');
const host = hostIndex >= 0 ? args.splice(hostIndex, 2)[1] : '::';
const pauseIndex = args.indexOf('--pause-ms');
const pauseMs = pauseIndex >= 0 ? Number(args.splice(pauseIndex, 2)[1]) : 0;
const logIndex = args.indexOf('--log');
const log = logIndex >= 0 && args.splice(logIndex, 1).length === 1;
const ports = args.map(Number);
if (ports.length === 0 || ports.some((p) => !Number.isInteger(p) || p < 1 || p > 65535)) {
  console.error('usage: whoami-server.mjs PORT [PORT...] [--host ADDR] [--pause-ms N] [--log]');
  process.exit(2);
}
const unmap = (a) => (a && a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a);
let listening = 0;
for (const port of ports) {
  net
    .createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => {});
      const remote = `${unmap(s.remoteAddress)}:${s.remotePort}`;
      const local = `${unmap(s.localAddress)}:${s.localPort}`;
      if (log) console.log(`connection from ${remote} to ${local}`);
      s.write(`${JSON.stringify({ remote, local })}\n`);
      if (pauseMs > 0) {
        s.pause();
        setTimeout(() => s.pipe(s), pauseMs);
      } else {
        s.pipe(s);
      }
    })
    .listen({ port, host, ipv6Only: false }, () => {
      if (++listening === ports.length) console.log('ready');
    });
}
