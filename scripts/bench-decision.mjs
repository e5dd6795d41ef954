#!/usr/bin/env node
// Cost of the per-connection decision: Registry.decide() over 100,000 registered instances.
//
//   npx tsc -p tsconfig.json && node scripts/bench-decision.mjs [--instances 100000] [--lookups 5000000] [--runs 5]
//
// Reads the compiled registry from dist/ (or from $BENCH_DIST, e.g. a directory holding only the
// registry files compiled on their own). Addresses come from 198.18.0.0/15 (RFC 2544 benchmarking)
// and fd00::/8 (ULA) only.
import { performance } from 'node:perf_hooks';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { pino } from 'pino';

const { values } = parseArgs({
  options: {
    instances: { type: 'string', default: '100000' },
    lookups: { type: 'string', default: '2000000' },
    runs: { type: 'string', default: '5' },
  },
});
const INSTANCES = Number(values.instances);
const LOOKUPS = Number(values.lookups);
const RUNS = Number(values.runs);

const here = path.dirname(fileURLToPath(import.meta.url));
const dist = process.env.BENCH_DIST ?? path.join(here, '..', 'dist');
const { Registry } = await import(pathToFileURL(path.join(dist, 'registry', 'registry.js')).href);
const { parsePolicyString } = await import(pathToFileURL(path.join(dist, 'registry', 'policy.js')).href);

// Deterministic PRNG so runs compare.
let seed = 0x9e3779b9;
function rand() {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 0x100000000;
}

/** The i-th benchmark address: even i from 198.18.0.0/15, odd i from fd00::/8. */
function addressOf(i) {
  const n = i >> 1;
  if ((i & 1) === 0) return `198.${18 + ((n >> 16) & 1)}.${(n >> 8) & 255}.${n & 255}`;
  return `fd00::${((n >> 16) & 0xffff).toString(16)}:${(n & 0xffff).toString(16)}`;
}

/** A distinct flat string, as libuv (socket addresses) and JSON.parse (admin requests) produce. */
const socketString = (s) => Buffer.from(s, 'latin1').toString('latin1');

const policies = [
  parsePolicyString('8080:pp,443,80', false),
  parsePolicyString('8080:pp,9000:pp', true),
  parsePolicyString('22,5432:pp', false),
];

const registry = new Registry({ logger: pino({ level: 'silent' }) });
const ips = [];
const heapBefore = process.memoryUsage().heapUsed;
for (let i = 0; i < INSTANCES; i++) {
  const ip = addressOf(i);
  // Half report a policy; the other half stay unknown (refused on every port: policy_unknown for
  // those with an attested compose hash, policy_unattested for the rest).
  const withPolicy = i % 2 === 0;
  const { record } = registry.register({
    // As an admin request delivers them: flat strings out of JSON.parse.
    instanceId: `inst-${i}`,
    appId: `app-${i % 97}`,
    ip: socketString(ip),
    policy: withPolicy ? policies[i % policies.length] : undefined,
    composeHash: !withPolicy && i % 4 === 1 ? (i % 65536).toString(16).padStart(64, '0') : undefined,
  });
  ips.push(record.ip);
}
globalThis.gc?.();
const heapRegistry = process.memoryUsage().heapUsed - heapBefore;

// Lookups as the proxy makes them: each one a distinct flat string, as libuv hands a socket's
// address to JS (IPv6 compressed, lowercase: the registry's canonical spelling), never the very
// string object the registry holds as key; a mix of listed and unlisted ports; 5 % unregistered
// addresses. Their hashes are computed in the warm-up run: a fresh socket string pays that once.
const PORT_CHOICES = [8080, 443, 80, 22, 9000, 5432, 12345, 3000];
const lookupIps = new Array(LOOKUPS);
const lookupPorts = new Int32Array(LOOKUPS);
for (let k = 0; k < LOOKUPS; k++) {
  lookupIps[k] = socketString(
    rand() < 0.05 ? addressOf(INSTANCES + Math.floor(rand() * INSTANCES)) : ips[Math.floor(rand() * INSTANCES)],
  );
  lookupPorts[k] = PORT_CHOICES[Math.floor(rand() * PORT_CHOICES.length)];
}

const counts = { proxy: 0, transparent: 0, refuse: 0 };
function run() {
  let proxy = 0;
  let refuse = 0;
  const t0 = performance.now();
  for (let k = 0; k < LOOKUPS; k++) {
    const kind = registry.decide(lookupIps[k], lookupPorts[k]).decision.kind;
    if (kind === 'proxy') proxy++;
    else if (kind === 'refuse') refuse++;
  }
  const ns = ((performance.now() - t0) * 1e6) / LOOKUPS;
  counts.proxy = proxy;
  counts.refuse = refuse;
  counts.transparent = LOOKUPS - proxy - refuse;
  return ns;
}

run(); // warm-up: JIT, and the lazily built per-record results
const samples = [];
for (let r = 0; r < RUNS; r++) samples.push(run());
const sorted = [...samples].sort((a, b) => a - b);
const median = sorted[Math.floor(sorted.length / 2)];
const mem = process.memoryUsage();

console.log(
  JSON.stringify(
    {
      node: process.version,
      instances: registry.size,
      lookupsPerRun: LOOKUPS,
      runs: RUNS,
      nsPerLookupMedian: Number(median.toFixed(1)),
      nsPerLookupRuns: samples.map((s) => Number(s.toFixed(1))),
      decisions: counts,
      heapUsedMiB: Number((mem.heapUsed / 1048576).toFixed(1)),
      registryHeapMiB: globalThis.gc ? Number((heapRegistry / 1048576).toFixed(1)) : 'run with --expose-gc',
    },
    null,
    2,
  ),
);
