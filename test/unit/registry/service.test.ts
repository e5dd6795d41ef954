import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG } from '../../../src/config-parse.js';
import type { RegistryConfig } from '../../../src/config.js';
import { InterceptorError } from '../../../src/errors.js';
import type { FetchStatus, PolicyFetcher } from '../../../src/registry/fetcher.js';
import { parsePolicyString } from '../../../src/registry/policy.js';
import { createRegistryService } from '../../../src/registry/service.js';
import type { PolicyFetcherDeps } from '../../../src/registry/service.js';
import { StoreConflictError } from '../../../src/registry/store.js';
import type { RegistryStore } from '../../../src/registry/store.js';
import type { InstanceRecord } from '../../../src/registry/types.js';
import type { Registry } from '../../../src/registry/registry.js';

/** The instance decide() finds at an address (what the address index holds). */
function holderOf(r: Registry, ip: string): InstanceRecord | undefined {
  const id = r.decide(ip, 1).decision.instanceId;
  return id === null ? undefined : r.get(id);
}

const logger = pino({ level: 'silent' });

const config: RegistryConfig = {
  path: '/nonexistent',
  adminSocket: '/nonexistent.sock',
  agentPort: 8090,
  trustAgentComposeHash: false,
  fetch: DEFAULT_CONFIG.registry.fetch,
  store: 'sqlite',
  etcd: null,
};

const HASH = 'ab'.repeat(32);
const HOST = [{ address: '10.0.0.254', prefix: 24 }, { address: '127.0.0.1', prefix: 8 }];

/** In-memory store; every call is recorded, and `gate`/`fail` control the next write. */
function memoryStore(initial: InstanceRecord[] = []) {
  const data = new Map(initial.map((r) => [r.instanceId, r]));
  const calls: string[] = [];
  const ctl = {
    data,
    calls,
    fail: null as Error | null,
    gate: null as Promise<void> | null,
    closed: false,
  };
  const write = async (what: string, apply: () => void): Promise<void> => {
    calls.push(what);
    if (ctl.gate) await ctl.gate;
    if (ctl.fail) throw ctl.fail;
    apply();
  };
  const store: RegistryStore = {
    load: async () => [...data.values()],
    put: (r) => write(`put ${r.instanceId}`, () => data.set(r.instanceId, r)),
    delete: (id) => write(`del ${id}`, () => data.delete(id)),
    close: async () => {
      ctl.closed = true;
    },
  };
  return { store, ctl };
}

function fakeFetcher() {
  const ctl = {
    enqueued: [] as string[],
    statuses: new Map<string, FetchStatus>(),
    deps: null as PolicyFetcherDeps | null,
    closed: false,
  };
  const factory = (deps: PolicyFetcherDeps): PolicyFetcher => {
    ctl.deps = deps;
    return {
      enqueue: (id) => void ctl.enqueued.push(id),
      status: (id) => ctl.statuses.get(id),
      close: async () => {
        ctl.closed = true;
      },
    };
  };
  return { factory, ctl };
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

async function setup(initial: InstanceRecord[] = [], cfg: RegistryConfig = config) {
  const mem = memoryStore(initial);
  const fetch = fakeFetcher();
  const service = await createRegistryService({ logger, config: cfg, store: mem.store, fetcherFactory: fetch.factory, hostAddresses: () => HOST });
  return { service, mem, fetch };
}

function stored(id: string, ip: string, extra: Partial<InstanceRecord> = {}): InstanceRecord {
  return {
    instanceId: id,
    appId: 'app',
    ip,
    composeHash: null,
    reportedPolicy: null,
    policySource: null,
    policyComposeHash: null,
    override: null,
    registeredAt: 1,
    updatedAt: 1,
    ...extra,
  };
}

describe('registry service', () => {
  it('hands the fetcher the configured limits and the agent port', async () => {
    const { fetch } = await setup();
    expect(fetch.ctl.deps).toMatchObject({ agentPort: 8090, timeoutMs: 10_000, maxRetries: 5, backoffInitialMs: 1000, backoffMaxMs: 30_000 });
  });

  it('acknowledges a registration only once the store has it', async () => {
    const { service, mem } = await setup();
    const gate = deferred();
    mem.ctl.gate = gate.promise;
    let acked = false;
    const adding = service.add({ instanceId: 'i-1', appId: 'app', ip: '10.0.0.1' }).then((r) => {
      acked = true;
      return r;
    });
    await new Promise((r) => setTimeout(r, 20));
    expect(mem.ctl.calls).toEqual(['put i-1']);
    expect(acked).toBe(false);
    gate.resolve();
    const record = await adding;
    expect(mem.ctl.data.get('i-1')).toBe(record);
  });

  it('a failed store write rejects and leaves the registry as it was', async () => {
    const { service, mem, fetch } = await setup();
    const original = await service.add({ instanceId: 'i-1', appId: 'app', ip: '10.0.0.1', policy: parsePolicyString('80:pp', false) });
    const enqueuedBefore = fetch.ctl.enqueued.length;
    mem.ctl.fail = new InterceptorError('ERR_STORE_WRITE', 'disk full');

    // A new instance: gone again, its address free.
    await expect(service.add({ instanceId: 'i-2', appId: 'app', ip: '10.0.0.2' })).rejects.toMatchObject({ code: 'ERR_STORE_WRITE' });
    expect(service.get('i-2')).toBeUndefined();
    expect(holderOf(service.registry, '10.0.0.2')).toBeUndefined();
    expect(service.decide('10.0.0.2', 80)).toMatchObject({ kind: 'transparent', reason: 'unregistered' });

    // A re-registration moving the address: the old record, at the old address.
    await expect(service.add({ instanceId: 'i-1', appId: 'app2', ip: '10.0.0.9' })).rejects.toMatchObject({ code: 'ERR_STORE_WRITE' });
    expect(service.get('i-1')).toBe(original);
    expect(holderOf(service.registry, '10.0.0.1')).toBe(original);
    expect(holderOf(service.registry, '10.0.0.9')).toBeUndefined();
    expect(fetch.ctl.enqueued.length).toBe(enqueuedBefore);

    await expect(service.setOverride('i-1', parsePolicyString('22', true))).rejects.toMatchObject({ code: 'ERR_STORE_WRITE' });
    expect(service.get('i-1')).toBe(original);

    await expect(service.remove('i-1')).rejects.toMatchObject({ code: 'ERR_STORE_WRITE' });
    expect(service.get('i-1')).toBe(original);
    expect(service.decide('10.0.0.1', 80)).toMatchObject({ kind: 'proxy', instanceId: 'i-1' });
    expect(service.list()).toEqual([original]);
  });

  it('a write that lost a race with another node (ERR_STORE_CONFLICT) is applied again after catching up, a few times at most', async () => {
    const { service, mem } = await setup();
    const original = await service.add({ instanceId: 'i-1', appId: 'app', ip: '10.0.0.1' });
    let catchUps = 0;
    const conflict = new StoreConflictError('i-1', async () => {
      catchUps++;
      if (catchUps === 2) mem.ctl.fail = null; // the third attempt finds the store current
    });
    mem.ctl.fail = conflict;
    const record = await service.setOverride('i-1', parsePolicyString('22', true));
    expect(catchUps).toBe(2);
    expect(mem.ctl.calls.filter((c) => c === 'put i-1')).toHaveLength(4);
    expect(service.get('i-1')).toBe(record);

    mem.ctl.fail = new StoreConflictError('i-1', async () => void catchUps++);
    await expect(service.setOverride('i-1', null)).rejects.toMatchObject({ code: 'ERR_STORE_CONFLICT' });
    expect(catchUps).toBe(2 + 4);
    expect(service.get('i-1')).toBe(record);
    expect(original.override).toBeNull();
  });

  it('queues a fetch after registering with an attested hash and no policy; not with a policy, not without a hash', async () => {
    const { service, fetch } = await setup();
    await service.add({ instanceId: 'i-1', appId: 'app', ip: '10.0.0.1', composeHash: HASH });
    expect(fetch.ctl.enqueued).toEqual(['i-1']);
    await service.add({ instanceId: 'i-2', appId: 'app', ip: '10.0.0.2', policy: parsePolicyString('', false) });
    await service.add({ instanceId: 'i-3', appId: 'app', ip: '10.0.0.3' });
    expect(fetch.ctl.enqueued).toEqual(['i-1']);
    expect(service.decide('10.0.0.3', 80)).toMatchObject({ kind: 'refuse', reason: 'policy_unattested' });
  });

  it("with trust_agent_compose_hash an unattested instance is fetched, and the agent's hash is taken", async () => {
    const { service, fetch } = await setup([], { ...config, trustAgentComposeHash: true });
    await service.add({ instanceId: 'i-1', appId: 'app', ip: '10.0.0.1' });
    expect(fetch.ctl.enqueued).toEqual(['i-1']);
    expect(service.decide('10.0.0.1', 80)).toMatchObject({ kind: 'refuse', reason: 'policy_unknown' });
    await fetch.ctl.deps!.onLearned('i-1', HASH, parsePolicyString('80:pp', false));
    expect(service.decide('10.0.0.1', 80)).toMatchObject({ kind: 'proxy', reason: 'policy' });
  });

  it('queues fetches on start for stored instances whose policy is unknown and attested', async () => {
    const known = stored('known', '10.0.0.1', { reportedPolicy: parsePolicyString('80', false), policySource: 'registration' });
    const { service, fetch } = await setup([known, stored('unknown', '10.0.0.2', { composeHash: HASH }), stored('unattested', '10.0.0.3')]);
    expect(fetch.ctl.enqueued).toEqual(['unknown']);
    expect(service.list().map((r) => r.instanceId)).toEqual(['known', 'unattested', 'unknown']);
  });

  it('decide() queues the fetch the registry asks for and counts refusals; requestFetch only when a fetch can help', async () => {
    const { service, fetch } = await setup();
    await service.add({ instanceId: 'i-1', appId: 'app', ip: '10.0.0.1', composeHash: HASH });
    await service.add({ instanceId: 'i-2', appId: 'app', ip: '10.0.0.2' });
    fetch.ctl.enqueued.length = 0;
    expect(service.decide('10.0.0.1', 443)).toMatchObject({ kind: 'refuse', reason: 'policy_unknown' });
    expect(fetch.ctl.enqueued).toEqual(['i-1']);
    expect(service.counters.refused).toBe(1);
    expect(service.decide('10.9.9.9', 443)).toMatchObject({ kind: 'transparent', reason: 'unregistered' });
    expect(service.decide('10.0.0.2', 443)).toMatchObject({ kind: 'refuse', reason: 'policy_unattested' });
    expect(fetch.ctl.enqueued).toEqual(['i-1']);
    service.requestFetch('i-2');
    service.requestFetch('nope');
    service.requestFetch('i-1');
    expect(fetch.ctl.enqueued).toEqual(['i-1', 'i-1']);
  });

  it('a failed fetch turns the refusals into fetch_failed, and the entry subscription sees it', async () => {
    const { service, fetch } = await setup();
    await service.add({ instanceId: 'i-1', appId: 'app', ip: '10.0.0.1', composeHash: HASH });
    const seen: string[] = [];
    service.subscribeEntries((c) => seen.push(`${c.instanceId}:${c.entry?.refuseAll ?? 'none'}`));
    fetch.ctl.deps!.onFailed!('i-1', service.get('i-1')!);
    expect(service.decide('10.0.0.1', 80)).toMatchObject({ kind: 'refuse', reason: 'fetch_failed' });
    await fetch.ctl.deps!.onLearned('i-1', HASH, parsePolicyString('80:pp', true));
    expect(seen).toEqual(['i-1:fetch_failed', 'i-1:none']);
    expect(service.entries()).toEqual([expect.objectContaining({ instanceId: 'i-1', refuseAll: null, restrictMode: true })]);
  });

  it('counts the fetch outcomes the fetcher reports (the metrics read them)', async () => {
    const { service, fetch } = await setup();
    await service.add({ instanceId: 'i-1', appId: 'app', ip: '10.0.0.1', composeHash: HASH });
    fetch.ctl.deps!.onFailed!('i-1', service.get('i-1')!);
    fetch.ctl.deps!.onFailed!('i-1', service.get('i-1')!);
    await fetch.ctl.deps!.onLearned('i-1', HASH, parsePolicyString('80:pp', true));
    expect(service.counters).toMatchObject({ fetchesFailed: 2, fetchesLearned: 1 });
  });

  it('refuses instance addresses that are not a remote unicast host', async () => {
    const { service, mem } = await setup();
    for (const ip of ['0.0.0.0', '255.255.255.255', '224.0.0.5', '127.0.0.1', '10.0.0.254', '10.0.0.255', '::', 'ff02::1']) {
      await expect(service.add({ instanceId: 'i-1', appId: 'app', ip })).rejects.toMatchObject({ code: 'ERR_INVALID_REGISTRATION', field: 'ip' });
    }
    expect(mem.ctl.calls).toEqual([]);
    const local = await createRegistryService({ logger, config, store: memoryStore().store, fetcherFactory: fakeFetcher().factory, hostAddresses: () => HOST, allowLoopback: true });
    expect((await local.add({ instanceId: 'i-1', appId: 'app', ip: '127.0.0.1' })).ip).toBe('127.0.0.1');
  });

  it('persists a learned policy; a failure to persist is logged, not thrown', async () => {
    const { service, mem, fetch } = await setup();
    await service.add({ instanceId: 'i-1', appId: 'app', ip: '10.0.0.1', composeHash: HASH });
    await fetch.ctl.deps!.onLearned('i-1', HASH, parsePolicyString('8080:pp', false));
    const learned = service.get('i-1')!;
    expect(learned).toMatchObject({ policySource: 'agent', policyComposeHash: HASH });
    expect(mem.ctl.data.get('i-1')).toBe(learned);
    expect(service.decide('10.0.0.1', 8080)).toMatchObject({ kind: 'proxy', reason: 'policy' });

    mem.ctl.fail = new Error('EIO');
    await fetch.ctl.deps!.onLearned('i-1', HASH, parsePolicyString('9090:pp', false));
    expect(service.decide('10.0.0.1', 9090)).toMatchObject({ kind: 'proxy' });
    expect(service.counters.learnPersistFailures).toBe(1);
    expect(fetch.ctl.deps!.getInstance('i-1')).toBe(service.get('i-1'));
  });

  it('remove and setOverride of an unknown instance: ERR_UNKNOWN_INSTANCE, nothing written', async () => {
    const { service, mem } = await setup();
    await expect(service.remove('nope')).rejects.toMatchObject({ code: 'ERR_UNKNOWN_INSTANCE' });
    await expect(service.setOverride('nope', null)).rejects.toMatchObject({ code: 'ERR_UNKNOWN_INSTANCE' });
    expect(mem.ctl.calls).toEqual([]);
  });

  it('validation errors reject without touching the store', async () => {
    const { service, mem } = await setup();
    await service.add({ instanceId: 'i-1', appId: 'app', ip: '10.0.0.1' });
    await expect(service.add({ instanceId: 'bad id', appId: 'app', ip: '10.0.0.2' })).rejects.toMatchObject({ code: 'ERR_INVALID_REGISTRATION' });
    await expect(service.add({ instanceId: 'i-2', appId: 'app', ip: '10.0.0.1' })).rejects.toMatchObject({ code: 'ERR_IP_IN_USE' });
    expect(mem.ctl.calls).toEqual(['put i-1']);
  });

  it('override and removal are persisted', async () => {
    const { service, mem } = await setup();
    await service.add({ instanceId: 'i-1', appId: 'app', ip: '10.0.0.1' });
    const o = await service.setOverride('i-1', parsePolicyString('443:pp', true));
    expect(mem.ctl.data.get('i-1')).toBe(o);
    expect(service.decide('10.0.0.1', 443)).toMatchObject({ kind: 'proxy', reason: 'override' });
    expect(service.decide('10.0.0.1', 80)).toMatchObject({ kind: 'refuse', reason: 'port_not_allowed' });
    const removed = await service.remove('i-1');
    expect(removed).toBe(o);
    expect(mem.ctl.data.has('i-1')).toBe(false);
    expect(mem.ctl.calls).toEqual(['put i-1', 'put i-1', 'del i-1']);
  });

  it('close() stops the fetcher, waits for writes, closes the store, then refuses work', async () => {
    const { service, mem, fetch } = await setup();
    const gate = deferred();
    mem.ctl.gate = gate.promise;
    const adding = service.add({ instanceId: 'i-1', appId: 'app', ip: '10.0.0.1' });
    const closing = service.close();
    await new Promise((r) => setTimeout(r, 10));
    expect(fetch.ctl.closed).toBe(true);
    expect(mem.ctl.closed).toBe(false);
    gate.resolve();
    await adding;
    await closing;
    expect(mem.ctl.closed).toBe(true);
    await expect(service.add({ instanceId: 'i-2', appId: 'app', ip: '10.0.0.2' })).rejects.toMatchObject({ code: 'ERR_REGISTRY_CLOSED' });
  });

  it('a store whose records conflict fails to start and is closed', async () => {
    const mem = memoryStore([stored('a', '10.0.0.1'), stored('b', '10.0.0.1')]);
    await expect(createRegistryService({ logger, config, store: mem.store, fetcherFactory: fakeFetcher().factory })).rejects.toMatchObject({
      code: 'ERR_STORE_CORRUPT',
    });
    expect(mem.ctl.closed).toBe(true);
  });
});
