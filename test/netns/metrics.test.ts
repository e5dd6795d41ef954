// Metrics and health on a real gateway: after real connections the counts are what was done
// (N transparent, M with a PROXY header, K refused with their reasons, a failed connect, the
// bytes each way), and /healthz and /readyz answer what the daemon is doing.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Lab, ADDR, type ClientResult } from './helpers/lab.js';
import { startPpEchoBackend } from './helpers/peers.js';
import { startTicker } from './helpers/ticker.js';

const CONFIG = `
[listen]
port = 15001

[[intercept.targets]]
cidr = "198.18.2.0/24"
ports = ["8080-8082"]

[[intercept.targets]]
cidr = "fd00:18:2::/64"
ports = [8080, 8081]

[upstream]
connect_timeout = "2s"

[metrics]
listen = "127.0.0.1:9464"
`;

interface Sample {
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly value: number;
}

/** Prometheus text → samples (enough of the format for what prom-client prints). */
function parse(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

describe('metrics and health', () => {
  let lab: Lab;
  let config: string;
  /** GET from inside the gateway namespace: [status, body]. */
  const get = async (path: string): Promise<[number, string]> => {
    const script = `fetch('http://127.0.0.1:9464${path}').then(async (r) => console.log(JSON.stringify([r.status, await r.text()])), (e) => console.log(JSON.stringify([0, String(e.cause ?? e)])))`;
    return JSON.parse((await lab.exec(lab.ns.gateway, ['node', '-e', script])).stdout) as [number, string];
  };
  const value = (samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined =>
    samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v) && Object.keys(s.labels).length === Object.keys(labels).length)?.value;

  beforeAll(async () => {
    lab = await Lab.create();
    config = await lab.writeConfig(CONFIG);
    await lab.startBackend([8081]);
    await startPpEchoBackend(lab, lab.ns.backend, [8082]);
  });
  afterEach(async () => lab?.stopDaemons());
  afterAll(async () => lab?.destroy());

  it('counts what was done: transparent, with a PROXY header, refused by reason, a failed connect, and the bytes each way', async () => {
    const daemon = await lab.startDaemon(config);
    const [, empty] = await get('/metrics');
    expect(value(parse(empty), 'tproxy_interceptor_connections_accepted_total')).toBe(0);
    // 198.18.2.2 is an instance: 8082 with a PROXY header, every other port refused.
    const add = await lab.cli(['instances', 'add', 'i-1', '--app', 'a', '--ip', ADDR.backend, '--policy', '8082:pp', '--restrict', '--config', config]);
    expect(add.code).toBe(0);

    const ok: ClientResult[] = [];
    for (let i = 0; i < 3; i++) ok.push(await lab.client(ADDR.backend6, 8081, { bytes: 1000 })); // transparent
    for (let i = 0; i < 2; i++) ok.push(await lab.client(ADDR.backend, 8082, { bytes: 500 })); // proxy
    for (const r of ok) expect(r.echoIntact).toBe(true);
    const refused = [
      await lab.client(ADDR.backend, 8081), // port_not_allowed
      await lab.client(ADDR.backend, 8080), // port_not_allowed
      await lab.client(ADDR.gatewayBackendSide, 8080), // local_destination
    ];
    for (const r of refused) expect(r.error).toBe('ECONNRESET');
    const failed = await lab.client(ADDR.backend6, 8080); // nothing listens: the upstream connect is refused
    expect(failed.error).toBe('ECONNRESET');

    let samples: Sample[] = [];
    const deadline = Date.now() + 5000;
    do {
      samples = parse((await get('/metrics'))[1]);
    } while (value(samples, 'tproxy_interceptor_connections_accepted_total') !== 9 && Date.now() < deadline);
    const closed = (path: string, reason: string): number | undefined => value(samples, 'tproxy_interceptor_connections_closed_total', { path, reason });
    expect(value(samples, 'tproxy_interceptor_connections_accepted_total')).toBe(9);
    expect(closed('transparent', 'done')).toBe(3);
    expect(closed('proxy', 'done')).toBe(2);
    expect(closed('refused', 'port_not_allowed')).toBe(2);
    expect(closed('refused', 'local_destination')).toBe(1);
    expect(closed('transparent', 'connect-failed')).toBe(1);
    expect(samples.filter((s) => s.name === 'tproxy_interceptor_connections_closed_total').reduce((n, s) => n + s.value, 0)).toBe(9);
    expect(value(samples, 'tproxy_interceptor_connection_errors_total', { code: 'ECONNREFUSED' })).toBe(1);
    expect(value(samples, 'tproxy_interceptor_connections_active')).toBe(0);
    expect(value(samples, 'tproxy_interceptor_connections_over_capacity_total')).toBe(0);
    expect(value(samples, 'tproxy_interceptor_bytes_total', { direction: 'client_to_upstream' })).toBe(3 * 1000 + 2 * 500);
    expect(value(samples, 'tproxy_interceptor_bytes_total', { direction: 'upstream_to_client' })).toBe(ok.reduce((n, r) => n + r.bytesReceived, 0));
    expect(value(samples, 'tproxy_interceptor_phase_duration_seconds_count', { phase: 'decide' })).toBe(9);
    expect(value(samples, 'tproxy_interceptor_phase_duration_seconds_count', { phase: 'connect' })).toBe(5);
    expect(value(samples, 'tproxy_interceptor_phase_duration_seconds_bucket', { phase: 'connect', le: '+Inf' })).toBe(5);
    expect(value(samples, 'tproxy_interceptor_registry_instances')).toBe(1);
    expect(value(samples, 'tproxy_interceptor_registry_store_up', { store: 'sqlite' })).toBe(1);
    expect(value(samples, 'tproxy_interceptor_rules_installed', { backend: 'nftables' })).toBe(1);
    expect(value(samples, 'tproxy_interceptor_reloads_total', { result: 'ok' })).toBe(0);

    // A reload is counted.
    daemon.child.kill('SIGHUP');
    await daemon.waitFor('"msg":"config reloaded: nothing changed"');
    expect(value(parse((await get('/metrics'))[1]), 'tproxy_interceptor_reloads_total', { result: 'ok' })).toBe(1);
    daemon.child.kill('SIGTERM');
    expect((await daemon.exited).code).toBe(0);
  });

  it('/healthz while the process runs; /readyz ready while rules are installed and listeners accept, 503 while it drains', async () => {
    const daemon = await lab.startDaemon(config, ['--drain', '20s']);
    expect(await get('/healthz')).toEqual([200, 'ok\n']);
    expect(await get('/readyz')).toEqual([200, 'ready\n']);
    expect((await get('/nothing'))[0]).toBe(404);
    // (198.18.2.2 refuses 8081 since the instance was registered above)
    const ticker = await startTicker(lab, ADDR.backend6, 8081);
    await ticker.more(3);
    daemon.child.kill('SIGTERM');
    await daemon.waitFor('"msg":"draining connections"');
    expect(await get('/readyz')).toEqual([503, 'not ready: listeners not accepting\n']);
    expect(await get('/healthz')).toEqual([200, 'ok\n']);
    await ticker.stop();
    expect((await daemon.exited).code).toBe(0);
    expect((await get('/healthz'))[0]).toBe(0);
  });
});
