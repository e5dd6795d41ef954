#!/usr/bin/env node
// The bench's client, started once in the client namespace and kept for the whole run, so that
// no path pays a node start for its client-IP check or its idle connections. One JSON command a
// line on stdin, answered by one JSON line on stdout with the same id:
//   {"id":1,"cmd":"probe","host":H,"port":P,"timeoutMs":T}  one GET (Connection: close) →
//       {"id":1,"status":200,"body":"..."} or {"id":1,"error":"ECONNREFUSED"}
//   {"id":2,"cmd":"hold","host":H,"port":P,"count":N,"concurrency":C,"window":W}  open and hold
//       N idle connections (hold-connections.mjs) → {"id":2,"progress":{...}} every 5 s, then
//       {"id":2,"held":N,"failed":M,"errors":{...},"ms":T}
//   {"cmd":"relayed","count":N}  how many of them the backend has seen (for the window)
//   {"id":3,"cmd":"release"}  reset every held connection → {"id":3,"released":N}
// Prints "ready" first. stdin closing, SIGTERM or SIGINT: resets what it holds and exits.
// usage: client-agent.mjs
import http from 'node:http';
import { holdConnections } from './hold-connections.mjs';

const reply = (msg) => process.stdout.write(`${JSON.stringify(msg)}\n`);
let hold = null;

function probe({ id, host, port, timeoutMs = 5000 }) {
  const req = http.get({ host, port, path: '/', headers: { Connection: 'close' }, timeout: timeoutMs, agent: false }, (res) => {
    let body = '';
    res.setEncoding('utf8');
    res.on('data', (d) => (body += d));
    res.on('end', () => reply({ id, status: res.statusCode, body }));
  });
  req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
  req.on('error', (err) => reply({ id, error: err.code ?? err.message }));
}

function startHold({ id, host, port, count, concurrency, window }) {
  if (hold) {
    reply({ id, error: 'EBUSY: still holding; release first' });
    return;
  }
  const h = holdConnections({ host, port, count, concurrency, window: window ?? Infinity });
  hold = h;
  const progress = setInterval(() => reply({ id, progress: h.progress() }), 5000);
  h.done.then((summary) => {
    clearInterval(progress);
    reply({ id, ...summary });
  });
}

function release(id) {
  const released = hold ? hold.release() : 0;
  hold = null;
  if (id !== undefined) reply({ id, released });
}

function onCommand(line) {
  let msg;
  try {
    msg = JSON.parse(line);
  } catch {
    reply({ error: `not JSON: ${line.slice(0, 100)}` });
    return;
  }
  switch (msg.cmd) {
    case 'probe':
      probe(msg);
      break;
    case 'hold':
      startHold(msg);
      break;
    case 'relayed':
      hold?.relayed(msg.count);
      break;
    case 'release':
      release(msg.id);
      break;
    default:
      reply({ id: msg.id, error: `unknown command ${JSON.stringify(msg.cmd)}` });
  }
}

function exit() {
  release();
  process.exit(0);
}
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, exit);
let partial = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  const lines = (partial + d).split('\n');
  partial = lines.pop();
  for (const line of lines) if (line.trim() !== '') onCommand(line);
});
process.stdin.on('end', exit);
process.stdout.write('ready\n');
