import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG } from '../../../src/config-parse.js';
import { createAdminServer } from '../../../src/admin/server.js';
import type { AdminServer } from '../../../src/admin/server.js';
import type { RegistryConfig } from '../../../src/config.js';
import { InterceptorError } from '../../../src/errors.js';
import type { FetchStatus, PolicyFetcher } from '../../../src/registry/fetcher.js';
import { createRegistryService } from '../../../src/registry/service.js';
import type { RegistryService } from '../../../src/registry/service.js';
import { createSqliteStore } from '../../../src/registry/sqlite-store.js';
import type { RegistryStore } from '../../../src/registry/store.js';

const logger = pino({ level: 'silent' });
const config: RegistryConfig = {
  path: '',
  adminSocket: '',
  agentPort: 8090,
  trustAgentComposeHash: false,
  fetch: DEFAULT_CONFIG.registry.fetch,
  store: 'sqlite',
  etcd: null,
};

let tmp: string;
let socketPath: string;
let service: RegistryService | undefined;
let server: AdminServer | null;
const cleanups: (() => Promise<unknown> | unknown)[] = [];
const statuses = new Map<string, FetchStatus>();
const enqueued: string[] = [];

const fetcherFactory = (): PolicyFetcher => ({
  enqueue: (id) => {
    enqueued.push(id);
    statuses.set(id, { state: 'queued', attempts: 0, lastError: null, nextAttemptAt: null, learnedAt: null });
  },
  status: (id) => statuses.get(id),
  close: async () => {},
});

async function start(store?: RegistryStore): Promise<void> {
  service = await createRegistryService({
    logger,
    config,
    store: store ?? createSqliteStore({ dir: path.join(tmp, 'store'), logger }),
    fetcherFactory,
    hostAddresses: () => [{ address: '10.0.0.254', prefix: 24 }],
  });
  server = await createAdminServer({ logger, socketPath, service });
}

beforeEach(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tpi-admin-'));
  socketPath = path.join(tmp, 'run', 'admin.sock');
  statuses.clear();
  enqueued.length = 0;
  server = null;
  service = undefined;
});

afterEach(async () => {
  await server?.close();
  await service?.close();
  for (const c of cleanups.splice(0).reverse()) await c();
  await fs.rm(tmp, { recursive: true, force: true });
});

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: any;
}

function call(method: string, urlPath: string, body?: unknown, opts: { raw?: Buffer; chunked?: boolean } = {}): Promise<Reply> {
  const data = opts.raw ?? (body === undefined ? undefined : Buffer.from(JSON.stringify(body)));
  return new Promise((resolve, reject) => {
    const headers: http.OutgoingHttpHeaders = { 'Content-Type': 'application/json' };
    if (data && !opts.chunked) headers['Content-Length'] = data.length;
    const req = http.request({ socketPath, method, path: urlPath, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        resolve({ status: res.statusCode!, headers: res.headers, body: text ? JSON.parse(text) : null });
      });
    });
    req.on('error', reject);
    if (data && opts.chunked) {
      // Several writes without a Content-Length: the limit must hold for a streamed body too.
      for (let off = 0; off < data.length; off += 64 * 1024) req.write(data.subarray(off, off + 64 * 1024));
      req.end();
    } else {
      req.end(data);
    }
  });
}

const HASH = 'ef'.repeat(32);
const registration = {
  instance_id: 'i-1',
  app_id: 'app-1',
  ip: '10.0.0.1',
  compose_hash: HASH,
  policy: { ports: [{ port: 8080, pp: true }, { port: 8081, pp: false }], restrict_mode: true },
};

describe('admin server', () => {
  it('creates the parent directory and the socket with mode 0600', async () => {
    await start();
    const st = await fs.stat(socketPath);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
    expect((await fs.stat(path.dirname(socketPath))).mode & 0o777).toBe(0o755);
  });

  it('registers, lists, shows (decisions, effective policy, fetch status) and removes', async () => {
    await start();
    expect(await call('GET', '/v1/instances')).toMatchObject({ status: 200, body: { instances: [] } });

    const created = await call('POST', '/v1/instances', registration);
    expect(created.status).toBe(201);
    expect(created.headers['content-type']).toBe('application/json');
    expect(created.body.instance).toMatchObject({
      instance_id: 'i-1',
      app_id: 'app-1',
      ip: '10.0.0.1',
      compose_hash: HASH,
      reported_policy: registration.policy,
      policy_source: 'registration',
      override: null,
    });
    expect(created.body.instance).not.toHaveProperty('restricted');
    expect((await call('POST', '/v1/instances', registration)).status).toBe(200);

    const list = await call('GET', '/v1/instances');
    expect(list.body.instances.map((i: { instance_id: string }) => i.instance_id)).toEqual(['i-1']);

    const shown = await call('GET', '/v1/instances/i-1');
    expect(shown.status).toBe(200);
    expect(shown.body).toMatchObject({
      instance: { instance_id: 'i-1' },
      effective_policy: { source: 'registration', policy: registration.policy },
      status: { refuse_all: null, why: 'the policy reported at registration decides', action: null },
      decisions: [
        { port: 8080, kind: 'proxy', reason: 'policy' },
        { port: 8081, kind: 'transparent', reason: 'policy' },
      ],
      unlisted_ports: { kind: 'refuse', reason: 'port_not_allowed' },
      fetch: null,
    });

    const removed = await call('DELETE', '/v1/instances/i-1');
    expect(removed).toMatchObject({ status: 200, body: { instance: { instance_id: 'i-1' } } });
    expect(await call('GET', '/v1/instances/i-1')).toMatchObject({ status: 404, body: { error: { code: 'ERR_UNKNOWN_INSTANCE' } } });
    expect(await call('DELETE', '/v1/instances/i-1')).toMatchObject({ status: 404, body: { error: { code: 'ERR_UNKNOWN_INSTANCE' } } });
  });

  it('registration without a policy: every port refused (policy_unknown), fetch queued and shown; empty policy is reported', async () => {
    await start();
    const r = await call('POST', '/v1/instances', { instance_id: 'i-2', app_id: 'app', ip: 'fd00::2', compose_hash: HASH });
    expect(r.status).toBe(201);
    expect(r.body.instance).toMatchObject({ reported_policy: null, policy_source: null });
    expect(enqueued).toEqual(['i-2']);
    const shown = await call('GET', '/v1/instances/i-2');
    expect(shown.body).toMatchObject({
      effective_policy: { source: null, policy: null },
      status: { refuse_all: 'policy_unknown' },
      decisions: [],
      unlisted_ports: { kind: 'refuse', reason: 'policy_unknown' },
      fetch: { state: 'queued', attempts: 0, last_error: null },
    });
    expect(shown.body.status.why).toContain('until the policy is learned');

    const empty = await call('POST', '/v1/instances', { instance_id: 'i-3', app_id: 'app', ip: '10.0.0.3', policy: { ports: [], restrict_mode: false } });
    expect(empty.body.instance.reported_policy).toEqual({ ports: [], restrict_mode: false });
    expect(enqueued).toEqual(['i-2']);
  });

  it('registration without an attested compose hash: policy_unattested, nothing fetched, show says why and what to do', async () => {
    await start();
    expect((await call('POST', '/v1/instances', { instance_id: 'i-4', app_id: 'app', ip: '10.0.0.4' })).status).toBe(201);
    expect(enqueued).toEqual([]);
    const shown = await call('GET', '/v1/instances/i-4');
    expect(shown.body).toMatchObject({ status: { refuse_all: 'policy_unattested' }, unlisted_ports: { kind: 'refuse', reason: 'policy_unattested' } });
    expect(shown.body.status.why).toContain('without an attested compose hash');
    expect(shown.body.status.action).toContain('--compose-hash');
    expect(shown.body.status.action).toContain('registry.trust_agent_compose_hash');
  });

  it("Set/Clear/GetInstancePortPolicy as on dstack's gateway", async () => {
    await start();
    await call('POST', '/v1/instances', { instance_id: 'i-5', app_id: 'app', ip: '10.0.0.5', compose_hash: HASH });
    const get = (): Promise<Reply> => call('POST', '/prpc/Admin.GetInstancePortPolicy?json', { instance_id: 'i-5' });
    expect((await get()).body).toEqual({ effective: null, source: 'none', instance_reported: null, admin_override: null, refuse_all: 'policy_unknown' });
    // Upstream's JSON: pp and restrict_mode may be left out; a port listed twice takes its last entry.
    const set = await call('POST', '/prpc/Admin.SetInstancePortPolicy?json', {
      instance_id: 'i-5',
      policy: { ports: [{ port: 8080, pp: true }, { port: 22 }, { port: 8080 }] },
    });
    expect(set).toMatchObject({ status: 200, body: {} });
    const overridden = { ports: [{ port: 22, pp: false }, { port: 8080, pp: false }], restrict_mode: false };
    expect((await get()).body).toEqual({ effective: overridden, source: 'admin', instance_reported: null, admin_override: overridden, refuse_all: null });
    expect(service!.decide('10.0.0.5', 8080)).toMatchObject({ kind: 'transparent', reason: 'override' });
    expect(await call('POST', '/prpc/Admin.ClearInstancePortPolicy', { instance_id: 'i-5' })).toMatchObject({ status: 200, body: {} });
    expect((await get()).body.source).toBe('none');
    expect(service!.decide('10.0.0.5', 8080)).toMatchObject({ kind: 'refuse', reason: 'policy_unknown' });

    const bad: [string, unknown, number, string][] = [
      ['SetInstancePortPolicy', { instance_id: 'i-5' }, 400, 'ERR_POLICY_INVALID'],
      ['SetInstancePortPolicy', { instance_id: 'i-5', policy: { ports: [{ port: 70000 }] } }, 400, 'ERR_POLICY_INVALID'],
      ['SetInstancePortPolicy', { instance_id: 'i-5', policy: { ports: [{ port: 0 }] } }, 400, 'ERR_POLICY_INVALID'],
      ['SetInstancePortPolicy', { instance_id: 'i-5', policy: { ports: [{ port: 1, pp: 'yes' }] } }, 400, 'ERR_POLICY_INVALID'],
      ['SetInstancePortPolicy', { instance_id: 'nope', policy: {} }, 404, 'ERR_UNKNOWN_INSTANCE'],
      ['ClearInstancePortPolicy', { instance_id: 'nope' }, 404, 'ERR_UNKNOWN_INSTANCE'],
      ['GetInstancePortPolicy', { instance_id: 'nope' }, 404, 'ERR_UNKNOWN_INSTANCE'],
      ['GetInstancePortPolicy', {}, 400, 'ERR_BAD_REQUEST'],
      ['GetInstancePortPolicy', { instance_id: 'i-5', extra: 1 }, 400, 'ERR_BAD_REQUEST'],
    ];
    for (const [method, body, status, code] of bad) {
      const r = await call('POST', `/prpc/Admin.${method}`, body);
      expect({ method, body, status: r.status, code: r.body?.error?.code }).toEqual({ method, body, status, code });
    }
    expect((await call('GET', '/prpc/Admin.GetInstancePortPolicy')).status).toBe(405);
  });

  it('sets and clears the override', async () => {
    await start();
    await call('POST', '/v1/instances', registration);
    const set = await call('PUT', '/v1/instances/i-1/override', { policy: { ports: [{ port: 443, pp: true }], restrict_mode: false } });
    expect(set).toMatchObject({ status: 200, body: { instance: { override: { ports: [{ port: 443, pp: true }], restrict_mode: false } } } });
    const shown = await call('GET', '/v1/instances/i-1');
    expect(shown.body).toMatchObject({
      effective_policy: { source: 'override' },
      decisions: [{ port: 443, kind: 'proxy', reason: 'override' }],
      unlisted_ports: { kind: 'transparent', reason: 'override' },
    });
    const cleared = await call('DELETE', '/v1/instances/i-1/override');
    expect(cleared).toMatchObject({ status: 200, body: { instance: { override: null } } });
    expect((await call('GET', '/v1/instances/i-1')).body.effective_policy.source).toBe('registration');
    expect(await call('PUT', '/v1/instances/nope/override', { policy: { ports: [], restrict_mode: false } })).toMatchObject({
      status: 404,
      body: { error: { code: 'ERR_UNKNOWN_INSTANCE' } },
    });
  });

  it('answers bad input with a JSON error and the right status', async () => {
    await start();
    await call('POST', '/v1/instances', registration);
    const cases: [string, string, unknown, number, string, Buffer?][] = [
      ['POST', '/v1/instances', { ...registration, instance_id: 'i-9' }, 409, 'ERR_IP_IN_USE'],
      ['POST', '/v1/instances', { app_id: 'a', ip: '10.0.0.5' }, 400, 'ERR_INVALID_REGISTRATION'],
      ['POST', '/v1/instances', { instance_id: 'x', app_id: 'a', ip: 'not-an-ip' }, 400, 'ERR_INVALID_REGISTRATION'],
      ['POST', '/v1/instances', { instance_id: 'x', app_id: 'a', ip: '10.0.0.5', compose_hash: 'zz' }, 400, 'ERR_INVALID_REGISTRATION'],
      ['POST', '/v1/instances', { instance_id: 'x', app_id: 'a', ip: '10.0.0.5', restrict: true }, 400, 'ERR_BAD_REQUEST'],
      ['POST', '/v1/instances', { instance_id: 'x', app_id: 'a', ip: '10.0.0.5', colour: 'red' }, 400, 'ERR_BAD_REQUEST'],
      ['POST', '/v1/instances', { instance_id: 'x', app_id: 'a', ip: '0.0.0.0' }, 400, 'ERR_INVALID_REGISTRATION'],
      ['POST', '/v1/instances', { instance_id: 'x', app_id: 'a', ip: '255.255.255.255' }, 400, 'ERR_INVALID_REGISTRATION'],
      ['POST', '/v1/instances', { instance_id: 'x', app_id: 'a', ip: '10.0.0.254' }, 400, 'ERR_INVALID_REGISTRATION'],
      ['POST', '/v1/instances', { instance_id: 'x', app_id: 'a', ip: '127.0.0.1' }, 400, 'ERR_INVALID_REGISTRATION'],
      ['POST', '/v1/instances', { instance_id: 'x', app_id: 'a', ip: '10.0.0.5', policy: { ports: [{ port: 70000, pp: true }], restrict_mode: false } }, 400, 'ERR_POLICY_INVALID'],
      ['POST', '/v1/instances', [], 400, 'ERR_INVALID_REGISTRATION'],
      ['POST', '/v1/instances', undefined, 400, 'ERR_BAD_REQUEST', Buffer.from('{"instance_id": ')],
      ['POST', '/v1/instances', undefined, 400, 'ERR_BAD_REQUEST'],
      ['PUT', '/v1/instances/i-1/override', { policy: null }, 400, 'ERR_POLICY_INVALID'],
      ['PUT', '/v1/instances/i-1/override', { policy: { ports: 'all' } }, 400, 'ERR_POLICY_INVALID'],
      ['GET', '/v1/nothing', undefined, 404, 'ERR_NOT_FOUND'],
      ['PATCH', '/v1/instances/i-1', undefined, 405, 'ERR_METHOD_NOT_ALLOWED'],
      ['GET', '/v1/instances/%E0%A4%A', undefined, 400, 'ERR_BAD_REQUEST'],
    ];
    for (const [method, url, body, status, code, raw] of cases) {
      const r = await call(method, url, body, raw ? { raw } : {});
      expect({ method, url, body, status: r.status, code: r.body?.error?.code }).toEqual({ method, url, body, status, code });
      expect(typeof r.body.error.message).toBe('string');
    }
    // Nothing of that changed the registry.
    expect((await call('GET', '/v1/instances')).body.instances).toHaveLength(1);
  });

  it('refuses bodies over 1 MiB with 413, declared or streamed', async () => {
    await start();
    const big = Buffer.from(JSON.stringify({ instance_id: 'i-1', pad: 'x'.repeat(1024 * 1024) }));
    for (const chunked of [false, true]) {
      const r = await call('POST', '/v1/instances', undefined, { raw: big, chunked });
      expect(r.status).toBe(413);
      expect(r.body.error.code).toBe('ERR_BODY_TOO_LARGE');
    }
    expect(service!.list()).toEqual([]);
    // The server is still fine afterwards.
    expect((await call('GET', '/v1/instances')).status).toBe(200);
  });

  it('a failing store answers 500 and leaves the registry unchanged', async () => {
    const store: RegistryStore = {
      load: async () => [],
      put: async () => {
        throw new InterceptorError('ERR_STORE_WRITE', 'registry store: fdatasync failed: EIO');
      },
      delete: async () => {},
      close: async () => {},
    };
    await start(store);
    const r = await call('POST', '/v1/instances', registration);
    expect(r.status).toBe(500);
    expect(r.body.error.code).toBe('ERR_STORE_WRITE');
    expect(r.body.error.message).toContain('EIO');
    expect((await call('GET', '/v1/instances')).body.instances).toEqual([]);
  });

  it('replaces a stale socket nobody accepts on', async () => {
    await fs.mkdir(path.dirname(socketPath), { recursive: true });
    // A process that dies with its socket bound leaves the file behind.
    const child = spawnSync(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(socketPath)}, () => process.kill(process.pid, 'SIGKILL'))`,
    ]);
    expect(child.signal).toBe('SIGKILL');
    expect((await fs.lstat(socketPath)).isSocket()).toBe(true);
    await start();
    expect((await call('GET', '/v1/instances')).status).toBe(200);
  });

  it('refuses a socket path something accepts on: ERR_ADMIN_SOCKET_IN_USE, the other listener untouched', async () => {
    await fs.mkdir(path.dirname(socketPath), { recursive: true });
    const other = net.createServer((s) => {
      s.on('error', () => {}); // the daemon's probe hangs up at once
      s.end('other\n');
    });
    await new Promise<void>((r) => other.listen(socketPath, r));
    cleanups.push(() => new Promise((r) => other.close(r)));
    const svc = await createRegistryService({ logger, config, store: createSqliteStore({ dir: path.join(tmp, 'store'), logger }), fetcherFactory });
    cleanups.push(() => svc.close());
    await expect(createAdminServer({ logger, socketPath, service: svc })).rejects.toMatchObject({ code: 'ERR_ADMIN_SOCKET_IN_USE' });
    const greeting = await new Promise<string>((resolve, reject) => {
      const c = net.connect(socketPath);
      let got = '';
      c.on('data', (d) => (got += d.toString()));
      c.on('end', () => resolve(got));
      c.on('error', reject);
    });
    expect(greeting).toBe('other\n');
  });

  it('refuses to replace a path that is not a socket', async () => {
    await fs.mkdir(path.dirname(socketPath), { recursive: true });
    await fs.writeFile(socketPath, 'precious');
    const svc = await createRegistryService({ logger, config, store: createSqliteStore({ dir: path.join(tmp, 'store'), logger }), fetcherFactory });
    cleanups.push(() => svc.close());
    await expect(createAdminServer({ logger, socketPath, service: svc })).rejects.toMatchObject({ code: 'ERR_ADMIN_SOCKET_IN_USE' });
    expect(await fs.readFile(socketPath, 'utf8')).toBe('precious');
  });

  it('close() removes the socket', async () => {
    await start();
    await server!.close();
    server = null;
    await expect(fs.lstat(socketPath)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
