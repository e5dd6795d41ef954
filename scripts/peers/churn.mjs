#!/usr/bin/env node
// Short connections, as fast as they go: connect, send a line, half-close, read to the end.
// Prints one JSON line: {"done":N,"failed":F,"ms":T}.
// usage: churn.mjs HOST PORT COUNT [CONCURRENCY]
import net from 'node:net';

const [host, port, count, concurrency = '16'] = process.argv.slice(2);
const total = Number(count);
let started = 0;
let done = 0;
let failed = 0;
const t0 = Date.now();
function one() {
  if (started >= total) return;
  started++;
  const s = net.connect({ host, port: Number(port), allowHalfOpen: true });
  let ok = false;
  s.on('connect', () => s.end('hello\n'));
  s.on('data', () => {});
  s.on('end', () => {
    ok = true;
    s.end();
  });
  s.on('error', () => {});
  s.on('close', () => {
    if (ok) done++;
    else failed++;
    if (done + failed === total) console.log(JSON.stringify({ done, failed, ms: Date.now() - t0 }));
    else one();
  });
}
for (let i = 0; i < Number(concurrency); i++) one();
