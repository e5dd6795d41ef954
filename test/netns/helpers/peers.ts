// Real PROXY-protocol peers from Debian, started inside a lab namespace with configs in the lab's
// temp dir: nginx (http, `listen ... proxy_protocol`) and HAProxy (`accept-proxy`, `send-proxy*`).
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Lab, Proc } from './lab.js';

let seq = 0;

/**
 * nginx answering every request with what it learned:
 * `pp=<proxy_protocol_addr>:<port> remote=<remote_addr> tlv_authority=... ` (one line).
 * `ports`: [{ port, proxyProtocol }].
 */
export async function startNginx(lab: Lab, ns: string, ports: Array<{ port: number; proxyProtocol: boolean }>): Promise<Proc> {
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
        return 200 "peer=nginx pp=$proxy_protocol_addr:$proxy_protocol_port remote=$remote_addr server=$server_addr:$server_port\\n";
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
