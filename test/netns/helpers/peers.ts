// Real PROXY-protocol peers from Debian, started inside a lab namespace with configs in the lab's
// temp dir: nginx (http, `listen ... proxy_protocol`) and HAProxy (`accept-proxy`, `send-proxy*`);
// plus a PROXY-parsing echo backend, and a raw TCP/TLS client that can bind a chosen source.
import { execFile } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { ROOT, type Lab, type Proc } from './lab.js';

const execFileP = promisify(execFile);

let seq = 0;

/**
 * nginx answering every request with what it learned:
 * `pp=<proxy_protocol_addr>:<port> remote=<remote_addr> tlv_authority=... ` (one line).
 * `ports`: [{ port, proxyProtocol }].
 */
export async function startNginx(lab: Lab, ns: string, ports: Array<{ port: number; proxyProtocol: boolean }>): Promise<Proc> {
  return launchNginx(lab, ns, ports, 'peer=nginx pp=$proxy_protocol_addr:$proxy_protocol_port remote=$remote_addr server=$server_addr:$server_port');
}

async function launchNginx(lab: Lab, ns: string, ports: Array<{ port: number; proxyProtocol: boolean }>, answer: string): Promise<Proc> {
  const dir = path.join(lab.dir, `nginx-${++seq}`);
  await mkdir(path.join(dir, 'tmp'), { recursive: true });
  const listens = ports
    .flatMap(({ port, proxyProtocol }) => [`listen ${port}${proxyProtocol ? ' proxy_protocol' : ''};`, `listen [::]:${port}${proxyProtocol ? ' proxy_protocol' : ''};`])
    .join('\n      ');
  const conf = `
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/tmp/body;
  proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi;
  scgi_temp_path ${dir}/tmp/scgi;
  server {
      ${listens}
      location / {
        default_type text/plain;
        return 200 "${answer}\\n";
      }
  }
}
`;
  const file = path.join(dir, 'nginx.conf');
  await writeFile(file, conf);
  const proc = lab.spawn(ns, ['nginx', '-c', file, '-e', path.join(dir, 'error.log')]);
  await waitListening(lab, ns, ports.map((p) => p.port), proc);
  return proc;
}

/** Raw HAProxy config text; `haproxyFrontend` helps with the common shapes. */
export async function startHaproxy(lab: Lab, ns: string, body: string, ports: number[]): Promise<Proc> {
  const dir = path.join(lab.dir, `haproxy-${++seq}`);
  await mkdir(dir, { recursive: true });
  const conf = `
global
  maxconn 2000
defaults
  timeout connect 3s
  timeout client 10s
  timeout server 10s
${body}
`;
  const file = path.join(dir, 'haproxy.cfg');
  await writeFile(file, conf);
  const proc = lab.spawn(ns, ['haproxy', '-db', '-f', file]);
  await waitListening(lab, ns, ports, proc);
  return proc;
}

/** An HAProxy HTTP frontend that accepts PROXY headers and reports what it learned. */
export function haproxyAcceptProxy(port: number): string {
  return `
frontend accept_proxy_${port}
  mode http
  bind :${port} accept-proxy
  bind :::${port} v6only accept-proxy
  http-request return status 200 content-type text/plain lf-string "peer=haproxy src=%[src]:%[src_port] dst=%[dst]:%[dst_port] authority=%[fc_pp_authority] unique_id=%[fc_pp_unique_id]\\n"
`;
}

async function waitListening(lab: Lab, ns: string, ports: number[], proc: Proc): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const { stdout } = await lab.exec(ns, ['ss', '-Htln']);
    if (ports.every((p) => new RegExp(`:${p}\\s`).test(stdout))) return;
    if (proc.child.exitCode !== null) throw new Error(`peer exited: ${proc.output()}`);
    if (Date.now() > deadline) throw new Error(`peer did not listen on ${ports.join(',')}: ${proc.output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** One HTTP/1.0 GET from the client namespace; returns the body (or the error code). */
export async function httpGet(lab: Lab, host: string, port: number, timeoutMs = 5000): Promise<{ status: number | null; body: string; error: string | null }> {
  const script = `
const net = require('node:net');
const s = net.connect({ host: ${JSON.stringify(host)}, port: ${port} });
let out = '';
const t = setTimeout(() => { console.log(JSON.stringify({ error: 'timeout', out })); process.exit(0); }, ${timeoutMs});
s.on('connect', () => s.write('GET / HTTP/1.0\\r\\nHost: lab\\r\\n\\r\\n'));
s.on('data', (d) => (out += d));
s.on('error', (e) => { clearTimeout(t); console.log(JSON.stringify({ error: e.code, out })); process.exit(0); });
s.on('close', () => { clearTimeout(t); console.log(JSON.stringify({ error: null, out })); });
`;
  const { stdout } = await lab.exec(lab.ns.client, ['node', '-e', script]);
  const r = JSON.parse(stdout.trim()) as { error: string | null; out: string };
  const m = /^HTTP\/1\.\d (\d{3})/.exec(r.out);
  const body = r.out.includes('\r\n\r\n') ? r.out.slice(r.out.indexOf('\r\n\r\n') + 4) : r.out;
  return { status: m ? Number(m[1]) : null, body: body.trim(), error: r.error };
}

// ---------------------------------------------------------------------------------------------
// PROXY-protocol conformance helpers: a reporting nginx, a PP-parsing echo backend, a raw TCP/TLS
// client that can bind a chosen source address, and a self-signed certificate for an LB.

/**
 * nginx like `startNginx`, but every response also names the destination the PROXY header
 * carried: `peer=nginx pp=<addr>:<port> pp_dst=<addr>:<port> remote=<remote_addr>`.
 */
export async function startNginxPpReport(lab: Lab, ns: string, ports: Array<{ port: number; proxyProtocol: boolean }>): Promise<Proc> {
  return launchNginx(
    lab,
    ns,
    ports,
    'peer=nginx pp=$proxy_protocol_addr:$proxy_protocol_port pp_dst=$proxy_protocol_server_addr:$proxy_protocol_server_port remote=$remote_addr',
  );
}

/** What the PP echo backend learned from the first PROXY header of a connection. */
export interface PpReport {
  remote: string;
  local: string;
  error?: string;
  version?: 1 | 2;
  command?: 'PROXY' | 'LOCAL';
  family?: string;
  source?: { address: string; port: number } | null;
  destination?: { address: string; port: number } | null;
  /** TLVs as they arrived: type and hex value. */
  tlvs?: Array<{ type: number; value: string }>;
}

/**
 * A backend that parses the PROXY header every connection must start with (the project's own
 * codec, dist/pp), answers one JSON line (a PpReport), then echoes every byte that followed the
 * header verbatim. It also prints `conn <PpReport>` per connection on stdout, for connections
 * that never read the answer (health checks). A connection without a valid header gets
 * `{"error":"<code>"}` and is closed.
 */
export async function startPpEchoBackend(lab: Lab, ns: string, ports: number[]): Promise<Proc> {
  const dir = path.join(lab.dir, `pp-echo-${++seq}`);
  await mkdir(dir, { recursive: true });
  const codec = pathToFileURL(path.join(ROOT, 'dist', 'pp', 'index.js')).href;
  const script = `
import net from 'node:net';
import { createHeaderParser } from ${JSON.stringify(codec)};
const unmap = (a) => (a && a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a);
const ports = ${JSON.stringify(ports)};
let listening = 0;
for (const port of ports) {
  net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    const parser = createHeaderParser();
    let parsing = true;
    const base = { remote: unmap(s.remoteAddress) + ':' + s.remotePort, local: unmap(s.localAddress) + ':' + s.localPort };
    const onData = (chunk) => {
      let r;
      try {
        r = parser.push(chunk);
      } catch (e) {
        parsing = false;
        s.removeListener('data', onData);
        const report = { ...base, error: e.code ?? String(e) };
        console.log('conn ' + JSON.stringify(report));
        s.end(JSON.stringify(report) + '\\n');
        return;
      }
      if (!r) return;
      parsing = false;
      s.removeListener('data', onData);
      const h = r.header;
      const report = {
        ...base,
        version: h.version,
        command: h.command,
        family: h.family,
        source: h.source,
        destination: h.destination,
        tlvs: h.tlvs.map((t) => ({ type: t.type, value: t.value.toString('hex') })),
      };
      console.log('conn ' + JSON.stringify(report));
      s.write(JSON.stringify(report) + '\\n');
      if (r.rest.length > 0) s.write(r.rest);
      s.pipe(s);
    };
    s.on('data', onData);
    s.on('end', () => {
      if (!parsing) return;
      parsing = false;
      const report = { ...base, error: 'incomplete' };
      console.log('conn ' + JSON.stringify(report));
      s.end(JSON.stringify(report) + '\\n');
    });
  }).listen({ port, host: '::', ipv6Only: false }, () => {
    if (++listening === ports.length) console.log('ready');
  });
}
`;
  const file = path.join(dir, 'pp-echo.mjs');
  await writeFile(file, script);
  const proc = lab.spawn(ns, ['node', file]);
  await proc.waitFor('ready');
  return proc;
}

/** Splits a PP echo backend's answer into its report and the bytes echoed after it. */
export function parsePpEcho(data: Buffer): { report: PpReport | null; echoed: Buffer } {
  const nl = data.indexOf(10);
  if (nl < 0) return { report: null, echoed: Buffer.alloc(0) };
  return { report: JSON.parse(data.subarray(0, nl).toString()) as PpReport, echoed: data.subarray(nl + 1) };
}

export interface ExchangeOptions {
  host: string;
  port: number;
  /** Source address to bind (it must exist in the namespace). */
  localAddress?: string;
  /** Speak TLS (certificate not verified) with this SNI. */
  tls?: { servername: string };
  /** Sent as soon as the connection is up. */
  send?: Buffer | string;
  /** Sent `delayMs` after connecting, if the connection is still open (after `send`). */
  later?: { bytes: Buffer | string; delayMs: number };
  /** Half-close after the last send. */
  end?: boolean;
  /** Stop reading (and close) once the received bytes contain this text. */
  until?: string;
  timeoutMs?: number;
}

export interface ExchangeResult {
  connected: boolean;
  /** The client's own source port (compare with what a PROXY header reported). */
  localPort: number | null;
  data: Buffer;
  /** The peer's FIN arrived (a clean close), and when, in ms after connecting started. */
  ended: boolean;
  endMs: number | null;
  /** 'ECONNRESET' for a reset, 'timeout', another errno name, or null. */
  error: string | null;
  ms: number;
}

/** One TCP (or TLS) conversation from namespace `ns`, driven by a small node client. */
export async function tcpExchange(lab: Lab, ns: string, o: ExchangeOptions): Promise<ExchangeResult> {
  const b64 = (v: Buffer | string | undefined): string => (v === undefined ? '' : Buffer.from(v).toString('base64'));
  const spec = {
    host: o.host,
    port: o.port,
    localAddress: o.localAddress ?? null,
    tls: o.tls ?? null,
    send: b64(o.send),
    later: o.later ? { bytes: b64(o.later.bytes), delayMs: o.later.delayMs } : null,
    end: o.end === true,
    until: o.until ?? null,
    timeoutMs: o.timeoutMs ?? 5000,
  };
  const script = `
const net = require('node:net');
const tls = require('node:tls');
const o = ${JSON.stringify(spec)};
const started = Date.now();
const res = { connected: false, localPort: null, data: '', ended: false, endMs: null, error: null, ms: 0 };
const chunks = [];
const opts = { host: o.host, port: o.port, allowHalfOpen: true };
if (o.localAddress) opts.localAddress = o.localAddress;
const s = o.tls ? tls.connect({ ...opts, servername: o.tls.servername, rejectUnauthorized: false }) : net.connect(opts);
const timer = setTimeout(() => finish('timeout'), o.timeoutMs);
s.on(o.tls ? 'secureConnect' : 'connect', () => {
  res.connected = true;
  res.localPort = s.localPort;
  const first = Buffer.from(o.send, 'base64');
  if (o.later) {
    if (first.length > 0) s.write(first);
    setTimeout(() => {
      if (s.destroyed || res.ended) return;
      const b = Buffer.from(o.later.bytes, 'base64');
      if (o.end) s.end(b); else s.write(b);
    }, o.later.delayMs);
  } else if (o.end) s.end(first);
  else if (first.length > 0) s.write(first);
});
s.on('data', (d) => {
  chunks.push(d);
  if (o.until && Buffer.concat(chunks).includes(o.until)) finish(null);
});
s.on('end', () => {
  res.ended = true;
  res.endMs = Date.now() - started;
  s.end();
});
s.on('error', (e) => finish(e.code ?? String(e)));
s.on('close', () => finish(null));
function finish(error) {
  if (res.ms) return;
  clearTimeout(timer);
  res.ms = Date.now() - started || 1;
  res.error = error;
  res.data = Buffer.concat(chunks).toString('base64');
  process.stdout.write(JSON.stringify(res) + '\\n', () => process.exit(0));
  s.destroy();
}
`;
  const { stdout } = await lab.exec(ns, ['node', '-e', script]);
  const r = JSON.parse(stdout.trim().split('\n').pop()!) as Omit<ExchangeResult, 'data'> & { data: string };
  return { ...r, data: Buffer.from(r.data, 'base64') };
}

/** An HTTP/1.0 GET through `tcpExchange` (optionally preceded by raw `prefix` bytes). */
export async function httpGetVia(
  lab: Lab,
  ns: string,
  o: Omit<ExchangeOptions, 'send' | 'end' | 'until' | 'later'> & { prefix?: Buffer },
): Promise<{ status: number | null; body: string; error: string | null; localPort: number | null }> {
  const request = Buffer.from('GET / HTTP/1.0\r\nHost: lab\r\n\r\n');
  const r = await tcpExchange(lab, ns, { ...o, send: o.prefix ? Buffer.concat([o.prefix, request]) : request });
  const text = r.data.toString('latin1');
  const m = /^HTTP\/1\.\d (\d{3})/.exec(text);
  const body = text.includes('\r\n\r\n') ? text.slice(text.indexOf('\r\n\r\n') + 4) : text;
  return { status: m ? Number(m[1]) : null, body: body.trim(), error: r.error, localPort: r.localPort };
}

/** A self-signed certificate + key in one PEM file (what HAProxy's `crt` wants). */
export async function selfSignedPem(lab: Lab, cn: string): Promise<string> {
  const dir = path.join(lab.dir, `cert-${++seq}`);
  await mkdir(dir, { recursive: true });
  const key = path.join(dir, 'key.pem');
  const crt = path.join(dir, 'crt.pem');
  await execFileP('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', `/CN=${cn}`, '-keyout', key, '-out', crt]);
  const pem = path.join(dir, 'lb.pem');
  await writeFile(pem, Buffer.concat([await readFile(crt), await readFile(key)]));
  return pem;
}
