#!/usr/bin/env node
// The client end of the idle connections: opens COUNT connections (at most --concurrency
// connecting at once, so the proxy's accept queue does not overflow), keeps them open without
// sending anything, and prints {"held":N,"failed":M,"errors":{...},"ms":T} once all attempts are
// settled. Holds until SIGTERM/SIGINT, stdin closing, or --max-hold-ms; then resets every
// connection (RST: no TIME_WAIT left behind for the next path).
// usage: hold-client.mjs HOST PORT COUNT [--concurrency N] [--connect-timeout-ms MS] [--max-hold-ms MS]
import net from 'node:net';

const [host, portText, countText, ...rest] = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = rest.indexOf(name);
  return i >= 0 ? Number(rest[i + 1]) : dflt;
};
const port = Number(portText);
const count = Number(countText);
const concurrency = opt('--concurrency', 256);
const connectTimeoutMs = opt('--connect-timeout-ms', 10_000);
const maxHoldMs = opt('--max-hold-ms', 300_000);
if (!host || !Number.isInteger(port) || !Number.isInteger(count) || count < 1) {
  console.error('usage: hold-client.mjs HOST PORT COUNT [--concurrency N] [--connect-timeout-ms MS] [--max-hold-ms MS]');
  process.exit(2);
}

const started = Date.now();
const sockets = new Set();
const errors = {};
let held = 0;
let failed = 0;
let next = 0;
let inFlight = 0;

function openOne() {
  next++;
  inFlight++;
  const s = net.connect({ host, port });
  s.setTimeout(connectTimeoutMs);
  let settled = false;
  const settle = (ok, why) => {
    if (settled) return;
    settled = true;
    inFlight--;
    if (ok) {
      held++;
      sockets.add(s);
      s.setTimeout(0);
    } else {
      failed++;
      errors[why] = (errors[why] ?? 0) + 1;
      s.destroy();
    }
    pump();
  };
  s.once('connect', () => settle(true));
  s.on('timeout', () => settle(false, 'ETIMEDOUT'));
  s.on('error', (err) => {
    if (!settled) settle(false, err.code ?? 'error');
  });
  s.on('close', () => {
    if (settled && sockets.delete(s)) errors.closedWhileHeld = (errors.closedWhileHeld ?? 0) + 1;
  });
}

function pump() {
  while (inFlight < concurrency && next < count) openOne();
  if (inFlight === 0 && next === count && !pump.done) {
    pump.done = true;
    console.log(JSON.stringify({ held, failed, errors, ms: Date.now() - started }));
  }
}

function release() {
  for (const s of sockets) s.resetAndDestroy();
  process.exit(0);
}
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, release);
process.stdin.on('end', release);
process.stdin.resume();
setTimeout(release, maxHoldMs).unref();
pump();
