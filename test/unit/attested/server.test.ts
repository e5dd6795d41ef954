// The registration endpoint over real mutual TLS on loopback: what an instance gets back, what
// the registry holds afterwards, and every refusal with its reason in the log and nothing stored.
import * as fs from 'node:fs/promises';
import * as https from 'node:https';
import * as net from 'node:net';
import * as tls from 'node:tls';
import * as os from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createAttestedServer, type AttestedServer } from '../../../src/attested/server.js';
import { AttestedTlsFileError } from '../../../src/attested/errors.js';
import type { AttestedConfig, RegistryConfig } from '../../../src/config.js';
import { DEFAULT_CONFIG } from '../../../src/config-parse.js';
import type { PolicyFetcher } from '../../../src/registry/fetcher.js';
import { parsePolicyString, serializeInstance } from '../../../src/registry/policy.js';
import { createRegistryService, type RegistryService } from '../../../src/registry/service.js';
import type { RegistryStore } from '../../../src/registry/store.js';
import { createSqliteStore } from '../../../src/registry/sqlite-store.js';
import { OID_APP_ID, OID_APP_INFO, TestPki, appInfoFields, encodeAppInfo, hex, ratlsExtension, writePem } from '../../../scripts/lib/ra-tls-pki.mjs';

const DAY = 86_400_000;
const registryConfig: RegistryConfig = { path: '', adminSocket: '', agentPort: 8090, fetch: DEFAULT_CONFIG.registry.fetch, attested: null };

type Client = ReturnType<TestPki['instance']>;

const pki = TestPki.create();
const forged = TestPki.create(); // same root name, different keys: a look-alike KMS
const serverCert = pki.server(['127.0.0.1']);
const A = appInfoFields(1); // app a1.., instance 01..
const A2 = appInfoFields(2, { app_id: A.app_id }); // another instance of the same app
const B = appInfoFields(3); // another app
const NOT_ALLOWED = appInfoFields(4);
const certs = {
  a: pki.instance(A, 'array'),
  aMap: pki.instance(A, 'map'),
  a2: pki.instance(A2, 'array'),
  b: pki.instance(B, 'map'),
  notAllowed: pki.instance(NOT_ALLOWED),
  forged: forged.instance(A),
  expired: pki.instance(A, 'array', { notBefore: new Date(Date.now() - 10 * DAY), notAfter: new Date(Date.now() - DAY) }),
  future: pki.instance(A, 'array', { notBefore: new Date(Date.now() + DAY), notAfter: new Date(Date.now() + 10 * DAY) }),
  serverUsage: pki.instance(A, 'array', { usage: 'server' }),
  noAppInfo: pki.client({ extensions: [] }),
  appIdOnly: pki.client({ extensions: [ratlsExtension(OID_APP_ID, B.app_id)] }),
  badAppInfo: pki.client({ extensions: [ratlsExtension(OID_APP_INFO, encodeAppInfo({ ...A, compose_hash: new Uint8Array(8) }, 'array'))] }),
  direct: pki.client({ direct: true, extensions: [ratlsExtension(OID_APP_INFO, encodeAppInfo(A, 'array'))] }),
};
const POLICY = { ports: [{ port: 8080, pp: true }], restrict_mode: false };

let tmp: string;
let files: Record<string, string>;
let service: RegistryService;
let store: ReturnType<typeof failingStore>;
let storeDir: string;
let strict: AttestedServer;
let lenient: AttestedServer;
let lines: Array<Record<string, unknown>>;
let clock: number | null;
const enqueued: string[] = [];

function attestedConfig(over: Partial<AttestedConfig> = {}): AttestedConfig {
  return {
    listen: { address: '127.0.0.1', port: 0 },
    caFile: files['ca.pem']!,
    certFile: files['server.crt']!,
    keyFile: files['server.key']!,
    allowedApps: [hex(A.app_id), hex(B.app_id)],
    appIdFallback: false,
    allowAddressChange: false,
    addressMap: [],
    ...over,
  };
}

/** A SQLite store whose next write can be made to fail, and whose writes can be held. */
function failingStore(dir: string): RegistryStore & { failNext: Error | null; gate: Promise<void> | null } {
  const inner = createSqliteStore({ dir, logger: pino({ level: 'silent' }) });
  const s = {
    failNext: null as Error | null,
    gate: null as Promise<void> | null,
    load: () => inner.load(),
    put: async (r: Parameters<RegistryStore['put']>[0]) => {
      if (s.gate) await s.gate;
      if (s.failNext) {
        const err = s.failNext;
        s.failNext = null;
        throw err;
      }
      return inner.put(r);
    },
    delete: (id: string) => inner.delete(id),
    close: () => inner.close(),
  };
  return s;
}

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tpi-attested-'));
  files = await writePem(path.join(tmp, 'pki'), { 'ca.pem': pki.root.certPem, 'server.crt': serverCert.certPem, 'server.key': serverCert.keyPem });
});
afterAll(async () => fs.rm(tmp, { recursive: true, force: true }));

beforeEach(async () => {
  lines = [];
  clock = null;
  enqueued.length = 0;
  const logger = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  storeDir = await fs.mkdtemp(path.join(tmp, 'store-'));
  store = failingStore(storeDir);
  const fetcherFactory = (): PolicyFetcher => ({ enqueue: (id) => void enqueued.push(id), status: () => undefined, close: async () => {} });
  // Instances register from loopback here: allowed as it is with intercept.local_backends.
  service = await createRegistryService({ logger, config: registryConfig, store, fetcherFactory, allowLoopback: true });
  const now = () => clock ?? Date.now();
  strict = await createAttestedServer({ logger, config: attestedConfig(), service, now });
  lenient = await createAttestedServer({
    logger,
    config: attestedConfig({ allowedApps: null, appIdFallback: true, allowAddressChange: true, addressMap: [{ peer: '127.0.0.3/32', instance: '198.18.2.9/32' }] }),
    service,
    now,
  });
});
afterEach(async () => {
  await strict.close();
  await lenient.close();
  await service.close();
});

interface Answer {
  status: number | null;
  body: Record<string, unknown>;
  error: string | null;
}

/** One registration over a new mutual-TLS connection (as a CVM does at boot). */
function register(
  cert: Client | null,
  body: unknown = { client_public_key: 'k', port_policy: POLICY },
  opts: { server?: AttestedServer; path?: string; method?: string; from?: string; headers?: Record<string, string> } = {},
): Promise<Answer> {
  const data = typeof body === 'string' ? body : JSON.stringify(body);
  return new Promise((resolve) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port: (opts.server ?? strict).address.port,
        path: opts.path ?? '/prpc/RegisterCvm?json',
        method: opts.method ?? 'POST',
        localAddress: opts.from ?? '127.0.0.1',
        ca: pki.root.certPem,
        ...(cert ? { cert: cert.chainPem, key: cert.keyPem } : {}),
        agent: false,
        headers: { 'Content-Length': Buffer.byteLength(data), ...opts.headers },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? null, body: JSON.parse(text) as Record<string, unknown>, error: null }));
      },
    );
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ status: null, body: {}, error: err.code ?? err.message }));
    req.end(data);
  });
}

function refusals(): Array<Record<string, unknown>> {
  return lines.filter((l) => l['msg'] === 'attested registration refused');
}

/** Asserts the refusal: status, reason in the answer and in the log, and an untouched registry. */
async function expectRefused(answer: Promise<Answer>, status: number, reason: string): Promise<Answer> {
  const before = JSON.stringify(service.list().map((r) => serializeInstance(r)));
  const a = await answer;
  expect(a.error).toBeNull();
  expect(a.status).toBe(status);
  expect(a.body['reason']).toBe(reason);
  expect(typeof a.body['error']).toBe('string');
  expect(refusals().map((l) => l['reason'])).toContain(reason);
  expect(JSON.stringify(service.list().map((r) => serializeInstance(r)))).toBe(before);
  return a;
}

describe('attested registration', () => {
  it('registers the instance the certificate names, at the connection address, with the reported policy', async () => {
    const a = await register(certs.a);
    expect(a.status).toBe(200);
    expect(a.body).toEqual({
      instance_id: hex(A.instance_id),
      app_id: hex(A.app_id),
      compose_hash: hex(A.compose_hash),
      address: '127.0.0.1',
      identity: 'app-info',
      port_policy: POLICY,
      effective_policy: { source: 'registration', policy: POLICY },
      reregistration: false,
    });
    expect(service.decide('127.0.0.1', 8080)).toMatchObject({ kind: 'proxy', instanceId: hex(A.instance_id) });
    expect(service.decide('127.0.0.1', 9999).kind).toBe('transparent');
    expect(lines.find((l) => l['msg'] === 'attested registration')).toMatchObject({ instanceId: hex(A.instance_id), address: '127.0.0.1', policyReported: true });
    expect(enqueued).toEqual([]);
  });

  it('takes the named-map encoding, a chain without an intermediate, and the Tproxy. method prefix', async () => {
    expect((await register(certs.aMap)).status).toBe(200);
    expect((await register(certs.direct, {}, { path: '/prpc/Tproxy.RegisterCvm', headers: { 'Content-Type': 'application/json' } })).body['reregistration']).toBe(true);
  });

  it('without a policy: the registry learns it (fetch queued); a re-registration without one keeps the cached policy', async () => {
    const first = await register(certs.a, { client_public_key: 'k' });
    expect(first.body['port_policy']).toBeNull();
    expect(first.body['effective_policy']).toEqual({ source: null, policy: null });
    expect(enqueued).toEqual([hex(A.instance_id)]);
    await register(certs.a);
    const again = await register(certs.a, {});
    expect(again.body).toMatchObject({ port_policy: null, reregistration: true, effective_policy: { source: 'registration', policy: POLICY } });
  });

  it('reported empty differs from not reported', async () => {
    const a = await register(certs.a, { port_policy: { ports: [], restrict_mode: true } });
    expect(a.body['effective_policy']).toEqual({ source: 'registration', policy: { ports: [], restrict_mode: true } });
    expect(service.decide('127.0.0.1', 8080)).toMatchObject({ kind: 'refuse' });
  });

  it('a new compose hash drops the cached policy', async () => {
    await register(certs.a);
    const upgraded = pki.instance({ ...A, compose_hash: new Uint8Array(32).fill(0x99) });
    const a = await register(upgraded, {});
    expect(a.body).toMatchObject({ compose_hash: '99'.repeat(32), effective_policy: { source: null, policy: null } });
    expect(service.get(hex(A.instance_id))?.reportedPolicy).toBeNull();
    expect(enqueued).toEqual([hex(A.instance_id)]);
  });

  it("an operator override still wins over the instance's own report", async () => {
    await register(certs.a);
    await service.setOverride(hex(A.instance_id), parsePolicyString('8080', true));
    const a = await register(certs.a);
    expect(a.body['effective_policy']).toEqual({ source: 'override', policy: { ports: [{ port: 8080, pp: false }], restrict_mode: true } });
    expect(service.decide('127.0.0.1', 8080).kind).toBe('transparent');
  });

  it('is answered only once durable: a failed store write is a 503 and leaves the registry as it was', async () => {
    store.failNext = Object.assign(new Error('fdatasync EIO'), { code: 'EIO' });
    const a = await expectRefused(register(certs.a), 503, 'registry_unavailable');
    expect(a.body['code']).toBe('ERR_ATTESTED_REGISTRY_UNAVAILABLE');
    expect(service.list()).toEqual([]);
    expect((await register(certs.a)).status).toBe(200);
  });

  it('what was acknowledged is in the store', async () => {
    await register(certs.a);
    await register(certs.b, {}, { from: '127.0.0.2' });
    await strict.close();
    await lenient.close();
    await service.close(); // afterEach's second close() is a no-op
    const reopened = createSqliteStore({ dir: storeDir, logger: pino({ level: 'silent' }) });
    const records = await reopened.load();
    await reopened.close();
    expect(records.map((r) => [r.instanceId, r.ip, r.composeHash]).sort()).toEqual(
      [
        [hex(A.instance_id), '127.0.0.1', hex(A.compose_hash)],
        [hex(B.instance_id), '127.0.0.2', hex(B.compose_hash)],
      ].sort(),
    );
  });
});

describe('refusals: a 4xx with its reason, logged, nothing stored', () => {
  it('no client certificate: 401', async () => {
    await expectRefused(register(null), 401, 'no_client_certificate');
  });

  it('a certificate from another CA, even one named like the trusted root: 403', async () => {
    const a = await expectRefused(register(certs.forged), 403, 'untrusted_certificate');
    expect(a.body['error']).toMatch(/ca_file/);
  });

  it('an expired certificate: 403 (OpenSSL at the handshake)', async () => {
    await expectRefused(register(certs.expired), 403, 'certificate_expired');
  });

  it('a certificate not valid yet: 403', async () => {
    await expectRefused(register(certs.future), 403, 'certificate_not_yet_valid');
  });

  it('a certificate that expires while a connection is reused: checked again per request', async () => {
    clock = Date.now() + 365 * DAY;
    await expectRefused(register(certs.a), 403, 'certificate_expired');
  });

  it('a certificate of the right CA issued for servers, not clients: 403', async () => {
    const a = await expectRefused(register(certs.serverUsage), 403, 'untrusted_certificate');
    expect(a.body['error']).toMatch(/PURPOSE/);
  });

  it('no app-info extension: 403', async () => {
    await expectRefused(register(certs.noAppInfo), 403, 'app_info_missing');
    await expectRefused(register(certs.appIdOnly), 403, 'app_info_missing');
  });

  it('a malformed app-info extension: 403 naming the field', async () => {
    const a = await expectRefused(register(certs.badAppInfo), 403, 'app_info_malformed');
    expect(a.body['field']).toBe('compose_hash');
  });

  it('an app not in allowed_apps: 403', async () => {
    await expectRefused(register(certs.notAllowed), 403, 'app_not_allowed');
  });

  it('a body that is not JSON, or not the schema: 400 naming the field', async () => {
    await expectRefused(register(certs.a, '{"port_policy": {'), 400, 'body_not_json');
    const a = await expectRefused(register(certs.a, { port_policy: { ports: [{ port: 70000, pp: true }] } }), 400, 'body_invalid');
    expect(a.body['field']).toBe('port_policy.ports[0].port');
  });

  it('other paths, methods and the protobuf form', async () => {
    await expectRefused(register(certs.a, {}, { path: '/prpc/Info?json' }), 404, 'not_found');
    await expectRefused(register(certs.a, {}, { method: 'PUT' }), 405, 'method_not_allowed');
    await expectRefused(register(certs.a, {}, { path: '/prpc/RegisterCvm' }), 415, 'protobuf_unsupported');
  });

  it('a failed handshake (plain HTTP to the TLS port) is logged with its reason', async () => {
    await new Promise<void>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port: strict.address.port }, () => s.write('POST /prpc/RegisterCvm?json HTTP/1.1\r\nHost: x\r\n\r\n'));
      s.on('error', () => {});
      s.on('close', () => resolve());
      s.resume();
    });
    await expect.poll(() => refusals().map((l) => l['reason'])).toContain('tls_handshake_failed');
    expect(service.list()).toEqual([]);
  });

  it('a TLS 1.2 renegotiation (which could swap the certificate) never completes', async () => {
    const socket = tls.connect({ host: '127.0.0.1', port: strict.address.port, ca: pki.root.certPem, cert: certs.a.chainPem, key: certs.a.keyPem, maxVersion: 'TLSv1.2' });
    socket.on('error', () => {});
    await new Promise((resolve) => socket.once('secureConnect', resolve));
    // The server answers with a no_renegotiation alert: the client either fails or keeps waiting.
    const outcome = await new Promise<string>((resolve) => {
      const timer = setTimeout(() => resolve('not renegotiated'), 1500);
      const started = socket.renegotiate({ rejectUnauthorized: false }, (err) => {
        clearTimeout(timer);
        resolve(err ? 'failed' : 'renegotiated');
      });
      if (!started) resolve('refused locally');
    });
    socket.destroy();
    expect(outcome).not.toBe('renegotiated');
  });

  it('a body over 1 MiB: 413', async () => {
    await expectRefused(register(certs.a, `{"x":"${'a'.repeat(1024 * 1024)}"}`), 413, 'body_too_large');
  });
});

describe('the conflict rule: 409, nothing moves', () => {
  it('the instance from a new address is refused; with allow_address_change it moves, and says so', async () => {
    await register(certs.a);
    const a = await expectRefused(register(certs.a, {}, { from: '127.0.0.2' }), 409, 'instance_address_conflict');
    expect(a.body['error']).toMatch(/registered at 127\.0\.0\.1/);
    expect(service.decide('127.0.0.1', 8080).kind).toBe('proxy');
    const moved = await register(certs.a, {}, { from: '127.0.0.2', server: lenient });
    expect(moved.body).toMatchObject({ address: '127.0.0.2', moved_from: '127.0.0.1', effective_policy: { source: 'registration', policy: POLICY } });
    expect(service.decide('127.0.0.2', 8080).kind).toBe('proxy');
    expect(service.registry.byIp('127.0.0.1')).toBeUndefined();
    expect(lines.find((l) => l['msg'] === 'attested registration moved the instance to a new address')).toMatchObject({ movedFrom: '127.0.0.1', address: '127.0.0.2' });
  });

  it('an address held by another instance is refused, with moves allowed too', async () => {
    await register(certs.a);
    await expectRefused(register(certs.a2), 409, 'address_in_use');
    await expectRefused(register(certs.a2, {}, { server: lenient }), 409, 'address_in_use');
  });

  it('an instance id registered to another app is refused', async () => {
    await register(certs.a);
    const otherApp = pki.instance({ ...B, instance_id: A.instance_id });
    await expectRefused(register(otherApp, {}, { server: lenient }), 409, 'instance_app_conflict');
  });

  it('two registrations of one instance from two addresses while the store is slow: one wins, the other is refused', async () => {
    let release!: () => void;
    store.gate = new Promise((r) => (release = r));
    const slow = register(certs.b, {}, { from: '127.0.0.3' });
    const both = Promise.all([register(certs.a), register(certs.a, {}, { from: '127.0.0.2' })]);
    await new Promise((r) => setTimeout(r, 300)); // both requests are in, waiting behind the slow write
    store.gate = null;
    release();
    const [x, y] = await both;
    expect((await slow).status).toBe(200);
    expect([x.status, y.status].sort()).toEqual([200, 409]);
    expect(service.list()).toHaveLength(2);
  });

  it("an operator's move queued ahead of a re-registration is not undone by it: the check runs when the registration applies", async () => {
    expect((await register(certs.a)).status).toBe(200);
    const id = hex(A.instance_id);
    let release!: () => void;
    store.gate = new Promise((r) => (release = r));
    // The store is slow: a first write holds the registry's queue. Behind it the operator moves
    // the instance, and the instance then re-registers from its old address (allow_address_change
    // is off). Checked on arrival, the re-registration would see the old address and pass, then
    // undo the move once its turn came.
    const first = service.add({ instanceId: 'other', appId: 'app', ip: '198.18.2.78', policy: null });
    const moved = service.add({ instanceId: id, appId: hex(A.app_id), ip: '198.18.2.77', composeHash: hex(A.compose_hash) });
    const again = register(certs.a);
    await new Promise((r) => setTimeout(r, 300));
    store.gate = null;
    release();
    await first;
    await moved;
    const r = await again;
    expect(r.status).toBe(409);
    expect(r.body).toMatchObject({ reason: 'instance_address_conflict' });
    expect(service.get(id)?.ip).toBe('198.18.2.77');
  });
});

describe('options', () => {
  it('app_id_fallback: a certificate with only the app id registers the app as its own instance, no compose hash', async () => {
    const a = await register(certs.appIdOnly, {}, { server: lenient });
    expect(a.body).toMatchObject({ instance_id: hex(B.app_id), app_id: hex(B.app_id), compose_hash: null, identity: 'app-id' });
  });

  it('address_map: the peer address is translated', async () => {
    const a = await register(certs.a, {}, { server: lenient, from: '127.0.0.3' });
    expect(a.body['address']).toBe('198.18.2.9');
    expect(service.decide('198.18.2.9', 8080).instanceId).toBe(hex(A.instance_id));
  });

  it('unreadable or unusable TLS files stop the start, naming the key', async () => {
    const logger = pino({ level: 'silent' });
    const start = (over: Partial<AttestedConfig>) => createAttestedServer({ logger, config: attestedConfig(over), service });
    await expect(start({ caFile: path.join(tmp, 'missing.pem') })).rejects.toMatchObject({ code: 'ERR_ATTESTED_TLS_FILE', key: 'registry.attested.ca_file' });
    await expect(start({ caFile: files['server.key']! })).rejects.toMatchObject({ key: 'registry.attested.ca_file', message: expect.stringMatching(/no PEM certificate/) });
    const other = await writePem(path.join(tmp, 'other'), { 'k.pem': certs.a.keyPem });
    const err = await start({ keyFile: other['k.pem']! }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AttestedTlsFileError);
    expect(err).toMatchObject({ key: 'registry.attested.cert_file' });
  });
});
