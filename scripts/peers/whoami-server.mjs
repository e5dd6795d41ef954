#!/usr/bin/env node
// A backend that answers with the address it sees: first a JSON line
// {"remote":"ip:port","local":"ip:port"}, then it echoes every byte back, and ends its side
// when the client has ended its own (half-close).
// usage: whoami-server.mjs PORT [PORT...] [--host ADDR]   prints "ready" once listening.
import net from 'node:net';

const args = process.argv.slice(2);
const hostIndex = args.indexOf('--host');
const host = hostIndex >= 0 ? args.splice(hostIndex, 2)[1] : '::';
const ports = args.map(Number);
if (ports.length === 0 || ports.some((p) => !Number.isInteger(p) || p < 1 || p > 65535)) {
  console.error('usage: whoami-server.mjs PORT [PORT...] [--host ADDR]');
  process.exit(2);
}
const unmap = (a) => (a && a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a);
let listening = 0;
for (const port of ports) {
  net
    .createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => {});
      s.write(`${JSON.stringify({ remote: `${unmap(s.remoteAddress)}:${s.remotePort}`, local: `${unmap(s.localAddress)}:${s.localPort}` })}\n`);
      s.pipe(s);
    })
    .listen({ port, host, ipv6Only: false }, () => {
      if (++listening === ports.length) console.log('ready');
    });
}
