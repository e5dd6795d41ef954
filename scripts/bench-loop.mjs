#!/usr/bin/env node
// The per-connection costs of the data path, measured apart, as inputs of the scaling estimate
// in docs/architecture.md. Load-independent as far as possible: CPU time of one thread, not rates.
//
//   1. decision: ns per table lookup on a loop thread, with 1,000 and 100,000 instances;
//   2. JavaScript: µs per connection the JavaScript thread spends on its end event (decoding,
//      counters; with the metrics' tally when [metrics] is on; and with the log line at info), the
//      only per-connection work left there;
//   3. accept path (root): CPU µs one loop thread spends per connection it accepts, guards,
//      decides and resets (no upstream), from its own schedstat, on loopback.
//
// The upstream connect and relay cost per connection comes from `npm run bench` (its per-thread
// CPU split during wrk: tpi-loop-* cores / conn/s).
//
//   npx tsc -p tsconfig.json && node scripts/bench-loop.mjs [--connections 20000]
import { readdirSync, readFileSync, openSync } from 'node:fs';
import net from 'node:net';
import { pino } from 'pino';

const dist = (p) => import(new URL(`../dist/${p}`, import.meta.url).href);
const { compileTable } = await dist('datapath/table.js');
const { encodeEvent } = await dist('datapath/events.js');
const { createConnections } = await dist('proxy/connections.js');
const { createTally } = await dist('metrics/tally.js');
const { parseConfig } = await dist('config-parse.js');
const { ipKey } = await dist('net/ip.js');
const { ALWAYS_LOCAL } = await dist('proxy/guard.js');
const { loadAddon } = await dist('native/addon.js');

const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const CONNECTIONS = arg('--connections', 20000);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

// ---- 1. the decision ---------------------------------------------------------------------------

const { targets } = parseConfig('[[intercept.targets]]\ncidr = "10.0.0.0/8"\nports = ["1-65535"]\n').intercept;
function endpoints(ips, port) {
  const buf = Buffer.alloc(20 * ips.length);
  ips.forEach((ip, i) => {
    const k = ipKey(ip);
    buf.set(k.key, 20 * i);
    buf.writeUInt16LE(port, 20 * i + 16);
    buf[20 * i + 18] = k.family;
  });
  return buf;
}
function decisionNs(instances) {
  const entries = [];
  for (let i = 0; i < instances; i++) {
    entries.push({ instanceId: `instance-${i}`, ip: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, refuseAll: null, restrictMode: i % 2 === 0, ports: new Map([[8080, true], [8081, false], [443, false]]), source: 'policy' });
  }
  const table = compileTable({ generation: 1, targets, localAddresses: ['192.0.2.1'], localNetworks: ALWAYS_LOCAL, trustedSources: [], entries });
  // Random registered destinations: every lookup misses the cache with 100k instances, as a real one would.
  const ips = Array.from({ length: 200_000 }, () => entries[Math.floor(Math.random() * instances)].ip);
  const eps = endpoints(ips, 8081);
  const runs = Array.from({ length: 5 }, () => loadAddon().tableBench(table, eps, 5));
  return { ns: median(runs), tableKiB: table.length / 1024 };
}

// ---- 2. JavaScript per connection end -------------------------------------------------------------

function jsUs(level, { metrics = false } = {}) {
  const logger = pino({ level }, pino.destination({ dest: openSync('/dev/null', 'w'), sync: true }));
  const connections = createConnections({ logger });
  if (metrics) {
    // As the daemon wires it with [metrics] listen set: the tally counts each batch in place.
    const tally = createTally();
    connections.events.on('batch', (b) => tally.add(b));
  }
  const record = (i) =>
    encodeEvent({
      type: 'end', id: (i << 8) | 1, kind: i % 3 === 0 ? 'proxy' : 'transparent', reason: 'policy', end: 'done', errno: 0, syscall: '', ppFailure: null,
      inboundVersion: 0, inboundLocal: false, inboundNoClient: false, upstreamPort: 40000 + (i % 1000),
      peer: { address: '198.18.1.2', port: 30000 + (i % 30000) }, destination: { address: '198.18.2.2', port: 8080 }, client: { address: '198.18.1.2', port: 30000 + (i % 30000) },
      instanceId: 'instance-1', bytesIn: 100, bytesOut: 120, acceptedUs: 1e6, decidedUs: 1e6 + 3, connectedUs: 1e6 + 300, endedUs: 1e6 + 900,
    });
  // Batches as the engine delivers them under load: a few hundred records each.
  const batch = Buffer.concat(Array.from({ length: 256 }, (_, i) => record(i)));
  const rounds = level === 'info' ? 200 : 2000;
  for (let i = 0; i < 50; i++) connections.onBatch(batch);
  const runs = [];
  for (let r = 0; r < 5; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < rounds; i++) connections.onBatch(batch);
    runs.push(Number(process.hrtime.bigint() - t0) / 1000 / (rounds * 256));
  }
  return median(runs);
}

// ---- 3. one loop thread's accept path ------------------------------------------------------------

function loopThreadNs() {
  for (const tid of readdirSync('/proc/self/task')) {
    if (readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim() === 'tpi-loop-0') {
      return Number(readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    }
  }
  throw new Error('no tpi-loop-0 thread');
}

async function acceptPathUs() {
  const { startEngine, setEngineTable, shutdownEngine, engineStats } = await dist('native/engine.js');
  const { openTransparentListener } = await dist('native/sockets.js');
  const port = 20000 + Math.floor(Math.random() * 40000);
  const fd = openTransparentListener('127.0.0.1', port);
  startEngine(
    { pipeSize: 0, connectTimeoutMs: 1000, idleTimeoutMs: 0, headerTimeoutMs: 1000, maxV2Length: 4096, ppVersion: 2, keepClientPort: false, maxConnections: 100000, reportOpen: false },
    [[fd]],
    () => {},
  );
  // Refused as local_destination: accept4, getsockname, epoll_ctl, the decision, the reset.
  setEngineTable(compileTable({ generation: 1, targets: parseConfig('[[intercept.targets]]\ncidr = "127.0.0.0/8"\nports = ["1-65535"]\n').intercept.targets, localAddresses: [], localNetworks: ALWAYS_LOCAL, trustedSources: [], entries: [] }));
  // The thread names itself when it starts running.
  for (let i = 0; i < 100; i++) {
    try {
      loopThreadNs();
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  const before = loopThreadNs();
  let done = 0;
  await new Promise((resolve) => {
    let started = 0;
    const one = () => {
      if (started >= CONNECTIONS) return;
      started++;
      const s = net.connect({ host: '127.0.0.1', port });
      const end = () => {
        s.destroy();
        if (++done === CONNECTIONS) resolve();
        else one();
      };
      s.on('error', end);
      s.on('close', end);
    };
    for (let i = 0; i < 64; i++) one();
  });
  const ns = loopThreadNs() - before;
  const accepted = engineStats().accepted;
  shutdownEngine();
  return { us: ns / 1000 / accepted, accepted };
}

// ---------------------------------------------------------------------------------------------------

const small = decisionNs(1000);
const large = decisionNs(100_000);
console.log(`decision on a loop thread: ${small.ns.toFixed(0)} ns with 1,000 instances (table ${small.tableKiB.toFixed(0)} KiB), ${large.ns.toFixed(0)} ns with 100,000 (table ${(large.tableKiB / 1024).toFixed(1)} MiB)`);
console.log(`JavaScript per connection end: ${jsUs('warn').toFixed(3)} µs counted (log level warn), ${jsUs('warn', { metrics: true }).toFixed(3)} µs with the metrics' tally, ${jsUs('info').toFixed(2)} µs with its log line (info, to /dev/null)`);
if (process.getuid?.() === 0) {
  const a = await acceptPathUs();
  console.log(`one loop thread, accept + guard + decision + reset: ${a.us.toFixed(1)} µs CPU per connection (${a.accepted} connections, loopback)`);
} else {
  console.log('accept path: skipped (needs root for the IP_TRANSPARENT listener)');
}
