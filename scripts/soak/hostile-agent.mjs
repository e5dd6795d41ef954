#!/usr/bin/env node
// Hostile dstack guest agents for the hostile-agent scenario, in the backend namespace: one raw
// TCP listener per address on the agent port, each with one way of misbehaving towards the
// daemon's policy fetcher (as test/netns/fixtures/fake-agent.mjs plays an honest one):
//   drip          a 200 whose body comes one byte every 200 ms, forever
//   huge          a 200 announcing and streaming a 64 MiB JSON body
//   malformed     a 200 whose body is not JSON
//   garbage       64 KiB of bytes that are not HTTP, then close
//   silent        reads the request, never answers
//   slow-headers  the status line and headers one byte every 200 ms, forever
// Raw TCP rather than node:http: the point is to send what an HTTP server would not.
// Commands (agent-io.mjs): stats → connections, open and bytes sent per behaviour.
// usage: hostile-agent.mjs PORT BEHAVIOUR=ADDR...   prints "ready" once listening.
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { serveCommands } from './agent-io.mjs';

const DRIP_MS = 200;
const HUGE_BYTES = 64 * 1024 * 1024;

const [portText, ...pairs] = process.argv.slice(2);
const port = Number(portText);
const plan = pairs.map((p) => {
  const [behaviour, address] = p.split('=');
  return { behaviour, address };
});
const stats = {};
for (const { behaviour } of plan) stats[behaviour] = { connections: 0, open: 0, bytesSent: 0, requests: 0 };

/** Writes one byte of `text` every DRIP_MS (cycling through it) until the peer goes away. */
function drip(socket, text, st) {
  let i = 0;
  const timer = setInterval(() => {
    if (socket.destroyed) return clearInterval(timer);
    socket.write(text[i++ % text.length]);
    st.bytesSent++;
  }, DRIP_MS);
  socket.on('close', () => clearInterval(timer));
}

function streamHuge(socket, st) {
  socket.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${HUGE_BYTES}\r\n\r\n`);
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  chunk.write('{"tcb_info":"', 0);
  let sent = 0;
  const pump = () => {
    while (sent < HUGE_BYTES && !socket.destroyed) {
      const piece = sent === 0 ? chunk : chunk.subarray(0, Math.min(chunk.length, HUGE_BYTES - sent));
      sent += piece.length;
      st.bytesSent += piece.length;
      if (!socket.write(piece)) return void socket.once('drain', pump);
    }
    if (!socket.destroyed) socket.end();
  };
  pump();
}

function behave(behaviour, socket, st) {
  switch (behaviour) {
    case 'drip':
      socket.write('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n');
      drip(socket, '{"app_id":"', st);
      break;
    case 'huge':
      streamHuge(socket, st);
      break;
    case 'malformed': {
      const body = '{"app_id": "a1", "tcb_info": {not json at all';
      socket.end(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      st.bytesSent += body.length;
      break;
    }
    case 'garbage': {
      const junk = randomBytes(64 * 1024);
      socket.end(junk);
      st.bytesSent += junk.length;
      break;
    }
    case 'silent':
      break;
    case 'slow-headers':
      drip(socket, 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Padding: ', st);
      break;
    default:
      socket.destroy();
  }
}

let listening = 0;
for (const { behaviour, address } of plan) {
  const st = stats[behaviour];
  net
    // Not half-open: when the fetcher closes its side, so do we, and `open` counts only what
    // the fetcher left open.
    .createServer({ allowHalfOpen: false }, (socket) => {
      st.connections++;
      st.open++;
      socket.on('error', () => {});
      socket.on('close', () => st.open--);
      let answered = false;
      let head = '';
      socket.on('data', (d) => {
        if (answered) return;
        // Answer once the request's headers are in (the body, if any, is not waited for).
        head = (head + d.toString('latin1')).slice(-65536);
        if (!head.includes('\r\n\r\n')) return;
        answered = true;
        st.requests++;
        behave(behaviour, socket, st);
      });
      // garbage does not even wait for a request.
      if (behaviour === 'garbage') {
        answered = true;
        st.requests++;
        behave(behaviour, socket, st);
      }
    })
    .listen({ port, host: address }, () => {
      if (++listening === plan.length) console.log('ready');
    });
}

serveCommands({ stats: () => ({ stats }) });
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
