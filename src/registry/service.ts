// The registry as the daemon and the admin API use it: the in-memory Registry, made durable by a
// RegistryStore, with the policy fetcher learning what registrations did not report.
import type { Logger } from 'pino';
import type { RegistryConfig } from '../config.js';
import { InterceptorError } from '../errors.js';
import { fetchWanted } from './entry.js';
import { createPolicyFetcher } from './fetcher.js';
import type { FetchStatus, PolicyFetcher, PolicyFetcherOptions } from './fetcher.js';
import { hostAddresses, UnknownInstanceError, type AddressRule, type RegistrationInput } from './registration.js';
import { Registry, type EntryListener } from './registry.js';
import { StoreConflictError } from './store.js';
import type { RegistryStore, StoreStatus } from './store.js';
import type { Decision, DecisionEntry, InstanceRecord, PortPolicy } from './types.js';

export type { FetchStatus, PolicyFetcher };
/** What the service hands a fetcher factory. */
export type PolicyFetcherDeps = Omit<PolicyFetcherOptions, 'fetchInfo' | 'concurrency' | 'now'>;

/** A write that keeps losing races with other nodes gives up with ERR_STORE_CONFLICT. */
const MAX_WRITE_ATTEMPTS = 5;

export interface RegistryCounters {
  /** Decisions by kind since start. */
  transparent: number;
  proxy: number;
  refused: number;
  /** Learned policies that could not be persisted (they stay in memory and are re-learned after a restart). */
  learnPersistFailures: number;
  /** What the fetcher reported: policies learned from guest agents, and attempts that failed. */
  fetchesLearned: number;
  fetchesFailed: number;
}

export interface RegistryService {
  readonly registry: Registry;
  /** Synchronous per-connection decision; queues the policy fetch the registry asks for. */
  decide(ip: string, port: number): Decision;
  /**
   * Queues a policy fetch for an instance whose connections were refused with `policy_unknown`
   * or `fetch_failed` by a decision taken elsewhere (a worker's replica, the native table).
   * Deduplicated, and a no-op when a fetch cannot help; cheap enough to call per refusal.
   */
  requestFetch(instanceId: string): void;
  /** The decision entries (see Registry.entries / subscribeEntries). */
  entries(): DecisionEntry[];
  subscribeEntries(listener: EntryListener): () => void;
  /** Resolves once the registration is durable; rejects (and leaves the registry unchanged) otherwise. */
  /**
   * `precondition` runs inside the serialized mutation, just before the registration is applied,
   * with the records it would replace (by id, and by address): it throws to refuse, and nothing
   * changes. A caller that checks first and registers later could otherwise act on a registry
   * another mutation changed in between.
   */
  add(input: RegistrationInput, precondition?: (current: InstanceRecord | undefined, holder: InstanceRecord | undefined) => void): Promise<InstanceRecord>;
  remove(instanceId: string): Promise<InstanceRecord>;
  setOverride(instanceId: string, policy: PortPolicy | null): Promise<InstanceRecord>;
  list(): InstanceRecord[];
  get(instanceId: string): InstanceRecord | undefined;
  fetchStatus(instanceId: string): FetchStatus | undefined;
  /** Whether the store can be written (etcd: reachable); null when the store does not say. */
  storeStatus(): StoreStatus | null;
  readonly counters: Readonly<RegistryCounters>;
  /** Stops the fetcher, waits for in-flight mutations, closes the store. */
  close(): Promise<void>;
}

export interface RegistryServiceOptions {
  logger: Logger;
  config: RegistryConfig;
  store: RegistryStore;
  /** intercept.local_backends: instances may have this host's loopback addresses. */
  allowLoopback?: boolean;
  /** The host's addresses for the instance address rule (default: os.networkInterfaces()). */
  hostAddresses?: AddressRule['hostAddresses'];
  registry?: Registry;
  fetcherFactory?: (deps: PolicyFetcherDeps) => PolicyFetcher;
}

export async function createRegistryService(opts: RegistryServiceOptions): Promise<RegistryService> {
  const logger = opts.logger.child({ component: 'registry' });
  const { store, config } = opts;
  const registry =
    opts.registry ??
    new Registry({
      logger,
      trustAgentComposeHash: config.trustAgentComposeHash,
      addressRule: { allowLoopback: opts.allowLoopback === true, hostAddresses: opts.hostAddresses ?? hostAddresses },
    });
  const trust = registry.trustAgentComposeHash;
  const counters: RegistryCounters = { transparent: 0, proxy: 0, refused: 0, learnPersistFailures: 0, fetchesLearned: 0, fetchesFailed: 0 };
  let closed = false;

  // Mutations run one at a time: each applies to memory, then waits for its store write, and a
  // failed write is undone with registry.restore(). Interleaving two mutations would make that
  // undo clobber the other one (or resurrect an IP another instance has taken since).
  let tail: Promise<unknown> = Promise.resolve();
  function serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = tail.then(fn, fn);
    tail = run.catch(() => {});
    return run;
  }

  const records = await store.load();
  try {
    registry.load(records);
  } catch (err) {
    await store.close().catch(() => {});
    throw err;
  }
  // Other nodes' changes (etcd), applied as they come; a write of ours that raced one of them
  // fails its compare-and-swap and is retried by retryConflicts().
  store.follow?.((id, record) => registry.replicate(id, record));

  const fetcherDeps: PolicyFetcherDeps = {
    logger,
    agentPort: config.agentPort,
    timeoutMs: config.fetch.timeoutMs,
    maxRetries: config.fetch.maxRetries,
    backoffInitialMs: config.fetch.backoffInitialMs,
    backoffMaxMs: config.fetch.backoffMaxMs,
    maxResponseBytes: config.fetch.maxResponseBytes,
    getInstance: (id: string) => registry.get(id),
    wanted: (record: InstanceRecord) => fetchWanted(record, trust),
    onLearned: (id: string, composeHash: string, policy: PortPolicy) => {
      counters.fetchesLearned++;
      return learned(id, composeHash, policy);
    },
    onFailed: (id: string, record: InstanceRecord) => {
      counters.fetchesFailed++;
      registry.markFetch(id, record.composeHash, true);
    },
    ...(store.coordinator ? { coordinator: store.coordinator } : {}),
  };
  const fetcher = (opts.fetcherFactory ?? createPolicyFetcher)(fetcherDeps);

  function learned(id: string, composeHash: string, policy: PortPolicy): Promise<void> {
    return serialized(async () => {
      if (closed) return;
      try {
        await retryConflicts(async () => {
          const previous = registry.get(id);
          const record = registry.learnPolicy(id, composeHash, policy);
          if (!record) return; // removed, or its compose hash changed while the fetch ran
          try {
            await store.put(record);
          } catch (err) {
            if (err instanceof StoreConflictError) registry.restore(record, previous);
            throw err;
          }
        });
      } catch (err) {
        counters.learnPersistFailures++;
        const kept = err instanceof StoreConflictError ? 'it is dropped and fetched again when needed' : 'it is kept in memory only';
        logger.error({ err, instanceId: id }, `persisting a learned policy failed; ${kept}`);
      }
    });
  }

  /**
   * A write that lost a compare-and-swap race with another node (etcd) wrote nothing and was
   * undone here: catch up with that node's change and apply this one again on top of it.
   */
  async function retryConflicts<T>(fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (!(err instanceof StoreConflictError) || attempt >= MAX_WRITE_ATTEMPTS) throw err;
        logger.info({ instanceId: err.instanceId, attempt }, 'another node changed the instance meanwhile; applying the change again');
        await err.catchUp();
      }
    }
  }

  let queued = 0;
  let unattested = 0;
  for (const record of registry.list()) {
    if (fetchWanted(record, trust)) {
      fetcher.enqueue(record.instanceId);
      queued++;
    } else if (registry.entry(record.instanceId)?.refuseAll === 'policy_unattested') {
      unattested++;
    }
  }
  logger.info({ instances: registry.size, fetchesQueued: queued, unattested }, 'registry loaded');
  if (unattested > 0) {
    logger.warn(
      { unattested },
      'instances registered without an attested compose hash are refused on every port (policy_unattested): ' +
        're-register them with their compose hash, set their port policy, or set registry.trust_agent_compose_hash',
    );
  }

  /** A mutation requested before close() still completes; one requested after is refused. */
  function mutation<T>(fn: () => Promise<T>): Promise<T> {
    if (closed) return Promise.reject(new InterceptorError('ERR_REGISTRY_CLOSED', 'the registry service is shutting down'));
    return serialized(() => retryConflicts(fn));
  }

  return {
    registry,

    requestFetch(instanceId) {
      if (!closed && registry.fetchWanted(instanceId)) fetcher.enqueue(instanceId);
    },
    entries: () => registry.entries(),
    subscribeEntries: (listener) => registry.subscribeEntries(listener),
    decide(ip, port) {
      const { decision, fetch } = registry.decide(ip, port);
      if (fetch !== null && !closed) fetcher.enqueue(fetch);
      if (decision.kind === 'refuse') counters.refused++;
      else if (decision.kind === 'proxy') counters.proxy++;
      else counters.transparent++;
      return decision;
    },

    add(input, precondition) {
      return mutation(async () => {
        precondition?.(typeof input?.instanceId === 'string' ? registry.get(input.instanceId) : undefined, typeof input?.ip === 'string' ? registry.byIp(input.ip) : undefined);
        const { record, previous, fetchNeeded } = registry.register(input);
        try {
          await store.put(record);
        } catch (err) {
          registry.restore(record, previous);
          throw err;
        }
        logger.info(
          { instanceId: record.instanceId, appId: record.appId, ip: record.ip, reregistration: previous !== undefined },
          'instance registered',
        );
        if (registry.entry(record.instanceId)?.refuseAll === 'policy_unattested') {
          logger.warn(
            { instanceId: record.instanceId },
            'registered without an attested compose hash: every port is refused (policy_unattested) until it is ' +
              're-registered with its compose hash or given a port policy',
          );
        }
        if (fetchNeeded) fetcher.enqueue(record.instanceId);
        return record;
      });
    },

    remove(instanceId) {
      return mutation(async () => {
        const removed = registry.remove(instanceId);
        if (!removed) throw new UnknownInstanceError(instanceId);
        try {
          await store.delete(instanceId);
        } catch (err) {
          registry.restore(removed, removed);
          throw err;
        }
        logger.info({ instanceId }, 'instance removed');
        return removed;
      });
    },

    setOverride(instanceId, policy) {
      return mutation(async () => {
        const previous = registry.get(instanceId);
        const record = registry.setOverride(instanceId, policy);
        try {
          await store.put(record);
        } catch (err) {
          registry.restore(record, previous);
          throw err;
        }
        logger.info({ instanceId, cleared: policy === null }, policy === null ? 'override cleared' : 'override set');
        return record;
      });
    },

    list: () => registry.list(),
    get: (instanceId) => registry.get(instanceId),
    fetchStatus: (instanceId) => fetcher.status(instanceId),
    storeStatus: () => store.status?.() ?? null,
    counters,

    async close() {
      if (closed) return;
      closed = true;
      await fetcher.close();
      await tail;
      await store.close();
    },
  };
}
