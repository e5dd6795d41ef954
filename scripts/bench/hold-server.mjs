#!/usr/bin/env node
// The backend end of the idle connections: accepts and holds, reads and drops whatever arrives
// (a PROXY header on the pp=true path). Prints {"count":N} 10 ms after the number of open
// connections changed (so at most 100 lines a second, and none while nothing changes), and
// "ready" once listening.
// usage: hold-server.mjs HOST PORT
import net from 'node:net';

const REPORT_DELAY_MS = 10;

const [host, portText] = process.argv.slice(2);
const port = Number(portText);
if (!host || !Number.isInteger(port) || port < 1 || port > 65535) {
  console.error('usage: hold-server.mjs HOST PORT');
  process.exit(2);
}
let open = 0;
let reported = -1;
let timer = null;
function changed() {
  timer ??= setTimeout(() => {
    timer = null;
    if (open !== reported) {
      reported = open;
      console.log(JSON.stringify({ count: open }));
    }
  }, REPORT_DELAY_MS);
}
const server = net.createServer({ allowHalfOpen: false }, (s) => {
  open++;
  changed();
  s.on('data', () => {});
  s.on('error', () => {});
  s.on('close', () => {
    open--;
    changed();
  });
});
server.on('error', (err) => {
  console.error(`hold-server: ${err.code ?? err.message}`);
  process.exit(1);
});
server.listen({ host, port, backlog: 8192 }, () => {
  console.log('ready');
  changed();
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
