#!/usr/bin/env node
// The soak's backend, in the backend namespace. Per port a behaviour:
//   verify  the soak conversation (wire.mjs): verifies the client's stream byte by byte, sends its own
//   pp      the same after a PROXY header it parses itself (pp-header.mjs)
//   sink    accepts and never reads (a backend that applies backpressure forever)
//   reset   resets every connection right after accepting it
// Every accepted connection is counted per port (the crash scenario's "nothing forwarded while
// down" counter). Commands (agent-io.mjs): stats, take {prefix}, summarize {prefix}, flap
// {port, upMs, downMs, durationMs}, sinks-close.
// usage: traffic-server.mjs --verify P,P --pp P --sink P --reset P   prints "ready" once listening.
import net from 'node:net';
import { parsePpHeader } from './pp-header.mjs';
import { createSender } from './sender.mjs';
import { createVerifier, keystream } from './stream.mjs';
import { parseHello } from './wire.mjs';
import { serveCommands, sleep, unmap } from './agent-io.mjs';

const HEADER_TIMEOUT_MS = 10_000;

const roles = new Map();
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i += 2) {
  const role = args[i]?.replace(/^--/, '');
  if (!['verify', 'pp', 'sink', 'reset'].includes(role) || !args[i + 1]) {
    console.error('usage: traffic-server.mjs --verify P,P --pp P --sink P --reset P');
    process.exit(2);
  }
  for (const p of args[i + 1].split(',')) roles.set(Number(p), role);
}

const accepted = {};
/** Records of closed connections, until taken. */
let records = [];

/** Removes and returns the records that match, in one pass. */
function drain(match) {
  const taken = [];
  const kept = [];
  for (const r of records) (match(r) ? taken : kept).push(r);
  records = kept;
  return taken;
}
const sinks = new Set();
const open = new Set();
const servers = new Map();

function onVerify(socket, port, expectPp) {
  const rec = {
    id: null,
    port,
    remoteAddress: unmap(socket.remoteAddress),
    remotePort: socket.remotePort,
    pp: null,
    upVerified: 0,
    upReceived: 0,
    upMismatchAt: null,
    upEof: false,
    downSent: 0,
    error: null,
  };
  let phase = expectPp ? 'pp' : 'hello';
  let pending = Buffer.alloc(0);
  let verifier = null;
  let sender = null;
  let plan = null;
  const fail = (err) => {
    rec.error ??= err.code === 'ERR_SOAK_PP_HEADER' || err.code === 'ERR_SOAK_WIRE' ? `${err.code}: ${err.message}` : (err.code ?? String(err));
    socket.destroy();
  };
  const headerTimer = setTimeout(() => fail(Object.assign(new Error(`no complete ${phase} within ${HEADER_TIMEOUT_MS} ms`), { code: 'ERR_SOAK_WIRE' })), HEADER_TIMEOUT_MS);

  socket.on('data', (chunk) => {
    if (phase === 'stream') {
      verifier.push(chunk);
      return;
    }
    pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    try {
      if (phase === 'pp') {
        const h = parsePpHeader(pending);
        if (!h) return;
        rec.pp = { source: h.source, destination: h.destination };
        pending = pending.subarray(h.length);
        phase = 'hello';
      }
      const r = pending.length ? parseHello(pending) : null;
      if (!r) return;
      clearTimeout(headerTimer);
      rec.id = r.hello.id;
      verifier = createVerifier(r.hello.seed, 'up');
      plan = r.hello.down;
      phase = 'stream';
      const rest = pending.subarray(r.length);
      pending = Buffer.alloc(0);
      if (rest.length) verifier.push(rest);
      sender = createSender(socket, keystream(r.hello.seed, 'down'), plan, () => socket.end());
      sender.start();
    } catch (err) {
      // A pp=true port reached without a header: name the connection if its hello is there.
      if (phase === 'pp') {
        try {
          rec.id = parseHello(pending)?.hello.id ?? null;
        } catch {
          // not a hello either
        }
      }
      fail(err);
    }
  });
  socket.on('end', () => {
    rec.upEof = true;
    if (phase !== 'stream') return fail(Object.assign(new Error(`the client ended before its ${phase} was complete`), { code: 'ERR_SOAK_WIRE' }));
    // A plan without a total runs until the client's end, then sends its tail and ends.
    if (plan.total === null) {
      sender.stop();
      sender.more(plan.afterEof ?? 0, plan.afterEofIntervalMs ?? 0, () => socket.end());
    }
  });
  socket.on('error', (err) => {
    rec.error ??= err.code ?? String(err);
  });
  socket.on('close', () => {
    clearTimeout(headerTimer);
    sender?.stop();
    rec.upVerified = verifier?.verified ?? 0;
    rec.upReceived = verifier?.received ?? 0;
    rec.upMismatchAt = verifier?.mismatchAt ?? null;
    rec.downSent = sender?.sent ?? 0;
    records.push(rec);
  });
}

function onConnection(socket, port) {
  accepted[port] = (accepted[port] ?? 0) + 1;
  open.add(socket);
  socket.on('close', () => open.delete(socket));
  socket.on('error', () => {});
  const role = roles.get(port);
  if (role === 'reset') {
    socket.resetAndDestroy();
  } else if (role === 'sink') {
    socket.pause();
    sinks.add(socket);
    socket.on('close', () => sinks.delete(socket));
  } else {
    socket.setNoDelay(true);
    onVerify(socket, port, role === 'pp');
  }
}

function listen(port) {
  return new Promise((resolve, reject) => {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: false }, (s) => onConnection(s, port));
    server.once('error', reject);
    server.listen({ port, host: '::', ipv6Only: false, backlog: 8192 }, () => {
      server.off('error', reject);
      servers.set(port, server);
      resolve();
    });
  });
}

function unlisten(port) {
  const server = servers.get(port);
  servers.delete(port);
  return new Promise((resolve) => (server ? server.close(() => resolve()) : resolve()));
}

serveCommands({
  stats: () => ({ accepted, open: open.size, sinks: sinks.size, records: records.length, listening: [...servers.keys()] }),
  /**
   * Hands over (and forgets) the records of connections whose id starts with prefix, and those
   * of connections that never said who they were (strays).
   */
  take: ({ prefix }) => {
    const taken = drain((r) => r.id === null || r.id.startsWith(prefix));
    return { records: taken.filter((r) => r.id !== null), strays: taken.filter((r) => r.id === null) };
  },
  /** Like take, but answers only counts: for groups of tens of thousands (the ramp). */
  summarize: ({ prefix }) => {
    const taken = drain((r) => r.id !== null && r.id.startsWith(prefix));
    const wrong = taken.filter((r) => r.upMismatchAt !== null);
    return {
      count: taken.length,
      whole: taken.filter((r) => r.upMismatchAt === null && !r.error && r.upEof).length,
      wrong: wrong.slice(0, 5).map((r) => `${r.id}: up stream wrong from byte ${r.upMismatchAt}`),
      wrongCount: wrong.length,
    };
  },
  /** Toggles a listener: up upMs, down downMs, for durationMs; it is up again at the end. */
  flap: async ({ port, upMs, downMs, durationMs }) => {
    const until = Date.now() + durationMs;
    let cycles = 0;
    while (Date.now() < until) {
      await sleep(upMs);
      await unlisten(port);
      await sleep(downMs);
      await listen(port);
      cycles++;
    }
    return { cycles };
  },
  /** Resets every connection held by a sink. */
  'sinks-close': () => {
    const n = sinks.size;
    for (const s of sinks) s.resetAndDestroy();
    return { closed: n };
  },
});

await Promise.all([...roles.keys()].map((p) => listen(p)));
console.log('ready');
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
