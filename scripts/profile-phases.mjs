#!/usr/bin/env node
// Where the time goes per connection: reads the daemon's JSON log (a file or stdin) and prints,
// for each phase a connection's log line records (decide, or inboundPp for a trusted load
// balancer's connection; then connect and relay),
// the count, p50, p90, p99 and mean in microseconds.
// usage: node scripts/profile-phases.mjs [daemon.log]
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';

const input = process.argv[2] ? createReadStream(process.argv[2]) : process.stdin;
const samples = new Map();
for await (const line of createInterface({ input })) {
  if (!line.includes('"phasesUs"')) continue;
  let entry;
  try {
    entry = JSON.parse(line);
  } catch {
    continue;
  }
  for (const [name, us] of Object.entries(entry.phasesUs ?? {})) {
    if (!samples.has(name)) samples.set(name, []);
    samples.get(name).push(us);
  }
}
if (samples.size === 0) {
  console.error('profile-phases: no connection lines with phasesUs (is log.level at least "info"?)');
  process.exit(1);
}
const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
console.log('| phase | count | p50 µs | p90 µs | p99 µs | mean µs |');
console.log('|---|---|---|---|---|---|');
for (const name of ['inboundPp', 'decide', 'connect', 'relay']) {
  const v = samples.get(name);
  if (!v) continue;
  v.sort((a, b) => a - b);
  const mean = v.reduce((a, b) => a + b, 0) / v.length;
  console.log(`| ${name} | ${v.length} | ${pct(v, 50)} | ${pct(v, 90)} | ${pct(v, 99)} | ${mean.toFixed(0)} |`);
}
