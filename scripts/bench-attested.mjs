#!/usr/bin/env node
// Attested registrations per second over mutual TLS, and their latency: the daemon's registration
// endpoint (dist/attested/server.js) on loopback with the real registry service and SQLite store
// (each acknowledged registration is fdatasync'ed), and a load generator in a child process
// registering distinct instances, each from its own loopback address, each over a new TLS
// connection with its own RA-TLS client certificate (as a CVM does at boot).
//
//   npm run build && node scripts/bench-attested.mjs [--registrations 2000] [--concurrency 16] [--log-level info] [--baseline]
//
// --baseline serves the same requests from a bare HTTPS server with the same mutual-TLS settings
// that only reads the peer certificate and answers {}: the cost of the handshake alone.
//
// Certificates come from scripts/lib/ra-tls-pki.mjs (ECDSA P-256, chain of two). Loopback only:
// the server listens on 127.0.0.1, clients bind 127.1.x.y.
import { fork } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { pino } from 'pino';
import { TestPki, appInfoFields, writePem } from './lib/ra-tls-pki.mjs';

const { values } = parseArgs({
  options: {
    registrations: { type: 'string', default: '2000' },
    concurrency: { type: 'string', default: '16' },
    'log-level': { type: 'string', default: 'info' },
    baseline: { type: 'boolean', default: false },
    client: { type: 'string' }, // internal: the load generator's work file
  },
});

const addressOf = (i) => `127.1.${(i >> 8) & 255}.${i & 255}`;

if (values.client !== undefined) await runClient(values.client);
else await runServer();

async function runServer() {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const dist = (p) => pathToFileURL(path.join(root, 'dist', p)).href;
  const { createAttestedServer } = await import(dist('attested/server.js'));
  const { createRegistryService } = await import(dist('registry/service.js'));
  const { createSqliteStore } = await import(dist('registry/sqlite-store.js'));
  const { DEFAULT_CONFIG } = await import(dist('config-parse.js'));

  const n = Number(values.registrations);
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'tpi-bench-attested-'));
  try {
    const t0 = performance.now();
    const pki = TestPki.create();
    const server = pki.server(['127.0.0.1']);
    const files = await writePem(path.join(tmp, 'pki'), { 'ca.pem': pki.root.certPem, 'server.crt': server.certPem, 'server.key': server.keyPem });
    const clients = [];
    for (let i = 0; i < n; i++) {
      const c = pki.instance(appInfoFields(i + 1));
      clients.push({ cert: c.chainPem, key: c.keyPem, from: addressOf(i + 1) });
    }
    const work = path.join(tmp, 'work.json');
    await writePem(tmp, { 'work.json': JSON.stringify({ ca: pki.root.certPem, clients }) });
    process.stderr.write(`${n} client certificates in ${Math.round(performance.now() - t0)} ms\n`);

    const logger = pino({ level: values['log-level'] }, pino.destination({ dest: '/dev/null', sync: false }));
    const store = createSqliteStore({ dir: path.join(tmp, 'store'), logger });
    const service = await createRegistryService({ logger, config: DEFAULT_CONFIG.registry, store });
    const attested = values.baseline ? await bareServer(pki, server) : await createAttestedServer({
      logger,
      service,
      config: {
        listen: { address: '127.0.0.1', port: 0 },
        caFile: files['ca.pem'],
        certFile: files['server.crt'],
        keyFile: files['server.key'],
        allowedApps: null,
        appIdFallback: false,
        allowAddressChange: false,
        // Each client registers from its own loopback address; a loopback address is this
        // host's and refused as an instance address, so map them onto the lab's network.
        addressMap: [{ peer: '127.1.0.0/16', instance: '198.18.0.0/16' }],
      },
    });
    const cpu0 = process.cpuUsage();
    const result = await new Promise((resolve, reject) => {
      const child = fork(fileURLToPath(import.meta.url), ['--client', work, '--concurrency', values.concurrency, '--registrations', String(n)], {
        env: { ...process.env, BENCH_PORT: String(attested.address.port) },
      });
      child.once('message', resolve);
      child.once('exit', (code) => (code === 0 ? undefined : reject(new Error(`load generator exited ${code}`))));
    });
    const cpu = process.cpuUsage(cpu0);
    const registered = values.baseline ? result.ok : service.list().length;
    await attested.close();
    await service.close();
    const serverCpuUs = (cpu.user + cpu.system) / result.ok;
    console.log(
      JSON.stringify({
        registrations: n,
        concurrency: Number(values.concurrency),
        ok: result.ok,
        failed: result.failed,
        registered,
        seconds: result.seconds,
        perSecond: Math.round(result.ok / result.seconds),
        latencyMs: result.latencyMs,
        serverCpuUsPerRegistration: Math.round(serverCpuUs),
        logLevel: values['log-level'],
        baseline: values.baseline,
      }),
    );
    if (result.failed > 0 || registered !== n) process.exitCode = 1;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** The same TLS settings as src/attested/server.ts, and nothing else. */
async function bareServer(pki, server) {
  const srv = https.createServer(
    { ca: pki.root.certPem, cert: server.certPem, key: server.keyPem, requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.2' },
    (req, res) => {
      const ok = req.socket.authorized && req.socket.getPeerX509Certificate() !== undefined;
      req.resume();
      req.on('end', () => {
        res.writeHead(ok ? 200 : 403, { 'Content-Type': 'application/json', 'Content-Length': 3 });
        res.end('{}\n');
      });
    },
  );
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return { address: srv.address(), close: () => new Promise((resolve) => srv.close(resolve)) };
}

async function runClient(workFile) {
  const { ca, clients } = JSON.parse(await readFile(workFile, 'utf8'));
  const port = Number(process.env.BENCH_PORT);
  const body = JSON.stringify({ client_public_key: '', port_policy: { ports: [{ port: 8080, pp: true }], restrict_mode: false } });
  const latencies = [];
  let failed = 0;
  let next = 0;
  const one = (c) =>
    new Promise((resolve) => {
      const started = performance.now();
      const req = https.request(
        { host: '127.0.0.1', port, path: '/prpc/RegisterCvm?json', method: 'POST', cert: c.cert, key: c.key, ca, localAddress: c.from, agent: false, headers: { 'Content-Length': Buffer.byteLength(body) } },
        (res) => {
          res.resume();
          res.on('end', () => {
            if (res.statusCode === 200) latencies.push(performance.now() - started);
            else failed++;
            resolve();
          });
        },
      );
      req.on('error', () => {
        failed++;
        resolve();
      });
      req.end(body);
    });
  const worker = async () => {
    while (next < clients.length) await one(clients[next++]);
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Number(values.concurrency) }, worker));
  const seconds = (performance.now() - t0) / 1000;
  latencies.sort((a, b) => a - b);
  const q = (p) => Math.round((latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN) * 100) / 100;
  process.send({ ok: latencies.length, failed, seconds: Math.round(seconds * 1000) / 1000, latencyMs: { p50: q(0.5), p90: q(0.9), p99: q(0.99) } }, () => process.exit(0));
}
