// The background worker that learns missing port policies from guest agents: deduplicated,
// bounded concurrency, retries with capped exponential backoff for transient failures.
import type { Logger } from 'pino';
import { fetchAgentInfo } from './agent-client.js';
import { attestedPolicy, PolicyFetchError } from './compose.js';
import { LOCAL_FETCHES } from './fetch-coordinator.js';
import type { FetchClaim, FetchCoordinator } from './fetch-coordinator.js';
import type { InstanceRecord, PortPolicy } from './types.js';

export type FetchState = 'queued' | 'fetching' | 'retrying' | 'learned' | 'failed';

export interface FetchStatus {
  state: FetchState;
  /** Attempts made in the current cycle (an enqueue after learned/failed starts a new cycle). */
  attempts: number;
  lastError: { code: string; message: string; permanent: boolean } | null;
  nextAttemptAt: number | null;
  learnedAt: number | null;
}

export interface PolicyFetcherOptions {
  logger: Logger;
  agentPort: number;
  timeoutMs: number;
  /** Retries after the first attempt, for transient errors only. */
  maxRetries: number;
  backoffInitialMs: number;
  backoffMaxMs: number;
  maxResponseBytes: number;
  getInstance: (id: string) => InstanceRecord | undefined;
  /** Is learning this record's policy still useful (unknown, and a learned one would count)? */
  wanted: (record: InstanceRecord) => boolean;
  onLearned: (id: string, composeHash: string, policy: PortPolicy) => Promise<void> | void;
  /** An attempt for this record failed (whether or not it will be retried). */
  onFailed?: (id: string, record: InstanceRecord) => void;
  fetchInfo?: typeof fetchAgentInfo;
  /** Which node of a cluster fetches; default: this one, always. */
  coordinator?: FetchCoordinator;
  /** Requests in flight at most. Default 8. */
  concurrency?: number;
  now?: () => number;
}

export interface PolicyFetcher {
  enqueue(id: string): void;
  status(id: string): FetchStatus | undefined;
  close(): Promise<void>;
}

interface Job {
  state: FetchState;
  attempts: number;
  lastError: FetchStatus['lastError'];
  nextAttemptAt: number | null;
  learnedAt: number | null;
  timer: NodeJS.Timeout | null;
  controller: AbortController | null;
  /** The record the fetch was asked for: once it changed and carries a policy, no fetch is needed. */
  wantedFor: InstanceRecord | undefined;
  /** The record the last cycle failed against, and when: see enqueue(). */
  failedRecord: InstanceRecord | undefined;
  failedAt: number;
}

export function createPolicyFetcher(opts: PolicyFetcherOptions): PolicyFetcher {
  const { logger, agentPort, timeoutMs, maxRetries, backoffInitialMs, backoffMaxMs, maxResponseBytes } = opts;
  const { getInstance, wanted, onLearned, onFailed } = opts;
  const fetchInfo = opts.fetchInfo ?? fetchAgentInfo;
  const concurrency = Math.max(1, opts.concurrency ?? 8);
  const coordinator = opts.coordinator ?? LOCAL_FETCHES;
  const now = opts.now ?? Date.now;

  const jobs = new Map<string, Job>();
  let queue: string[] = [];
  let head = 0;
  let active = 0;
  let closed = false;
  let pruneAt = 1024;
  const inflight = new Set<Promise<void>>();

  function push(id: string): void {
    queue.push(id);
  }

  function pump(): void {
    while (!closed && active < concurrency && head < queue.length) {
      const id = queue[head++] as string;
      if (head > 1024 && head * 2 > queue.length) {
        queue = queue.slice(head);
        head = 0;
      }
      const job = jobs.get(id);
      if (job === undefined || job.state !== 'queued') continue;
      active++;
      const p = attempt(id, job).finally(() => {
        inflight.delete(p);
        active--;
        pump();
      });
      inflight.add(p);
    }
  }

  function schedule(id: string, job: Job, delay: number): void {
    job.state = 'retrying';
    job.nextAttemptAt = now() + delay;
    job.timer = setTimeout(() => {
      job.timer = null;
      if (closed || jobs.get(id) !== job) return;
      job.state = 'queued';
      job.nextAttemptAt = null;
      push(id);
      pump();
    }, delay);
    // close() cancels it; it must not be what keeps a stopping process alive.
    job.timer.unref();
  }

  function prune(): void {
    for (const [id, job] of jobs) {
      if ((job.state === 'learned' || job.state === 'failed') && getInstance(id) === undefined) jobs.delete(id);
    }
    pruneAt = Math.max(1024, jobs.size * 2);
  }

  async function attempt(id: string, job: Job): Promise<void> {
    const instance = getInstance(id);
    if (instance === undefined || !wanted(instance)) {
      if (instance !== undefined && instance !== job.wantedFor && instance.reportedPolicy !== null) {
        // Known since the fetch was asked for: another node learned it (its write arrived through
        // the store) while this one waited for its claim, or a registration reported it.
        job.state = 'learned';
        job.learnedAt = now();
        job.lastError = null;
        logger.info({ instanceId: id }, 'port policy known meanwhile (learned by another node, or reported); not fetched');
        return;
      }
      jobs.delete(id);
      logger.debug({ instanceId: id }, 'policy fetch dropped: instance gone, or its policy no longer unknown');
      return;
    }
    job.state = 'fetching';
    const claim = await coordinator.acquire(id);
    if (claim.kind === 'elsewhere') {
      waitForClaim(id, job, claim);
      return;
    }
    if (closed) {
      await claim.release();
      return;
    }
    job.attempts++;
    job.nextAttemptAt = null;
    const controller = new AbortController();
    job.controller = controller;
    const where = { instanceId: id, ip: instance.ip, attempt: job.attempts };
    try {
      const facts = await fetchInfo({
        ip: instance.ip,
        port: agentPort,
        timeoutMs,
        maxBytes: maxResponseBytes,
        signal: controller.signal,
      });
      if (closed) return;
      // No attested hash: only reached with registry.trust_agent_compose_hash (see `wanted`).
      const { policy, composeHash } = attestedPolicy(facts, instance.composeHash);
      await onLearned(id, composeHash, policy);
      job.state = 'learned';
      job.learnedAt = now();
      job.lastError = null;
      logger.info(
        { ...where, composeHash, ports: policy.ports.size, restrictMode: policy.restrictMode },
        'port policy learned from guest agent',
      );
      // Re-registered (new compose hash) while this fetch ran: what came back was for the old
      // record and was ignored, so fetch again for the new one.
      const current = getInstance(id);
      if (current !== undefined && current !== instance && wanted(current)) api.enqueue(id);
    } catch (err) {
      if (closed) return;
      failed(id, job, instance, err, where);
    } finally {
      job.controller = null;
      await claim.release();
    }
  }

  // Another node fetches this policy for the cluster: wait for it without holding a slot, then
  // look again (attempt() finds its result, which arrives through the store).
  function waitForClaim(id: string, job: Job, claim: FetchClaim & { kind: 'elsewhere' }): void {
    job.state = 'retrying';
    job.lastError = { code: 'ERR_FETCH_ELSEWHERE', message: `${claim.holder} is fetching this policy for the cluster`, permanent: false };
    void claim.settled.then(() => {
      if (closed || jobs.get(id) !== job) return;
      job.state = 'queued';
      push(id);
      pump();
    });
  }

  function failed(id: string, job: Job, instance: InstanceRecord, err: unknown, where: object): void {
    const e = err as { code?: unknown; message?: unknown };
    const code = typeof e?.code === 'string' ? e.code : 'ERR_FETCH_UNEXPECTED';
    const message = typeof e?.message === 'string' ? e.message : String(err);
    // Not a PolicyFetchError: onLearned (persisting) or a bug. Worth another try.
    const permanent = err instanceof PolicyFetchError ? err.permanent : false;
    job.lastError = { code, message, permanent };
    onFailed?.(id, instance);

    if (err instanceof PolicyFetchError && err.code === 'ERR_COMPOSE_HASH_MISMATCH') {
      logger.error(
        {
          ...where,
          security: true,
          event: 'compose_hash_mismatch',
          code,
          expectedHash: err.expectedHash,
          actualHash: err.actualHash,
        },
        'guest agent served an app_compose that does not match the attested compose hash; policy not learned',
      );
    }
    if (!permanent && job.attempts <= maxRetries) {
      const delay = Math.min(backoffInitialMs * 2 ** (job.attempts - 1), backoffMaxMs);
      logger.warn({ ...where, code, permanent, err, retryInMs: delay }, 'policy fetch failed; will retry');
      schedule(id, job, delay);
      return;
    }
    job.state = 'failed';
    job.failedRecord = instance;
    job.failedAt = now();
    if (code !== 'ERR_COMPOSE_HASH_MISMATCH') {
      logger.warn({ ...where, code, permanent, err }, permanent ? 'policy fetch failed permanently' : 'policy fetch failed; retries exhausted');
    }
  }

  const api = {
    enqueue(id: string): void {
      if (closed) return;
      const existing = jobs.get(id);
      if (existing !== undefined && (existing.state === 'queued' || existing.state === 'fetching' || existing.state === 'retrying')) {
        return;
      }
      if (jobs.size >= pruneAt) prune();
      const job: Job = {
        state: 'queued',
        attempts: 0,
        lastError: existing?.lastError ?? null,
        nextAttemptAt: null,
        learnedAt: existing?.learnedAt ?? null,
        timer: null,
        controller: null,
        wantedFor: getInstance(id),
        failedRecord: undefined,
        failedAt: 0,
      };
      jobs.set(id, job);
      // decide() asks for a fetch on every connection to an instance whose policy is unknown.
      // After a failure, that must not turn traffic into a request flood against its agent: the
      // same record is retried no sooner than backoffMaxMs later; a re-registration (a new
      // record) restarts at once.
      if (existing?.state === 'failed' && existing.failedRecord !== undefined && getInstance(id) === existing.failedRecord) {
        const wait = existing.failedAt + backoffMaxMs - now();
        if (wait > 0) {
          schedule(id, job, wait);
          return;
        }
      }
      push(id);
      pump();
    },

    status(id: string): FetchStatus | undefined {
      const job = jobs.get(id);
      if (job === undefined) return undefined;
      return {
        state: job.state,
        attempts: job.attempts,
        lastError: job.lastError === null ? null : { ...job.lastError },
        nextAttemptAt: job.nextAttemptAt,
        learnedAt: job.learnedAt,
      };
    },

    async close(): Promise<void> {
      closed = true;
      for (const job of jobs.values()) {
        if (job.timer !== null) {
          clearTimeout(job.timer);
          job.timer = null;
        }
        job.controller?.abort();
      }
      queue = [];
      head = 0;
      await Promise.allSettled([...inflight]);
    },
  };
  return api;
}
