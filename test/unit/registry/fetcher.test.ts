// The policy fetcher against a real (fake) guest agent served over node:http on 127.0.0.1.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { fetchAgentInfo } from '../../../src/registry/agent-client.js';
import { createHash } from 'node:crypto';
import { InfoResponseReader, PolicyFetchError, type InfoFacts } from '../../../src/registry/compose.js';
import { fetchWanted } from '../../../src/registry/entry.js';
import { createPolicyFetcher, type FetchStatus, type PolicyFetcher, type PolicyFetcherOptions } from '../../../src/registry/fetcher.js';
import type { FetchCoordinator } from '../../../src/registry/fetch-coordinator.js';
import { makePolicy } from '../../../src/registry/policy.js';
import { Registry } from '../../../src/registry/registry.js';
import { DEFAULT_CONFIG } from '../../../src/config-parse.js';
import type { PortPolicy } from '../../../src/registry/types.js';

const composeHash = (text: string): string => createHash('sha256').update(text).digest('hex');

function readInfoResponse(body: string): InfoFacts {
  const reader = new InfoResponseReader();
  reader.write(Buffer.from(body));
  return reader.end();
}

const APP_COMPOSE = JSON.stringify(
  {
    manifest_version: 2,
    name: 'web',
    runner: 'docker-compose',
    docker_compose_file: 'services:\n  web:\n    image: nginx\n',
    public_tcbinfo: true,
    port_policy: { ports: [{ port: 8080, pp: true }, { port: 443, pp: false }], restrict_mode: false },
  },
  null,
  2,
);
const H = composeHash(APP_COMPOSE);

function infoResponse(appCompose: string | null, overrides: Record<string, unknown> = {}): string {
  const hash = composeHash(appCompose ?? APP_COMPOSE);
  return JSON.stringify({
    app_id: 'ab'.repeat(20),
    instance_id: 'cd'.repeat(20),
    compose_hash: hash,
    app_name: 'web',
    app_cert: '-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n',
    device_id: 'ef'.repeat(32),
    mr_aggregated: '01'.repeat(32),
    os_image_hash: '02'.repeat(32),
    key_provider_info: '{"name":"kms","id":"x"}',
    vm_config: '{}',
    tcb_info:
      appCompose === null
        ? ''
        : JSON.stringify({
            mrtd: '00'.repeat(48),
            rtmr0: '11'.repeat(48),
            rtmr1: '22'.repeat(48),
            rtmr2: '33'.repeat(48),
            rtmr3: '44'.repeat(48),
            compose_hash: hash,
            event_log: [],
            app_compose: appCompose,
          }),
    ...overrides,
  });
}

interface FakeAgent {
  port: number;
  requests: { method: string; url: string; contentType: string | undefined; body: string }[];
  close(): Promise<void>;
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function startAgent(handler: (req: http.IncomingMessage, res: http.ServerResponse) => void): Promise<FakeAgent> {
  const requests: FakeAgent['requests'] = [];
  const timers = new Set<NodeJS.Timeout>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      requests.push({
        method: req.method ?? '',
        url: req.url ?? '',
        contentType: req.headers['content-type'],
        body: Buffer.concat(chunks).toString(),
      });
      handler(req, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const agent: FakeAgent = {
    port: (server.address() as AddressInfo).port,
    requests,
    close: async () => {
      for (const t of timers) clearInterval(t);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  cleanups.push(agent.close);
  (server as unknown as { timers: Set<NodeJS.Timeout> }).timers = timers;
  return agent;
}

function json(body: string, status = 200) {
  return (_req: http.IncomingMessage, res: http.ServerResponse): void => {
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  };
}

function captureLogger(): { logger: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { logger, lines };
}

interface Harness {
  registry: Registry;
  fetcher: PolicyFetcher;
  learned: { id: string; composeHash: string; policy: PortPolicy }[];
  lines: Record<string, unknown>[];
  settled(id: string, timeoutMs?: number): Promise<FetchStatus>;
}

function harness(agentPort: number, opts: Partial<PolicyFetcherOptions> = {}, trustAgentComposeHash = false): Harness {
  const { logger, lines } = captureLogger();
  const registry = new Registry({ logger, trustAgentComposeHash });
  const learned: Harness['learned'] = [];
  const fetcher = createPolicyFetcher({
    logger,
    agentPort,
    timeoutMs: 2_000,
    maxRetries: 2,
    backoffInitialMs: 10,
    backoffMaxMs: 40,
    maxResponseBytes: 64 * 1024,
    getInstance: (id) => registry.get(id),
    wanted: (record) => fetchWanted(record, trustAgentComposeHash),
    onLearned: (id, hash, policy) => {
      learned.push({ id, composeHash: hash, policy });
      registry.learnPolicy(id, hash, policy);
    },
    onFailed: (id, record) => registry.markFetch(id, record.composeHash, true),
    ...opts,
  });
  cleanups.push(() => fetcher.close());
  const settled = async (id: string, timeoutMs = 5_000): Promise<FetchStatus> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = fetcher.status(id);
      if (s !== undefined && (s.state === 'learned' || s.state === 'failed')) return s;
      if (Date.now() > deadline) throw new Error(`fetch for ${id} did not settle: ${JSON.stringify(s)}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  return { registry, fetcher, learned, lines, settled };
}

function ports(p: PortPolicy): [number, boolean][] {
  return [...p.ports].map(([port, r]) => [port, r.pp] as [number, boolean]).sort((a, b) => a[0] - b[0]);
}

describe('policy fetcher against a fake guest agent', () => {
  it('learns the port_policy; the decision becomes proxy for 8080', async () => {
    const agent = await startAgent(json(infoResponse(APP_COMPOSE)));
    const h = harness(agent.port);
    h.registry.register({ instanceId: 'i1', appId: 'app', ip: '127.0.0.1', composeHash: composeHash(APP_COMPOSE) });
    expect(h.registry.decide('127.0.0.1', 8080)).toMatchObject({ decision: { kind: 'refuse', reason: 'policy_unknown' }, fetch: 'i1' });
    h.fetcher.enqueue('i1');
    const status = await h.settled('i1');
    expect(status).toMatchObject({ state: 'learned', attempts: 1, lastError: null, nextAttemptAt: null });
    expect(status.learnedAt).toBeTypeOf('number');
    expect(h.learned).toHaveLength(1);
    expect(h.learned[0]?.composeHash).toBe(composeHash(APP_COMPOSE));
    expect(ports(h.learned[0]!.policy)).toEqual([
      [443, false],
      [8080, true],
    ]);
    expect(h.registry.decide('127.0.0.1', 8080)).toEqual({
      decision: { kind: 'proxy', instanceId: 'i1', reason: 'policy' },
      fetch: null,
    });
    expect(agent.requests).toEqual([{ method: 'POST', url: '/prpc/Info?json', contentType: 'application/json', body: '{}' }]);
    expect(h.lines.some((l) => l['msg'] === 'port policy learned from guest agent' && l['instanceId'] === 'i1')).toBe(true);
  });

  it("learns from the response compose_hash when the registration carried none and the agent's hash is trusted", async () => {
    const agent = await startAgent(json(infoResponse(APP_COMPOSE)));
    const h = harness(agent.port, {}, true);
    h.registry.register({ instanceId: 'i1', appId: 'app', ip: '127.0.0.1' });
    h.fetcher.enqueue('i1');
    expect((await h.settled('i1')).state).toBe('learned');
    expect(h.registry.get('i1')?.policyComposeHash).toBe(composeHash(APP_COMPOSE));
  });

  it('a compose with only a top-level ports array is learned as an open policy: no header on any port', async () => {
    const compose = JSON.stringify({ manifest_version: 2, name: 'old', runner: 'docker-compose', ports: [{ port: 9000, pp: true }] });
    const agent = await startAgent(json(infoResponse(compose)));
    const h = harness(agent.port);
    h.registry.register({ instanceId: 'i1', appId: 'app', ip: '127.0.0.1', composeHash: composeHash(compose) });
    h.fetcher.enqueue('i1');
    expect((await h.settled('i1')).state).toBe('learned');
    expect(h.learned[0]!.policy.ports.size).toBe(0);
    expect(h.registry.decide('127.0.0.1', 9000).decision).toEqual({ kind: 'transparent', instanceId: 'i1', reason: 'policy' });
  });

  it('empty tcb_info: the open policy is learned, as upstream', async () => {
    const agent = await startAgent(json(infoResponse(null)));
    const h = harness(agent.port);
    h.registry.register({ instanceId: 'i1', appId: 'app', ip: '127.0.0.1', composeHash: composeHash(APP_COMPOSE) });
    h.fetcher.enqueue('i1');
    expect((await h.settled('i1')).state).toBe('learned');
    expect(h.registry.get('i1')?.reportedPolicy?.ports.size).toBe(0);
    expect(h.registry.decide('127.0.0.1', 8080)).toEqual({
      decision: { kind: 'transparent', instanceId: 'i1', reason: 'policy' },
      fetch: null,
    });
  });

  it('HTTP 500 is retried with backoff, then failed after maxRetries', async () => {
    const agent = await startAgent(json('{"error":"boom"}', 500));
    const h = harness(agent.port, { maxRetries: 3 });
    h.registry.register({ instanceId: 'i1', appId: 'app', ip: '127.0.0.1', composeHash: H });
    h.fetcher.enqueue('i1');
    const status = await h.settled('i1');
    expect(status).toMatchObject({ state: 'failed', attempts: 4, lastError: { code: 'ERR_AGENT_HTTP', permanent: false } });
    expect(agent.requests).toHaveLength(4);
    expect(h.learned).toHaveLength(0);
    expect(h.lines.filter((l) => l['msg'] === 'policy fetch failed; will retry')).toHaveLength(3);
    expect(h.lines.some((l) => l['code'] === 'ERR_AGENT_HTTP' && l['msg'] === 'policy fetch failed; retries exhausted')).toBe(true);
  });

  it('a server that never answers times out (timeoutMs 200)', async () => {
    const agent = await startAgent(() => {
      /* never answer */
    });
    const h = harness(agent.port, { timeoutMs: 200, maxRetries: 0 });
    h.registry.register({ instanceId: 'i1', appId: 'app', ip: '127.0.0.1', composeHash: H });
    const started = Date.now();
    h.fetcher.enqueue('i1');
    const status = await h.settled('i1');
    expect(status.lastError).toMatchObject({ code: 'ERR_AGENT_TIMEOUT', permanent: false });
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it('a slow-drip body (1 byte per 50 ms, forever) times out as a whole', async () => {
    const intervals: NodeJS.Timeout[] = [];
    cleanups.push(() => intervals.forEach((t) => clearInterval(t)));
    const agent = await startAgent((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.flushHeaders();
      const t = setInterval(() => res.write(' '), 50);
      intervals.push(t);
      res.on('close', () => clearInterval(t));
    });
    const h = harness(agent.port, { timeoutMs: 300, maxRetries: 0 });
    h.registry.register({ instanceId: 'i1', appId: 'app', ip: '127.0.0.1', composeHash: H });
    const started = Date.now();
    h.fetcher.enqueue('i1');
    const status = await h.settled('i1');
    expect(status.lastError).toMatchObject({ code: 'ERR_AGENT_TIMEOUT', permanent: false });
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it('invalid JSON is transient: retried, then failed', async () => {
    const agent = await startAgent(json('{"app_id": "x", '));
    const h = harness(agent.port, { maxRetries: 1 });
    h.registry.register({ instanceId: 'i1', appId: 'app', ip: '127.0.0.1', composeHash: H });
    h.fetcher.enqueue('i1');
    const status = await h.settled('i1');
    expect(status).toMatchObject({ state: 'failed', attempts: 2, lastError: { code: 'ERR_AGENT_BAD_RESPONSE', permanent: false } });
    expect(agent.requests).toHaveLength(2);
  });

  it('a compose hash mismatch is permanent, not retried, and logged as a security event', async () => {
    const agent = await startAgent(json(infoResponse(APP_COMPOSE)));
    const h = harness(agent.port, { maxRetries: 5 });
    const registered = 'f'.repeat(64);
    h.registry.register({ instanceId: 'i1', appId: 'app', ip: '127.0.0.1', composeHash: registered });
    h.fetcher.enqueue('i1');
    const status = await h.settled('i1');
    expect(status).toMatchObject({ state: 'failed', attempts: 1, lastError: { code: 'ERR_COMPOSE_HASH_MISMATCH', permanent: true } });
    await new Promise((r) => setTimeout(r, 50));
    expect(agent.requests).toHaveLength(1);
    expect(h.learned).toHaveLength(0);
    const event = h.lines.find((l) => l['event'] === 'compose_hash_mismatch');
    expect(event).toMatchObject({
      level: 50,
      security: true,
      instanceId: 'i1',
      code: 'ERR_COMPOSE_HASH_MISMATCH',
      expectedHash: registered,
      actualHash: composeHash(APP_COMPOSE),
    });
    expect(h.registry.get('i1')?.reportedPolicy).toBeNull();
  });

  it('an app_compose that differs from the response compose_hash is a mismatch too', async () => {
    const agent = await startAgent(json(infoResponse(APP_COMPOSE, { compose_hash: 'e'.repeat(64) })));
    const h = harness(agent.port);
    h.registry.register({ instanceId: 'i1', appId: 'app', ip: '127.0.0.1', composeHash: H });
    h.fetcher.enqueue('i1');
    expect((await h.settled('i1')).lastError?.code).toBe('ERR_COMPOSE_HASH_MISMATCH');
    expect(agent.requests).toHaveLength(1);
  });

  it.each([
    ['chunked', false],
    ['with content-length', true],
  ])('a 10 MiB body (%s) over a 64 KiB cap is rejected permanently', async (_what, declareLength) => {
    const total = 10 * 1024 * 1024;
    const chunk = Buffer.alloc(64 * 1024, 0x20);
    let written = 0;
    let finished = false;
    const agent = await startAgent((_req, res) => {
      res.writeHead(200, declareLength ? { 'content-length': total } : {});
      const pump = (): void => {
        while (written < total && !res.destroyed) {
          written += chunk.length;
          if (!res.write(chunk)) {
            res.once('drain', pump);
            return;
          }
        }
        if (written >= total && !res.destroyed) res.end(() => (finished = true));
      };
      res.on('error', () => {});
      pump();
    });
    const h = harness(agent.port, { maxRetries: 3 });
    h.registry.register({ instanceId: 'i1', appId: 'app', ip: '127.0.0.1', composeHash: H });
    const before = process.memoryUsage();
    h.fetcher.enqueue('i1');
    const status = await h.settled('i1');
    expect(status).toMatchObject({ state: 'failed', attempts: 1, lastError: { code: 'ERR_AGENT_RESPONSE_TOO_LARGE', permanent: true } });
    expect(agent.requests).toHaveLength(1);
    expect(finished).toBe(false);
    const after = process.memoryUsage();
    // The server side holds at most a chunk at a time; the client must not have buffered the body.
    expect(after.heapUsed + after.arrayBuffers - (before.heapUsed + before.arrayBuffers)).toBeLessThan(total / 2);
  });

  it.each([
    ['"pp": "yes"', { port_policy: { ports: [{ port: 8081, pp: 'yes' }] } }, 'port_policy.ports[0].pp'],
    ['port 70000', { port_policy: { ports: [{ port: 8082, pp: true }, { port: 70000 }] } }, 'port_policy.ports[1].port'],
    ['port_policy: null', { port_policy: null }, 'port_policy'],
    ['ports: "x"', { port_policy: { ports: 'x' } }, 'port_policy.ports'],
  ])('%s fails the whole document permanently, naming the field; every port stays refused', async (_what, doc, field) => {
    const compose = JSON.stringify({ manifest_version: 2, name: 'web', runner: 'docker-compose', ...doc });
    const agent = await startAgent(json(infoResponse(compose)));
    const h = harness(agent.port, { maxRetries: 3 });
    h.registry.register({ instanceId: 'i1', appId: 'app', ip: '127.0.0.1', composeHash: composeHash(compose) });
    h.fetcher.enqueue('i1');
    const status = await h.settled('i1');
    expect(status).toMatchObject({ state: 'failed', attempts: 1, lastError: { code: 'ERR_COMPOSE_INVALID', permanent: true } });
    expect(status.lastError?.message).toContain(field);
    expect(agent.requests).toHaveLength(1);
    expect(h.registry.get('i1')?.reportedPolicy).toBeNull();
    for (const port of [8081, 8082, 443]) {
      expect(h.registry.decide('127.0.0.1', port).decision).toEqual({ kind: 'refuse', instanceId: 'i1', reason: 'fetch_failed' });
    }
    const logged = h.lines.find((l) => l['code'] === 'ERR_COMPOSE_INVALID') as { err?: { field?: string } };
    expect(logged.err?.field).toBe(field);
  });

  it('tcb_info that is a number does not decode as an Info response: transient, retried', async () => {
    const agent = await startAgent(json(infoResponse(APP_COMPOSE, { tcb_info: 42 })));
    const h = harness(agent.port, { maxRetries: 1 });
    h.registry.register({ instanceId: 'i1', appId: 'app', ip: '127.0.0.1', composeHash: H });
    h.fetcher.enqueue('i1');
    expect(await h.settled('i1')).toMatchObject({ state: 'failed', attempts: 2, lastError: { code: 'ERR_AGENT_BAD_RESPONSE', permanent: false } });
    expect(agent.requests).toHaveLength(2);
  });

  it('a 40 MiB compose is learned within the default response cap', async () => {
    const line = '    command: ["sh", "-c", "echo \\"hi\\" && sleep 1"]\n';
    const yaml = `services:\n${line.repeat(Math.ceil((40 * 1024 * 1024) / line.length))}`;
    const compose = JSON.stringify({ manifest_version: 2, name: 'big', runner: 'docker-compose', docker_compose_file: yaml, port_policy: { ports: [{ port: 8080, pp: true }], restrict_mode: true } });
    const body = infoResponse(compose);
    const agent = await startAgent(json(body));
    const h = harness(agent.port, { maxResponseBytes: DEFAULT_CONFIG.registry.fetch.maxResponseBytes, timeoutMs: 60_000 });
    h.registry.register({ instanceId: 'i1', appId: 'app', ip: '127.0.0.1', composeHash: composeHash(compose) });
    h.fetcher.enqueue('i1');
    expect((await h.settled('i1', 60_000)).state).toBe('learned');
    expect(h.registry.decide('127.0.0.1', 8080).decision.kind).toBe('proxy');
    expect(h.registry.decide('127.0.0.1', 8081).decision.reason).toBe('port_not_allowed');
  }, 90_000);

  it('deeply nested JSON does not crash the process', async () => {
    const agent = await startAgent(json(`${'['.repeat(30_000)}${']'.repeat(30_000)}`));
    const h = harness(agent.port, { maxRetries: 0 });
    h.registry.register({ instanceId: 'i1', appId: 'app', ip: '127.0.0.1', composeHash: H });
    h.fetcher.enqueue('i1');
    expect((await h.settled('i1')).lastError?.code).toBe('ERR_AGENT_BAD_RESPONSE');
  });

  it('dedupe: two enqueues make one request; an enqueue once learned fetches nothing', async () => {
    const agent = await startAgent((req, res) => setTimeout(() => json(infoResponse(APP_COMPOSE))(req, res), 50));
    const h = harness(agent.port);
    h.registry.register({ instanceId: 'i1', appId: 'app', ip: '127.0.0.1', composeHash: H });
    h.fetcher.enqueue('i1');
    h.fetcher.enqueue('i1');
    expect(h.fetcher.status('i1')?.state).toBe('fetching');
    await new Promise((r) => setTimeout(r, 20));
    expect(h.fetcher.status('i1')?.state).toBe('fetching');
    h.fetcher.enqueue('i1');
    expect((await h.settled('i1')).state).toBe('learned');
    expect(agent.requests).toHaveLength(1);
    // The policy is known now: asking again fetches nothing.
    h.fetcher.enqueue('i1');
    await new Promise((r) => setTimeout(r, 30));
    expect(agent.requests).toHaveLength(1);
  });

  it('connection refused is transient ERR_AGENT_CONNECT carrying the system error', async () => {
    const agent = await startAgent(json('{}'));
    const port = agent.port;
    await agent.close();
    const h = harness(port, { maxRetries: 1 });
    h.registry.register({ instanceId: 'i1', appId: 'app', ip: '127.0.0.1', composeHash: H });
    h.fetcher.enqueue('i1');
    const status = await h.settled('i1');
    expect(status).toMatchObject({ attempts: 2, lastError: { code: 'ERR_AGENT_CONNECT', permanent: false } });
    const logged = h.lines.find((l) => l['code'] === 'ERR_AGENT_CONNECT') as { err?: { systemCode?: string; message?: string } };
    expect(logged.err?.systemCode).toBe('ECONNREFUSED');
    expect(logged.err?.message).toContain('ECONNREFUSED');
  });

  it('agent down: every port refused (policy_unknown, then fetch_failed); admitted once the agent answers', async () => {
    const probe = await startAgent(json('{}'));
    const port = probe.port;
    await probe.close();
    const h = harness(port, { maxRetries: 0 });
    h.registry.register({ instanceId: 'i1', appId: 'app', ip: '127.0.0.1', composeHash: H });
    expect(h.registry.decide('127.0.0.1', 443).decision.reason).toBe('policy_unknown');
    h.fetcher.enqueue('i1');
    await h.settled('i1');
    for (const p of [443, 8080, 1]) expect(h.registry.decide('127.0.0.1', p).decision).toEqual({ kind: 'refuse', instanceId: 'i1', reason: 'fetch_failed' });
    // The agent comes up on the same port; the next request for a fetch (after the cool-down) learns it.
    const server = http.createServer((_req, res) => res.end(infoResponse(APP_COMPOSE)));
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    for (let i = 0; i < 200 && h.fetcher.status('i1')?.state !== 'learned'; i++) {
      h.fetcher.enqueue('i1');
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(h.registry.decide('127.0.0.1', 8080).decision).toEqual({ kind: 'proxy', instanceId: 'i1', reason: 'policy' });
    expect(h.registry.decide('127.0.0.1', 443).decision).toEqual({ kind: 'transparent', instanceId: 'i1', reason: 'policy' });
  });

  it('an instance removed before its attempt is dropped quietly', async () => {
    const agent = await startAgent(json(infoResponse(APP_COMPOSE)));
    const h = harness(agent.port);
    h.fetcher.enqueue('ghost');
    await new Promise((r) => setTimeout(r, 30));
    expect(h.fetcher.status('ghost')).toBeUndefined();
    expect(agent.requests).toHaveLength(0);
  });

  it('a learned policy for a compose hash that changed meanwhile is not applied', async () => {
    const newer = 'a'.repeat(64);
    let h: Harness | undefined;
    const agent = await startAgent((req, res) => {
      // The instance is re-registered with another compose while the first request is in flight.
      if (agent.requests.length === 1) h?.registry.register({ instanceId: 'i1', appId: 'app', ip: '127.0.0.1', composeHash: newer });
      json(infoResponse(APP_COMPOSE))(req, res);
    });
    h = harness(agent.port);
    h.registry.register({ instanceId: 'i1', appId: 'app', ip: '127.0.0.1', composeHash: composeHash(APP_COMPOSE) });
    h.fetcher.enqueue('i1');
    await h.settled('i1');
    expect(h.registry.get('i1')?.reportedPolicy).toBeNull();
    expect(h.registry.get('i1')?.composeHash).toBe(newer);
    // It fetched again for the new record rather than reporting `learned`: the agent still
    // serves the old compose, which does not hash to the new attested value.
    for (let i = 0; i < 100 && h.fetcher.status('i1')?.state !== 'failed'; i++) await new Promise((r) => setTimeout(r, 10));
    expect(agent.requests).toHaveLength(2);
    expect(h.fetcher.status('i1')).toMatchObject({ state: 'failed', lastError: { code: 'ERR_COMPOSE_HASH_MISMATCH' } });
  });

  it('close() aborts in-flight requests and cancels retry timers', async () => {
    const agent = await startAgent((req, res) => {
      if (req.url === '/prpc/Info?json' && agent.requests.length === 1) return; // first: hang
      json('{}', 503)(req, res);
    });
    const { logger } = captureLogger();
    const registry = new Registry({ logger });
    registry.register({ instanceId: 'hang', appId: 'app', ip: '127.0.0.1', composeHash: H });
    const learned: string[] = [];
    const fetcher = createPolicyFetcher({
      logger,
      agentPort: agent.port,
      timeoutMs: 10_000,
      maxRetries: 5,
      backoffInitialMs: 60_000,
      backoffMaxMs: 60_000,
      maxResponseBytes: 1024,
      getInstance: (id) => registry.get(id) ?? (id === 'retry' ? { ...registry.get('hang')!, instanceId: 'retry' } : undefined),
      wanted: () => true,
      onLearned: (id) => void learned.push(id),
    });
    fetcher.enqueue('hang');
    await new Promise((r) => setTimeout(r, 50));
    fetcher.enqueue('retry');
    const deadline = Date.now() + 2_000;
    while (fetcher.status('retry')?.state !== 'retrying' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    expect(fetcher.status('hang')?.state).toBe('fetching');
    expect(fetcher.status('retry')?.state).toBe('retrying');
    const started = Date.now();
    await fetcher.close();
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(learned).toEqual([]);
    fetcher.enqueue('hang'); // after close: a no-op
    expect(agent.requests).toHaveLength(2);
  });
});

describe('policy fetcher retry logic (injected fetchInfo)', () => {
  function failing(code: string, permanent: boolean): { fetchInfo: typeof fetchAgentInfo; calls: number[] } {
    const calls: number[] = [];
    return {
      calls,
      fetchInfo: async () => {
        calls.push(Date.now());
        throw new PolicyFetchError(code, 'injected', { permanent });
      },
    };
  }

  it('backs off exponentially, capped at backoffMaxMs', async () => {
    const f = failing('ERR_AGENT_HTTP', false);
    const h = harness(1, { fetchInfo: f.fetchInfo, maxRetries: 4, backoffInitialMs: 20, backoffMaxMs: 50 });
    h.registry.register({ instanceId: 'i1', appId: 'app', ip: '198.18.0.1', composeHash: H });
    h.fetcher.enqueue('i1');
    await new Promise((r) => setTimeout(r, 5));
    const s = h.fetcher.status('i1');
    expect(s?.state).toBe('retrying');
    expect(s?.nextAttemptAt).toBeGreaterThan(Date.now());
    expect((await h.settled('i1')).attempts).toBe(5);
    const gaps = f.calls.slice(1).map((t, i) => t - (f.calls[i] as number));
    const expected = [20, 40, 50, 50];
    gaps.forEach((g, i) => expect(g).toBeGreaterThanOrEqual((expected[i] as number) - 2));
    expect(gaps[3]).toBeLessThan(200);
  });

  it('permanent errors stop at once', async () => {
    const f = failing('ERR_AGENT_NO_APP_COMPOSE', true);
    const h = harness(1, { fetchInfo: f.fetchInfo, maxRetries: 4 });
    h.registry.register({ instanceId: 'i1', appId: 'app', ip: '198.18.0.1', composeHash: H });
    h.fetcher.enqueue('i1');
    expect(await h.settled('i1')).toMatchObject({ state: 'failed', attempts: 1 });
    expect(f.calls).toHaveLength(1);
  });

  it('an onLearned failure (e.g. persisting) is retried', async () => {
    let failures = 1;
    const h = harness(1, {
      fetchInfo: async () => readInfoResponse(infoResponse(APP_COMPOSE)),
      onLearned: () => {
        if (failures-- > 0) throw Object.assign(new Error('disk full'), { code: 'ENOSPC' });
      },
    });
    h.registry.register({ instanceId: 'i1', appId: 'app', ip: '198.18.0.1', composeHash: H });
    h.fetcher.enqueue('i1');
    expect(await h.settled('i1')).toMatchObject({ state: 'learned', attempts: 2 });
  });

  it('limits concurrency', async () => {
    let inFlight = 0;
    let peak = 0;
    const h = harness(1, {
      concurrency: 3,
      fetchInfo: async () => {
        peak = Math.max(peak, ++inFlight);
        await new Promise((r) => setTimeout(r, 20));
        inFlight--;
        return readInfoResponse(infoResponse(APP_COMPOSE));
      },
    });
    for (let i = 0; i < 12; i++) {
      h.registry.register({ instanceId: `i${i}`, appId: 'app', ip: `198.18.0.${i + 1}`, composeHash: H });
      h.fetcher.enqueue(`i${i}`);
    }
    for (let i = 0; i < 12; i++) expect((await h.settled(`i${i}`)).state).toBe('learned');
    expect(peak).toBe(3);
  });

  it('after a failure, traffic-driven enqueues wait backoffMaxMs; a re-registration restarts at once', async () => {
    const f = failing('ERR_AGENT_TCB_INFO', true);
    const h = harness(1, { fetchInfo: f.fetchInfo, backoffMaxMs: 60_000 });
    h.registry.register({ instanceId: 'i1', appId: 'app', ip: '198.18.0.1', composeHash: H });
    h.fetcher.enqueue('i1');
    await h.settled('i1');
    h.fetcher.enqueue('i1'); // same record: cooled down
    expect(h.fetcher.status('i1')).toMatchObject({ state: 'retrying', attempts: 0 });
    expect(h.fetcher.status('i1')?.nextAttemptAt).toBeGreaterThan(Date.now() + 50_000);
    expect(f.calls).toHaveLength(1);

    const g = failing('ERR_AGENT_TCB_INFO', true);
    const h2 = harness(1, { fetchInfo: g.fetchInfo, backoffMaxMs: 60_000 });
    h2.registry.register({ instanceId: 'i1', appId: 'app', ip: '198.18.0.1', composeHash: H });
    h2.fetcher.enqueue('i1');
    await h2.settled('i1');
    h2.registry.register({ instanceId: 'i1', appId: 'app', ip: '198.18.0.1', composeHash: 'b'.repeat(64) });
    h2.fetcher.enqueue('i1');
    expect(h2.fetcher.status('i1')?.state).toBe('fetching');
    await new Promise((r) => setTimeout(r, 10));
    await h2.settled('i1');
    expect(g.calls).toHaveLength(2);
  });
});

describe('fetchAgentInfo', () => {
  it('brackets IPv6 addresses', async () => {
    const server = http.createServer((_req, res) => res.end('{"tcb_info":""}'));
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '::1', resolve);
      });
    } catch {
      return; // no IPv6 loopback here
    }
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    const facts = await fetchAgentInfo({ ip: '::1', port: (server.address() as AddressInfo).port, timeoutMs: 1_000, maxBytes: 100 });
    expect(facts.tcbInfoEmpty).toBe(true);
  });

  it('honours an aborted signal', async () => {
    const agent = await startAgent(() => {});
    const controller = new AbortController();
    const p = fetchAgentInfo({ ip: '127.0.0.1', port: agent.port, timeoutMs: 5_000, maxBytes: 100, signal: controller.signal });
    setTimeout(() => controller.abort(), 20);
    await expect(p).rejects.toMatchObject({ code: 'ERR_AGENT_ABORTED', permanent: false });
  });

  it('a connection closed mid-body is ERR_AGENT_CONNECT', async () => {
    const agent = await startAgent((req, res) => {
      res.writeHead(200, { 'content-length': 1000 });
      res.write('{"partial":');
      setTimeout(() => req.socket.destroy(), 20);
    });
    await expect(fetchAgentInfo({ ip: '127.0.0.1', port: agent.port, timeoutMs: 2_000, maxBytes: 10_000 })).rejects.toMatchObject({
      code: 'ERR_AGENT_CONNECT',
      permanent: false,
    });
  });

  it('non-200 carries the status', async () => {
    const agent = await startAgent(json('nope', 404));
    await expect(fetchAgentInfo({ ip: '127.0.0.1', port: agent.port, timeoutMs: 2_000, maxBytes: 10_000 })).rejects.toMatchObject({
      code: 'ERR_AGENT_HTTP',
      status: 404,
    });
  });
});

describe('policy fetcher with a coordinator (which node of a cluster fetches)', () => {
  function coordinator() {
    const calls: string[] = [];
    let release!: () => void;
    const ctl = {
      calls,
      released: 0,
      /** The next acquire() finds the fetch claimed by another node until release() is called. */
      elsewhere: true,
      release: () => release(),
    };
    const c: FetchCoordinator = {
      acquire: async (id) => {
        calls.push(id);
        if (!ctl.elsewhere) return { kind: 'mine', release: async () => void ctl.released++ };
        ctl.elsewhere = false;
        return { kind: 'elsewhere', holder: 'node other', settled: new Promise<void>((r) => (release = r)) };
      },
    };
    return { c, ctl };
  }

  it('waits while another node holds the claim, and takes that node\'s result without fetching', async () => {
    const agent = await startAgent(json(infoResponse(APP_COMPOSE)));
    const { c, ctl } = coordinator();
    const h = harness(agent.port, { coordinator: c });
    const hash = composeHash(APP_COMPOSE);
    h.registry.register({ instanceId: 'i1', appId: 'app', ip: '127.0.0.1', composeHash: hash });
    h.fetcher.enqueue('i1');
    await new Promise((r) => setTimeout(r, 50));
    expect(h.fetcher.status('i1')).toMatchObject({ state: 'retrying', attempts: 0, lastError: { code: 'ERR_FETCH_ELSEWHERE' } });
    h.fetcher.enqueue('i1'); // traffic asking again changes nothing while it waits
    expect(ctl.calls).toEqual(['i1']);
    // The other node's result arrives through the store, then its claim goes.
    h.registry.replicate('i1', { ...h.registry.get('i1')!, reportedPolicy: makePolicy([[8080, true]], false), policySource: 'agent', policyComposeHash: hash });
    ctl.release();
    expect((await h.settled('i1')).state).toBe('learned');
    expect(agent.requests).toHaveLength(0);
    expect(ctl.calls).toEqual(['i1']);
    expect(h.lines.some((l) => String(l['msg']).includes('learned by another node'))).toBe(true);
  });

  it('fetches itself once the other node released its claim without a result, and releases its own', async () => {
    const agent = await startAgent(json(infoResponse(APP_COMPOSE)));
    const { c, ctl } = coordinator();
    const h = harness(agent.port, { coordinator: c });
    h.registry.register({ instanceId: 'i1', appId: 'app', ip: '127.0.0.1', composeHash: composeHash(APP_COMPOSE) });
    h.fetcher.enqueue('i1');
    await new Promise((r) => setTimeout(r, 50));
    ctl.release();
    expect((await h.settled('i1')).state).toBe('learned');
    expect(agent.requests).toHaveLength(1);
    expect(ctl.calls).toEqual(['i1', 'i1']);
    expect(ctl.released).toBe(1);
  });
});
