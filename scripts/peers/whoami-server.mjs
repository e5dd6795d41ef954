#!/usr/bin/env node
// A backend that answers with the address it sees: first a JSON line
// {"remote":"ip:port","local":"ip:port"}, then it echoes every byte back, and ends its side
// when the client has ended its own (half-close). --pause-ms N: it reads nothing for the first
// N ms of each connection (a stalled backend).
// usage: whoami-server.mjs PORT [PORT...] [--host ADDR] [--pause-ms N]   prints "ready" once listening.
import net from 'node:net';

const args = process.argv.slice(2);
const hostIndex = args.indexOf('--host');
const host = hostIndex >= 0 ? args.splice(hostIndex, 2)[1] : '::';
const pauseIndex = args.indexOf('--pause-ms');
const pauseMs = pauseIndex >= 0 ? Number(args.splice(pauseIndex, 2)[1]) : 0;
const ports = args.map(Number);
if (ports.length === 0 || ports.some((p) => !Number.isInteger(p) || p < 1 || p > 65535)) {
  console.error('usage: whoami-server.mjs PORT [PORT...] [--host ADDR] [--pause-ms N]');
  process.exit(2);
}
const unmap = (a) => (a && a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a);
let listening = 0;
for (const port of ports) {
  net
    .createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => {});
      s.write(`${JSON.stringify({ remote: `${unmap(s.remoteAddress)}:${s.remotePort}`, local: `${unmap(s.localAddress)}:${s.localPort}` })}\n`);
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
