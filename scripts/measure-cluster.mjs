#!/usr/bin/env node
// Measures the registry of a cluster of interceptor nodes on one etcd (root; run on demand, not a
// test). It builds three labs (scripts/lab.sh) whose gateways reach one etcd (scripts/cluster-lab.sh),
// starts a daemon on each gateway (store = "etcd"), and measures:
//
//   1. propagation: the time from a registration sent to node A until node B decides by it, over
//      --registrations registrations (median, p90, worst). "B decides by it" is polled through B's
//      admin API, whose per-port decisions come from the registry.decide() every connection uses.
//   2. fetches: --policies instances registered on node A without a policy while a connection
//      through each of the three nodes asks for it; the guest agents (one per lab, answering after
//      --agent-delay-ms) count the Info requests they get.
//
// usage: node scripts/measure-cluster.mjs [--registrations 100] [--policies 10] [--agent-delay-ms 1000]
// Needs `npm run build` and etcd-server (scripts/install-deps.sh). Everything it creates
// (namespaces, processes, temp files) is removed when it ends.
import { spawn, execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '..');
const CLI = path.join(ROOT, 'dist', 'cli.js');
const NODES = 3;

const args = process.argv.slice(2);
const opt = (name, dflt, max) => {
  if (!args.includes(name)) return dflt;
  const text = args[args.indexOf(name) + 1];
  const n = Number(text);
  if (!/^\d+$/.test(text ?? '') || n < 1 || n > max) {
    console.error(`${name} must be a whole number in 1..${max}, got ${JSON.stringify(text ?? null)}`);
    process.exit(2);
  }
  return n;
};
const registrations = opt('--registrations', 100, 100_000);
const policies = opt('--policies', 10, 10_000);
const agentDelayMs = opt('--agent-delay-ms', 1000, 60_000);

if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first`);
const { createAdminClient } = await import(path.join(ROOT, 'dist/admin/client.js'));
const { parsePolicyString } = await import(path.join(ROOT, 'dist/registry/policy.js'));

const prefix = `tpm${process.pid.toString(36)}${randomBytes(2).toString('hex')}`;
const labs = Array.from({ length: NODES }, (_, i) => `${prefix}${i + 1}`);
const gateway = (i) => `${labs[i]}-g`;
const backend = (i) => `${labs[i]}-b`;
const client = (i) => `${labs[i]}-c`;
const etcdNs = `${prefix}-e`;
const procs = new Set();
let dir = null;

function start(ns, argv, readyText) {
  const child = spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
  const proc = { child, out: '' };
  procs.add(proc);
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${argv.join(' ')} in ${ns}: no "${readyText}" within 30 s:\n${proc.out.slice(-3000)}`)), 30_000);
    const onData = (d) => {
      proc.out += d;
      if (proc.out.includes(readyText)) {
        clearTimeout(timer);
        resolve(proc);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      procs.delete(proc);
      reject(new Error(`${argv.join(' ')} in ${ns} exited (${code}):\n${proc.out.slice(-3000)}`));
    });
  });
  return ready;
}

let cleaning = null;
/** Stops everything and removes the labs; once, whoever asks first (the end, or a signal). */
function cleanup() {
  cleaning ??= teardown();
  return cleaning;
}

async function teardown() {
  for (const p of procs) p.child.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 500));
  for (const p of procs) p.child.kill('SIGKILL');
  await execFileP('bash', [path.join(ROOT, 'scripts/cluster-lab.sh'), 'down', etcdNs]).catch(() => {});
  for (const lab of labs) await execFileP('bash', [path.join(ROOT, 'scripts/lab.sh'), 'down', lab]).catch(() => {});
  if (dir) await rm(dir, { recursive: true, force: true });
}

function stats(values) {
  const s = [...values].sort((a, b) => a - b);
  const at = (q) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  return { n: s.length, median: at(0.5), p90: at(0.9), worst: s[s.length - 1] };
}
const ms = (v) => `${v.toFixed(2)} ms`;

async function main() {
  dir = await mkdtemp(path.join(tmpdir(), `${prefix}-`));
  for (const lab of labs) await execFileP('bash', [path.join(ROOT, 'scripts/lab.sh'), 'up', lab]);
  await execFileP('bash', [path.join(ROOT, 'scripts/cluster-lab.sh'), 'up', etcdNs, ...labs.map((_, i) => gateway(i))]);
  await start(etcdNs, [
    'etcd', '--name', 'm', '--data-dir', path.join(dir, 'etcd'),
    '--listen-client-urls', 'http://0.0.0.0:2379', '--advertise-client-urls', 'http://198.19.1.2:2379',
    '--listen-peer-urls', 'http://127.0.0.1:2380', '--initial-advertise-peer-urls', 'http://127.0.0.1:2380',
    '--initial-cluster', 'm=http://127.0.0.1:2380', '--logger', 'zap', '--log-outputs', 'stderr',
  ], 'serving client traffic');

  const appCompose = `${JSON.stringify({ manifest_version: 2, name: 'm', runner: 'docker-compose', port_policy: { ports: [{ port: 8080, pp: true }], restrict_mode: true } })}\n`;
  const hash = createHash('sha256').update(appCompose).digest('hex');
  const composeFile = path.join(dir, 'app-compose.json');
  await writeFile(composeFile, appCompose);

  const admins = [];
  const agents = [];
  for (let i = 0; i < NODES; i++) {
    const socket = path.join(dir, `admin-${i + 1}.sock`);
    const config = path.join(dir, `config-${i + 1}.toml`);
    await writeFile(config, `
[[intercept.targets]]
cidr = "198.18.2.0/24"
ports = [8080]
[registry]
store = "etcd"
admin_socket = "${socket}"
path = "${path.join(dir, `registry-${i + 1}`)}"
[registry.fetch]
timeout = "5s"
[registry.etcd]
endpoints = ["http://198.19.${i + 1}.2:2379"]
prefix = "/measure/"
`);
    // Policy instances live on extra addresses of each lab's backend, where its agent answers.
    for (let k = 0; k < policies; k++) await execFileP('ip', ['-n', backend(i), 'addr', 'add', `198.18.2.${100 + k}/24`, 'dev', 'eth0']);
    agents.push(await start(backend(i), ['node', path.join(ROOT, 'test/netns/fixtures/fake-agent.mjs'), '8090', composeFile, '--delay-ms', String(agentDelayMs)], 'ready'));
    await start(gateway(i), ['node', CLI, 'run', '--config', config], '"msg":"running"');
    admins.push(createAdminClient(socket));
  }
  const [a, b] = admins;

  // 1. Propagation A -> B.
  const total = [];
  const afterAck = [];
  const ack = [];
  for (let i = 0; i < registrations; i++) {
    const id = `lat-${i}`;
    const t0 = performance.now();
    await a.addInstance({ instanceId: id, appId: 'app', ip: `198.18.50.${i % 250}`, policy: parsePolicyString('8080:pp', true) });
    const tAck = performance.now();
    for (const end = Date.now() + 30_000; ; ) {
      if (Date.now() > end) throw new Error(`node B never decided by ${id}`);
      const details = await b.getInstance(id).catch((err) => (err.code === 'ERR_UNKNOWN_INSTANCE' ? null : Promise.reject(err)));
      if (details !== null && details.decisions[0]?.kind === 'proxy') break;
    }
    const t1 = performance.now();
    total.push(t1 - t0);
    afterAck.push(t1 - tAck);
    ack.push(tAck - t0);
    await a.removeInstance(id);
    await new Promise((r) => setTimeout(r, 10));
  }

  // 2. Fetches of a policy all three nodes want.
  const before = agents.map((p) => (p.out.match(/^request \d+/gm) ?? []).length);
  const learnedElsewhere = [0, 0, 0];
  for (let k = 0; k < policies; k++) {
    const id = `pol-${k}`;
    const ip = `198.18.2.${100 + k}`;
    await a.addInstance({ instanceId: id, appId: 'app', ip, composeHash: hash });
    // One connection through each node: each node's decision asks for the policy.
    await Promise.all(labs.map((_, i) => execFileP('ip', ['netns', 'exec', client(i), 'node', path.join(ROOT, 'scripts/peers/client.mjs'), ip, '8080', '--timeout', '300']).catch(() => {})));
    for (const end = Date.now() + 60_000; ; ) {
      if (Date.now() > end) throw new Error(`the policy of ${id} was not learned by every node`);
      const all = await Promise.all(admins.map((c) => c.getInstance(id)));
      // A node whose connection came before it saw the registration never asked (fetch null).
      if (all.every((d) => d.record.reportedPolicy !== null && (d.fetch === null || d.fetch.state === 'learned'))) {
        all.forEach((d, i) => d.fetch?.attempts === 0 && learnedElsewhere[i]++);
        break;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  const after = agents.map((p) => (p.out.match(/^request \d+/gm) ?? []).length);
  const fetches = after.reduce((sum, n, i) => sum + n - before[i], 0);

  const t = stats(total);
  const r = stats(afterAck);
  const w = stats(ack);
  console.log(`registry propagation over etcd, ${NODES} nodes, ${registrations} registrations (A = node 1, B = node 2)`);
  console.log(`  registration sent to A -> B decides by it: median ${ms(t.median)}, p90 ${ms(t.p90)}, worst ${ms(t.worst)}`);
  console.log(`    of which A acknowledging the registration: median ${ms(w.median)}, worst ${ms(w.worst)}`);
  console.log(`    and A's acknowledgement -> B decides by it: median ${ms(r.median)}, p90 ${ms(r.p90)}, worst ${ms(r.worst)}`);
  console.log(`policy fetches: ${policies} instances, each wanted by all ${NODES} nodes (agent answers after ${agentDelayMs} ms)`);
  console.log(`  Info requests at the agents: ${fetches} (${(fetches / policies).toFixed(2)} per instance)`);
  console.log(`  instances a node asked for and took from another node's fetch: ${learnedElsewhere.join(', ')} (node 1, 2, 3)`);
}

// Ctrl-C or a kill: the labs, etcd and the daemons go as on any other end.
let interrupted = false;
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    interrupted = true;
    console.error(`${signal}: cleaning up`);
    void cleanup().finally(() => process.exit(130));
  });
}

let failed = false;
try {
  await main();
} catch (err) {
  failed = true;
  // What the teardown broke under a run that was interrupted is not worth printing.
  if (!interrupted) console.error(err);
} finally {
  await cleanup();
}
process.exit(interrupted ? 130 : failed ? 1 : 0);
