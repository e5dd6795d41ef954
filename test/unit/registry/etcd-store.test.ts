// The registry on a real etcd (Debian's etcd-server on loopback, started by this file): several
// nodes in one process, each with its own etcd client, store and in-memory registry.
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { promisify } from 'node:util';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Etcd3, Range } from 'etcd3';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG } from '../../../src/config-parse.js';
import type { EtcdConfig, RegistryConfig } from '../../../src/config.js';
import { createHash } from 'node:crypto';
import { createEtcdStore, type EtcdStore } from '../../../src/registry/etcd-store.js';
import { makePolicy, serializeInstance } from '../../../src/registry/policy.js';
import { createRegistryService, type RegistryService } from '../../../src/registry/service.js';
import { StoreConflictError } from '../../../src/registry/store.js';
import type { InstanceRecord } from '../../../src/registry/types.js';
import { startEtcd, type EtcdServer } from '../../helpers/etcd.js';
import { startTcpProxy, type TcpProxy } from '../../helpers/tcp-proxy.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const execFileP = promisify(execFile);
let etcd: EtcdServer;
let admin: Etcd3;
const cleanups: Array<() => Promise<unknown> | unknown> = [];

beforeAll(async () => {
  etcd = await startEtcd();
  admin = new Etcd3({ hosts: etcd.endpoint });
}, 30_000);
afterAll(async () => {
  admin?.close();
  await etcd?.destroy();
});
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

function capture(): { logger: pino.Logger; lines: () => Array<Record<string, unknown> & { msg: string; level: number }> } {
  const out: string[] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => void out.push(s) });
  return { logger, lines: () => out.map((s) => JSON.parse(s) as Record<string, unknown> & { msg: string; level: number }) };
}

function etcdConfig(prefix: string, endpoint = etcd.endpoint, timeoutMs = 1000): EtcdConfig {
  return { endpoints: [endpoint], prefix, timeoutMs, ca: null, cert: null, key: null, username: null, password: null };
}

const newPrefix = (): string => `/t-${randomBytes(4).toString('hex')}/`;

interface Node {
  store: EtcdStore;
  service: RegistryService;
  lines: ReturnType<typeof capture>['lines'];
}

async function startNode(
  prefix: string,
  opts: { endpoint?: string; name?: string; agentPort?: number; fetcher?: 'real' | 'none'; timeoutMs?: number } = {},
): Promise<Node> {
  const { logger, lines } = capture();
  const config: RegistryConfig = {
    ...DEFAULT_CONFIG.registry,
    agentPort: opts.agentPort ?? 1,
    fetch: { ...DEFAULT_CONFIG.registry.fetch, timeoutMs: 2000, backoffInitialMs: 100, backoffMaxMs: 200 },
    store: 'etcd',
    etcd: etcdConfig(prefix, opts.endpoint, opts.timeoutMs),
  };
  const store = createEtcdStore({ config: config.etcd!, logger, nodeName: opts.name ?? 'node', probeIntervalMs: 100 });
  const service = await createRegistryService({
    logger,
    config,
    store,
    // The nodes' instances (and their fake agents) live on loopback here.
    allowLoopback: true,
    ...(opts.fetcher === 'real'
      ? {}
      : { fetcherFactory: () => ({ enqueue: () => {}, status: () => undefined, close: async () => {} }) }),
  });
  cleanups.push(() => service.close());
  return { store, service, lines };
}

async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const policy = (text: Array<[number, boolean]>, restrict = false) => makePolicy(text, restrict);
const decision = (n: Node, ip: string, port: number) => n.service.registry.decide(ip, port).decision;

describe('etcd store: nodes share one registry', () => {
  it('a registration through one node decides connections at the other; removal too', async () => {
    const prefix = newPrefix();
    const [a, b] = [await startNode(prefix, { name: 'a' }), await startNode(prefix, { name: 'b' })];
    await a.service.add({ instanceId: 'x', appId: 'app', ip: '10.9.0.1', policy: policy([[8080, true]], true) });
    await until('b decides x', () => decision(b, '10.9.0.1', 8080).kind === 'proxy');
    expect(decision(b, '10.9.0.1', 22)).toMatchObject({ kind: 'refuse', instanceId: 'x' });
    await a.service.remove('x');
    await until('b forgets x', () => b.service.get('x') === undefined);
    expect(decision(b, '10.9.0.1', 22)).toMatchObject({ kind: 'transparent', reason: 'unregistered' });
  });

  it('an override set on one node is in force on the other, and a third node loads it all', async () => {
    const prefix = newPrefix();
    const [a, b] = [await startNode(prefix), await startNode(prefix)];
    await a.service.add({ instanceId: 'x', appId: 'app', ip: '10.9.0.2', policy: policy([[8080, false]]) });
    await until('b has x', () => b.service.get('x') !== undefined);
    await b.service.setOverride('x', policy([[9000, true]], true));
    await until('a has the override', () => a.service.get('x')?.override !== null);
    expect(decision(a, '10.9.0.2', 9000)).toMatchObject({ kind: 'proxy', reason: 'override' });
    expect(decision(a, '10.9.0.2', 8080)).toMatchObject({ kind: 'refuse' });
    const c = await startNode(prefix);
    expect(serializeInstance(c.service.get('x')!)).toEqual(serializeInstance(a.service.get('x')!));
  });

  it('concurrent writes to one instance from two nodes keep both changes (compare-and-swap, then re-apply)', async () => {
    const prefix = newPrefix();
    const [a, b] = [await startNode(prefix), await startNode(prefix)];
    await a.service.add({ instanceId: 'x', appId: 'app', ip: '10.9.0.3' });
    await until('b has x', () => b.service.get('x') !== undefined);
    for (let i = 1; i <= 10; i++) {
      // Both build their write on the same revision: one of them must lose the race and redo it.
      await Promise.all([
        a.service.add({ instanceId: 'x', appId: 'app', ip: '10.9.0.3', policy: policy([[1000 + i, false]]) }),
        b.service.setOverride('x', policy([[2000 + i, true]])),
      ]);
      const [got] = (await admin.get(`${prefix}instances/x`).string().then((v) => [JSON.parse(v!)])) as [ReturnType<typeof serializeInstance>];
      expect(got.reported_policy?.ports).toEqual([{ port: 1000 + i, pp: false }]);
      expect(got.override?.ports).toEqual([{ port: 2000 + i, pp: true }]);
    }
    const retried = [...a.lines(), ...b.lines()].filter((l) => l.msg.includes('another node changed the instance meanwhile'));
    expect(retried.length).toBeGreaterThan(0);
    await until('both nodes agree', () => serializeInstance(a.service.get('x')!).override !== null && JSON.stringify(serializeInstance(a.service.get('x')!)) === JSON.stringify(serializeInstance(b.service.get('x')!)));
  });

  it('two nodes registering two instances on one address: one wins, the other gets ERR_IP_IN_USE', async () => {
    const prefix = newPrefix();
    const [a, b] = [await startNode(prefix), await startNode(prefix)];
    const results = await Promise.allSettled([
      a.service.add({ instanceId: 'x', appId: 'app', ip: '10.9.0.4' }),
      b.service.add({ instanceId: 'y', appId: 'app', ip: '10.9.0.4' }),
    ]);
    const won = results.filter((r) => r.status === 'fulfilled');
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(won).toHaveLength(1);
    expect(lost).toHaveLength(1);
    expect(lost[0]!.reason).toMatchObject({ code: 'ERR_IP_IN_USE' });
    const winner = (won[0] as PromiseFulfilledResult<InstanceRecord>).value.instanceId;
    await until('both nodes map the address to the winner', () =>
      [a, b].every((n) => n.service.registry.byIp('10.9.0.4')?.instanceId === winner && n.service.list().length === 1),
    );
  });

  it('a store that missed another node\'s write is refused (StoreConflictError), and catchUp() brings it in', async () => {
    const prefix = newPrefix();
    const a = await startNode(prefix);
    const { logger } = capture();
    // No follow(): this store never hears of other nodes' writes by itself.
    const stale = createEtcdStore({ config: etcdConfig(prefix), logger, nodeName: 'stale' });
    cleanups.push(() => stale.close());
    await stale.load();
    const applied: Array<[string, InstanceRecord | undefined]> = [];
    await a.service.add({ instanceId: 'x', appId: 'app', ip: '10.9.0.5', policy: policy([[80, false]]) });
    const mine: InstanceRecord = { ...a.service.get('x')!, appId: 'other', override: null };
    const err = await stale.put(mine).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreConflictError);
    expect(err).toMatchObject({ code: 'ERR_STORE_CONFLICT', instanceId: 'x' });
    expect(JSON.parse((await admin.get(`${prefix}instances/x`).string())!)).toMatchObject({ app_id: 'app' });
    (stale as EtcdStore).follow((id, r) => applied.push([id, r]));
    await (err as StoreConflictError).catchUp();
    expect(applied.some(([id, r]) => id === 'x' && r?.appId === 'app')).toBe(true);
    // Now current: the same write goes through.
    await stale.put(mine);
    await until('a sees the write', () => a.service.get('x')?.appId === 'other');
  });

  it('refuses to start on a record that is not valid, naming the key', async () => {
    const prefix = newPrefix();
    await admin.put(`${prefix}instances/bad`).value('{"instance_id": 42}');
    const store = createEtcdStore({ config: etcdConfig(prefix), logger: pino({ level: 'silent' }) });
    await expect(store.load()).rejects.toMatchObject({ code: 'ERR_STORE_CORRUPT', message: expect.stringContaining(`${prefix}instances/bad`) });
  });

  it('refuses to start when etcd cannot be reached (ERR_STORE_UNAVAILABLE)', async () => {
    const proxy = await startTcpProxy({ host: '127.0.0.1', port: 1 });
    const port = proxy.port;
    await proxy.close();
    const store = createEtcdStore({ config: etcdConfig(newPrefix(), `http://127.0.0.1:${port}`), logger: pino({ level: 'silent' }) });
    await expect(store.load()).rejects.toMatchObject({ code: 'ERR_STORE_UNAVAILABLE', message: expect.stringContaining('does not start') });
  });
});

describe('etcd store: a node that loses etcd', () => {
  async function proxiedPair(): Promise<{ prefix: string; a: Node; b: Node; proxy: TcpProxy }> {
    const prefix = newPrefix();
    const url = new URL(etcd.endpoint);
    const proxy = await startTcpProxy({ host: url.hostname, port: Number(url.port) });
    cleanups.push(() => proxy.close());
    const a = await startNode(prefix, { name: 'a' });
    // A long request deadline: a write refused at once is then told apart from one that timed out.
    const b = await startNode(prefix, { name: 'b', endpoint: `http://127.0.0.1:${proxy.port}`, timeoutMs: 10_000 });
    return { prefix, a, b, proxy };
  }

  it('decides from memory, fails writes fast with ERR_STORE_UNAVAILABLE, says so, and catches up from the watch', async () => {
    const { a, b, proxy } = await proxiedPair();
    await a.service.add({ instanceId: 'x', appId: 'app', ip: '10.9.1.1', policy: policy([[8080, true]]) });
    await until('b has x', () => b.service.get('x') !== undefined);

    await proxy.cut();
    await until('b says etcd is unreachable', () => b.service.storeStatus()?.state === 'unreachable');
    expect(decision(b, '10.9.1.1', 8080)).toMatchObject({ kind: 'proxy', instanceId: 'x' });
    const t0 = Date.now();
    const write = await b.service.add({ instanceId: 'y', appId: 'app', ip: '10.9.1.2' }).catch((e: unknown) => e);
    expect(write).toMatchObject({ code: 'ERR_STORE_UNAVAILABLE', message: expect.stringContaining('nothing was written') });
    expect(Date.now() - t0).toBeLessThan(5_000); // refused at once, not after the 10 s deadline
    expect(b.service.get('y')).toBeUndefined();
    await expect(b.service.setOverride('x', policy([]))).rejects.toMatchObject({ code: 'ERR_STORE_UNAVAILABLE' });
    expect(b.service.get('x')?.override).toBeNull();

    // Meanwhile a keeps writing.
    await a.service.add({ instanceId: 'z', appId: 'app', ip: '10.9.1.3', policy: policy([[443, false]]) });
    await a.service.remove('x');

    await proxy.restore();
    await until('b is back', () => b.service.storeStatus()?.state === 'ok');
    await until('b caught up', () => b.service.get('z') !== undefined && b.service.get('x') === undefined);
    expect(b.lines().some((l) => l.msg.includes('etcd reachable again'))).toBe(true);
    expect(b.lines().some((l) => l.msg.includes('reloaded'))).toBe(false); // resumed, no reload needed
    await b.service.add({ instanceId: 'y', appId: 'app', ip: '10.9.1.2' });
    await until('a has y', () => a.service.get('y') !== undefined);
  });

  it('a watch that falls behind a compaction reloads the whole registry', async () => {
    const { a, b, proxy } = await proxiedPair();
    await a.service.add({ instanceId: 'keep', appId: 'app', ip: '10.9.2.1' });
    await a.service.add({ instanceId: 'gone', appId: 'app', ip: '10.9.2.2' });
    await a.service.add({ instanceId: 'moved', appId: 'app', ip: '10.9.2.3' });
    await until('b has all three', () => b.service.list().length === 3);

    await proxy.cut();
    await until('b says etcd is unreachable', () => b.service.storeStatus()?.state === 'unreachable');
    await a.service.remove('gone');
    await a.service.add({ instanceId: 'moved', appId: 'app', ip: '10.9.2.4' });
    await a.service.add({ instanceId: 'new', appId: 'app', ip: '10.9.2.3', policy: policy([[1, true]]) });
    await a.service.setOverride('keep', policy([[2, true]]));
    const head = await admin.get('anything').exec();
    await admin.kv.compact({ revision: head.header.revision, physical: true });

    await proxy.restore();
    await until('b reloaded', () => b.lines().some((l) => l.msg === 'registry reloaded from etcd'), 15_000);
    await until('b matches a', () => JSON.stringify(b.service.list().map(serializeInstance)) === JSON.stringify(a.service.list().map(serializeInstance)));
    expect(b.service.registry.byIp('10.9.2.3')?.instanceId).toBe('new');
    expect(b.service.registry.byIp('10.9.2.4')?.instanceId).toBe('moved');
    expect(decision(b, '10.9.2.1', 2)).toMatchObject({ kind: 'proxy', reason: 'override' });
    // And it follows again afterwards.
    await a.service.remove('keep');
    await until('b follows after the reload', () => b.service.get('keep') === undefined);
  });
});

describe('etcd store: a policy is fetched once for the cluster', () => {
  const APP_COMPOSE = JSON.stringify({ manifest_version: 2, name: 'web', runner: 'docker-compose', port_policy: { ports: [{ port: 8080, pp: true }], restrict_mode: true } });
  const HASH = createHash('sha256').update(APP_COMPOSE).digest('hex');

  async function slowAgent(delayMs: number): Promise<{ port: number; requests: () => number }> {
    let requests = 0;
    const body = JSON.stringify({
      app_id: 'ab'.repeat(20),
      instance_id: 'cd'.repeat(20),
      compose_hash: HASH,
      tcb_info: JSON.stringify({ compose_hash: HASH, event_log: [], app_compose: APP_COMPOSE }),
    });
    const server = http.createServer((req, res) => {
      requests++;
      req.resume();
      setTimeout(() => res.end(body), delayMs);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    return { port: (server.address() as AddressInfo).port, requests: () => requests };
  }

  it('three nodes want it, one fetches, the others take its result from etcd', async () => {
    const agent = await slowAgent(300);
    const prefix = newPrefix();
    const nodes = [
      await startNode(prefix, { name: 'a', agentPort: agent.port, fetcher: 'real' }),
      await startNode(prefix, { name: 'b', agentPort: agent.port, fetcher: 'real' }),
      await startNode(prefix, { name: 'c', agentPort: agent.port, fetcher: 'real' }),
    ];
    await nodes[0]!.service.add({ instanceId: 'x', appId: 'app', ip: '127.0.0.1', composeHash: HASH });
    await until('all have x', () => nodes.every((n) => n.service.get('x') !== undefined));
    // A connection at each node asks for the policy while the first fetch is in flight.
    for (const n of nodes) n.service.decide('127.0.0.1', 8080);
    await until('every node decides from the learned policy', () => nodes.every((n) => decision(n, '127.0.0.1', 8080).kind === 'proxy'));
    expect(decision(nodes[2]!, '127.0.0.1', 22)).toMatchObject({ kind: 'refuse', reason: 'port_not_allowed' });
    await until('every node reports it learned', () => nodes.every((n) => n.service.fetchStatus('x')?.state === 'learned'));
    expect(agent.requests()).toBe(1);
    const waited = nodes.flatMap((n) => n.lines()).filter((l) => l.msg.includes('learned by another node'));
    expect(waited.length).toBe(2);
  });

  it('a claim whose node died is freed by its lease; another node then fetches', async () => {
    const prefix = newPrefix();
    const b = await startNode(prefix, { name: 'b' });
    await b.service.add({ instanceId: 'x', appId: 'app', ip: '10.9.3.1', composeHash: HASH });
    // Another node claims the fetch and is killed before it releases the claim.
    const child = spawn(process.execPath, [path.join(here, 'fixtures/claim-fetch.mjs'), etcd.endpoint, prefix, 'x'], { stdio: ['ignore', 'pipe', 'inherit'] });
    cleanups.push(() => child.kill('SIGKILL'));
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => d.toString().includes('claimed') && resolve());
      child.once('exit', (code) => reject(new Error(`claim-fetch.mjs exited (${code}) before claiming`)));
    });
    const waiting = await b.store.coordinator.acquire('x');
    expect(waiting).toMatchObject({ kind: 'elsewhere', holder: 'node crashed-node' });
    child.kill('SIGKILL');
    const t0 = Date.now();
    await (waiting as { settled: Promise<void> }).settled;
    // Freed by the lease's expiry (10 s TTL), not by a release.
    expect(Date.now() - t0).toBeGreaterThan(2000);
    expect(await b.store.coordinator.acquire('x')).toMatchObject({ kind: 'mine' });
  }, 40_000);
});

describe('etcd store: TLS with a client certificate, and etcd authentication', () => {
  let dir: string;
  let secure: EtcdServer;
  let root: Etcd3;
  const files = (name: string) => ({ cert: path.join(dir, `${name}.pem`), key: path.join(dir, `${name}-key.pem`) });

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'tpi-etcd-tls-'));
    const ssl = (...argv: string[]) => execFileP('openssl', argv, { cwd: dir });
    await ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', '/CN=test-ca', '-keyout', 'ca-key.pem', '-out', 'ca.pem');
    for (const [name, cn, ext] of [
      ['server', '127.0.0.1', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth'],
      ['node', 'tpi-node', 'extendedKeyUsage=clientAuth'],
      ['root', 'root', 'extendedKeyUsage=clientAuth'],
    ] as const) {
      await writeFile(path.join(dir, `${name}.ext`), `${ext}\n`);
      await ssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', `/CN=${cn}`, '-keyout', `${name}-key.pem`, '-out', `${name}.csr`);
      await ssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-days', '2', '-extfile', `${name}.ext`, '-out', `${name}.pem`);
    }
    secure = await startEtcd({ tls: { ...files('server'), ca: path.join(dir, 'ca.pem') } });
    const rootCreds = { rootCertificate: await readFile(path.join(dir, 'ca.pem')), certChain: await readFile(files('root').cert), privateKey: await readFile(files('root').key) };
    root = new Etcd3({ hosts: secure.endpoint, credentials: rootCreds });
    // A user that may read and write only its prefix; then authentication on.
    await root.user('root').create('root-password');
    await root.user('root').addRole('root');
    await root.role('tpi').create();
    await root.role('tpi').grant({ permission: 'Readwrite', range: Range.prefix('/tls/') });
    await root.user('tpi').create('tpi-password');
    await root.user('tpi').addRole('tpi');
    await (root as unknown as { auth: { authEnable(): Promise<unknown> } }).auth.authEnable();
    root.close();
  }, 60_000);
  afterAll(async () => {
    await secure?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const tlsConfig = (password: string, prefix = '/tls/'): EtcdConfig => ({
    ...etcdConfig(prefix, secure.endpoint),
    ca: path.join(dir, 'ca.pem'),
    ...files('node'),
    username: 'tpi',
    password,
  });

  it('loads, writes and follows over TLS as its etcd user', async () => {
    const { logger } = capture();
    const [one, two] = [createEtcdStore({ config: tlsConfig('tpi-password'), logger }), createEtcdStore({ config: tlsConfig('tpi-password'), logger })];
    cleanups.push(() => one.close(), () => two.close());
    await one.load();
    await two.load();
    const seen: string[] = [];
    two.follow((id) => seen.push(id));
    await one.put({ instanceId: 'x', appId: 'app', ip: '10.9.4.1', composeHash: null, reportedPolicy: null, policySource: null, policyComposeHash: null, restricted: false, override: null, registeredAt: 1, updatedAt: 1 });
    await until('the other node sees it', () => seen.includes('x'));
  });

  it('a wrong password is ERR_STORE_AUTH, naming what to check', async () => {
    const store = createEtcdStore({ config: tlsConfig('wrong'), logger: pino({ level: 'silent' }) });
    await expect(store.load()).rejects.toMatchObject({ code: 'ERR_STORE_AUTH', message: expect.stringContaining('username, password') });
  });

  it('a prefix the user may not touch is ERR_STORE_AUTH too', async () => {
    const store = createEtcdStore({ config: tlsConfig('tpi-password', '/other/'), logger: pino({ level: 'silent' }) });
    await expect(store.load()).rejects.toMatchObject({ code: 'ERR_STORE_AUTH' });
  });
});
