#!/usr/bin/env node
// The soak's client, one process in the client namespace for the whole run. Connections belong
// to named groups; each runs the soak conversation (wire.mjs) its spec describes and leaves a
// ClientRecord (reconcile.mjs) when it closes. Commands (agent-io.mjs):
//   open {group, specs, concurrency}   start them; answers once each connected or failed
//   finish {group, timeoutMs}          end the client side of those still sending; answers with
//                                      every record once all closed (the rest: error "hung")
//   wait {group, timeoutMs}            the same without ending anything
//   run {group, specs, concurrency, timeoutMs}   open + wait
//   progress {group}                   bytes each open connection got into the kernel
//   cut {group}                        reset every connection of the group; answers with records
//   ramp {...}                         new connections at rising rates (see ramp())
import net from 'node:net';
import { serveCommands, sleep } from './agent-io.mjs';
import { createSender } from './sender.mjs';
import { connectionSeed, createVerifier, keystream } from './stream.mjs';
import { encodeHello } from './wire.mjs';
import { outcomeOf } from './reconcile.mjs';
import { CLIENT_LIMITS } from './figures.mjs';

/** group name → Set of live connections */
const groups = new Map();
/** group name → records of its closed connections not yet handed over */
const finished = new Map();

/**
 * @param {{ id: string, host: string, port: number, pp: boolean, seed: string,
 *   up: { chunk: number, intervalMs: number, total: number | null }, down: object,
 *   readPause?: { everyBytes: number, ms: number }, endDelayMs?: number, connectTimeoutMs?: number }} spec
 */
function startConnection(group, spec) {
  const rec = {
    id: spec.id,
    host: spec.host,
    port: spec.port,
    pp: spec.pp,
    localAddress: null,
    localPort: null,
    connected: false,
    connectMs: null,
    upSent: 0,
    downVerified: 0,
    downReceived: 0,
    downMismatchAt: null,
    downEof: false,
    downExpected: spec.down.total,
    error: null,
    ms: 0,
  };
  const t0 = performance.now();
  const socket = net.connect({ host: spec.host, port: spec.port, allowHalfOpen: true });
  socket.setNoDelay(true);
  const verifier = createVerifier(spec.seed, 'down');
  let sender = null;
  let endTimer = null;
  let ended = false;
  let resolveConnected;
  let resolveClosed;
  const connected = new Promise((r) => (resolveConnected = r));
  const closed = new Promise((r) => (resolveClosed = r));

  const endUp = () => {
    if (ended) return;
    ended = true;
    socket.end();
  };
  const connectTimer = setTimeout(() => {
    rec.error ??= 'ETIMEDOUT';
    socket.destroy();
  }, spec.connectTimeoutMs ?? 10_000);

  socket.once('connect', () => {
    clearTimeout(connectTimer);
    rec.connected = true;
    rec.connectMs = Math.round(performance.now() - t0);
    rec.localAddress = socket.localAddress;
    rec.localPort = socket.localPort;
    resolveConnected();
    socket.write(encodeHello({ id: spec.id, seed: spec.seed, down: spec.down }));
    sender = createSender(socket, keystream(spec.seed, 'up'), spec.up, () => {
      if (spec.endDelayMs) endTimer = setTimeout(endUp, spec.endDelayMs);
      else endUp();
    });
    sender.start();
  });
  let sincePause = 0;
  socket.on('data', (chunk) => {
    rec.downReceived += chunk.length;
    verifier.push(chunk);
    if (spec.readPause) {
      sincePause += chunk.length;
      if (sincePause >= spec.readPause.everyBytes) {
        sincePause = 0;
        socket.pause();
        setTimeout(() => socket.resume(), spec.readPause.ms);
      }
    }
  });
  socket.on('end', () => {
    rec.downEof = true;
  });
  socket.on('error', (err) => {
    rec.error ??= err.code ?? String(err);
  });
  socket.on('close', () => {
    clearTimeout(connectTimer);
    clearTimeout(endTimer);
    sender?.stop();
    rec.upSent = sender?.sent ?? 0;
    rec.downVerified = verifier.verified;
    rec.downMismatchAt = verifier.mismatchAt;
    rec.ms = Math.round(performance.now() - t0);
    groupOf(group).delete(conn);
    let list = finished.get(group);
    if (!list) finished.set(group, (list = []));
    list.push(rec);
    resolveConnected();
    resolveClosed(rec);
  });

  const conn = {
    rec,
    socket,
    connected,
    closed,
    /** Ends our side now (the plan's total is not waited for). */
    finish() {
      sender?.stop();
      clearTimeout(endTimer);
      if (rec.connected) endUp();
    },
    /** Bytes of ours the kernel has taken (written minus what still waits in user space). */
    inKernel() {
      return Math.max(0, (sender?.sent ?? 0) - socket.writableLength);
    },
  };
  groupOf(group).add(conn);
  return conn;
}

function groupOf(name) {
  let g = groups.get(name);
  if (!g) groups.set(name, (g = new Set()));
  return g;
}

async function open(group, specs, concurrency = 256) {
  const t0 = Date.now();
  let next = 0;
  let failed = 0;
  const errors = {};
  const worker = async () => {
    while (next < specs.length) {
      const conn = startConnection(group, specs[next++]);
      await conn.connected;
      if (!conn.rec.connected) {
        failed++;
        errors[conn.rec.error ?? 'closed'] = (errors[conn.rec.error ?? 'closed'] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, specs.length) }, worker));
  return { opened: specs.length - failed, failed, errors, ms: Date.now() - t0 };
}

/** Waits (up to timeoutMs) for every connection of the group to close; the rest are hung. */
async function settle(group, timeoutMs) {
  const g = groupOf(group);
  const conns = [...g];
  const deadline = sleep(timeoutMs).then(() => 'timeout');
  await Promise.race([Promise.all(conns.map((c) => c.closed)), deadline]);
  for (const c of g) {
    c.rec.error ??= 'hung';
    c.socket.destroy();
  }
  await Promise.all(conns.map((c) => c.closed));
  const records = [...(finished.get(group) ?? [])];
  finished.delete(group);
  return records;
}

/**
 * New connections at each rate in turn for stepMs, every one the short exchange of its spec
 * (holding it holdMs), until a step in which some connection did not complete (and, with
 * `extraSteps`, that many steps more). Each step answers [outcome, ms] per connection.
 */
async function ramp({ group, host, port, pp, rates, stepMs, spec, runSeed, extraSteps = 0, settleMs }) {
  const steps = [];
  let afterFailure = -1;
  for (const rate of rates) {
    const total = Math.max(1, Math.round((rate * stepMs) / 1000));
    const stepGroup = `${group}-${rate}`;
    const t0 = Date.now();
    let n = 0;
    await new Promise((resolve) => {
      const tick = () => {
        const due = Math.min(total, Math.floor(((Date.now() - t0) * rate) / 1000) + 1);
        while (n < due) {
          const id = `${stepGroup}-${n++}`;
          startConnection(stepGroup, { ...spec, id, host, port, pp, seed: connectionSeed(runSeed, id) });
        }
        if (n >= total) resolve();
        else setTimeout(tick, 5);
      };
      tick();
    });
    const ms = Date.now() - t0;
    const records = await settle(stepGroup, settleMs);
    steps.push({ rate, ms, results: records.map((r) => [outcomeOf(r), r.ms]) });
    // The client's own limits (descriptors, ports): rates beyond say nothing more.
    if (records.some((r) => CLIENT_LIMITS.includes(outcomeOf(r)))) break;
    const failedHere = records.some((r) => outcomeOf(r) !== 'completed');
    if (failedHere && afterFailure < 0) afterFailure = 0;
    else if (afterFailure >= 0) afterFailure++;
    if (afterFailure >= extraSteps && afterFailure >= 0) break;
  }
  return { steps };
}

serveCommands({
  open: ({ group, specs, concurrency }) => open(group, specs, concurrency),
  finish: async ({ group, timeoutMs }) => {
    for (const c of groupOf(group)) c.finish();
    return { records: await settle(group, timeoutMs) };
  },
  wait: async ({ group, timeoutMs }) => ({ records: await settle(group, timeoutMs) }),
  run: async ({ group, specs, concurrency, timeoutMs }) => {
    const opened = await open(group, specs, concurrency);
    return { ...opened, records: await settle(group, timeoutMs) };
  },
  progress: ({ group }) => ({ inKernel: [...groupOf(group)].map((c) => c.inKernel()), open: groupOf(group).size }),
  cut: async ({ group }) => {
    for (const c of groupOf(group)) {
      c.rec.error ??= 'cut';
      c.socket.resetAndDestroy();
    }
    return { records: await settle(group, 5000) };
  },
  ramp: (msg) => ramp(msg),
});
console.log('ready');
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
