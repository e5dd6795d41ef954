#!/usr/bin/env node
// The client end of the idle connections as a process of its own (scripts/bench-relay.mjs):
// opens COUNT connections (hold-connections.mjs), keeps them open without sending anything, and
// prints {"held":N,"failed":M,"errors":{...},"ms":T} once all attempts are settled; while opening,
// a {"progress":{...}} line every 5 s. With --window, each line on stdin is the number of these
// connections the backend has seen so far. Holds until SIGTERM/SIGINT, stdin closing, or
// --max-hold-ms; then resets every connection.
// usage: hold-client.mjs HOST PORT COUNT [--concurrency N] [--connect-timeout-ms MS] [--max-hold-ms MS]
//        [--window W] [--window-stall-ms MS]
import { holdConnections } from './hold-connections.mjs';

const [host, portText, countText, ...rest] = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = rest.indexOf(name);
  return i >= 0 ? Number(rest[i + 1]) : dflt;
};
const port = Number(portText);
const count = Number(countText);
const window = opt('--window', Infinity);
if (!host || !Number.isInteger(port) || !Number.isInteger(count) || count < 1 || !(window > 0)) {
  console.error('usage: hold-client.mjs HOST PORT COUNT [--concurrency N] [--connect-timeout-ms MS] [--max-hold-ms MS] [--window W] [--window-stall-ms MS]');
  process.exit(2);
}

const hold = holdConnections({
  host,
  port,
  count,
  concurrency: opt('--concurrency', 256),
  connectTimeoutMs: opt('--connect-timeout-ms', 10_000),
  window,
  windowStallMs: opt('--window-stall-ms', 1000),
});
const progress = setInterval(() => console.log(JSON.stringify({ progress: hold.progress() })), 5000);
hold.done.then((summary) => {
  clearInterval(progress);
  console.log(JSON.stringify(summary));
});

function release() {
  hold.release();
  process.exit(0);
}
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, release);
let partial = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  const lines = (partial + d).split('\n');
  partial = lines.pop();
  const last = lines.filter((l) => /^\d+$/.test(l.trim())).at(-1);
  if (last !== undefined) hold.relayed(Number(last));
});
process.stdin.on('end', release);
process.stdin.resume();
setTimeout(release, opt('--max-hold-ms', 300_000)).unref();
